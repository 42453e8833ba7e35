//! The fake GitHub API's own tests: each documented behaviour it promises, shown to
//! bite, through a plain HTTP/1.1 client on a TcpStream (so what is checked is the
//! wire, not some client library's reading of it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::fake_github::{expiry_in, FakeGithub, Outage};

const UA: (&str, &str) = ("User-Agent", "ghostie-fs-tests/1");
const CLASSIC: &str = "ghp_classicTestToken0000000000000000000";
const FINE: &str = "github_pat_11FINEGRAINED0000_testtoken";
const DOCS: &str = "https://docs.github.com/rest";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .expect("a message")
            .to_owned()
    }
}

fn connect(fake: &FakeGithub) -> TcpStream {
    let addr = fake.url().trim_start_matches("http://").to_owned();
    let s = TcpStream::connect(addr).expect("connect to the fake");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn request_bytes(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: api.github.test\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        out.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    out.push_str("\r\n");
    out.push_str(body.unwrap_or_default());
    out.into_bytes()
}

/// Sends `raw` on a new connection and reads everything until the server closes it.
fn exchange(fake: &FakeGithub, raw: &[u8]) -> Vec<u8> {
    let mut s = connect(fake);
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("read to the end of the connection");
    out
}

/// One response off a connection, delimited by its Content-Length.
fn read_reply(r: &mut impl BufRead) -> Reply {
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line:?}");
    let status = parts.next().expect("a status").parse().expect("a number");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
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
        .map(|(_, v)| v.parse().unwrap())
        .expect("a content-length");
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn call(
    fake: &FakeGithub,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    let bytes = exchange(fake, &request_bytes(method, path, &all, body));
    let mut r = &bytes[..];
    let reply = read_reply(&mut r);
    assert!(r.is_empty(), "bytes after the response");
    reply
}

fn get(fake: &FakeGithub, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("token {t}"));
    let mut headers = vec![UA, ("Accept", "application/vnd.github+json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    call(fake, "GET", path, &headers, None)
}

fn revoke_call(fake: &FakeGithub, body: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![UA, ("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    call(fake, "POST", "/credentials/revoke", &headers, Some(body))
}

fn credentials(tokens: &[&str]) -> String {
    serde_json::json!({ "credentials": tokens }).to_string()
}

fn fake_with_tokens() -> FakeGithub {
    let fake = FakeGithub::start();
    fake.add_classic_token(CLASSIC, "octo", &["gist", "repo"], None);
    fake.add_fine_grained_token(FINE, "octo", true, None);
    fake
}

// 1. User-Agent

#[test]
fn a_request_without_user_agent_is_forbidden() {
    let fake = fake_with_tokens();
    let auth = format!("token {CLASSIC}");
    for headers in [
        vec![("Authorization", auth.as_str())],
        vec![("Authorization", auth.as_str()), ("User-Agent", "")],
    ] {
        let r = call(&fake, "GET", "/user", &headers, None);
        assert_eq!(r.status, 403);
        assert_eq!(
            r.json(),
            serde_json::json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required)."})
        );
    }
    let anonymous = call(&fake, "GET", "/gists", &[], None);
    assert_eq!(anonymous.status, 403);
    assert_eq!(get(&fake, "/user", Some(CLASSIC)).status, 200);
}

// 2. Authorization

#[test]
fn token_and_bearer_schemes_are_both_accepted() {
    let fake = fake_with_tokens();
    for scheme in ["token", "Bearer", "bearer", "Token"] {
        let auth = format!("{scheme} {CLASSIC}");
        let r = call(&fake, "GET", "/user", &[UA, ("Authorization", &auth)], None);
        assert_eq!(r.status, 200, "{scheme}");
        assert_eq!(r.json()["login"], "octo");
    }
    let basic = format!("Basic {CLASSIC}");
    let r = call(
        &fake,
        "GET",
        "/user",
        &[UA, ("Authorization", &basic)],
        None,
    );
    assert_eq!(r.status, 401, "an unknown scheme is not a token");
}

#[test]
fn an_unknown_token_is_bad_credentials_on_every_endpoint() {
    let fake = fake_with_tokens();
    let bad = serde_json::json!({"message": "Bad credentials", "documentation_url": DOCS, "status": "401"});
    for path in ["/user", "/gists", "/gists?per_page=1", "/no/such/path"] {
        let r = get(&fake, path, Some("ghp_neverIssued"));
        assert_eq!((r.status, r.json()), (401, bad.clone()), "{path}");
        assert_eq!(r.header("x-oauth-scopes"), None);
    }
    let r = revoke_call(&fake, &credentials(&[CLASSIC]), Some("ghp_neverIssued"));
    assert_eq!((r.status, r.json()), (401, bad));
    assert!(!fake.is_revoked(CLASSIC));
}

#[test]
fn a_revoked_token_is_bad_credentials() {
    let fake = fake_with_tokens();
    assert_eq!(get(&fake, "/user", Some(CLASSIC)).status, 200);
    assert!(!fake.is_revoked(CLASSIC));
    fake.revoke(CLASSIC);
    assert!(fake.is_revoked(CLASSIC));
    for path in ["/user", "/gists"] {
        let r = get(&fake, path, Some(CLASSIC));
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.message(), "Bad credentials");
    }
    assert_eq!(
        get(&fake, "/user", Some(FINE)).status,
        200,
        "the user's other token lives on"
    );
}

#[test]
fn an_expired_token_is_bad_credentials() {
    let fake = FakeGithub::start();
    fake.add_classic_token(
        "ghp_old",
        "octo",
        &["gist"],
        Some("2020-01-01 00:00:00 UTC"),
    );
    let tomorrow = expiry_in(Duration::from_secs(86_400));
    fake.add_fine_grained_token("github_pat_new", "octo", true, Some(&tomorrow));
    let r = get(&fake, "/user", Some("ghp_old"));
    assert_eq!((r.status, r.message()), (401, "Bad credentials".to_owned()));
    let r = get(&fake, "/user", Some("github_pat_new"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("github-authentication-token-expiration"),
        Some(tomorrow.as_str())
    );
}

// 3. GET /user

#[test]
fn user_of_a_classic_token() {
    let fake = FakeGithub::start();
    fake.add_classic_token(
        CLASSIC,
        "octo",
        &["gist", "repo"],
        Some("2099-12-07 12:00:00 UTC"),
    );
    let r = get(&fake, "/user", Some(CLASSIC));
    assert_eq!(r.status, 200);
    let user = r.json();
    assert_eq!(user["login"], "octo");
    assert!(user["id"].as_u64().is_some());
    assert!(user["node_id"].as_str().is_some_and(|n| !n.is_empty()));
    assert_eq!(user["type"], "User");
    assert!(user["name"].is_null());
    assert_eq!(r.header("x-oauth-scopes"), Some("gist, repo"));
    assert_eq!(r.header("x-accepted-oauth-scopes"), Some(""));
    assert_eq!(
        r.header("github-authentication-token-expiration"),
        Some("2099-12-07 12:00:00 UTC")
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("x-ratelimit-limit"), Some("5000"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("4999"));
    assert_eq!(r.header("x-ratelimit-used"), Some("1"));
    assert_eq!(r.header("x-ratelimit-resource"), Some("core"));
    let reset: u64 = r
        .header("x-ratelimit-reset")
        .expect("reset")
        .parse()
        .expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 3_500..=now + 3_600).contains(&reset),
        "reset {reset}, now {now}"
    );
    assert!(r
        .header("x-github-request-id")
        .is_some_and(|id| !id.is_empty()));
}

#[test]
fn a_classic_token_without_scopes_has_an_empty_scopes_header() {
    let fake = FakeGithub::start();
    fake.add_classic_token(CLASSIC, "octo", &[], None);
    let r = get(&fake, "/user", Some(CLASSIC));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-oauth-scopes"), Some(""));
    assert_eq!(r.header("github-authentication-token-expiration"), None);
}

#[test]
fn a_fine_grained_token_has_no_scopes_header() {
    let fake = FakeGithub::start();
    fake.add_fine_grained_token(FINE, "octo", false, None);
    let r = get(&fake, "/user", Some(FINE));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["login"], "octo");
    assert_eq!(r.header("x-oauth-scopes"), None);
}

#[test]
fn two_tokens_of_one_user_show_one_user() {
    let fake = fake_with_tokens();
    fake.add_classic_token("ghp_other", "hubot", &["gist"], None);
    let id = |t| get(&fake, "/user", Some(t)).json()["id"].as_u64().unwrap();
    assert_eq!(id(CLASSIC), id(FINE));
    assert_ne!(id(CLASSIC), id("ghp_other"));
}

#[test]
fn user_without_a_token_requires_authentication() {
    let fake = FakeGithub::start();
    let r = get(&fake, "/user", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.message(), "Requires authentication");
    assert_eq!(r.json()["status"], "401");
    assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
}

#[test]
fn every_response_carries_the_rate_limit_headers() {
    let fake = fake_with_tokens();
    let replies = [
        get(&fake, "/user", Some(CLASSIC)),
        get(&fake, "/user", None),
        get(&fake, "/user", Some("ghp_unknown")),
        get(&fake, "/nowhere", Some(CLASSIC)),
        revoke_call(&fake, &credentials(&["ghp_unknown"]), None),
        call(&fake, "GET", "/user", &[], None),
    ];
    for r in &replies {
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-used",
            "x-ratelimit-reset",
            "x-ratelimit-resource",
            "x-github-request-id",
        ] {
            assert!(r.header(h).is_some(), "{h} missing from a {}", r.status);
        }
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
    }
    let ids: std::collections::HashSet<_> = replies
        .iter()
        .map(|r| r.header("x-github-request-id"))
        .collect();
    assert_eq!(ids.len(), replies.len(), "request IDs are unique");
}

