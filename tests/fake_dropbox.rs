//! The fake Dropbox's own tests: each documented behaviour it promises, shown to
//! bite, through a plain HTTP/1.1 client on a TcpStream (so what is checked is
//! the wire, not some client library's reading of it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::fake_dropbox::{FakeDropbox, Host, Outage};

const APP: &str = "ghostieappkey01";
const MIB: usize = 1024 * 1024;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }

    /// The error_summary without its trailing dots ("path/not_found/").
    fn summary(&self) -> String {
        let s = self.json()["error_summary"]
            .as_str()
            .unwrap_or_else(|| panic!("no error_summary: {}", self.text()))
            .to_owned();
        s.trim_end_matches('.').to_owned()
    }

    fn error(&self) -> Value {
        self.json()["error"].clone()
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the fake");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    s
}

/// One response off a connection, delimited by its Content-Length.
fn read_reply(r: &mut impl BufRead) -> Reply {
    let mut status_line = String::new();
    r.read_line(&mut status_line).expect("a status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line:?}");
    let status = parts.next().and_then(|s| s.parse().ok()).expect("a status");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("a header line");
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("a header");
        headers.push((k.to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("a length"))
        .expect("a content-length");
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("the body");
    Reply {
        status,
        headers,
        body,
    }
}

fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: dropbox.test\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One request on a new connection, which the client closes after it.
fn call(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    let mut s = connect(addr);
    s.write_all(&request_bytes(method, path, &all, body))
        .expect("send the request");
    let mut r = BufReader::new(s);
    let reply = read_reply(&mut r);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("the connection closes");
    assert!(rest.is_empty(), "bytes after the response");
    reply
}

fn addr_of(fake: &FakeDropbox, host: Host) -> String {
    match host {
        Host::Api => fake.api_addr(),
        Host::Content => fake.content_addr(),
        Host::Notify => fake.notify_addr(),
    }
}

/// JSON safe for an HTTP header, as Dropbox requires of `Dropbox-API-Arg`.
fn ascii_json(v: &Value) -> String {
    let mut out = String::new();
    for c in v.to_string().chars() {
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

fn token_request(fake: &FakeDropbox, form: &str) -> Reply {
    call(
        &fake.api_addr(),
        "POST",
        "/oauth2/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
}

fn access_from(fake: &FakeDropbox, app: &str, refresh: &str) -> String {
    let r = token_request(
        fake,
        &format!("grant_type=refresh_token&refresh_token={refresh}&client_id={app}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// The test account, signed in to one app.
struct Dbx {
    fake: FakeDropbox,
    token: String,
    refresh: String,
}

impl Dbx {
    fn new() -> Self {
        let fake = FakeDropbox::start();
        fake.add_app(APP, "Ghostie");
        fake.set_longpoll_jitter(Duration::ZERO);
        let refresh = fake.grant(APP);
        let token = access_from(&fake, APP, &refresh);
        Self {
            fake,
            token,
            refresh,
        }
    }

    fn rpc_as(&self, token: &str, endpoint: &str, args: &Value) -> Reply {
        let auth = format!("Bearer {token}");
        call(
            &self.fake.api_addr(),
            "POST",
            &format!("/2/{endpoint}"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            args.to_string().as_bytes(),
        )
    }

    fn rpc(&self, endpoint: &str, args: &Value) -> Reply {
        self.rpc_as(&self.token, endpoint, args)
    }

    fn content(&self, endpoint: &str, arg: &Value, data: &[u8]) -> Reply {
        let auth = format!("Bearer {}", self.token);
        let arg = ascii_json(arg);
        call(
            &self.fake.content_addr(),
            "POST",
            &format!("/2/{endpoint}"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/octet-stream"),
                ("Dropbox-API-Arg", &arg),
            ],
            data,
        )
    }

    fn upload(&self, path: &str, data: &[u8]) -> Reply {
        self.content("files/upload", &json!({ "path": path }), data)
    }

    fn upload_ok(&self, path: &str, data: &[u8]) -> Value {
        let r = self.upload(path, data);
        assert_eq!(r.status, 200, "upload {path}: {}", r.text());
        r.json()
    }

    fn download(&self, path: &str, range: Option<&str>) -> Reply {
        let auth = format!("Bearer {}", self.token);
        let arg = ascii_json(&json!({ "path": path }));
        let mut headers = vec![("Authorization", auth.as_str()), ("Dropbox-API-Arg", &arg)];
        if let Some(r) = range {
            headers.push(("Range", r));
        }
        call(
            &self.fake.content_addr(),
            "POST",
            "/2/files/download",
            &headers,
            b"",
        )
    }

    fn list(&self, args: Value) -> Value {
        let r = self.rpc("files/list_folder", &args);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    fn more(&self, cursor: &str) -> Reply {
        self.rpc("files/list_folder/continue", &json!({ "cursor": cursor }))
    }

    fn start_session(&self, data: &[u8], close: bool) -> String {
        let r = self.content(
            "files/upload_session/start",
            &json!({ "close": close }),
            data,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["session_id"].as_str().expect("an id").to_owned()
    }

    fn append(&self, id: &str, offset: usize, data: &[u8], close: bool) -> Reply {
        let arg = json!({ "cursor": { "session_id": id, "offset": offset }, "close": close });
        self.content("files/upload_session/append_v2", &arg, data)
    }
}

fn paths_of(listing: &Value) -> Vec<String> {
    listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e[".tag"].as_str().unwrap_or("?"),
                e["path_display"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn dropbox_hash(data: &[u8]) -> String {
    let mut outer = Sha256::new();
    for block in data.chunks(4 * MIB) {
        outer.update(Sha256::digest(block));
    }
    hex::encode(outer.finalize())
}

// 1. Hosts and styles

#[test]
fn each_endpoint_is_served_by_its_own_host_only() {
    let d = Dbx::new();
    let auth = format!("Bearer {}", d.token);
    let arg = ascii_json(&json!({ "path": "/a.txt" }));
    let upload_headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/octet-stream"),
        ("Dropbox-API-Arg", arg.as_str()),
    ];
    let on_api = call(
        &d.fake.api_addr(),
        "POST",
        "/2/files/upload",
        &upload_headers,
        b"x",
    );
    assert_eq!(on_api.status, 400);
    assert!(on_api
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));
    assert!(
        on_api
            .text()
            .starts_with(r#"Error in call to API function "files/upload""#),
        "{}",
        on_api.text()
    );
    let on_content = call(
        &d.fake.content_addr(),
        "POST",
        "/2/files/upload",
        &upload_headers,
        b"x",
    );
    assert_eq!(on_content.status, 200, "{}", on_content.text());

    let list_headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    for host in [Host::Content, Host::Notify] {
        let r = call(
            &addr_of(&d.fake, host),
            "POST",
            "/2/files/list_folder",
            &list_headers,
            br#"{"path":""}"#,
        );
        assert_eq!(r.status, 400, "list_folder on {host:?}");
    }
    let cursor = d.list(json!({ "path": "" }))["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let poll = json!({ "cursor": cursor, "timeout": 30 }).to_string();
    let on_api = call(
        &d.fake.api_addr(),
        "POST",
        "/2/files/list_folder/longpoll",
        &[("Content-Type", "application/json")],
        poll.as_bytes(),
    );
    assert_eq!(on_api.status, 400, "the long poll is notify's");
    let unknown = d.rpc("files/no_such_thing", &json!({}));
    assert_eq!(unknown.status, 404);
    let get = call(
        &d.fake.api_addr(),
        "GET",
        "/2/users/get_current_account",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(get.status, 405, "every API call is a POST");
}

#[test]
fn rpc_takes_json_and_no_argument_endpoints_take_nothing_or_null() {
    let d = Dbx::new();
    let auth = format!("Bearer {}", d.token);
    let api = d.fake.api_addr();
    let post = |ct: Option<&str>, endpoint: &str, body: &[u8]| {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(ct) = ct {
            headers.push(("Content-Type", ct));
        }
        call(&api, "POST", &format!("/2/{endpoint}"), &headers, body)
    };
    assert_eq!(post(None, "users/get_current_account", b"").status, 200);
    assert_eq!(
        post(
            Some("application/json"),
            "users/get_current_account",
            b"null"
        )
        .status,
        200
    );
    let with_value = post(Some("application/json"), "users/get_current_account", b"{}");
    assert_eq!(with_value.status, 400, "{}", with_value.text());
    let form = post(
        Some("application/x-www-form-urlencoded"),
        "users/get_current_account",
        b"",
    );
    assert_eq!(
        form.status, 400,
        "a form type is refused even on an empty body"
    );

    let args = br#"{"path":""}"#;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = post(ct, "files/list_folder", args);
        assert_eq!(r.status, 400, "{ct:?}");
        assert!(r.text().contains("Content-Type"), "{}", r.text());
    }
    assert_eq!(
        post(
            Some("application/json; charset=utf-8"),
            "files/list_folder",
            args
        )
        .status,
        200
    );

    let not_json = post(Some("application/json"), "files/list_folder", b"{path:");
    assert_eq!(not_json.status, 400);
    assert!(
        not_json
            .text()
            .ends_with("request body: could not decode input as JSON"),
        "{}",
        not_json.text()
    );
    let unknown = post(
        Some("application/json"),
        "files/list_folder/continue",
        br#"{"cursor":"x","path":""}"#,
    );
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.text().contains("unknown field 'path'"),
        "{}",
        unknown.text()
    );
    let wrong_type = post(
        Some("application/json"),
        "files/list_folder",
        br#"{"path":"","recursive":"yes"}"#,
    );
    assert_eq!(wrong_type.status, 400);
    assert!(
        wrong_type.text().contains("recursive"),
        "{}",
        wrong_type.text()
    );
}

#[test]
fn content_arguments_travel_in_an_ascii_header() {
    let d = Dbx::new();
    let auth = format!("Bearer {}", d.token);
    let content = d.fake.content_addr();
    let raw_utf8 = r#"{"path":"/café.txt"}"#;
    let mut s = connect(&content);
    let mut raw = format!(
        "POST /2/files/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1\r\nDropbox-API-Arg: "
    )
    .into_bytes();
    raw.extend_from_slice(raw_utf8.as_bytes());
    raw.extend_from_slice(b"\r\n\r\nx");
    s.write_all(&raw).expect("send");
    let refused = read_reply(&mut BufReader::new(s));
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.text(),
        r#"Error in call to API function "files/upload": HTTP header "Dropbox-API-Arg": could not decode input as JSON"#
    );

    let ok = d.upload_ok("/café ☕.txt", b"latte");
    assert_eq!(ok["path_display"], "/café ☕.txt");
    let down = d.download("/CAFÉ ☕.TXT", None);
    assert_eq!(down.status, 200, "{}", down.text());
    assert_eq!(down.body, b"latte");
    let result = down
        .header("dropbox-api-result")
        .expect("Dropbox-API-Result");
    assert!(result.is_ascii() && result.contains(r"\u00e9"), "{result}");
    let meta: Value = serde_json::from_str(result).expect("JSON");
    assert_eq!(meta["name"], "café ☕.txt");
    assert_eq!(meta["size"], 5);

    let arg = ascii_json(&json!({ "path": "/b.txt" }));
    let bare = |headers: &[(&str, &str)]| call(&content, "POST", "/2/files/upload", headers, b"x");
    let no_type = bare(&[("Authorization", &auth), ("Dropbox-API-Arg", &arg)]);
    assert_eq!(no_type.status, 400, "upload needs its content type");
    let json_type = bare(&[
        ("Authorization", &auth),
        ("Dropbox-API-Arg", &arg),
        ("Content-Type", "application/json"),
    ]);
    assert_eq!(json_type.status, 400);
    let no_arg = bare(&[
        ("Authorization", &auth),
        ("Content-Type", "application/octet-stream"),
    ]);
    assert_eq!(no_arg.status, 400);
    assert!(
        no_arg.text().contains("Dropbox-API-Arg"),
        "{}",
        no_arg.text()
    );
}

// 2. Tokens

#[test]
fn requests_need_a_live_bearer_token() {
    let d = Dbx::new();
    let api = d.fake.api_addr();
    let none = call(&api, "POST", "/2/users/get_current_account", &[], b"");
    assert_eq!(none.status, 400);
    assert!(
        none.text()
            .contains(r#"Must provide HTTP header "Authorization""#),
        "{}",
        none.text()
    );
    let basic = format!("Basic {}", d.token);
    let wrong_scheme = call(
        &api,
        "POST",
        "/2/users/get_current_account",
        &[("Authorization", &basic)],
        b"",
    );
    assert_eq!(wrong_scheme.status, 400);
    let unknown = d.rpc_as("sl.nosuchtoken", "users/get_space_usage", &Value::Null);
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.summary(), "invalid_access_token/");
    assert_eq!(unknown.error(), json!({ ".tag": "invalid_access_token" }));
    assert_eq!(d.rpc("users/get_space_usage", &Value::Null).status, 200);
}

#[test]
fn access_tokens_expire_after_four_hours_and_refreshing_keeps_the_refresh_token() {
    let d = Dbx::new();
    d.fake.advance_clock(Duration::from_secs(14_399));
    assert_eq!(d.rpc("users/get_current_account", &Value::Null).status, 200);
    d.fake.advance_clock(Duration::from_secs(1));
    let expired = d.rpc("users/get_current_account", &Value::Null);
    assert_eq!(expired.status, 401);
    assert_eq!(expired.summary(), "expired_access_token/");
    assert_eq!(expired.error(), json!({ ".tag": "expired_access_token" }));

    let r = token_request(
        &d.fake,
        &format!(
            "grant_type=refresh_token&refresh_token={}&client_id={APP}",
            d.refresh
        ),
    );
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 14_400);
    assert!(
        body.get("refresh_token").is_none(),
        "Dropbox does not rotate refresh tokens"
    );
    let fresh = body["access_token"].as_str().expect("token");
    assert_eq!(
        d.rpc_as(fresh, "users/get_current_account", &Value::Null)
            .status,
        200
    );
    // The same refresh token goes on working.
    assert_ne!(access_from(&d.fake, APP, &d.refresh), fresh);
}

#[test]
fn revoking_a_refresh_token_revokes_every_access_token_from_it() {
    let d = Dbx::new();
    let other = access_from(&d.fake, APP, &d.refresh);
    d.fake.revoke_refresh_token(&d.refresh);
    for t in [&d.token, &other] {
        let r = d.rpc_as(t, "users/get_current_account", &Value::Null);
        assert_eq!(r.status, 401);
        assert_eq!(r.error(), json!({ ".tag": "invalid_access_token" }));
    }
    let r = token_request(
        &d.fake,
        &format!(
            "grant_type=refresh_token&refresh_token={}&client_id={APP}",
            d.refresh
        ),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({ "error": "invalid_grant", "error_description": "refresh token is invalid or revoked" })
    );
}

#[test]
fn token_revoke_ends_the_calling_token_and_its_refresh_token() {
    let d = Dbx::new();
    let sibling = access_from(&d.fake, APP, &d.refresh);
    let r = d.rpc_as(&d.token, "auth/token/revoke", &Value::Null);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.rpc("users/get_current_account", &Value::Null).status, 401);
    assert_eq!(
        d.rpc_as(&sibling, "users/get_current_account", &Value::Null)
            .status,
        401
    );
    let again = token_request(
        &d.fake,
        &format!(
            "grant_type=refresh_token&refresh_token={}&client_id={APP}",
            d.refresh
        ),
    );
    assert_eq!(again.json()["error"], "invalid_grant");
}

fn pkce() -> (String, String) {
    let verifier = "ghostie-verifier-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEF".to_owned();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn authorize_url(fake: &FakeDropbox, challenge: &str) -> String {
    format!(
        "{}/oauth2/authorize?client_id={APP}&response_type=code&code_challenge={challenge}\
         &code_challenge_method=S256&token_access_type=offline",
        fake.api_url()
    )
}

#[test]
fn the_pkce_code_flow_trades_a_one_time_code_for_both_tokens() {
    let fake = FakeDropbox::start();
    fake.add_app(APP, "Ghostie");
    let (verifier, challenge) = pkce();
    let code = fake
        .approve(&authorize_url(&fake, &challenge))
        .expect("the page shows a code");
    let exchange = |code: &str, verifier: &str| {
        token_request(
            &fake,
            &format!("grant_type=authorization_code&code={code}&client_id={APP}&code_verifier={verifier}"),
        )
    };
    let wrong = exchange(&code, "not-the-verifier-but-long-enough-to-be-one-0000000");
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.json()["error"], "invalid_grant");
    let r = exchange(&code, &verifier);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 14_400);
    assert_eq!(body["account_id"], fake.account_id());
    for field in ["access_token", "refresh_token", "scope", "uid"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    let reused = exchange(&code, &verifier);
    assert_eq!(
        reused.json(),
        json!({ "error": "invalid_grant", "error_description": "code doesn't exist or has expired" })
    );

    let late = fake
        .approve(&authorize_url(&fake, &challenge))
        .expect("a code");
    fake.advance_clock(Duration::from_secs(11 * 60));
    assert_eq!(exchange(&late, &verifier).json()["error"], "invalid_grant");

    let stranger = token_request(
        &fake,
        "grant_type=refresh_token&refresh_token=x&client_id=nosuchapp",
    );
    assert_eq!(stranger.status, 400);
    assert_eq!(
        stranger.json(),
        json!({ "error": "invalid_client: Invalid client_id or client_secret" })
    );
    let anonymous = token_request(&fake, "grant_type=refresh_token&refresh_token=x");
    assert_eq!(anonymous.json()["error"], "invalid_request");
    let implicit = token_request(&fake, &format!("grant_type=password&client_id={APP}"));
    assert_eq!(implicit.json()["error"], "unsupported_grant_type");
}

#[test]
fn the_authorize_page_refuses_urls_the_flow_cannot_use() {
    let fake = FakeDropbox::start();
    fake.add_app(APP, "Ghostie");
    let (_, challenge) = pkce();
    let good = authorize_url(&fake, &challenge);
    for (from, to) in [
        (
            format!("client_id={APP}"),
            "client_id=someoneelse".to_owned(),
        ),
        ("response_type=code".into(), "response_type=token".into()),
        (
            format!("code_challenge={challenge}"),
            "code_challenge=short".into(),
        ),
        (
            "code_challenge_method=S256".into(),
            "code_challenge_method=plain".into(),
        ),
        ("&token_access_type=offline".into(), String::new()),
        (
            "response_type=code".into(),
            "response_type=code&redirect_uri=http://localhost/cb".into(),
        ),
    ] {
        let bad = good.replace(&from, &to);
        assert_ne!(bad, good);
        assert!(fake.approve(&bad).is_err(), "{bad} was approved");
    }
    // What a browser shows at the same URL.
    let query = good.split_once('?').map(|(_, q)| q).expect("a query");
    let page = call(
        &fake.api_addr(),
        "GET",
        &format!("/oauth2/authorize?{query}"),
        &[],
        b"",
    );
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("Enter this code into Ghostie"),
        "{}",
        page.text()
    );
    let refused = call(
        &fake.api_addr(),
        "GET",
        "/oauth2/authorize?client_id=someoneelse",
        &[],
        b"",
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused
            .text()
            .contains(r#"Invalid client_id: "someoneelse""#),
        "{}",
        refused.text()
    );
}

#[test]
fn the_account_and_its_space() {
    let d = Dbx::new();
    let me = d.rpc("users/get_current_account", &Value::Null).json();
    assert_eq!(me["account_id"], d.fake.account_id());
    assert!(
        me["name"]["display_name"].is_string() && me["email"].is_string(),
        "{me}"
    );
    d.upload_ok("/a.bin", &[7; 1000]);
    d.fake.set_quota(5_000);
    let space = d.rpc("users/get_space_usage", &Value::Null).json();
    assert_eq!(
        space,
        json!({ "used": 1000, "allocation": { ".tag": "individual", "allocated": 5000 } })
    );
}

// 3. Namespaces and paths

#[test]
fn each_app_folder_is_its_own_namespace() {
    let d = Dbx::new();
    d.fake.add_app("otherapp", "Other");
    let other_refresh = d.fake.grant("otherapp");
    let other = access_from(&d.fake, "otherapp", &other_refresh);
    d.upload_ok("/mine.txt", b"1");
    let theirs = d.rpc_as(&other, "files/list_folder", &json!({ "path": "" }));
    assert_eq!(theirs.json()["entries"], json!([]));
    let cursor = d.list(json!({ "path": "" }))["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let borrowed = d.rpc_as(
        &other,
        "files/list_folder/continue",
        &json!({ "cursor": cursor }),
    );
    assert_eq!(borrowed.status, 400, "another app's cursor is no cursor");
    assert_eq!(d.fake.files_of("otherapp"), vec![]);
    assert_eq!(
        d.fake.files_of(APP),
        vec![("/mine.txt".to_owned(), b"1".to_vec())]
    );
}

#[test]
fn paths_are_case_insensitive_and_keep_their_first_casing() {
    let d = Dbx::new();
    let first = d.upload_ok("/Docs/ReadMe.TXT", b"one");
    assert_eq!(first["path_lower"], "/docs/readme.txt");
    assert_eq!(first["name"], "ReadMe.TXT");
    let over = d.content(
        "files/upload",
        &json!({ "path": "/DOCS/readme.txt", "mode": "overwrite" }),
        b"two",
    );
    assert_eq!(over.status, 200, "{}", over.text());
    assert_eq!(over.json()["path_display"], "/Docs/ReadMe.TXT");
    assert_eq!(over.json()["id"], first["id"], "the same file");
    let under = d.upload_ok("/docs/Other.txt", b"x");
    assert_eq!(
        under["path_display"], "/Docs/Other.txt",
        "the folder keeps its casing"
    );
    assert_eq!(d.download("/dOcS/README.txt", None).body, b"two");
    let root = d.list(json!({ "path": "" }));
    assert_eq!(paths_of(&root), ["folder:/Docs"]);
    assert_eq!(root["entries"][0]["path_lower"], "/docs");
}

#[test]
fn the_root_is_the_empty_path() {
    let d = Dbx::new();
    assert_eq!(d.list(json!({ "path": "" }))["has_more"], false);
    let slash = d.rpc("files/list_folder", &json!({ "path": "/" }));
    assert_eq!(slash.status, 400);
    assert_eq!(
        slash.text(),
        r#"Error in call to API function "files/list_folder": request body: path: Specify the root folder as an empty string rather than as "/"."#
    );
    let relative = d.rpc("files/list_folder", &json!({ "path": "docs" }));
    assert_eq!(relative.status, 400);
    assert!(
        relative.text().contains("did not match pattern"),
        "{}",
        relative.text()
    );
    let upload_relative = d.upload("a.txt", b"x");
    assert_eq!(upload_relative.status, 400);
    let missing = d.rpc("files/list_folder", &json!({ "path": "/nowhere" }));
    assert_eq!(missing.status, 409);
    assert_eq!(missing.summary(), "path/not_found/");
    d.upload_ok("/f.txt", b"x");
    let file = d.rpc("files/list_folder", &json!({ "path": "/f.txt" }));
    assert_eq!(file.summary(), "path/not_folder/");
}

#[test]
fn names_dropbox_refuses_are_malformed_paths() {
    let d = Dbx::new();
    let long = format!("/{}", "n".repeat(256));
    for bad in [
        "/trailing space ",
        "/trailing.dot.",
        "/a/../b",
        "/a//b",
        "/dir/",
        "/",
        long.as_str(),
    ] {
        let r = d.upload(bad, b"x");
        assert_eq!(r.status, 409, "{bad:?}: {}", r.text());
        assert_eq!(r.summary(), "path/malformed_path/");
        assert_eq!(r.error()["reason"][".tag"], "malformed_path");
        assert!(r.error()["upload_session_id"].is_string(), "{}", r.text());
    }
    d.upload_ok(&format!("/{}", "n".repeat(255)), b"x");
    let folder = d.rpc("files/create_folder_v2", &json!({ "path": "/bad. " }));
    assert_eq!(folder.summary(), "path/malformed_path/");
}

// 4. Uploads

#[test]
fn add_conflicts_unless_the_content_is_the_same() {
    let d = Dbx::new();
    let first = d.upload_ok("/a.txt", b"same");
    let again = d.upload_ok("/a.txt", b"same");
    assert_eq!(
        again["rev"], first["rev"],
        "identical content is no new revision"
    );
    let other = d.upload("/a.txt", b"different");
    assert_eq!(other.status, 409);
    assert_eq!(other.summary(), "path/conflict/file/");
    assert_eq!(
        other.error()["reason"],
        json!({ ".tag": "conflict", "conflict": { ".tag": "file" } })
    );
    let strict = d.content(
        "files/upload",
        &json!({ "path": "/a.txt", "strict_conflict": true }),
        b"same",
    );
    assert_eq!(
        strict.summary(),
        "path/conflict/file/",
        "strict_conflict even for the same content"
    );
    let renamed = d.content(
        "files/upload",
        &json!({ "path": "/a.txt", "autorename": true }),
        b"different",
    );
    assert_eq!(renamed.json()["path_display"], "/a (1).txt");
    let onto_folder = d.upload("/d/x.txt", b"x");
    assert_eq!(onto_folder.status, 200);
    assert_eq!(d.upload("/d", b"x").summary(), "path/conflict/folder/");
    assert_eq!(
        d.upload("/a.txt/inside", b"x").summary(),
        "path/conflict/file_ancestor/"
    );
}

#[test]
fn overwrite_and_update_follow_the_revision() {
    let d = Dbx::new();
    let first = d.upload_ok("/u.txt", b"v1");
    let rev1 = first["rev"].as_str().expect("rev").to_owned();
    assert!(
        rev1.len() >= 9 && rev1.bytes().all(|b| b.is_ascii_hexdigit()),
        "{rev1}"
    );
    let update = |rev: &str, data: &[u8], extra: Value| {
        let mut arg = json!({ "path": "/u.txt", "mode": { ".tag": "update", "update": rev } });
        if let (Some(a), Value::Object(e)) = (arg.as_object_mut(), extra) {
            a.extend(e);
        }
        d.content("files/upload", &arg, data)
    };
    let second = update(&rev1, b"v2", json!({}));
    assert_eq!(second.status, 200, "{}", second.text());
    let rev2 = second.json()["rev"].as_str().expect("rev").to_owned();
    assert_ne!(rev2, rev1);
    let stale = update(&rev1, b"v3", json!({}));
    assert_eq!(stale.summary(), "path/conflict/file/");
    let copy = update(&rev1, b"v3", json!({ "autorename": true }));
    assert_eq!(copy.json()["path_display"], "/u (conflicted copy).txt");
    let over = d.content(
        "files/upload",
        &json!({ "path": "/u.txt", "mode": "overwrite" }),
        b"v4",
    );
    assert_eq!(over.status, 200);
    assert_eq!(d.download("/u.txt", None).body, b"v4");
    let bad_rev = d.content(
        "files/upload",
        &json!({ "path": "/u.txt", "mode": { ".tag": "update", "update": "xyz" } }),
        b"x",
    );
    assert_eq!(bad_rev.status, 400);
}

#[test]
fn upload_metadata_carries_dropbox_content_hash() {
    let d = Dbx::new();
    let data: Vec<u8> = (0..9 * MIB + 123).map(|i| (i * 31 % 251) as u8).collect();
    let m = d.content(
        "files/upload",
        &json!({ "path": "/big.bin", "client_modified": "2024-02-29T12:34:56Z" }),
        &data,
    );
    assert_eq!(m.status, 200, "{}", m.text());
    let m = m.json();
    assert_eq!(m["content_hash"], dropbox_hash(&data));
    assert_ne!(
        m["content_hash"],
        hex::encode(Sha256::digest(&data)),
        "not a plain SHA-256"
    );
    assert_eq!(m["size"], data.len());
    assert_eq!(m["client_modified"], "2024-02-29T12:34:56Z");
    assert!(
        m["id"].as_str().is_some_and(|id| id.starts_with("id:")),
        "{m}"
    );
    let server = m["server_modified"].as_str().expect("server_modified");
    assert!(server.len() == 20 && server.ends_with('Z'), "{server}");
    assert!(
        m.get(".tag").is_none(),
        "upload answers a bare FileMetadata"
    );
    let empty = d.upload_ok("/empty", b"");
    assert_eq!(empty["content_hash"], hex::encode(Sha256::digest(b"")));
    let bad_time = d.content(
        "files/upload",
        &json!({ "path": "/t", "client_modified": "2024-02-29T12:34:56.5Z" }),
        b"x",
    );
    assert_eq!(bad_time.status, 400);
    let wrong_hash = d.content(
        "files/upload",
        &json!({ "path": "/h", "content_hash": dropbox_hash(b"y") }),
        b"x",
    );
    assert_eq!(wrong_hash.summary(), "content_hash_mismatch/");
}

#[test]
fn a_body_past_150_mib_is_refused_and_chunked_bodies_are_read() {
    let d = Dbx::new();
    let auth = format!("Bearer {}", d.token);
    let arg = ascii_json(&json!({ "path": "/huge.bin" }));
    let mut s = connect(&d.fake.content_addr());
    let head = format!(
        "POST /2/files/upload HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
         Content-Type: application/octet-stream\r\nDropbox-API-Arg: {arg}\r\n\
         Content-Length: {}\r\n\r\n",
        150 * MIB + 1
    );
    s.write_all(head.as_bytes()).expect("send the head");
    let r = read_reply(&mut BufReader::new(s));
    assert_eq!(r.status, 413);

    let mut s = connect(&d.fake.content_addr());
    let mut raw = format!(
        "POST /2/files/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\
         Content-Type: application/octet-stream\r\nDropbox-API-Arg: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        ascii_json(&json!({ "path": "/chunked.txt" }))
    )
    .into_bytes();
    raw.extend_from_slice(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    s.write_all(&raw).expect("send");
    let r = read_reply(&mut BufReader::new(s));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.download("/chunked.txt", None).body, b"hello world");
    let seen = d.fake.seen();
    assert!(seen
        .iter()
        .any(|s| s.endpoint == "files/upload" && s.status == 413));
}

// 5. Upload sessions

#[test]
fn sessions_check_offsets_and_closing() {
    let d = Dbx::new();
    let id = d.start_session(b"abc", false);
    let wrong = d.append(&id, 2, b"def", false);
    assert_eq!(wrong.status, 409);
    assert_eq!(wrong.summary(), "incorrect_offset/");
    assert_eq!(
        wrong.error(),
        json!({ ".tag": "incorrect_offset", "correct_offset": 3 })
    );
    assert_eq!(d.append(&id, 3, b"def", false).status, 200);
    assert_eq!(d.append(&id, 6, b"ghi", true).status, 200);
    let closed = d.append(&id, 9, b"jkl", false);
    assert_eq!(closed.error(), json!({ ".tag": "closed" }));
    let finish = |offset: usize, path: &str| {
        let arg =
            json!({ "cursor": { "session_id": id, "offset": offset }, "commit": { "path": path } });
        d.content("files/upload_session/finish", &arg, b"")
    };
    let off = finish(8, "/s.txt");
    assert_eq!(off.summary(), "lookup_failed/incorrect_offset/");
    assert_eq!(off.error()["lookup_failed"]["correct_offset"], 9);
    let done = finish(9, "/s.txt");
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["size"], 9);
    assert_eq!(d.download("/s.txt", None).body, b"abcdefghi");
    assert_eq!(
        finish(9, "/t.txt").summary(),
        "lookup_failed/not_found/",
        "a session commits once"
    );

    // A finish may carry the last piece of an open session.
    let open = d.start_session(b"12", false);
    let arg =
        json!({ "cursor": { "session_id": open, "offset": 2 }, "commit": { "path": "/n.txt" } });
    assert_eq!(
        d.content("files/upload_session/finish", &arg, b"34").status,
        200
    );
    assert_eq!(d.download("/n.txt", None).body, b"1234");
    let unknown = d.append("pid_upload_session:nosuch", 0, b"x", false);
    assert_eq!(unknown.summary(), "not_found/");
}

#[test]
fn a_failed_finish_leaves_the_session_to_commit_elsewhere() {
    let d = Dbx::new();
    d.upload_ok("/taken.txt", b"first");
    let id = d.start_session(b"second", true);
    let commit = |path: &str| {
        let arg =
            json!({ "cursor": { "session_id": id, "offset": 6 }, "commit": { "path": path } });
        d.content("files/upload_session/finish", &arg, b"")
    };
    let clash = commit("/taken.txt");
    assert_eq!(clash.summary(), "path/conflict/file/");
    assert_eq!(clash.error()["path"]["conflict"][".tag"], "file");
    assert_eq!(commit("/free.txt").status, 200);
    assert_eq!(d.download("/free.txt", None).body, b"second");
}

#[test]
fn sessions_expire_after_seven_days() {
    let d = Dbx::new();
    let id = d.start_session(b"a", false);
    d.fake
        .advance_clock(Duration::from_secs(7 * 24 * 3_600 - 60));
    // A week outlives any access token.
    let d = Dbx {
        token: access_from(&d.fake, APP, &d.refresh),
        ..d
    };
    assert_eq!(d.append(&id, 1, b"b", false).status, 200);
    d.fake.advance_clock(Duration::from_secs(60));
    assert_eq!(d.append(&id, 2, b"c", false).summary(), "not_found/");
}

#[test]
fn finish_batch_commits_closed_sessions_and_answers_each_entry() {
    let d = Dbx::new();
    let a = d.start_session(b"aaa", true);
    let b = d.start_session(b"bb", false);
    assert_eq!(d.append(&b, 2, b"b", true).status, 200);
    let open = d.start_session(b"c", false);
    let entry = |id: &str, offset: usize, path: &str| json!({ "cursor": { "session_id": id, "offset": offset }, "commit": { "path": path } });
    let r = d.rpc(
        "files/upload_session/finish_batch_v2",
        &json!({ "entries": [entry(&a, 3, "/batch/a"), entry(&b, 3, "/batch/b"), entry(&open, 1, "/batch/c")] }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let entries = r.json()["entries"].clone();
    assert_eq!(entries[0][".tag"], "success");
    assert_eq!(entries[0]["path_display"], "/batch/a");
    assert_eq!(entries[1][".tag"], "success");
    assert_eq!(
        entries[2],
        json!({ ".tag": "failure", "failure": { ".tag": "lookup_failed", "lookup_failed": { ".tag": "not_closed" } } })
    );
    assert_eq!(d.fake.files().len(), 2);

    let too_many: Vec<Value> = (0..1_001)
        .map(|i| entry("x", 0, &format!("/m{i}")))
        .collect();
    let r = d.rpc(
        "files/upload_session/finish_batch_v2",
        &json!({ "entries": too_many }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn a_file_of_200_mib_goes_through_a_session_and_reads_back_by_ranges() {
    let d = Dbx::new();
    let piece: Vec<u8> = (0..50 * MIB).map(|i| (i % 253) as u8).collect();
    let started = Instant::now();
    let id = d.start_session(&piece, false);
    for n in 1..4 {
        let r = d.append(&id, n * piece.len(), &piece, n == 3);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let arg = json!({ "cursor": { "session_id": id, "offset": 4 * piece.len() }, "commit": { "path": "/200.bin" } });
    let done = d.content("files/upload_session/finish", &arg, b"");
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["size"], 200 * MIB);
    let tail = d.download("/200.bin", Some(&format!("bytes={}-", 200 * MIB - 10)));
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, piece[piece.len() - 10..]);
    eprintln!("200 MiB in and a range out in {:?}", started.elapsed());
}

// 6. Concurrent writes

/// Runs `work` on `n` threads released at once; their results in order.
fn at_once<T: Send>(n: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let gate = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (gate, work) = (&gate, &work);
                s.spawn(move || {
                    gate.wait();
                    work(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a request thread"))
            .collect()
    })
}

#[test]
fn commits_into_one_namespace_at_once_collide() {
    let d = Dbx::new();
    d.fake.set_latency(Duration::from_millis(300));
    let replies = at_once(2, |i| d.upload(&format!("/p{i}.txt"), b"x"));
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
    let refused = replies.iter().find(|r| r.status == 429).expect("a refusal");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.summary(), "too_many_write_operations/");
    assert_eq!(
        refused.error(),
        json!({ "reason": { ".tag": "too_many_write_operations" }, "retry_after": 1 })
    );
    assert_eq!(d.fake.write_conflicts(), 1);

    // Two batch commits collide the same way.
    let ids: Vec<String> = (0..2).map(|_| d.start_session(b"q", true)).collect();
    let batches = at_once(2, |i| {
        let entry = json!({ "cursor": { "session_id": ids[i], "offset": 1 }, "commit": { "path": format!("/b{i}") } });
        d.rpc(
            "files/upload_session/finish_batch_v2",
            &json!({ "entries": [entry] }),
        )
    });
    let mut statuses: Vec<u16> = batches.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 429]);
    assert_eq!(d.fake.write_conflicts(), 2);
}

#[test]
fn appends_and_other_namespaces_run_alongside_a_commit() {
    let d = Dbx::new();
    d.fake.add_app("second", "Second");
    let second = access_from(&d.fake, "second", &d.fake.grant("second"));
    d.fake.set_latency(Duration::from_millis(300));
    let ids: Vec<String> = (0..3).map(|_| d.start_session(b"0", false)).collect();
    let replies = at_once(5, |i| match i {
        0 => d.upload("/commit.txt", b"x"),
        1 => {
            let auth = format!("Bearer {second}");
            let arg = ascii_json(&json!({ "path": "/elsewhere.txt" }));
            call(
                &d.fake.content_addr(),
                "POST",
                "/2/files/upload",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/octet-stream"),
                    ("Dropbox-API-Arg", &arg),
                ],
                b"y",
            )
        }
        n => d.append(&ids[n - 2], 1, b"more", false),
    });
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(d.fake.write_conflicts(), 0);
}

// 7. Downloads

#[test]
fn a_post_without_a_length_has_no_body() {
    let d = Dbx::new();
    d.upload_ok("/nolength.txt", b"here");
    let mut s = connect(&d.fake.content_addr());
    let raw = format!(
        "POST /2/files/download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nDropbox-API-Arg: {}\r\n\r\n",
        d.token,
        ascii_json(&json!({ "path": "/nolength.txt" }))
    );
    s.write_all(raw.as_bytes()).expect("send");
    let r = read_reply(&mut BufReader::new(s));
    assert_eq!((r.status, r.body.as_slice()), (200, b"here".as_slice()));
}

#[test]
fn download_honours_one_range() {
    let d = Dbx::new();
    d.upload_ok("/r.txt", b"0123456789");
    let r = d.download("/r.txt", Some("bytes=2-5"));
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert!(r.header("dropbox-api-result").is_some());
    assert_eq!(d.download("/r.txt", Some("bytes=7-")).body, b"789");
    assert_eq!(d.download("/r.txt", Some("bytes=-3")).body, b"789");
    assert_eq!(d.download("/r.txt", Some("bytes=8-100")).body, b"89");
    let past = d.download("/r.txt", Some("bytes=10-"));
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */10"));
    let whole = d.download("/r.txt", None);
    assert_eq!(
        (whole.status, whole.body.as_slice()),
        (200, b"0123456789".as_slice())
    );
    let missing = d.download("/nope.txt", None);
    assert_eq!(missing.status, 409);
    assert_eq!(missing.summary(), "path/not_found/");
    assert_eq!(
        missing.error(),
        json!({ ".tag": "path", "path": { ".tag": "not_found" } })
    );
    d.upload_ok("/dir/f", b"x");
    assert_eq!(d.download("/dir", None).summary(), "path/not_file/");
    let by_id = d.upload_ok("/byid.txt", b"id!");
    assert_eq!(
        d.download(by_id["id"].as_str().expect("id"), None).body,
        b"id!"
    );
    let old_rev = by_id["rev"].as_str().expect("rev").to_owned();
    d.content(
        "files/upload",
        &json!({ "path": "/byid.txt", "mode": "overwrite" }),
        b"new",
    );
    assert_eq!(d.download(&format!("rev:{old_rev}"), None).body, b"id!");
}

// 8. Listing and changes

#[test]
fn list_folder_pages_and_continue_shows_only_what_changed() {
    let d = Dbx::new();
    d.fake.set_page_size(3);
    for i in 0..5 {
        d.upload_ok(&format!("/dir/f{i}.txt"), format!("{i}").as_bytes());
    }
    d.upload_ok("/dir/sub/deep.txt", b"deep");
    let mut all = Vec::new();
    let mut page = d.list(json!({ "path": "/dir" }));
    let mut pages = 1;
    loop {
        all.extend(paths_of(&page));
        if page["has_more"] == false {
            break;
        }
        page = d.more(page["cursor"].as_str().expect("cursor")).json();
        pages += 1;
    }
    assert_eq!(pages, 2);
    assert_eq!(
        all,
        [
            "file:/dir/f0.txt",
            "file:/dir/f1.txt",
            "file:/dir/f2.txt",
            "file:/dir/f3.txt",
            "file:/dir/f4.txt",
            "folder:/dir/sub"
        ]
    );
    let cursor = page["cursor"].as_str().expect("cursor").to_owned();
    assert_eq!(
        d.more(&cursor).json()["entries"],
        json!([]),
        "nothing changed"
    );

    d.upload_ok("/dir/new.txt", b"n");
    assert_eq!(
        d.rpc("files/delete_v2", &json!({ "path": "/dir/f1.txt" }))
            .status,
        200
    );
    d.upload_ok("/elsewhere.txt", b"not in /dir");
    let changes = d.more(&cursor).json();
    assert_eq!(
        paths_of(&changes),
        ["file:/dir/new.txt", "deleted:/dir/f1.txt"]
    );

    let limited = d.list(json!({ "path": "/dir", "limit": 2 }));
    assert_eq!(limited["has_more"], true);
    d.fake.set_page_size(500);
    assert_eq!(limited["entries"].as_array().map(Vec::len), Some(2));
    let recursive = d.list(json!({ "path": "/dir", "recursive": true, "limit": 100 }));
    assert!(paths_of(&recursive).contains(&"file:/dir/sub/deep.txt".to_owned()));
    assert_eq!(
        paths_of(&recursive)[0],
        "folder:/dir",
        "a recursive listing starts with the folder"
    );
    assert!(!paths_of(&recursive)
        .iter()
        .any(|p| p.starts_with("deleted:")));
    let with_deleted = d.list(json!({ "path": "/dir", "include_deleted": true, "limit": 100 }));
    assert!(paths_of(&with_deleted).contains(&"deleted:/dir/f1.txt".to_owned()));
    assert_eq!(
        d.rpc("files/list_folder", &json!({ "path": "", "limit": 0 }))
            .status,
        400
    );
}

#[test]
fn a_change_while_a_listing_is_paged_is_not_lost() {
    let d = Dbx::new();
    d.fake.set_page_size(2);
    for name in ["a", "b", "c", "d"] {
        d.upload_ok(&format!("/{name}"), b"1");
    }
    let first = d.list(json!({ "path": "" }));
    assert_eq!(paths_of(&first), ["file:/a", "file:/b"]);
    d.content(
        "files/upload",
        &json!({ "path": "/a", "mode": "overwrite" }),
        b"2",
    );
    let mut cursor = first["cursor"].as_str().expect("cursor").to_owned();
    let mut rest = Vec::new();
    loop {
        let page = d.more(&cursor).json();
        rest.extend(paths_of(&page));
        cursor = page["cursor"].as_str().expect("cursor").to_owned();
        if page["has_more"] == false && paths_of(&page).is_empty() {
            break;
        }
    }
    assert_eq!(rest, ["file:/c", "file:/d", "file:/a"]);
}

#[test]
fn reset_cursors_answer_reset_and_garbled_ones_are_refused() {
    let d = Dbx::new();
    let old = d.list(json!({ "path": "" }))["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    d.fake.reset_cursors();
    let r = d.more(&old);
    assert_eq!(r.status, 409);
    assert_eq!(r.summary(), "reset/");
    assert_eq!(r.error(), json!({ ".tag": "reset" }));
    let fresh = d.list(json!({ "path": "" }))["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    assert_eq!(d.more(&fresh).status, 200);
    let mut garbled = fresh.clone();
    garbled.replace_range(garbled.len() - 2.., "00");
    assert_eq!(d.more(&garbled).status, 400);
    assert_eq!(d.more("not a cursor").status, 400);
    let elsewhere = Dbx::new();
    let foreign = elsewhere.list(json!({ "path": "" }))["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    assert_eq!(d.more(&foreign).status, 400, "another fake's cursor");
    let latest = d.rpc(
        "files/list_folder/get_latest_cursor",
        &json!({ "path": "" }),
    );
    let latest = latest.json()["cursor"].as_str().expect("cursor").to_owned();
    d.upload_ok("/after.txt", b"x");
    assert_eq!(paths_of(&d.more(&latest).json()), ["file:/after.txt"]);
}

// 9. The long poll

fn longpoll_request(cursor: &str, timeout: u64, auth: Option<&str>) -> Vec<u8> {
    let body = json!({ "cursor": cursor, "timeout": timeout }).to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    request_bytes(
        "POST",
        "/2/files/list_folder/longpoll",
        &headers,
        body.as_bytes(),
    )
}

#[test]
fn the_long_poll_takes_no_token_and_a_timeout_in_range() {
    let d = Dbx::new();
    let cursor = d.list(json!({ "path": "" }))["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let auth = format!("Bearer {}", d.token);
    let notify = d.fake.notify_addr();
    let send = |raw: Vec<u8>| {
        let mut s = connect(&notify);
        s.write_all(&raw).expect("send");
        read_reply(&mut BufReader::new(s))
    };
    let with_token = send(longpoll_request(&cursor, 30, Some(&auth)));
    assert_eq!(with_token.status, 400);
    assert!(
        with_token.text().contains("does not use it"),
        "{}",
        with_token.text()
    );
    for t in [29, 481] {
        assert_eq!(
            send(longpoll_request(&cursor, t, None)).status,
            400,
            "timeout {t}"
        );
    }
}

#[test]
fn the_long_poll_answers_as_soon_as_something_changed() {
    let d = Dbx::new();
    let cursor = d.list(json!({ "path": "" }))["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let mut s = connect(&d.fake.notify_addr());
    s.write_all(&longpoll_request(&cursor, 30, None))
        .expect("send");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let waiting = s.peek(&mut byte);
    assert!(
        waiting.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "the poll answered with nothing changed: {waiting:?}"
    );
    let started = Instant::now();
    d.upload_ok("/news.txt", b"!");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let r = read_reply(&mut BufReader::new(s));
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({ "changes": true }));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A change before the call answers at once.
    let mut s = connect(&d.fake.notify_addr());
    s.write_all(&longpoll_request(&cursor, 30, None))
        .expect("send");
    assert_eq!(read_reply(&mut BufReader::new(s)).json()["changes"], true);
}

#[test]
fn a_long_poll_within_its_backoff_is_refused() {
    let d = Dbx::new();
    d.fake.set_longpoll_backoff(Some(5));
    let cursor = d.list(json!({ "path": "" }))["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    d.upload_ok("/x", b"x");
    let poll = || {
        let mut s = connect(&d.fake.notify_addr());
        s.write_all(&longpoll_request(&cursor, 30, None))
            .expect("send");
        read_reply(&mut BufReader::new(s))
    };
    let first = poll();
    assert_eq!(first.json(), json!({ "changes": true, "backoff": 5 }));
    let eager = poll();
    assert_eq!(eager.status, 429);
    assert_eq!(eager.header("retry-after"), Some("5"));
    assert_eq!(eager.summary(), "too_many_requests/");
    d.fake.advance_clock(Duration::from_secs(5));
    assert_eq!(poll().status, 200);
}

// 10. Delete, folders, metadata

#[test]
fn delete_removes_one_file_and_leaves_its_folder() {
    let d = Dbx::new();
    d.upload_ok("/keep/a.txt", b"a");
    let r = d.rpc("files/delete_v2", &json!({ "path": "/KEEP/a.txt" }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["metadata"][".tag"], "file");
    assert_eq!(r.json()["metadata"]["path_display"], "/keep/a.txt");
    assert_eq!(paths_of(&d.list(json!({ "path": "" }))), ["folder:/keep"]);
    let again = d.rpc("files/delete_v2", &json!({ "path": "/keep/a.txt" }));
    assert_eq!(again.status, 409);
    assert_eq!(again.summary(), "path_lookup/not_found/");
    assert_eq!(
        again.error(),
        json!({ ".tag": "path_lookup", "path_lookup": { ".tag": "not_found" } })
    );
    d.upload_ok("/keep/b/c.txt", b"c");
    assert_eq!(
        d.rpc("files/delete_v2", &json!({ "path": "/keep" })).status,
        200
    );
    assert!(d.fake.files().is_empty());
    let gone = d.rpc("files/get_metadata", &json!({ "path": "/keep/b/c.txt" }));
    assert_eq!(gone.summary(), "path/not_found/");
    let tomb = d.rpc(
        "files/get_metadata",
        &json!({ "path": "/keep/b/c.txt", "include_deleted": true }),
    );
    assert_eq!(tomb.json()[".tag"], "deleted");
}

#[test]
fn folders_are_made_once_and_metadata_names_what_is_there() {
    let d = Dbx::new();
    let made = d.rpc("files/create_folder_v2", &json!({ "path": "/New Folder" }));
    assert_eq!(made.status, 200, "{}", made.text());
    assert_eq!(made.json()["metadata"]["path_display"], "/New Folder");
    let twice = d.rpc("files/create_folder_v2", &json!({ "path": "/new folder" }));
    assert_eq!(twice.summary(), "path/conflict/folder/");
    let renamed = d.rpc(
        "files/create_folder_v2",
        &json!({ "path": "/new folder", "autorename": true }),
    );
    assert_eq!(
        renamed.json()["metadata"]["path_display"],
        "/new folder (1)"
    );
    assert_eq!(
        d.rpc("files/get_metadata", &json!({ "path": "/New Folder" }))
            .json()[".tag"],
        "folder"
    );
    let root = d.rpc("files/get_metadata", &json!({ "path": "" }));
    assert_eq!(root.status, 400, "get_metadata does not take the root");
}

// 11. Quota

#[test]
fn commits_past_the_quota_are_refused_insufficient_space() {
    let d = Dbx::new();
    d.fake.set_quota(10);
    d.upload_ok("/six", &[1; 6]);
    let over = d.upload("/five", &[2; 5]);
    assert_eq!(over.status, 409);
    assert_eq!(over.summary(), "path/insufficient_space/");
    assert_eq!(
        over.error()["reason"],
        json!({ ".tag": "insufficient_space" })
    );
    let replace = d.content(
        "files/upload",
        &json!({ "path": "/six", "mode": "overwrite" }),
        &[3; 10],
    );
    assert_eq!(replace.status, 200, "an overwrite frees what it replaces");
    let id = d.start_session(b"z", true);
    let entry = json!({ "cursor": { "session_id": id, "offset": 1 }, "commit": { "path": "/z" } });
    let batch = d.rpc(
        "files/upload_session/finish_batch_v2",
        &json!({ "entries": [entry] }),
    );
    assert_eq!(
        batch.json()["entries"][0],
        json!({ ".tag": "failure", "failure": { ".tag": "path", "path": { ".tag": "insufficient_space" } } })
    );
}

// 12. Outages, the record, storage

#[test]
fn outages_fail_every_request_as_dropbox_does() {
    let d = Dbx::new();
    d.fake.set_outage(Outage::ServerError);
    let a = d.rpc("users/get_current_account", &Value::Null);
    let b = d.upload("/o", b"o");
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [500, 503]);

    d.fake.set_outage(Outage::NotDropbox);
    let portal = d.rpc("users/get_current_account", &Value::Null);
    assert_eq!(portal.status, 200);
    assert!(portal
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));

    d.fake.set_outage(Outage::TooManyRequests {
        retry_after_secs: 7,
    });
    let limited = d.rpc("files/list_folder", &json!({ "path": "" }));
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(
        limited.error(),
        json!({ "reason": { ".tag": "too_many_requests" }, "retry_after": 7 })
    );

    d.fake.set_outage(Outage::CutConnections);
    let mut s = connect(&d.fake.api_addr());
    s.write_all(&request_bytes(
        "POST",
        "/2/users/get_current_account",
        &[],
        b"",
    ))
    .expect("send");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "a cut connection answers nothing");

    d.fake.set_outage(Outage::Stall);
    let mut s = connect(&d.fake.api_addr());
    s.write_all(&request_bytes(
        "POST",
        "/2/users/get_current_account",
        &[],
        b"",
    ))
    .expect("send");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(
        s.read(&mut byte).is_err(),
        "a stalled request is not answered"
    );
    d.fake.set_outage(Outage::None);
    assert_eq!(d.rpc("users/get_current_account", &Value::Null).status, 200);
    assert!(d.fake.seen().iter().filter(|s| s.status == 0).count() >= 2);
}

#[test]
fn the_record_names_each_request() {
    let d = Dbx::new();
    d.download("/none", None);
    let seen = d.fake.seen();
    let last = seen.last().expect("a request");
    assert_eq!(last.host, Host::Content);
    assert_eq!(last.endpoint, "files/download");
    assert_eq!(last.status, 409);
    assert!(last
        .error_summary
        .as_deref()
        .is_some_and(|s| s.starts_with("path/not_found/")));
    assert_eq!(
        last.authorization.as_deref(),
        Some(format!("Bearer {}", d.token).as_str())
    );
    assert_eq!(d.fake.count("oauth2/token"), 1);
    assert_eq!(d.fake.count("files/download"), 1);
}

#[test]
fn connections_are_kept_alive() {
    let d = Dbx::new();
    let mut s = connect(&d.fake.api_addr());
    let auth = format!("Bearer {}", d.token);
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    for _ in 0..3 {
        s.write_all(&request_bytes(
            "POST",
            "/2/users/get_current_account",
            &[("Authorization", &auth)],
            b"",
        ))
        .expect("send");
        assert_eq!(read_reply(&mut r).status, 200);
    }
}

#[test]
fn everything_stored_keeps_every_revision_deleted_files_and_folder_names() {
    let d = Dbx::new();
    d.upload_ok("/secret folder/note.txt", b"v1");
    d.content(
        "files/upload",
        &json!({ "path": "/secret folder/note.txt", "mode": "overwrite" }),
        b"v2",
    );
    d.rpc(
        "files/delete_v2",
        &json!({ "path": "/secret folder/note.txt" }),
    );
    let pending = d.start_session(b"half", false);
    let all = d.fake.everything_stored();
    let has = |p: &str, b: &[u8]| all.iter().any(|(path, bytes)| path == p && bytes == b);
    assert!(has("/secret folder", b""));
    assert!(has("/secret folder/note.txt", b"v1"));
    assert!(has("/secret folder/note.txt", b"v2"));
    assert!(has(&format!("upload_session:{pending}"), b"half"));
    assert!(d.fake.files().is_empty());
}

#[test]
fn dropping_the_fake_closes_its_ports() {
    let fake = FakeDropbox::start();
    let addrs = [fake.api_addr(), fake.content_addr(), fake.notify_addr()];
    drop(fake);
    for a in addrs {
        assert!(TcpStream::connect(&a).is_err(), "{a} still open");
    }
}
