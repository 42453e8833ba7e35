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
    let len: usize = match headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        Some((_, v)) => v.parse().unwrap(),
        // A 204 or a 304 has no body, and no length to say so (RFC 9110 §8.6).
        None if matches!(status, 204 | 304) => 0,
        None => panic!("no content-length on a {status}"),
    };
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

// 10. The Gist API

const HUBOT: &str = "ghp_hubotTestToken00000000000000000000";
const MIB: usize = 1024 * 1024;

fn fake_with_gist_users() -> FakeGithub {
    let fake = fake_with_tokens();
    fake.add_classic_token(HUBOT, "hubot", &["gist"], None);
    fake
}

/// An API request as the product makes it; `token` None for an anonymous one.
fn api(
    fake: &FakeGithub,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    extra: &[(&str, &str)],
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        UA,
        ("Accept", "application/vnd.github+json"),
        ("X-GitHub-Api-Version", "2022-11-28"),
    ];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    headers.extend_from_slice(extra);
    call(fake, method, path, &headers, body)
}

fn files_body(files: &[(&str, &str)]) -> String {
    let files: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|(name, content)| (name.to_string(), serde_json::json!({ "content": content })))
        .collect();
    serde_json::json!({ "description": "opaque", "public": false, "files": files }).to_string()
}

fn create(fake: &FakeGithub, token: &str, files: &[(&str, &str)]) -> serde_json::Value {
    let r = api(
        fake,
        "POST",
        "/gists",
        Some(token),
        Some(&files_body(files)),
        &[],
    );
    assert_eq!(r.status, 201, "{:.300}", r.body);
    r.json()
}

fn edit(fake: &FakeGithub, token: &str, id: &str, body: serde_json::Value) -> Reply {
    let path = format!("/gists/{id}");
    api(
        fake,
        "PATCH",
        &path,
        Some(token),
        Some(&body.to_string()),
        &[],
    )
}

fn id_of(gist: &serde_json::Value) -> String {
    gist["id"].as_str().expect("an id").to_owned()
}

/// A raw_url fetched as a browser would: no token, no User-Agent.
fn fetch_raw(fake: &FakeGithub, url: &str, headers: &[(&str, &str)]) -> Reply {
    let path = url
        .strip_prefix(&fake.url())
        .expect("a raw_url on the fake");
    call(fake, "GET", path, headers, None)
}

fn raw_url(gist: &serde_json::Value, name: &str) -> String {
    gist["files"][name]["raw_url"]
        .as_str()
        .expect("a raw_url")
        .to_owned()
}

fn remaining(r: &Reply) -> u32 {
    r.header("x-ratelimit-remaining")
        .expect("x-ratelimit-remaining")
        .parse()
        .unwrap()
}

fn secs(r: &Reply, header: &str) -> u64 {
    r.header(header)
        .unwrap_or_else(|| panic!("no {header} on a {}", r.status))
        .parse()
        .unwrap()
}

/// Unix seconds of GitHub's `2026-12-07T12:00:00Z`.
fn unix_of(iso: &serde_json::Value) -> i64 {
    let s = iso.as_str().expect("a timestamp");
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y, mp) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3_600 + n(14..16) * 60 + n(17..19)
}

fn stored_files(fake: &FakeGithub, id: &str) -> Vec<Vec<(String, String)>> {
    fake.everything_stored()
        .into_iter()
        .find(|g| g.id == id)
        .expect("the gist is stored")
        .revisions
}

fn pairs(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(n, c)| (n.to_string(), c.to_string()))
        .collect()
}

#[test]
fn creating_a_gist_answers_201_with_the_gist() {
    let fake = fake_with_tokens();
    let body = serde_json::json!({
        "description": "vault 1",
        "public": false,
        "files": { "a.txt": { "content": "hello" }, "b.json": { "content": "{}" } }
    });
    let r = api(
        &fake,
        "POST",
        "/gists",
        Some(CLASSIC),
        Some(&body.to_string()),
        &[],
    );
    assert_eq!(r.status, 201);
    let gist = r.json();
    let id = id_of(&gist);
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(
        r.header("location"),
        Some(format!("{}/gists/{id}", fake.url()).as_str())
    );
    assert_eq!(gist["description"], "vault 1");
    assert_eq!(gist["public"], false);
    assert_eq!(gist["owner"]["login"], "octo");
    assert_eq!(gist["truncated"], false);
    let a = &gist["files"]["a.txt"];
    assert_eq!(
        (
            &a["filename"],
            &a["type"],
            &a["size"],
            &a["truncated"],
            &a["content"]
        ),
        (
            &serde_json::json!("a.txt"),
            &serde_json::json!("text/plain"),
            &serde_json::json!(5),
            &serde_json::json!(false),
            &serde_json::json!("hello")
        )
    );
    assert_eq!(gist["files"]["b.json"]["type"], "application/json");
    let history = gist["history"].as_array().expect("a history");
    assert_eq!(history.len(), 1);
    let version = history[0]["version"].as_str().unwrap();
    assert!(version.len() == 40 && version.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(history[0]["committed_at"], gist["created_at"]);
    assert_eq!(
        history[0]["url"],
        format!("{}/gists/{id}/{version}", fake.url())
    );
    assert!(raw_url(&gist, "a.txt").starts_with(&format!("{}/raw/{id}/{version}/", fake.url())));

    let stored = fake.everything_stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (
            stored[0].id.as_str(),
            stored[0].owner.as_str(),
            stored[0].public
        ),
        (id.as_str(), "octo", false)
    );
    assert_eq!(stored[0].description.as_deref(), Some("vault 1"));
    assert_eq!(
        stored[0].revisions,
        [pairs(&[("a.txt", "hello"), ("b.json", "{}")])]
    );
    // A fine-grained token with the Gists permission writes too; any text
    // survives the trip.
    let text = "line\n\"quoted\"\t\u{1}\\ é 😀";
    let gist = create(&fake, FINE, &[("c.txt", text)]);
    assert_eq!(gist["files"]["c.txt"]["content"], text);
    assert_eq!(gist["files"]["c.txt"]["size"], text.len());
    assert_eq!(fetch_raw(&fake, &raw_url(&gist, "c.txt"), &[]).body, text);
    assert_eq!(fake.everything_stored().len(), 2);
}