// 4. Primary rate limits

#[test]
fn the_61st_unauthenticated_request_in_an_hour_is_refused() {
    let fake = fake_with_tokens();
    fake.set_hourly_limits(5_000, 60);
    for i in 1..=60 {
        let r = get(&fake, "/gists", None);
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((60 - i).to_string().as_str())
        );
    }
    let r = get(&fake, "/gists", None);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-ratelimit-used"), Some("60"));
    assert!(
        r.message()
            .starts_with("API rate limit exceeded for 127.0.0.1. "),
        "{}",
        r.message()
    );
    assert_eq!(
        get(&fake, "/user", Some(CLASSIC)).status,
        200,
        "tokens have their own allowance"
    );
}

#[test]
fn a_token_over_its_hourly_limit_is_refused() {
    let fake = fake_with_tokens();
    fake.add_classic_token("ghp_other", "hubot", &[], None);
    fake.set_hourly_limits(3, 60);
    let id = get(&fake, "/user", Some(CLASSIC)).json()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(get(&fake, "/gists", Some(CLASSIC)).status, 200);
    let third = get(&fake, "/user", Some(CLASSIC));
    assert_eq!(
        (third.status, third.header("x-ratelimit-remaining")),
        (200, Some("0"))
    );
    let r = get(&fake, "/user", Some(CLASSIC));
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    assert!(
        r.message()
            .starts_with(&format!("API rate limit exceeded for user ID {id}. ")),
        "{}",
        r.message()
    );
    assert_eq!(get(&fake, "/user", Some("ghp_other")).status, 200);
    assert_eq!(
        get(&fake, "/user", None).status,
        401,
        "anonymous callers are counted apart"
    );
}

