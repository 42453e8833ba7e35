//! The fake Google Drive's own tests: each documented behaviour it promises,
//! shown to bite, through a plain HTTP/1.1 client on a TcpStream (so what is
//! checked is the wire, not some client library's reading of it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::fake_gdrive::{ClientKind, FakeGdrive, Outage};

const CLIENT: &str = "1234-desktop.apps.googleusercontent.com";
const SECRET: &str = "GOCSPX-desktop-secret";
const TV: &str = "5678-tv.apps.googleusercontent.com";
const TV_SECRET: &str = "GOCSPX-tv-secret";
const APPDATA: &str = "https://www.googleapis.com/auth/drive.appdata";
const KIB: usize = 1024;
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

    /// `errors[0].reason` of a Drive error.
    fn reason(&self) -> String {
        self.json()["error"]["errors"][0]["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("no reason: {}", self.text()))
            .to_owned()
    }

    /// `error` of an OAuth error.
    fn oauth_error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {}", self.text()))
            .to_owned()
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the fake");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    s
}

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
        .map_or(0, |(_, v)| v.parse().expect("a length"));
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("the body");
    Reply {
        status,
        headers,
        body,
    }
}

fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: www.googleapis.test\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One request on a new connection, closed after it.
fn call(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    let mut s = connect(addr);
    s.write_all(&request_bytes(method, target, &all, body))
        .expect("send the request");
    let mut r = BufReader::new(s);
    read_reply(&mut r)
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form(fake: &FakeGdrive, path: &str, body: &str) -> Reply {
    call(
        &fake.addr(),
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
}

fn refresh(fake: &FakeGdrive, client: &str, secret: &str, token: &str) -> Reply {
    form(
        fake,
        "/token",
        &format!(
            "grant_type=refresh_token&refresh_token={}&client_id={}&client_secret={}",
            enc(token),
            enc(client),
            enc(secret)
        ),
    )
}

fn multipart(meta: &Value, data: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--fakeb\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n\
         --fakeb\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n--fakeb--\r\n");
    b
}

/// The test user, signed in with a Desktop client in testing, the budget lifted
/// so only the rate test meets it.
struct Gd {
    fake: FakeGdrive,
    token: String,
}

impl Gd {
    fn new() -> Self {
        let fake = FakeGdrive::start();
        fake.add_client(CLIENT, SECRET, ClientKind::Desktop, true);
        fake.set_rate_limit(1e9, 1_000_000);
        let rt = fake.grant(CLIENT);
        let r = refresh(&fake, CLIENT, SECRET, &rt);
        assert_eq!(r.status, 200, "{}", r.text());
        let token = r.json()["access_token"]
            .as_str()
            .expect("a token")
            .to_owned();
        Self { fake, token }
    }

    fn req(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let auth = format!("Bearer {}", self.token);
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        call(&self.fake.addr(), method, target, &all, body)
    }

    fn get(&self, target: &str) -> Reply {
        self.req("GET", target, &[], b"")
    }

    /// A multipart upload into the appDataFolder; the new file's resource.
    fn upload(&self, meta: Value, data: &[u8]) -> Reply {
        let mut meta = meta;
        if meta.get("parents").is_none() {
            meta["parents"] = json!(["appDataFolder"]);
        }
        self.req(
            "POST",
            "/upload/drive/v3/files?uploadType=multipart&fields=*",
            &[("Content-Type", "multipart/related; boundary=fakeb")],
            &multipart(&meta, data),
        )
    }

    fn create(&self, name: &str, data: &[u8]) -> String {
        let r = self.upload(json!({ "name": name }), data);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["id"].as_str().expect("an id").to_owned()
    }

    fn download(&self, id: &str) -> Vec<u8> {
        let r = self.get(&format!("/drive/v3/files/{id}?alt=media"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.body
    }

    /// Every page of a files.list, as (files, page sizes).
    fn list_all(&self, q: &str, page_size: usize) -> (Vec<Value>, Vec<usize>) {
        let mut files = Vec::new();
        let mut sizes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut target = format!(
                "/drive/v3/files?spaces=appDataFolder&pageSize={page_size}&q={}&fields={}",
                enc(q),
                enc("nextPageToken,files(id,name,size)")
            );
            if let Some(t) = &token {
                target.push_str(&format!("&pageToken={}", enc(t)));
            }
            let r = self.get(&target);
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            let page = v["files"].as_array().expect("files").clone();
            sizes.push(page.len());
            files.extend(page);
            match v["nextPageToken"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => return (files, sizes),
            }
        }
    }
}

#[test]
fn names_are_not_unique() {
    let g = Gd::new();
    let a = g.create("notes.md", b"one");
    let b = g.create("notes.md", b"two");
    assert_ne!(a, b, "a second create of one name makes a second file");
    let (files, _) = g.list_all("name = 'notes.md'", 100);
    assert_eq!(files.len(), 2);
    assert_eq!(g.fake.duplicate_names(), 1);
    assert_eq!(g.fake.files().len(), 2);
}

#[test]
fn if_match_is_ignored_and_the_last_writer_wins() {
    let g = Gd::new();
    let id = g.create("state", b"v1");
    let r = g.req(
        "PATCH",
        &format!("/upload/drive/v3/files/{id}?uploadType=media"),
        &[("If-Match", "\"an-etag-that-never-was\"")],
        b"v2",
    );
    assert_eq!(
        r.status,
        200,
        "a precondition is not looked at: {}",
        r.text()
    );
    assert_eq!(g.download(&id), b"v2");
    let r = g.req(
        "PATCH",
        &format!("/drive/v3/files/{id}"),
        &[("If-Match", "*"), ("Content-Type", "application/json")],
        json!({ "name": "renamed" }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "renamed");
}

#[test]
fn simple_uploads_stop_at_5_mb() {
    let g = Gd::new();
    let id = g.create("big", &vec![7; 5 * MIB]);
    assert_eq!(g.download(&id).len(), 5 * MIB, "exactly 5 MB is fine");
    let r = g.upload(json!({ "name": "bigger" }), &vec![7; 5 * MIB + 1]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.reason(), "uploadTooLarge");
    let r = g.req(
        "PATCH",
        &format!("/upload/drive/v3/files/{id}?uploadType=media"),
        &[],
        &vec![1; 5 * MIB + 1],
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        g.download(&id).len(),
        5 * MIB,
        "the refused upload changed nothing"
    );
}

fn start_session(g: &Gd, name: &str, total: usize) -> String {
    let r = g.req(
        "POST",
        "/upload/drive/v3/files?uploadType=resumable&fields=id,name,size,sha256Checksum",
        &[
            ("Content-Type", "application/json; charset=UTF-8"),
            ("X-Upload-Content-Length", &total.to_string()),
        ],
        json!({ "name": name, "parents": ["appDataFolder"] })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let location = r.header("location").expect("a Location").to_owned();
    assert!(location.contains("upload_id="), "{location}");
    location
        .split_once("www.googleapis.test")
        .expect("the request's host")
        .1
        .to_owned()
}

fn put_chunk(g: &Gd, session: &str, range: &str, data: &[u8]) -> Reply {
    // No bearer: the session URI is the credential.
    call(
        &g.fake.addr(),
        "PUT",
        session,
        &[("Content-Range", range)],
        data,
    )
}

#[test]
fn resumable_uploads_take_256_kib_multiples_answer_308_and_resume_after_a_cut() {
    let g = Gd::new();
    let total = 600 * KIB;
    let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let session = start_session(&g, "blob", total);

    let r = put_chunk(
        &g,
        &session,
        &format!("bytes 0-{}/{total}", 100 * KIB - 1),
        &data[..100 * KIB],
    );
    assert_eq!(
        r.status,
        400,
        "a chunk not a multiple of 256 KiB: {}",
        r.text()
    );
    assert_eq!(r.reason(), "badRequest");

    let first = 256 * KIB;
    let r = put_chunk(
        &g,
        &session,
        &format!("bytes 0-{}/{total}", first - 1),
        &data[..first],
    );
    assert_eq!(r.status, 308, "{}", r.text());
    assert_eq!(
        r.header("range"),
        Some(format!("bytes=0-{}", first - 1).as_str())
    );

    // A chunk cut off mid-body: the client's connection drops.
    let mut s = connect(&g.fake.addr());
    let head = format!(
        "PUT {session} HTTP/1.1\r\nHost: x\r\nContent-Range: bytes {first}-{}/{total}\r\nContent-Length: {}\r\n\r\n",
        2 * first - 1,
        first
    );
    s.write_all(head.as_bytes()).expect("the head");
    s.write_all(&data[first..first + 1000])
        .expect("part of the body");
    drop(s);

    let r = put_chunk(&g, &session, &format!("bytes */{total}"), b"");
    assert_eq!(r.status, 308, "the status query: {}", r.text());
    assert_eq!(
        r.header("range"),
        Some(format!("bytes=0-{}", first - 1).as_str()),
        "the cut chunk added nothing; the session lives on"
    );

    let r = put_chunk(
        &g,
        &session,
        &format!("bytes 1000-{}/{total}", first + 999),
        &data[1000..first + 1000],
    );
    assert_eq!(
        r.status, 400,
        "a chunk must start where the server's data ends"
    );

    let r = put_chunk(
        &g,
        &session,
        &format!("bytes {first}-{}/{total}", 2 * first - 1),
        &data[first..2 * first],
    );
    assert_eq!(r.status, 308);
    let r = put_chunk(
        &g,
        &session,
        &format!("bytes {}-{}/{total}", 2 * first, total - 1),
        &data[2 * first..],
    );
    assert_eq!(
        r.status,
        200,
        "the last chunk may be any size: {}",
        r.text()
    );
    let v = r.json();
    assert_eq!(v["size"], total.to_string());
    assert_eq!(v["sha256Checksum"], hex::encode(Sha256::digest(&data)));
    assert_eq!(g.download(v["id"].as_str().expect("an id")), data);
}

#[test]
fn resumable_uploads_replace_content_and_take_big_chunks() {
    let g = Gd::new();
    let id = g.create("big", b"old");
    let total = 24 * MIB;
    let data: Vec<u8> = (0..total).map(|i| (i % 253) as u8).collect();
    let r = g.req(
        "PATCH",
        &format!("/upload/drive/v3/files/{id}?uploadType=resumable"),
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let location = r.header("location").expect("a Location").to_owned();
    let session = location
        .split_once("www.googleapis.test")
        .expect("host")
        .1
        .to_owned();
    // Total unknown until the last chunk, as a streaming client sends it.
    let chunk = 8 * MIB;
    for start in (0..total).step_by(chunk) {
        let end = (start + chunk).min(total);
        let t = if end == total {
            total.to_string()
        } else {
            "*".into()
        };
        let r = put_chunk(
            &g,
            &session,
            &format!("bytes {start}-{}/{t}", end - 1),
            &data[start..end],
        );
        assert_eq!(
            r.status,
            if end == total { 200 } else { 308 },
            "{}",
            r.text()
        );
    }
    assert_eq!(g.download(&id), data);
}

#[test]
fn downloads_honour_range() {
    let g = Gd::new();
    let id = g.create("r", b"0123456789");
    let ranged = |range: &str| {
        g.req(
            "GET",
            &format!("/drive/v3/files/{id}?alt=media"),
            &[("Range", range)],
            b"",
        )
    };
    let r = ranged("bytes=2-5");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    let r = ranged("bytes=7-");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"789"[..]));
    let r = ranged("bytes=-3");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"789"[..]));
    assert_eq!(ranged("bytes=10-20").status, 416);
}

#[test]
fn q_takes_only_eq_ne_and_contains_on_names() {
    let g = Gd::new();
    g.create("alpha", b"a");
    g.create("beta", b"b");
    for bad in [
        "name > 'alpha'",
        "name < 'b'",
        "name >= 'a'",
        "size = 3",
        "name = alpha",
    ] {
        let r = g.get(&format!(
            "/drive/v3/files?spaces=appDataFolder&q={}",
            enc(bad)
        ));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.reason(), "invalid");
        assert_eq!(r.json()["error"]["errors"][0]["location"], "q");
    }
    let names = |q: &str| {
        let (files, _) = g.list_all(q, 100);
        let mut n: Vec<String> = files
            .iter()
            .map(|f| f["name"].as_str().expect("name").to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("name contains 'alp'"), ["alpha"]);
    assert_eq!(names("name != 'alpha' and trashed = false"), ["beta"]);
    assert_eq!(
        names("'appDataFolder' in parents and trashed = false"),
        ["alpha", "beta"]
    );
    let r = g.get("/drive/v3/files?spaces=appDataFolder&pageSize=1001");
    assert_eq!(r.status, 400, "pageSize stops at 1,000");
}

#[test]
fn pages_come_back_short_or_empty_before_the_end() {
    let g = Gd::new();
    for i in 0..9 {
        g.create(&format!("f{i}"), b"x");
    }
    g.fake.set_short_pages(true);
    let (files, sizes) = g.list_all("", 4);
    assert_eq!(files.len(), 9, "every file, over pages {sizes:?}");
    assert!(
        sizes.iter().rev().skip(1).any(|s| *s == 0),
        "an empty page before the end: {sizes:?}"
    );
    assert!(
        sizes.iter().rev().skip(1).any(|s| *s > 0 && *s < 4),
        "a short page: {sizes:?}"
    );

    // Without `nextPageToken` in `fields` a client never learns there is more.
    let r = g.get(&format!(
        "/drive/v3/files?spaces=appDataFolder&pageSize=2&fields={}",
        enc("files(id)")
    ));
    assert!(r.json().get("nextPageToken").is_none());

    // Off, pages are still short now and then.
    g.fake.set_short_pages(false);
    let mut seen_short = false;
    for _ in 0..12 {
        let (files, sizes) = g.list_all("", 4);
        assert_eq!(files.len(), 9);
        seen_short |= sizes.iter().rev().skip(1).any(|s| *s < 4);
    }
    assert!(seen_short);
}

#[test]
fn the_default_fields_hide_size_and_checksums() {
    let g = Gd::new();
    let id = g.create("f", b"abc");
    let v = g.get(&format!("/drive/v3/files/{id}")).json();
    assert_eq!(v["name"], "f");
    assert!(
        v.get("size").is_none() && v.get("sha256Checksum").is_none(),
        "{v}"
    );
    let v = g
        .get(&format!(
            "/drive/v3/files/{id}?fields=size,appProperties,parents"
        ))
        .json();
    assert_eq!(v["size"], "3");
    assert_ne!(
        v["parents"][0], "appDataFolder",
        "parents holds the folder's real id"
    );
}

#[test]
fn the_changes_feed_shows_each_change_since_once_and_removals() {
    let g = Gd::new();
    let old = g.create("before", b"x");
    let start = g.get("/drive/v3/changes/startPageToken").json()["startPageToken"]
        .as_str()
        .expect("a token")
        .to_owned();
    let a = g.create("a", b"1");
    let b = g.create("b", b"2");
    let r = g.req(
        "PATCH",
        &format!("/drive/v3/files/{a}"),
        &[("Content-Type", "application/json")],
        json!({ "appProperties": { "seq": "7" } })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        g.req("DELETE", &format!("/drive/v3/files/{b}"), &[], b"")
            .status,
        204
    );
    g.fake.put_in_my_drive("user file", b"not ours");

    let r = g.get(&format!(
        "/drive/v3/changes?spaces=appDataFolder&pageToken={start}&fields=*"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let changes = v["changes"].as_array().expect("changes");
    let ids: Vec<&str> = changes
        .iter()
        .map(|c| c["fileId"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [a.as_str(), b.as_str()], "{v}");
    assert!(!ids.contains(&old.as_str()));
    assert_eq!(changes[0]["removed"], false);
    assert_eq!(changes[0]["file"]["appProperties"]["seq"], "7");
    assert_eq!(changes[1]["removed"], true);
    assert!(changes[1].get("file").is_none());
    let next = v["newStartPageToken"]
        .as_str()
        .expect("the end of the feed");
    let v = g
        .get(&format!(
            "/drive/v3/changes?spaces=appDataFolder&pageToken={next}"
        ))
        .json();
    assert_eq!(v["changes"], json!([]));
}

#[test]
fn a_client_that_does_not_pace_is_refused_with_googles_shapes() {
    let g = Gd::new();
    g.fake.set_rate_limit(10.0, 5);
    let mut statuses = Vec::new();
    let mut reasons = Vec::new();
    for _ in 0..30 {
        let r = g.get("/drive/v3/files?spaces=appDataFolder");
        if r.status != 200 {
            let v = r.json();
            assert_eq!(v["error"]["code"], r.status);
            assert_eq!(v["error"]["errors"][0]["domain"], "usageLimits");
            reasons.push(r.reason());
        }
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&403) && statuses.contains(&429),
        "{statuses:?}"
    );
    assert!(reasons.iter().any(|r| r == "userRateLimitExceeded"));
    assert!(reasons.iter().any(|r| r == "rateLimitExceeded"));
    assert!(g.fake.rate_refusals() >= 20, "{}", g.fake.rate_refusals());
    // Backing off works: the budget refills.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(g.get("/drive/v3/files?spaces=appDataFolder").status, 200);
}

#[test]
fn access_tokens_die_after_an_hour_and_refresh_does_not_rotate() {
    let g = Gd::new();
    let rt = g.fake.grant(CLIENT);
    let r = refresh(&g.fake, CLIENT, SECRET, &rt);
    let v = r.json();
    assert_eq!(v["expires_in"], 3599);
    assert_eq!(v["token_type"], "Bearer");
    assert!(
        v.get("refresh_token").is_none(),
        "Google does not rotate: {v}"
    );
    g.fake.advance_clock(Duration::from_secs(3_601));
    let r = g.get("/drive/v3/files?spaces=appDataFolder");
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "authError");
    assert!(r
        .header("www-authenticate")
        .expect("a challenge")
        .contains("error=\"invalid_token\""));
    let r = refresh(&g.fake, CLIENT, "wrong", &rt);
    assert_eq!((r.status, r.oauth_error()), (401, "invalid_client".into()));
    let r = refresh(&g.fake, CLIENT, SECRET, &rt);
    assert_eq!(r.status, 200, "the refresh token outlives its access token");
}

#[test]
fn a_testing_clients_refresh_tokens_die_after_seven_days() {
    let fake = FakeGdrive::start();
    fake.add_client(CLIENT, SECRET, ClientKind::Desktop, true);
    fake.add_client("prod", "prod-secret", ClientKind::Desktop, false);
    let testing = fake.grant(CLIENT);
    let production = fake.grant("prod");
    fake.advance_clock(Duration::from_secs(7 * 24 * 3_600 - 60));
    assert_eq!(refresh(&fake, CLIENT, SECRET, &testing).status, 200);
    fake.advance_clock(Duration::from_secs(61));
    let r = refresh(&fake, CLIENT, SECRET, &testing);
    assert_eq!(r.status, 400);
    assert_eq!(r.oauth_error(), "invalid_grant");
    assert_eq!(
        refresh(&fake, "prod", "prod-secret", &production).status,
        200
    );
}

#[test]
fn revocation_ends_the_refresh_token_and_its_access_tokens() {
    let fake = FakeGdrive::start();
    fake.add_client(CLIENT, SECRET, ClientKind::Desktop, false);
    let rt = fake.grant(CLIENT);
    let at = refresh(&fake, CLIENT, SECRET, &rt).json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let r = form(&fake, &format!("/revoke?token={}", enc(&rt)), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        refresh(&fake, CLIENT, SECRET, &rt).oauth_error(),
        "invalid_grant"
    );
    let auth = format!("Bearer {at}");
    let r = call(
        &fake.addr(),
        "GET",
        "/drive/v3/files?spaces=appDataFolder",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        form(&fake, &format!("/revoke?token={}", enc(&rt)), "").status,
        400
    );
}

fn consent_url(fake: &FakeGdrive, redirect: &str, challenge: &str, offline: bool) -> String {
    format!(
        "{}/o/oauth2/v2/auth?client_id={}&redirect_uri={}&response_type=code&scope={}&code_challenge={challenge}&code_challenge_method=S256&state=xyz{}",
        fake.url(),
        enc(CLIENT),
        enc(redirect),
        enc(APPDATA),
        if offline { "&access_type=offline" } else { "" }
    )
}

#[test]
fn the_loopback_flow_needs_pkce_a_loopback_redirect_and_offline_access() {
    let fake = FakeGdrive::start();
    fake.add_client(CLIENT, SECRET, ClientKind::Desktop, true);
    let verifier = "a-verifier-of-at-least-forty-three-characters-long-0123";
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    let redirect = "http://127.0.0.1:51234/callback";
    assert!(fake
        .approve(&consent_url(
            &fake,
            "https://example.com/cb",
            &challenge,
            true
        ))
        .is_err());
    assert!(fake
        .approve(&consent_url(&fake, redirect, "short", true))
        .is_err());
    assert_eq!(
        call(&fake.addr(), "GET", "/o/oauth2/v2/auth", &[], b"").status,
        200
    );

    let exchange = |code: &str, verifier: &str| {
        form(
            &fake,
            "/token",
            &format!(
                "grant_type=authorization_code&code={}&client_id={}&client_secret={SECRET}&redirect_uri={}&code_verifier={verifier}",
                enc(code),
                enc(CLIENT),
                enc(redirect)
            ),
        )
    };
    let code = fake
        .approve(&consent_url(&fake, redirect, &challenge, true))
        .expect("a code");
    let r = exchange(&code, "not-the-verifier-not-the-verifier-not-the-verifier");
    assert_eq!((r.status, r.oauth_error()), (400, "invalid_grant".into()));

    let code = fake
        .approve(&consent_url(&fake, redirect, &challenge, true))
        .expect("a code");
    let r = exchange(&code, verifier);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["refresh_token"].is_string());
    assert_eq!(
        v["refresh_token_expires_in"], 604_799,
        "a testing client's week"
    );
    assert_eq!(exchange(&code, verifier).status, 400, "a code is good once");

    let code = fake
        .approve(&consent_url(&fake, redirect, &challenge, false))
        .expect("a code");
    let v = exchange(&code, verifier).json();
    assert!(
        v.get("refresh_token").is_none(),
        "no access_type=offline, no refresh token"
    );
}

#[test]
fn the_device_flow_is_for_limited_input_clients_and_narrow_scopes() {
    let fake = FakeGdrive::start();
    fake.add_client(CLIENT, SECRET, ClientKind::Desktop, false);
    fake.add_client(TV, TV_SECRET, ClientKind::LimitedInput, false);
    let device = |client: &str, scope: &str| {
        form(
            &fake,
            "/device/code",
            &format!("client_id={}&scope={}", enc(client), enc(scope)),
        )
    };
    assert_eq!(device(CLIENT, APPDATA).oauth_error(), "invalid_client");
    let r = device(TV, "https://www.googleapis.com/auth/drive");
    assert_eq!((r.status, r.oauth_error()), (400, "invalid_scope".into()));
    let poll = |code: &str| {
        form(
            &fake,
            "/token",
            &format!(
                "grant_type={}&device_code={}&client_id={}&client_secret={TV_SECRET}",
                enc("urn:ietf:params:oauth:grant-type:device_code"),
                enc(code),
                enc(TV)
            ),
        )
    };

    let v = device(TV, APPDATA).json();
    assert_eq!(v["interval"], 5);
    assert_eq!(v["verification_url"], "https://www.google.com/device");
    let code = v["device_code"].as_str().expect("a device code").to_owned();
    let user_code = v["user_code"].as_str().expect("a user code").to_owned();
    assert_eq!(poll(&code).oauth_error(), "authorization_pending");
    assert_eq!(
        poll(&code).oauth_error(),
        "slow_down",
        "polled sooner than the interval"
    );
    fake.approve_device(&user_code).expect("the user approves");
    fake.advance_clock(Duration::from_secs(5));
    let r = poll(&code);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["refresh_token"].is_string());

    let v = device(TV, APPDATA).json();
    let code = v["device_code"].as_str().expect("a device code").to_owned();
    fake.deny_device(v["user_code"].as_str().expect("a user code"))
        .expect("the user refuses");
    assert_eq!(poll(&code).oauth_error(), "access_denied");

    let code = device(TV, APPDATA).json()["device_code"]
        .as_str()
        .expect("code")
        .to_owned();
    fake.advance_clock(Duration::from_secs(1_801));
    assert_eq!(poll(&code).oauth_error(), "expired_token");
}

#[test]
fn the_app_data_folder_is_a_space_apart_that_cannot_be_trashed_or_shared() {
    let g = Gd::new();
    let mine = g.create("ours", b"x");
    let theirs = g.fake.put_in_my_drive("their diary", b"private");
    let (files, _) = g.list_all("", 100);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(g.get(&format!("/drive/v3/files/{theirs}")).status, 404);
    let r = g.get("/drive/v3/files?spaces=drive");
    assert_eq!(
        r.status, 403,
        "an appdata token cannot list the user's Drive"
    );
    // Without parents a file would go to My Drive's root, out of reach.
    let r = g.req(
        "POST",
        "/upload/drive/v3/files?uploadType=media",
        &[],
        b"data",
    );
    assert_eq!(r.status, 403, "{}", r.text());

    let r = g.req(
        "PATCH",
        &format!("/drive/v3/files/{mine}"),
        &[("Content-Type", "application/json")],
        json!({ "trashed": true }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = g.req(
        "POST",
        &format!("/drive/v3/files/{mine}/permissions"),
        &[("Content-Type", "application/json")],
        json!({ "role": "reader", "type": "anyone" })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(g.fake.files().len(), 1);
}

#[test]
fn not_found_and_everything_stored() {
    let g = Gd::new();
    let r = g.get("/drive/v3/files/nosuchfile");
    assert_eq!(r.status, 404);
    assert_eq!(r.reason(), "notFound");
    let id = g.create("first", b"v1");
    g.req(
        "PATCH",
        &format!("/upload/drive/v3/files/{id}?uploadType=media"),
        &[],
        b"v2",
    );
    g.req("DELETE", &format!("/drive/v3/files/{id}"), &[], b"");
    let all = g.fake.everything_stored();
    assert!(all.iter().any(|(_, d)| d == b"v1") && all.iter().any(|(_, d)| d == b"v2"));
    assert!(g.fake.files().is_empty());
    assert_eq!(g.fake.count("DELETE", "/drive/v3/files/"), 1);
}

#[test]
fn connections_are_kept_alive() {
    let g = Gd::new();
    let mut s = connect(&g.fake.addr());
    let auth = format!("Bearer {}", g.token);
    let mut r = BufReader::new(s.try_clone().expect("a clone"));
    for _ in 0..3 {
        s.write_all(&request_bytes(
            "GET",
            "/drive/v3/files?spaces=appDataFolder",
            &[("Authorization", &auth)],
            b"",
        ))
        .expect("send");
        assert_eq!(read_reply(&mut r).status, 200);
    }
}

#[test]
fn outages() {
    let g = Gd::new();
    let list = "/drive/v3/files?spaces=appDataFolder";
    g.fake.set_outage(Outage::ServerError);
    let (a, b) = (g.get(list), g.get(list));
    assert_eq!((a.status, b.status), (503, 500));
    assert_eq!(a.reason(), "backendError");
    g.fake.set_outage(Outage::RateLimited);
    let (a, b) = (g.get(list), g.get(list));
    assert_eq!((a.status, b.status), (403, 429));
    g.fake.set_outage(Outage::NotGoogle);
    let r = g.get(list);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<html>"));
    g.fake.set_outage(Outage::CutConnections);
    let mut s = connect(&g.fake.addr());
    s.write_all(&request_bytes("GET", list, &[], b""))
        .expect("send");
    let mut buf = Vec::new();
    assert_eq!(
        s.read_to_end(&mut buf).expect("an end"),
        0,
        "no answer at all"
    );
    g.fake.set_outage(Outage::Stall);
    let mut s = connect(&g.fake.addr());
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("a timeout");
    s.write_all(&request_bytes("GET", list, &[], b""))
        .expect("send");
    assert!(s.read(&mut [0; 1]).is_err(), "the stall answers nothing");
    g.fake.set_outage(Outage::None);
    assert_eq!(g.get(list).status, 200);
    assert!(g.fake.seen().iter().any(|s| s.status == 0));
}

#[test]
fn about_needs_fields_and_counts_the_space_used() {
    let g = Gd::new();
    let r = g.get("/drive/v3/about");
    assert_eq!((r.status, r.reason()), (400, "required".to_owned()));
    g.create("a", &[7u8; 1000]);
    g.create("b", &[7u8; 500]);
    let v = g
        .get(&format!(
            "/drive/v3/about?fields={}",
            enc("user(emailAddress),storageQuota(usage,limit)")
        ))
        .json();
    assert_eq!(v["user"]["emailAddress"], "ghost.owner@gmail.com", "{v}");
    assert!(v["user"].get("displayName").is_none(), "{v}");
    assert_eq!(v["storageQuota"]["usage"], "1500", "{v}");
    assert!(v["storageQuota"]["limit"].as_str().is_some(), "{v}");
    // Without a token, nobody's account.
    let r = call(
        &g.fake.addr(),
        "GET",
        "/drive/v3/about?fields=user",
        &[],
        b"",
    );
    assert_eq!(r.status, 401);
}