#[test]
fn writing_needs_the_gist_permission_on_every_endpoint() {
    let fake = fake_with_tokens();
    fake.add_classic_token("ghp_noscopes", "octo", &["repo"], None);
    fake.add_fine_grained_token("github_pat_nogists", "octo", false, None);
    let gist = create(&fake, CLASSIC, &[("a.txt", "one")]);
    let path = format!("/gists/{}", id_of(&gist));
    let before = fake.everything_stored();
    let patch = serde_json::json!({ "files": { "a.txt": { "content": "two" } } }).to_string();
    let create_body = files_body(&[("b.txt", "bee")]);
    let writes = [
        ("POST", "/gists", Some(create_body.as_str())),
        ("PATCH", path.as_str(), Some(patch.as_str())),
        ("DELETE", path.as_str(), None),
    ];
    for (method, path, body) in writes {
        let r = api(&fake, method, path, Some("ghp_noscopes"), body, &[]);
        assert_eq!(
            (r.status, r.message()),
            (404, "Not Found".to_owned()),
            "{method}"
        );
        assert_eq!(r.header("x-accepted-oauth-scopes"), Some("gist"));
        let r = api(&fake, method, path, Some("github_pat_nogists"), body, &[]);
        assert_eq!(r.status, 403, "{method}");
        assert_eq!(
            r.message(),
            "Resource not accessible by personal access token"
        );
        let r = api(&fake, method, path, None, body, &[]);
        assert_eq!(r.status, 401, "{method}");
    }
    assert_eq!(fake.everything_stored(), before, "nothing was written");
    assert_eq!(
        api(&fake, "GET", &path, Some("ghp_noscopes"), None, &[]).status,
        200
    );
}

#[test]
fn a_gist_that_breaks_the_rules_is_refused_422() {
    let fake = fake_with_tokens();
    let refused = [
        r#"{"files":{}}"#,
        r#"{"description":"no files"}"#,
        r#"{"files":{"dir/a.txt":{"content":"x"}}}"#,
        r#"{"files":{"ok.txt":{"content":"x"},"a/b":{"content":"y"}}}"#,
        r#"{"files":{"a.txt":{"content":""}}}"#,
        r#"{"files":{"":{"content":"x"}}}"#,
        r#"{"files":{"a.txt":{}}}"#,
        r#"{"files":{"a.txt":{"content":5}}}"#,
        r#"{"files":{"a.txt":"x"}}"#,
        r#"{"files":{"a.txt":{"content":"x"}},"public":"maybe"}"#,
        r#"{"files":{"a.txt":{"content":"x"}},"description":7}"#,
    ];
    for body in refused {
        let r = api(&fake, "POST", "/gists", Some(CLASSIC), Some(body), &[]);
        assert_eq!(
            (r.status, r.message()),
            (422, "Validation Failed".to_owned()),
            "{body}"
        );
    }
    for body in ["not json", r#"["a.txt"]"#] {
        let r = api(&fake, "POST", "/gists", Some(CLASSIC), Some(body), &[]);
        assert_eq!(r.status, 400, "{body}");
    }
    assert!(fake.everything_stored().is_empty());
}