#[test]
fn bad_credentials_count_against_the_client_address() {
    let fake = fake_with_tokens();
    fake.set_hourly_limits(5_000, 2);
    assert_eq!(get(&fake, "/user", Some("ghp_guess1")).status, 401);
    assert_eq!(get(&fake, "/user", None).status, 401);
    let r = get(&fake, "/user", Some("ghp_guess2"));
    assert_eq!(r.status, 403);
    assert!(r
        .message()
        .starts_with("API rate limit exceeded for 127.0.0.1."));
    assert_eq!(get(&fake, "/user", Some(CLASSIC)).status, 200);
}

// 5. POST /credentials/revoke

#[test]
fn revoking_credentials_revokes_each_known_token() {
    let fake = fake_with_tokens();
    let r = revoke_call(
        &fake,
        &credentials(&[CLASSIC, "ghp_unknownToTheFake", FINE]),
        None,
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.json(), serde_json::json!({}));
    assert!(fake.is_revoked(CLASSIC) && fake.is_revoked(FINE));
    assert_eq!(get(&fake, "/user", Some(CLASSIC)).status, 401);
    assert_eq!(get(&fake, "/user", Some(FINE)).status, 401);
}

#[test]
fn an_authenticated_revoke_is_forbidden() {
    let fake = fake_with_tokens();
    for token in [CLASSIC, FINE] {
        let r = revoke_call(&fake, &credentials(&[CLASSIC, FINE]), Some(token));
        assert_eq!(r.status, 403);
    }
    assert!(!fake.is_revoked(CLASSIC) && !fake.is_revoked(FINE));
    assert_eq!(get(&fake, "/user", Some(CLASSIC)).status, 200);
}