#[test]
fn a_file_over_1_mib_comes_back_truncated_and_whole_from_raw_url() {
    let fake = fake_with_tokens();
    let over = format!("{}Z", "x".repeat(MIB));
    let exact = "y".repeat(MIB);
    // Two-byte characters from an odd offset: 1 MiB falls inside one of them.
    let wide = format!("a{}", "é".repeat(MIB / 2 + 1));
    let gist = create(
        &fake,
        CLASSIC,
        &[
            ("over.txt", &over),
            ("exact.txt", &exact),
            ("wide.txt", &wide),
        ],
    );
    let r = api(
        &fake,
        "GET",
        &format!("/gists/{}", id_of(&gist)),
        Some(CLASSIC),
        None,
        &[],
    );
    assert_eq!(r.status, 200);
    let got = r.json();
    let f = &got["files"]["over.txt"];
    assert_eq!(
        (&f["truncated"], &f["size"]),
        (&serde_json::json!(true), &serde_json::json!(MIB + 1))
    );
    let content = f["content"].as_str().unwrap();
    assert_eq!(content.len(), 1_048_576);
    assert_eq!(content, &over[..MIB]);
    let f = &got["files"]["exact.txt"];
    assert_eq!(f["truncated"], false);
    assert_eq!(f["content"].as_str().unwrap().len(), MIB);
    let f = &got["files"]["wide.txt"];
    assert_eq!(f["truncated"], true);
    assert_eq!(
        f["content"].as_str().unwrap(),
        &wide[..MIB - 1],
        "cut before the split character"
    );
    assert_eq!(got["truncated"], false);

    let r = fetch_raw(&fake, &raw_url(&got, "over.txt"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.body, over, "raw_url serves the whole file");
}

#[test]
fn a_gist_of_301_files_lists_only_the_first_300_by_name() {
    let fake = fake_with_tokens();
    let names: Vec<String> = (0..301).rev().map(|i| format!("f{i:03}")).collect();
    let files: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
    let created = create(&fake, CLASSIC, &files);
    let r = api(
        &fake,
        "GET",
        &format!("/gists/{}", id_of(&created)),
        None,
        None,
        &[],
    );
    for gist in [created, r.json()] {
        assert_eq!(gist["truncated"], true);
        let listed: Vec<&String> = gist["files"].as_object().unwrap().keys().collect();
        assert_eq!(listed.len(), 300);
        let expected: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
        assert_eq!(listed, expected.iter().collect::<Vec<_>>());
    }
    let listed = api(&fake, "GET", "/gists", Some(CLASSIC), None, &[]).json();
    assert_eq!(listed[0]["truncated"], true);
    assert_eq!(listed[0]["files"].as_object().unwrap().len(), 300);
    let stored = &fake.everything_stored()[0].revisions[0];
    assert_eq!(stored.len(), 301, "GitHub keeps them all");
    assert_eq!(stored[300].0, "f300");
}

#[test]
fn a_conditional_get_is_answered_304_for_free() {
    let fake = fake_with_tokens();
    let gist = create(&fake, CLASSIC, &[("a.txt", "one")]);
    let path = format!("/gists/{}", id_of(&gist));
    for path in [path.as_str(), "/gists", "/gists?per_page=1"] {
        let first = api(&fake, "GET", path, Some(CLASSIC), None, &[]);
        assert_eq!(first.status, 200);
        let etag = first.header("etag").expect("an ETag").to_owned();
        let before = remaining(&first);
        for _ in 0..2 {
            let r = api(
                &fake,
                "GET",
                path,
                Some(CLASSIC),
                None,
                &[("If-None-Match", &etag)],
            );
            assert_eq!(r.status, 304, "{path}");
            assert!(r.body.is_empty() && r.header("content-length").is_none());
            assert_eq!(r.header("etag"), Some(etag.as_str()));
            assert_eq!(remaining(&r), before, "a 304 is free");
            assert_eq!(
                r.header("x-ratelimit-used"),
                first.header("x-ratelimit-used")
            );
        }
        let other = api(
            &fake,
            "GET",
            path,
            Some(CLASSIC),
            None,
            &[("If-None-Match", "W/\"0\"")],
        );
        assert_eq!(other.status, 200);
        assert_eq!(remaining(&other), before - 1, "a 200 is not");
    }
    assert_eq!(fake.not_modified_count(), 6);

    // A new revision is a new ETag.
    let old = api(&fake, "GET", &path, Some(CLASSIC), None, &[]);
    let old_etag = old.header("etag").unwrap().to_owned();
    let edited = edit(
        &fake,
        CLASSIC,
        &id_of(&gist),
        serde_json::json!({"files": {"a.txt": {"content": "two"}}}),
    );
    assert_eq!(edited.status, 200);
    let r = api(
        &fake,
        "GET",
        &path,
        Some(CLASSIC),
        None,
        &[("If-None-Match", &old_etag)],
    );
    assert_eq!(r.status, 200);
    assert_ne!(r.header("etag"), Some(old_etag.as_str()));
    assert_eq!(r.json()["files"]["a.txt"]["content"], "two");
    assert_eq!(fake.not_modified_count(), 6);

    // A page whose items are unchanged but whose next page has gone is news.
    let newer = create(&fake, CLASSIC, &[("b.txt", "bee")]);
    let page = api(&fake, "GET", "/gists?per_page=1", Some(CLASSIC), None, &[]);
    assert!(page.header("link").is_some());
    let etag = page.header("etag").unwrap().to_owned();
    assert_eq!(
        api(&fake, "DELETE", &path, Some(CLASSIC), None, &[]).status,
        204
    );
    let r = api(
        &fake,
        "GET",
        "/gists?per_page=1",
        Some(CLASSIC),
        None,
        &[("If-None-Match", &etag)],
    );
    assert_eq!((r.status, r.header("link")), (200, None));
    assert_eq!(r.json()[0]["id"], newer["id"]);
}

#[test]
fn an_unknown_gist_is_404() {
    let fake = fake_with_tokens();
    let gist = create(&fake, CLASSIC, &[("a.txt", "one")]);
    let id = id_of(&gist);
    let missing = "0123456789abcdef0123456789abcdef";
    let body = serde_json::json!({"files": {"a.txt": {"content": "two"}}}).to_string();
    for (method, path, body) in [
        ("GET", format!("/gists/{missing}"), None),
        ("GET", format!("/gists/{id}/{}", "0".repeat(40)), None),
        ("GET", format!("/gists/{id}/"), None),
        ("PATCH", format!("/gists/{missing}"), Some(body.as_str())),
        ("DELETE", format!("/gists/{missing}"), None),
    ] {
        let r = api(&fake, method, &path, Some(CLASSIC), body, &[]);
        assert_eq!(
            (r.status, r.message()),
            (404, "Not Found".to_owned()),
            "{method} {path}"
        );
    }
    let url = raw_url(&gist, "a.txt");
    for wrong in [url.replace(&id, missing), url.replace("a.txt", "b.txt")] {
        let r = fetch_raw(&fake, &wrong, &[]);
        assert_eq!(r.status, 404, "{wrong}");
    }
}

#[test]
fn secret_gists_are_unlisted_not_private_and_only_the_owner_writes() {
    let fake = fake_with_gist_users();
    let secret = create(&fake, CLASSIC, &[("s.txt", "ciphertext")]);
    let public_body = serde_json::json!({"public": true, "files": {"p.txt": {"content": "p"}}});
    let r = api(
        &fake,
        "POST",
        "/gists",
        Some(CLASSIC),
        Some(&public_body.to_string()),
        &[],
    );
    assert_eq!(r.status, 201);
    let public = r.json();
    let (sid, pid) = (id_of(&secret), id_of(&public));
    let version = secret["history"][0]["version"].as_str().unwrap().to_owned();

    // Anyone with the id reads it, its revisions and its files: GitHub's secret
    // gists are unlisted, not private.
    for token in [Some(HUBOT), None] {
        let r = api(&fake, "GET", &format!("/gists/{sid}"), token, None, &[]);
        assert_eq!(r.status, 200, "{token:?}");
        assert_eq!(r.json()["files"]["s.txt"]["content"], "ciphertext");
        let r = api(
            &fake,
            "GET",
            &format!("/gists/{sid}/{version}"),
            token,
            None,
            &[],
        );
        assert_eq!(r.status, 200, "{token:?}");
    }
    assert_eq!(
        fetch_raw(&fake, &raw_url(&secret, "s.txt"), &[]).body,
        "ciphertext"
    );

    // Only the owner lists it, and only the owner writes.
    let listed = |token: Option<&str>| -> Vec<String> {
        let r = api(&fake, "GET", "/gists", token, None, &[]);
        assert_eq!(r.status, 200);
        r.json().as_array().unwrap().iter().map(id_of).collect()
    };
    assert_eq!(listed(Some(CLASSIC)), [pid.as_str(), sid.as_str()]);
    assert_eq!(listed(None), [pid.as_str()], "anonymous: public gists only");
    assert!(
        listed(Some(HUBOT)).is_empty(),
        "another user: their own only"
    );
    let before = fake.everything_stored();
    for id in [&sid, &pid] {
        let r = edit(
            &fake,
            HUBOT,
            id,
            serde_json::json!({"files": {"x.txt": {"content": "x"}}}),
        );
        assert_eq!((r.status, r.message()), (404, "Not Found".to_owned()));
        let r = api(
            &fake,
            "DELETE",
            &format!("/gists/{id}"),
            Some(HUBOT),
            None,
            &[],
        );
        assert_eq!(r.status, 404);
    }
    assert_eq!(fake.everything_stored(), before);
}

#[test]
fn listing_pages_with_link_headers_newest_first() {
    let fake = fake_with_gist_users();
    fake.set_secondary_limits(1_000, 1_000);
    let ids: Vec<String> = (0..5)
        .map(|i| id_of(&create(&fake, CLASSIC, &[("n.txt", &i.to_string())])))
        .collect();
    let base = format!("{}/gists", fake.url());
    let page = |query: &str| {
        let r = api(
            &fake,
            "GET",
            &format!("/gists?{query}"),
            Some(CLASSIC),
            None,
            &[],
        );
        assert_eq!(r.status, 200);
        let got: Vec<String> = r.json().as_array().unwrap().iter().map(id_of).collect();
        (got, r.header("link").map(str::to_owned))
    };
    let (got, link) = page("per_page=2");
    assert_eq!(got, [ids[4].clone(), ids[3].clone()]);
    assert_eq!(
        link.as_deref(),
        Some(
            format!(
            "<{base}?per_page=2&page=2>; rel=\"next\", <{base}?per_page=2&page=3>; rel=\"last\""
        )
            .as_str()
        )
    );
    let (got, link) = page("per_page=2&page=2");
    assert_eq!(got, [ids[2].clone(), ids[1].clone()]);
    let link = link.expect("a Link");
    for rel in ["prev", "next", "last", "first"] {
        assert!(link.contains(&format!("rel=\"{rel}\"")), "{link}");
    }
    let (got, link) = page("per_page=2&page=3");
    assert_eq!(got, [ids[0].clone()]);
    assert_eq!(
        link.as_deref(),
        Some(
            format!(
            "<{base}?per_page=2&page=2>; rel=\"prev\", <{base}?per_page=2&page=1>; rel=\"first\""
        )
            .as_str()
        )
    );
    assert_eq!(page("per_page=5").1, None, "one page has no Link");

    // Newest updated first, and `since` leaves out what has not changed.
    fake.advance_clock(Duration::from_secs(5));
    let moved = edit(
        &fake,
        CLASSIC,
        &ids[0],
        serde_json::json!({"description": "moved"}),
    );
    assert_eq!(moved.status, 200);
    assert_eq!(page("per_page=1").0, [ids[0].as_str()]);
    let since = moved.json()["updated_at"].as_str().unwrap().to_owned();
    assert_eq!(page(&format!("since={since}")).0, [ids[0].as_str()]);
    let r = api(
        &fake,
        "GET",
        "/gists?since=yesterday",
        Some(CLASSIC),
        None,
        &[],
    );
    assert_eq!(r.status, 422);

    // Listed items carry no contents and no history.
    let r = api(&fake, "GET", "/gists?per_page=1", Some(CLASSIC), None, &[]);
    let item = &r.json()[0];
    assert!(item.get("history").is_none());
    let file = &item["files"]["n.txt"];
    assert!(file.get("content").is_none() && file.get("raw_url").is_some());

    // 30 by default, 100 at most.
    for i in 5..101 {
        create(&fake, CLASSIC, &[("n.txt", &i.to_string())]);
    }
    let (got, link) = page("");
    assert_eq!(got.len(), 30);
    assert!(link
        .unwrap()
        .contains(&format!("<{base}?per_page=30&page=4>; rel=\"last\"")));
    let (got, link) = page("per_page=1000");
    assert_eq!(got.len(), 100);
    assert!(link
        .unwrap()
        .contains(&format!("<{base}?per_page=100&page=2>; rel=\"last\"")));
    assert_eq!(page("per_page=100&page=2").0.len(), 1);
    assert!(page("per_page=100&page=3").0.is_empty());
}

#[test]
fn edits_make_revisions_that_stay_readable() {
    let fake = fake_with_tokens();
    let gist = create(&fake, CLASSIC, &[("a", "one"), ("b", "bee")]);
    let id = id_of(&gist);
    let edits = [
        serde_json::json!({"files": {"a": {"content": "two"}}}),
        serde_json::json!({"files": {"b": null, "c": {"content": "sea"}}}),
        serde_json::json!({"files": {"a": {"filename": "a2"}}}),
        serde_json::json!({"files": {"c": {"filename": "c2", "content": "sea2"}}}),
        serde_json::json!({"files": {"c2": {}}}),
    ];
    for body in edits {
        let r = edit(&fake, CLASSIC, &id, body.clone());
        assert_eq!(r.status, 200, "{body}: {}", r.body);
    }
    let expected = [
        pairs(&[("a", "one"), ("b", "bee")]),
        pairs(&[("a", "two"), ("b", "bee")]),
        pairs(&[("a", "two"), ("c", "sea")]),
        pairs(&[("a2", "two"), ("c", "sea")]),
        pairs(&[("a2", "two"), ("c2", "sea2")]),
        pairs(&[("a2", "two")]),
    ];
    assert_eq!(stored_files(&fake, &id), expected);
    // An edit that changes nothing makes no revision.
    let r = edit(
        &fake,
        CLASSIC,
        &id,
        serde_json::json!({"files": {"a2": {"content": "two"}}}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(stored_files(&fake, &id).len(), 6);

    let now = api(
        &fake,
        "GET",
        &format!("/gists/{id}"),
        Some(CLASSIC),
        None,
        &[],
    )
    .json();
    let history = now["history"].as_array().unwrap();
    assert_eq!(history.len(), 6);
    // Newest first: the oldest revision is last.
    assert_eq!(history[5]["version"], gist["history"][0]["version"]);
    for (entry, files) in history.iter().rev().zip(&expected) {
        let url = entry["url"].as_str().unwrap();
        let path = url.strip_prefix(&fake.url()).unwrap();
        let r = api(&fake, "GET", path, None, None, &[]);
        assert_eq!(r.status, 200, "{path}");
        let old = r.json();
        let shown: Vec<(String, String)> = old["files"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(n, f)| (n.clone(), f["content"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(&shown, files, "{path}");
        for (name, content) in files {
            assert_eq!(&fetch_raw(&fake, &raw_url(&old, name), &[]).body, content);
        }
    }
    // A description change is a change too, and every description is kept.
    let r = edit(
        &fake,
        CLASSIC,
        &id,
        serde_json::json!({"description": "second"}),
    );
    assert_eq!(r.json()["description"], "second");
    assert_eq!(stored_files(&fake, &id).len(), 7);
    let stored = fake.everything_stored();
    assert_eq!(stored[0].descriptions, ["opaque", "second"]);
}

#[test]
fn a_conditional_write_is_400() {
    let fake = fake_with_tokens();
    let gist = create(&fake, CLASSIC, &[("a.txt", "one")]);
    let id = id_of(&gist);
    let path = format!("/gists/{id}");
    let etag = api(&fake, "GET", &path, Some(CLASSIC), None, &[])
        .header("etag")
        .unwrap()
        .to_owned();
    let body = serde_json::json!({"files": {"a.txt": {"content": "two"}}}).to_string();
    let r = api(
        &fake,
        "PATCH",
        &path,
        Some(CLASSIC),
        Some(&body),
        &[("If-Match", &etag)],
    );
    assert_eq!(r.status, 400);
    let r = api(
        &fake,
        "PATCH",
        &path,
        Some(CLASSIC),
        Some(&body),
        &[("If-Unmodified-Since", "Mon, 30 Nov 2026 05:23:14 GMT")],
    );
    assert_eq!(r.status, 400);
    let create_body = files_body(&[("b.txt", "bee")]);
    let r = api(
        &fake,
        "POST",
        "/gists",
        Some(CLASSIC),
        Some(&create_body),
        &[("If-None-Match", "*")],
    );
    assert_eq!(r.status, 400, "no create-only write either");
    let r = api(
        &fake,
        "DELETE",
        &path,
        Some(CLASSIC),
        None,
        &[("If-Match", &etag)],
    );
    assert_eq!(r.status, 400);
    let stored = fake.everything_stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].revisions, [pairs(&[("a.txt", "one")])]);
}

#[test]
fn an_edit_that_breaks_the_rules_is_refused() {
    let fake = fake_with_tokens();
    let id = id_of(&create(&fake, CLASSIC, &[("a", "one"), ("b", "bee")]));
    let refused = [
        serde_json::json!({}),
        serde_json::json!({"files": {"a": {"filename": "dir/a"}}}),
        serde_json::json!({"files": {"d/e": {"content": "x"}}}),
        serde_json::json!({"files": {"a": {"filename": "b"}}}),
        serde_json::json!({"files": {"missing": null}}),
        serde_json::json!({"files": {"missing": {"filename": "m"}}}),
        serde_json::json!({"files": {"a": {"content": ""}}}),
        serde_json::json!({"files": {"a": null, "b": null}}),
        serde_json::json!({"files": ["a"]}),
        serde_json::json!({"description": 3}),
    ];
    for body in refused {
        let r = edit(&fake, CLASSIC, &id, body.clone());
        assert_eq!(
            (r.status, r.message()),
            (422, "Validation Failed".to_owned()),
            "{body}"
        );
    }
    let r = api(
        &fake,
        "PATCH",
        &format!("/gists/{id}"),
        Some(CLASSIC),
        Some("{"),
        &[],
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        stored_files(&fake, &id),
        [pairs(&[("a", "one"), ("b", "bee")])]
    );
}

#[test]
fn a_deleted_gist_is_gone_with_its_history() {
    let fake = fake_with_tokens();
    let kept = create(&fake, CLASSIC, &[("k.txt", "kept")]);
    let gist = create(&fake, CLASSIC, &[("a.txt", "one")]);
    let id = id_of(&gist);
    let v1 = gist["history"][0]["version"].as_str().unwrap().to_owned();
    assert_eq!(
        edit(
            &fake,
            CLASSIC,
            &id,
            serde_json::json!({"files": {"a.txt": {"content": "two"}}})
        )
        .status,
        200
    );
    let path = format!("/gists/{id}");
    let r = api(&fake, "DELETE", &path, Some(CLASSIC), None, &[]);
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty() && r.header("content-length").is_none());
    for p in [path.clone(), format!("{path}/{v1}")] {
        assert_eq!(
            api(&fake, "GET", &p, Some(CLASSIC), None, &[]).status,
            404,
            "{p}"
        );
    }
    assert_eq!(fetch_raw(&fake, &raw_url(&gist, "a.txt"), &[]).status, 404);
    assert_eq!(
        edit(&fake, CLASSIC, &id, serde_json::json!({"description": "x"})).status,
        404
    );
    assert_eq!(
        api(&fake, "DELETE", &path, Some(CLASSIC), None, &[]).status,
        404
    );
    let stored = fake.everything_stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, id_of(&kept));
    let listed = api(&fake, "GET", "/gists", Some(CLASSIC), None, &[]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn raw_url_needs_no_token_and_spends_no_allowance() {
    let fake = fake_with_tokens();
    fake.set_hourly_limits(5_000, 1);
    let gist = create(&fake, CLASSIC, &[("my notes.txt", "plain")]);
    let url = raw_url(&gist, "my notes.txt");
    assert!(url.ends_with("/my%20notes.txt"), "{url}");
    let before = remaining(&api(&fake, "GET", "/user", Some(CLASSIC), None, &[]));
    let auth = format!("token {CLASSIC}");
    for headers in [vec![], vec![UA], vec![("Authorization", auth.as_str())]] {
        let r = fetch_raw(&fake, &url, &headers);
        assert_eq!((r.status, r.body.as_str()), (200, "plain"));
        assert_eq!(r.header("x-ratelimit-remaining"), None, "not the API");
    }
    let after = remaining(&api(&fake, "GET", "/user", Some(CLASSIC), None, &[]));
    assert_eq!(after, before - 1, "only the API call counted");
    let r = api(&fake, "GET", "/gists", None, None, &[]);
    assert_eq!(
        (r.status, remaining(&r)),
        (200, 0),
        "the anonymous hour was untouched"
    );
    let path = url.strip_prefix(&fake.url()).unwrap();
    let raw_seen: Vec<_> = fake.seen().into_iter().filter(|s| s.path == path).collect();
    assert_eq!(raw_seen.len(), 3, "raw fetches are seen, path as requested");
    assert!(raw_seen.iter().all(|s| s.status == 200));
}

#[test]
fn raw_url_serves_up_to_10_mib_and_refuses_more() {
    let fake = fake_with_tokens();
    let limit = 10 * MIB;
    let exact = "e".repeat(limit);
    let over = "o".repeat(limit + 1);
    let gist = create(&fake, CLASSIC, &[("exact", &exact), ("over", &over)]);
    let r = fetch_raw(&fake, &raw_url(&gist, "exact"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 10_485_760);
    let r = fetch_raw(&fake, &raw_url(&gist, "over"), &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.message(), "file too large: clone the gist");
    assert_eq!(gist["files"]["over"]["size"], limit + 1);
    assert_eq!(gist["files"]["over"]["truncated"], true);
}

#[test]
fn raw_url_ignores_range() {
    let fake = fake_with_tokens();
    let content = "0123456789abcdefghij";
    let gist = create(&fake, CLASSIC, &[("r.txt", content)]);
    let r = fetch_raw(&fake, &raw_url(&gist, "r.txt"), &[("Range", "bytes=0-9")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, content);
    assert_eq!(r.header("content-range"), None);
    assert_eq!(r.header("accept-ranges"), None);
}

#[test]
fn the_81st_write_in_a_minute_is_refused_until_the_minute_has_passed() {
    let fake = fake_with_gist_users();
    for i in 0..80 {
        create(&fake, CLASSIC, &[("n.txt", &format!("{i}"))]);
    }
    let body = files_body(&[("n.txt", "81")]);
    let r = api(&fake, "POST", "/gists", Some(CLASSIC), Some(&body), &[]);
    assert_eq!(r.status, 403);
    assert!(r.message().starts_with(
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    ), "{}", r.message());
    let retry_after = secs(&r, "retry-after");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(
        remaining(&r) > 0,
        "the primary limit is not what refused it"
    );
    assert_eq!(
        fake.everything_stored().len(),
        80,
        "a refused write changes nothing"
    );
    assert_eq!(
        (fake.secondary_refusals(), fake.content_requests()),
        (1, 81)
    );
    // A PATCH or a DELETE is refused alike; reads and other tokens are not limited.
    let id = fake.everything_stored()[0].id.clone();
    let r = edit(&fake, CLASSIC, &id, serde_json::json!({"description": "x"}));
    assert_eq!(r.status, 403);
    assert_eq!(
        api(
            &fake,
            "DELETE",
            &format!("/gists/{id}"),
            Some(CLASSIC),
            None,
            &[]
        )
        .status,
        403
    );
    assert_eq!(
        api(
            &fake,
            "GET",
            &format!("/gists/{id}"),
            Some(CLASSIC),
            None,
            &[]
        )
        .status,
        200
    );
    create(&fake, HUBOT, &[("h.txt", "h")]);
    assert_eq!(fake.secondary_refusals(), 3);

    fake.advance_clock(Duration::from_secs(61));
    create(&fake, CLASSIC, &[("n.txt", "81")]);
    assert_eq!(fake.everything_stored().len(), 82);
}

#[test]
fn the_501st_write_in_an_hour_is_refused_even_when_spread_across_minutes() {
    let fake = fake_with_tokens();
    let write = |n: &str| {
        let body = files_body(&[("n.txt", n)]);
        api(&fake, "POST", "/gists", Some(CLASSIC), Some(&body), &[])
    };
    for minute in 0..10 {
        if minute > 0 {
            fake.advance_clock(Duration::from_secs(60));
        }
        // 50 a minute: well inside 80 a minute.
        for i in 0..50 {
            let r = write(&format!("{minute}-{i}"));
            assert_eq!(r.status, 201, "minute {minute}, write {i}");
        }
    }
    fake.advance_clock(Duration::from_secs(60));
    let r = write("501");
    assert_eq!(r.status, 403);
    // Ten minutes have passed; the first write leaves the hour in 50 more.
    let retry_after = secs(&r, "retry-after");
    assert!((2_900..=3_000).contains(&retry_after), "{retry_after}");
    fake.advance_clock(Duration::from_secs(61));
    let r = write("501");
    assert_eq!(r.status, 403, "a new minute is not enough");
    fake.advance_clock(Duration::from_secs(secs(&r, "retry-after")));
    assert_eq!(write("501").status, 201);
    assert_eq!(fake.secondary_refusals(), 2);
    assert_eq!(fake.everything_stored().len(), 501);
}

#[test]
fn secondary_limits_are_settable_and_may_answer_429() {
    let fake = fake_with_tokens();
    fake.set_secondary_limits(2, 1_000);
    fake.secondary_status(429);
    let id = id_of(&create(&fake, CLASSIC, &[("a.txt", "one")]));
    assert_eq!(
        edit(&fake, CLASSIC, &id, serde_json::json!({"description": "1"})).status,
        200
    );
    let r = edit(&fake, CLASSIC, &id, serde_json::json!({"description": "2"}));
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(stored_files(&fake, &id).len(), 2);
    fake.set_secondary_limits(80, 3);
    fake.advance_clock(Duration::from_secs(61));
    let r = edit(&fake, CLASSIC, &id, serde_json::json!({"description": "3"}));
    assert_eq!(r.status, 200);
    let r = edit(&fake, CLASSIC, &id, serde_json::json!({"description": "4"}));
    assert_eq!(r.status, 429, "three an hour");
    assert!(secs(&r, "retry-after") > 60);
}

#[test]
fn the_clock_moves_rate_windows_expiry_and_timestamps() {
    let fake = fake_with_tokens();
    fake.set_hourly_limits(2, 60);
    let first = api(&fake, "GET", "/user", Some(CLASSIC), None, &[]);
    let reset = secs(&first, "x-ratelimit-reset");
    fake.advance_clock(Duration::from_secs(1_800));
    let second = api(&fake, "GET", "/user", Some(CLASSIC), None, &[]);
    assert_eq!(
        (second.status, secs(&second, "x-ratelimit-reset")),
        (200, reset)
    );
    assert_eq!(
        api(&fake, "GET", "/user", Some(CLASSIC), None, &[]).status,
        403
    );
    fake.advance_clock(Duration::from_secs(1_801));
    let r = api(&fake, "GET", "/user", Some(CLASSIC), None, &[]);
    assert_eq!((r.status, remaining(&r)), (200, 1), "a new hour");
    assert!(secs(&r, "x-ratelimit-reset") >= reset + 1_800);

    fake.set_hourly_limits(5_000, 60);
    let gist = create(&fake, CLASSIC, &[("a.txt", "one")]);
    fake.advance_clock(Duration::from_secs(86_400));
    let edited = edit(
        &fake,
        CLASSIC,
        &id_of(&gist),
        serde_json::json!({"files": {"a.txt": {"content": "two"}}}),
    );
    let edited = edited.json();
    let day = unix_of(&edited["updated_at"]) - unix_of(&edited["created_at"]);
    assert!((86_400..86_403).contains(&day), "{day}");
    let history = edited["history"].as_array().unwrap();
    let apart = unix_of(&history[0]["committed_at"]) - unix_of(&history[1]["committed_at"]);
    assert!((86_400..86_403).contains(&apart), "{apart}");

    // A token's expiry is read on the same clock (expiry_in counts from the wall
    // clock, so on a fake whose clock has not moved yet).
    let fake = FakeGithub::start();
    fake.add_fine_grained_token(
        "github_pat_hour",
        "octo",
        true,
        Some(&expiry_in(Duration::from_secs(3_600))),
    );
    assert_eq!(
        api(&fake, "GET", "/user", Some("github_pat_hour"), None, &[]).status,
        200
    );
    fake.advance_clock(Duration::from_secs(3_601));
    assert_eq!(
        api(&fake, "GET", "/user", Some("github_pat_hour"), None, &[]).status,
        401
    );
}

#[test]
fn content_requests_are_counted_whatever_their_fate() {
    let fake = fake_with_tokens();
    fake.set_secondary_limits(3, 500);
    let id = id_of(&create(&fake, CLASSIC, &[("a.txt", "one")]));
    let path = format!("/gists/{id}");
    api(
        &fake,
        "POST",
        "/gists",
        Some(CLASSIC),
        Some(r#"{"files":{}}"#),
        &[],
    ); // 422
    api(&fake, "POST", "/gists", None, Some(r#"{"files":{}}"#), &[]); // 401
    api(&fake, "GET", &path, Some(CLASSIC), None, &[]); // a read: not counted
    edit(
        &fake,
        CLASSIC,
        "0123456789abcdef0123456789abcdef",
        serde_json::json!({"description": "x"}),
    ); // 404
    api(&fake, "DELETE", &path, Some(CLASSIC), None, &[]); // refused: 4th of the token's minute
    fake.set_outage(Outage::ServerError);
    api(&fake, "DELETE", &path, Some(CLASSIC), None, &[]); // 503
    fake.set_outage(Outage::CutConnections);
    let raw = request_bytes("DELETE", &path, &[UA, ("Connection", "close")], None);
    assert!(exchange(&fake, &raw).is_empty());
    fake.set_outage(Outage::None);
    assert_eq!(fake.content_requests(), 7);
    assert_eq!(fake.secondary_refusals(), 1);
    assert_eq!(fake.everything_stored().len(), 1);
}

#[test]
fn a_body_over_100_mib_is_413() {
    let fake = fake_with_tokens();
    let auth = format!("token {CLASSIC}");
    let head = format!(
        "POST /gists HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nAuthorization: {auth}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        100 * MIB + 1
    );
    let r = read_reply(&mut &exchange(&fake, head.as_bytes())[..]);
    assert_eq!(r.status, 413);
    assert!(fake.everything_stored().is_empty());
    assert_eq!(fake.seen()[0].status, 413);
}