#[test]
fn a_revoke_of_the_wrong_shape_fails_validation() {
    let fake = fake_with_tokens();
    fake.set_hourly_limits(5_000, 1_000);
    let too_many: Vec<String> = (0..1_001).map(|i| format!("ghp_{i:036}")).collect();
    let mut with_ours: Vec<&str> = too_many.iter().map(String::as_str).collect();
    with_ours[500] = CLASSIC;
    let invalid = [
        credentials(&with_ours),
        "{}".to_owned(),
        r#"{"credentials":[]}"#.to_owned(),
        r#"{"credentials":"ghp_x"}"#.to_owned(),
        r#"{"credentials":[1,2]}"#.to_owned(),
        r#"{"credentials":null}"#.to_owned(),
    ];
    for body in &invalid {
        let r = revoke_call(&fake, body, None);
        assert_eq!(r.status, 422, "{:.60}", body);
        assert_eq!(r.message(), "Validation Failed");
    }
    assert!(
        !fake.is_revoked(CLASSIC),
        "a refused request revokes nothing"
    );
    // GitHub documents malformed JSON and a body that is no object as 400s.
    for body in [
        "",
        "credentials=ghp_x",
        r#"{"credentials":["#,
        r#"["ghp_x"]"#,
    ] {
        let r = revoke_call(&fake, body, None);
        assert_eq!(r.status, 400, "{body:?}");
    }
    with_ours.pop();
    let r = revoke_call(&fake, &credentials(&with_ours), None);
    assert_eq!(r.status, 202, "a thousand is allowed");
    assert!(fake.is_revoked(CLASSIC));
}

#[test]
fn revoking_counts_against_the_unauthenticated_limit() {
    let fake = fake_with_tokens();
    fake.set_hourly_limits(5_000, 60);
    for _ in 0..59 {
        assert_eq!(get(&fake, "/gists", None).status, 200);
    }
    let r = revoke_call(&fake, &credentials(&["ghp_x"]), None);
    assert_eq!(
        (r.status, r.header("x-ratelimit-remaining")),
        (202, Some("0"))
    );
    let r = revoke_call(&fake, &credentials(&[CLASSIC]), None);
    assert_eq!(r.status, 403);
    assert!(r
        .message()
        .starts_with("API rate limit exceeded for 127.0.0.1."));
    assert!(!fake.is_revoked(CLASSIC));
}

#[test]
fn a_post_without_content_length_is_411() {
    let fake = fake_with_tokens();
    let raw = "POST /credentials/revoke HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nConnection: close\r\n\r\n";
    let r = read_reply(&mut &exchange(&fake, raw.as_bytes())[..]);
    assert_eq!(r.status, 411);
    let body = r#"{"credentials":["ghp_classicTestToken0000000000000000000"]}"#;
    let raw = format!(
        "POST /credentials/revoke HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let r = read_reply(&mut &exchange(&fake, raw.as_bytes())[..]);
    assert_eq!(r.status, 411);
    assert!(!fake.is_revoked(CLASSIC));
}

// 6. GET /gists

#[test]
fn listing_gists_needs_no_permission_but_writing_does() {
    let fake = FakeGithub::start();
    fake.add_classic_token("ghp_noscopes", "octo", &[], None);
    fake.add_classic_token("ghp_gist", "octo", &["gist"], None);
    fake.add_fine_grained_token("github_pat_nogists", "octo", false, None);
    fake.add_fine_grained_token("github_pat_gists", "octo", true, None);
    for token in [
        "ghp_noscopes",
        "ghp_gist",
        "github_pat_nogists",
        "github_pat_gists",
    ] {
        let r = get(&fake, "/gists?per_page=1", Some(token));
        assert_eq!(
            (r.status, r.json()),
            (200, serde_json::json!([])),
            "{token}"
        );
    }
    let empty = r#"{"files":{}}"#;
    let post = |token: &str| {
        let auth = format!("Bearer {token}");
        call(
            &fake,
            "POST",
            "/gists",
            &[UA, ("Authorization", &auth)],
            Some(empty),
        )
    };
    let r = post("ghp_noscopes");
    assert_eq!((r.status, r.message()), (404, "Not Found".to_owned()));
    let r = post("github_pat_nogists");
    assert_eq!(r.status, 403);
    assert_eq!(
        r.message(),
        "Resource not accessible by personal access token"
    );
    for token in ["ghp_gist", "github_pat_gists"] {
        let r = post(token);
        assert_eq!(
            (r.status, r.message()),
            (422, "Validation Failed".to_owned()),
            "{token}"
        );
    }
    let r = call(&fake, "POST", "/gists", &[UA], Some(empty));
    assert_eq!(r.status, 401);
}

// 7. Other paths

#[test]
fn any_other_path_is_not_found() {
    let fake = fake_with_tokens();
    let not_found =
        serde_json::json!({"message": "Not Found", "documentation_url": DOCS, "status": "404"});
    for path in [
        "/",
        "/users",
        "/user/",
        "/gist",
        "/credentials/revoke",
        "/api/v3/user",
    ] {
        let r = get(&fake, path, Some(CLASSIC));
        assert_eq!((r.status, r.json()), (404, not_found.clone()), "{path}");
    }
    let auth = format!("token {CLASSIC}");
    let r = call(
        &fake,
        "POST",
        "/user",
        &[UA, ("Authorization", &auth)],
        Some("{}"),
    );
    assert_eq!(r.status, 404);
}

// 8. API versions

#[test]
fn an_unsupported_api_version_is_400() {
    let fake = fake_with_tokens();
    let auth = format!("token {CLASSIC}");
    for version in ["2022-11-28", "2026-03-10"] {
        let r = call(
            &fake,
            "GET",
            "/user",
            &[
                UA,
                ("Authorization", &auth),
                ("X-GitHub-Api-Version", version),
            ],
            None,
        );
        assert_eq!(r.status, 200, "{version}");
    }
    let r = call(
        &fake,
        "GET",
        "/user",
        &[
            UA,
            ("Authorization", &auth),
            ("X-GitHub-Api-Version", "2021-01-01"),
        ],
        None,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.message(), "API version 2021-01-01 is not supported.");
    assert_eq!(
        get(&fake, "/user", Some(CLASSIC)).status,
        200,
        "no version header is fine"
    );
}

// 9. Outages

#[test]
fn a_server_error_outage_answers_503() {
    let fake = fake_with_tokens();
    fake.set_outage(Outage::ServerError);
    for r in [
        get(&fake, "/user", Some(CLASSIC)),
        get(&fake, "/nowhere", None),
        call(&fake, "GET", "/user", &[], None),
    ] {
        assert_eq!(r.status, 503);
        assert_eq!(
            r.json(),
            serde_json::json!({"message": "Service unavailable"})
        );
    }
    fake.set_outage(Outage::None);
    assert_eq!(get(&fake, "/user", Some(CLASSIC)).status, 200);
    let statuses: Vec<u16> = fake.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 503, 503, 200]);
}

#[test]
fn cut_connections_read_as_end_of_stream() {
    let fake = fake_with_tokens();
    fake.set_outage(Outage::CutConnections);
    let raw = request_bytes("GET", "/user", &[UA, ("Connection", "close")], None);
    assert!(exchange(&fake, &raw).is_empty());
    // Without `Connection: close` too: the fake does not wait for the client to end.
    let raw = request_bytes(
        "POST",
        "/credentials/revoke",
        &[UA],
        Some(&credentials(&[CLASSIC])),
    );
    assert!(exchange(&fake, &raw).is_empty());
    assert!(!fake.is_revoked(CLASSIC));
    fake.set_outage(Outage::None);
    assert_eq!(get(&fake, "/user", Some(CLASSIC)).status, 200);
    let seen: Vec<(String, u16)> = fake
        .seen()
        .into_iter()
        .map(|s| (s.path, s.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("/user".to_owned(), 0),
            ("/credentials/revoke".to_owned(), 0),
            ("/user".to_owned(), 200)
        ]
    );
}

#[test]
fn a_not_github_outage_answers_an_html_page() {
    let fake = fake_with_tokens();
    fake.set_outage(Outage::NotGithub);
    let r = get(&fake, "/user", Some(CLASSIC));
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert!(r.body.starts_with("<html>") && r.body.ends_with("</html>"));
    assert_eq!(r.header("x-oauth-scopes"), None);
    assert_eq!(r.header("x-ratelimit-limit"), None);
    fake.set_outage(Outage::None);
    assert_eq!(get(&fake, "/user", Some(CLASSIC)).json()["login"], "octo");
    assert_eq!(fake.seen().len(), 2);
}

// The server itself

#[test]
fn every_request_is_seen_in_order() {
    let fake = fake_with_tokens();
    get(&fake, "/user", Some(CLASSIC));
    call(
        &fake,
        "GET",
        "/gists?per_page=1",
        &[("Authorization", "Bearer x")],
        None,
    );
    revoke_call(&fake, &credentials(&["ghp_x"]), None);
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        (
            seen[0].method.as_str(),
            seen[0].path.as_str(),
            seen[0].status
        ),
        ("GET", "/user", 200)
    );
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("token {CLASSIC}").as_str())
    );
    assert_eq!(seen[0].user_agent.as_deref(), Some(UA.1));
    assert_eq!((seen[1].path.as_str(), seen[1].status), ("/gists", 403));
    assert_eq!(seen[1].authorization.as_deref(), Some("Bearer x"));
    assert_eq!(seen[1].user_agent, None);
    assert_eq!(
        (
            seen[2].method.as_str(),
            seen[2].path.as_str(),
            seen[2].status
        ),
        ("POST", "/credentials/revoke", 202)
    );
    assert_eq!(seen[2].authorization, None);
}

#[test]
fn one_connection_carries_several_requests() {
    let fake = fake_with_tokens();
    let s = connect(&fake);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let auth = format!("token {CLASSIC}");
    w.write_all(&request_bytes(
        "GET",
        "/user",
        &[UA, ("Authorization", &auth)],
        None,
    ))
    .unwrap();
    assert_eq!(read_reply(&mut r).status, 200);
    w.write_all(&request_bytes(
        "POST",
        "/credentials/revoke",
        &[UA],
        Some(&credentials(&["ghp_x"])),
    ))
    .unwrap();
    assert_eq!(read_reply(&mut r).status, 202);
    // Two at once (pipelined) are answered in order.
    let mut both = request_bytes("GET", "/gists", &[UA, ("Authorization", &auth)], None);
    both.extend(request_bytes(
        "GET",
        "/nowhere",
        &[UA, ("Connection", "close")],
        None,
    ));
    w.write_all(&both).unwrap();
    assert_eq!(read_reply(&mut r).status, 200);
    let last = read_reply(&mut r);
    assert_eq!(
        (last.status, last.header("connection")),
        (404, Some("close"))
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(fake.seen().len(), 4);
}

#[test]
fn dropping_the_fake_stops_it() {
    let fake = fake_with_tokens();
    let addr = fake.url().trim_start_matches("http://").to_owned();
    let idle = connect(&fake);
    let mut w = idle.try_clone().unwrap();
    let mut r = BufReader::new(idle);
    w.write_all(&request_bytes("GET", "/gists", &[UA], None))
        .unwrap();
    assert_eq!(read_reply(&mut r).status, 200);
    drop(fake);
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap_or(0),
        0,
        "a kept-alive connection is closed"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens any more"
    );
}

#[test]
fn a_stalled_fake_answers_nothing_until_the_stall_ends() {
    let fake = fake_with_tokens();
    fake.set_outage(Outage::Stall);
    let addr = fake.url().trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .expect("timeout");
    let request = request_bytes("GET", "/user", &[UA, ("Connection", "close")], None);
    std::io::Write::write_all(&mut stream, &request).expect("send");
    let mut buf = [0u8; 64];
    let e = std::io::Read::read(&mut stream, &mut buf).expect_err("an answer came");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    fake.set_outage(Outage::None);
    // The stalled connection is closed, unanswered, once the stall ends.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(std::io::Read::read(&mut stream, &mut buf).expect("end"), 0);
    assert_eq!(fake.seen()[0].status, 0);
}

#[test]
fn a_redirecting_fake_points_elsewhere() {
    let fake = fake_with_tokens();
    fake.set_outage(Outage::RedirectToPort(4321));
    let r = get(&fake, "/user", Some(CLASSIC));
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some("http://127.0.0.1:4321/user"));
}
