//! GitHub's REST API, as far as credentials need it: who a token belongs to, what it
//! may do, when it expires, and revoking it. `--api-url` points every call elsewhere
//! (GitHub Enterprise Server, or the tests' fake). The Gist store builds on this.

use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION};
use zeroize::Zeroizing;

pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The one scope a classic token needs: read and write the owner's gists.
pub const NEEDED_SCOPE: &str = "gist";
const API_VERSION: &str = "2022-11-28";

/// What GitHub says about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub account: String,
    /// A classic token's scopes; `None` for a fine-grained token, whose permissions
    /// GitHub does not list.
    pub scopes: Option<Vec<String>>,
    /// GitHub's `github-authentication-token-expiration` header, as sent
    /// ("2026-12-07 12:00:00 UTC"); `None` for a token that never expires.
    pub expires: Option<String>,
    /// Whether the token can reach the owner's gists (a fine-grained token without
    /// the Gists permission gets 404 there).
    pub reaches_gists: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GithubError {
    /// 401: wrong, expired or revoked; GitHub does not say which.
    #[error("GitHub refused the token (it is wrong, expired or revoked)")]
    BadToken,
    #[error("the GitHub API at {url} does not answer ({reason})")]
    Unreachable { url: String, reason: String },
    #[error(
        "the server at {url} does not answer as the GitHub API does ({reason}); check --api-url"
    )]
    NotGithub { url: String, reason: String },
    #[error("GitHub's rate limit for this token is spent; it resets {reset}")]
    RateLimited {
        reset: String,
        /// How long GitHub asks to wait, when it says.
        wait: Option<Duration>,
    },
    #[error("GitHub answered {status}: {message}")]
    Refused { status: u16, message: String },
}

impl GithubError {
    /// Whether trying again later may help (the network, GitHub's own trouble).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            GithubError::Unreachable { .. } | GithubError::RateLimited { .. }
        ) || matches!(self, GithubError::Refused { status, .. } if *status >= 500)
    }
}

/// What one API call answered (a success, or 304 Not Modified).
pub(crate) struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub link: Option<String>,
    pub body: String,
    pub rate: RateHeaders,
}

/// What GitHub's `x-ratelimit-*` headers said of the hour's budget.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RateHeaders {
    pub limit: Option<u64>,
    pub used: Option<u64>,
    /// Unix seconds.
    pub reset: Option<u64>,
}

impl RateHeaders {
    fn of(headers: &HeaderMap) -> Self {
        let number = |name| header(headers, name).and_then(|v| v.trim().parse().ok());
        Self {
            limit: number("x-ratelimit-limit"),
            used: number("x-ratelimit-used"),
            reset: number("x-ratelimit-reset"),
        }
    }
}

/// A client of one GitHub API root.
pub struct GithubApi {
    url: String,
    client: Client,
}

/// How long one request may take: `GHOSTIE_PROVIDER_TIMEOUT` seconds (a slow link),
/// else 30.
pub fn request_timeout() -> Duration {
    let secs = std::env::var("GHOSTIE_PROVIDER_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(30.0);
    Duration::from_secs_f64(secs)
}

/// Checks an API root given by the user: HTTPS (plain HTTP only to this machine,
/// where a test server or a tunnel listens), and nothing a token could leak
/// through (user info, a query, a fragment). Returns it without a trailing slash.
pub fn check_api_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| {
        format!("'{text}' is not a URL ({e}); give e.g. https://github.example.com/api/v3")
    })?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "'{text}' is plain HTTP: a token must travel over HTTPS (plain HTTP is taken only for this machine)"
            ))
        }
        other => return Err(format!("'{text}' is a {other}: URL, not an HTTPS one")),
    }
    if host.is_empty() {
        return Err(format!("'{text}' names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "'{}' holds a user name or password: give the token by login instead",
            url.host_str().unwrap_or_default()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "'{text}' has a query or fragment: give only the API's root"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Whether `api_url` is github.com's own API (not GitHub Enterprise Server): the
/// environment's `GH_TOKEN` and `GITHUB_TOKEN` are meant for it alone.
pub fn is_github_com(api_url: &str) -> bool {
    reqwest::Url::parse(api_url).is_ok_and(|u| u.host_str() == Some("api.github.com"))
}

/// The cause at the bottom of an error's chain (a refused connection, an unknown
/// certificate issuer): what a user can act on. reqwest's own text names the URL,
/// never a header.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The HTTP client of every provider call (GitHub's API, OAuth token endpoints):
/// `GHOSTIE_PROVIDER_TIMEOUT`, and no redirects: one would carry a request's body
/// (a token to revoke, a refresh token) to wherever it points.
pub(crate) fn provider_client() -> reqwest::Result<Client> {
    Client::builder()
        .connect_timeout(Duration::from_secs(10).min(request_timeout()))
        .timeout(request_timeout())
        .user_agent(concat!("ghostie-fs/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

impl GithubApi {
    pub fn new(api_url: &str) -> Result<Self, GithubError> {
        let url = api_url.trim_end_matches('/').to_owned();
        let client = provider_client().map_err(|e| GithubError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self { url, client })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn unreachable(&self, e: reqwest::Error) -> GithubError {
        let reason = if e.is_timeout() {
            format!("no answer in {} s", request_timeout().as_secs_f64())
        } else if e.is_connect() {
            format!("cannot connect: {}", root_cause(&e))
        } else {
            format!("the connection broke: {}", root_cause(&e))
        };
        GithubError::Unreachable {
            url: self.url.clone(),
            reason,
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let builder = self
            .client
            .request(method, format!("{}{path}", self.url))
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION);
        let auth = Zeroizing::new(format!("Bearer {token}"));
        match reqwest::header::HeaderValue::from_str(&auth) {
            Ok(mut value) => {
                // Kept out of any debug print of the request.
                value.set_sensitive(true);
                builder.header(AUTHORIZATION, value)
            }
            // Not a header value at all: sent without, GitHub answers 401.
            Err(_) => builder,
        }
    }

    /// One call of the API: `body` as JSON, `etag` as If-None-Match. A success or a
    /// 304 is an answer; anything else the error a user can act on.
    pub(crate) fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
        etag: Option<&str>,
    ) -> Result<Answer, GithubError> {
        let mut request = self.request(method, path, token);
        if let Some(b) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        if let Some(tag) = etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let response = request.send().map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().map_err(|e| self.unreachable(e))?;
        // 204 (a deleted gist) and 304 (unchanged) carry no body to judge.
        if status != 204 && status != 304 {
            self.judge(status, &headers, &text)?;
        }
        Ok(Answer {
            status,
            etag: header(&headers, "etag"),
            link: header(&headers, "link"),
            body: text,
            rate: RateHeaders::of(&headers),
        })
    }

    /// A gist file's whole content from its raw URL: no token goes there (another
    /// host on github.com), and no Range is asked (GitHub does not promise it).
    pub(crate) fn raw(&self, url: &str) -> Result<String, GithubError> {
        let response = self
            .client
            .get(url)
            .send()
            .map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let text = response.text().map_err(|e| self.unreachable(e))?;
        if status != 200 {
            return Err(GithubError::Refused {
                status,
                message: format!("the raw file answered {status}"),
            });
        }
        Ok(text)
    }

    fn get(&self, path: &str, token: &str) -> Result<Response, GithubError> {
        self.request(reqwest::Method::GET, path, token)
            .send()
            .map_err(|e| self.unreachable(e))
    }

    /// Who the token belongs to and what it may do (`GET /user`, then, for a
    /// fine-grained token, whether it may write gists).
    pub fn check_token(&self, token: &str) -> Result<TokenInfo, GithubError> {
        self.check_token_with(token, true)
    }

    /// As [`Self::check_token`]; `probe_write: false` spares a fine-grained token
    /// the write that tells whether it may write gists (taken as yes), for a check
    /// that runs at every start and must cost one read.
    pub fn check_token_with(
        &self,
        token: &str,
        probe_write: bool,
    ) -> Result<TokenInfo, GithubError> {
        let response = self.get("/user", token)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().map_err(|e| self.unreachable(e))?;
        self.judge(status, &headers, &body)?;
        let account = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("login")?.as_str().map(str::to_owned))
            .ok_or_else(|| GithubError::NotGithub {
                url: self.url.clone(),
                reason: "its answer to GET /user names no account".into(),
            })?;
        let scopes = header(&headers, "x-oauth-scopes").map(|s| {
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
        });
        let expires = header(&headers, "github-authentication-token-expiration");
        let fine_grained = scopes.is_none() || token.starts_with("github_pat_");
        let reaches_gists = match &scopes {
            Some(list) if !fine_grained => list.iter().any(|s| s == NEEDED_SCOPE),
            _ if !probe_write => true,
            // GitHub lists no permissions of a fine-grained token, and listing gists
            // needs none: only a write tells. An empty gist is refused (422) after
            // the permission is checked (403 or 404 without it), so nothing is made.
            _ => {
                let r = self
                    .request(reqwest::Method::POST, "/gists", token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(r#"{"files":{}}"#)
                    .send()
                    .map_err(|e| self.unreachable(e))?;
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let body = r.text().map_err(|e| self.unreachable(e))?;
                // A secondary rate limit is also a 403 (or 429): told apart by
                // its retry-after, and never read as a missing permission.
                if limited(status, &headers) {
                    self.judge(status, &headers, &body)?;
                }
                match status {
                    422 => true,
                    403 | 404 => false,
                    _ => {
                        self.judge(status, &headers, &body)?;
                        true
                    }
                }
            }
        };
        Ok(TokenInfo {
            account,
            scopes,
            expires,
            reaches_gists,
        })
    }

    /// Revokes a personal access token at GitHub (`POST /credentials/revoke`, which
    /// takes no authentication: an authenticated call is refused).
    pub fn revoke(&self, token: &str) -> Result<(), GithubError> {
        let body = Zeroizing::new(serde_json::json!({ "credentials": [token] }).to_string());
        let response = self
            .client
            .post(format!("{}/credentials/revoke", self.url))
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.as_bytes().to_vec())
            .send()
            .map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().map_err(|e| self.unreachable(e))?;
        self.judge(status, &headers, &text)
    }

    /// Turns an answer that is not a success into the error a user can act on.
    fn judge(&self, status: u16, headers: &HeaderMap, body: &str) -> Result<(), GithubError> {
        if (300..400).contains(&status) {
            let to = header(headers, "location").unwrap_or_else(|| "elsewhere".into());
            return Err(GithubError::NotGithub {
                url: self.url.clone(),
                reason: format!("it redirects to {}; give that as --api-url", one_line(&to)),
            });
        }
        let json = serde_json::from_str::<serde_json::Value>(body).ok();
        let is_json =
            json.is_some() && header(headers, "content-type").is_some_and(|c| c.contains("json"));
        if !is_json {
            return Err(GithubError::NotGithub {
                url: self.url.clone(),
                reason: format!("it answered {status} without JSON"),
            });
        }
        if (200..300).contains(&status) {
            return Ok(());
        }
        let message = json
            .as_ref()
            .and_then(|v| v.get("message")?.as_str().map(one_line))
            .unwrap_or_default();
        if status == 401 {
            return Err(GithubError::BadToken);
        }
        if let Some(secs) =
            header(headers, "retry-after").and_then(|r| r.trim().parse::<u64>().ok())
        {
            if status == 403 || status == 429 {
                return Err(GithubError::RateLimited {
                    reset: format!("in {secs} s (a secondary limit)"),
                    wait: Some(Duration::from_secs(secs)),
                });
            }
        }
        if limited(status, headers) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let left = header(headers, "x-ratelimit-reset")
                .and_then(|r| r.parse::<u64>().ok())
                .map(|at| at.saturating_sub(now));
            let reset = match left {
                Some(secs) => format!("in {} minutes", secs.div_ceil(60)),
                None => "within the hour".into(),
            };
            return Err(GithubError::RateLimited {
                reset,
                wait: left.map(Duration::from_secs),
            });
        }
        Err(GithubError::Refused { status, message })
    }
}

/// Whether an answer is GitHub saying "too many requests" (primary limit spent, or
/// a secondary limit with its retry-after), not refusing the token.
fn limited(status: u16, headers: &HeaderMap) -> bool {
    (status == 403 || status == 429)
        && (header(headers, "retry-after").is_some()
            || header(headers, "x-ratelimit-remaining").as_deref() == Some("0"))
}

/// A server's text as one short line: it goes into a one-sentence error.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(160) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat.to_owned(),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The scopes of `scopes` that give more power than ghostie-fs needs.
pub fn excess_scopes(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter(|s| s.as_str() != NEEDED_SCOPE)
        .cloned()
        .collect()
}

/// Unix seconds of GitHub's expiry header ("2026-12-07 12:00:00 UTC"; older servers
/// sent "+0000" or a "T").
pub fn parse_expiry(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix(" UTC")
        .or_else(|| t.strip_suffix(" +0000"))
        .or_else(|| t.strip_suffix('Z'))
        .unwrap_or(t);
    let (date, time) = t.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut c = time.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (c.next()?.ok()?, c.next()?.ok()?, c.next()?.ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = days_from_civil(y, m, day);
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_headers_parse() {
        assert_eq!(parse_expiry("1970-01-01 00:00:00 UTC"), Some(0));
        assert_eq!(parse_expiry("2026-12-07 12:00:00 UTC"), Some(1_796_644_800));
        assert_eq!(
            parse_expiry("2026-12-07 12:00:00 +0000"),
            Some(1_796_644_800)
        );
        assert_eq!(parse_expiry("2026-12-07T12:00:00Z"), Some(1_796_644_800));
        assert_eq!(parse_expiry("2024-02-29 00:00:01 UTC"), Some(1_709_164_801));
        assert_eq!(parse_expiry("tomorrow"), None);
        assert_eq!(parse_expiry("2026-13-01 00:00:00 UTC"), None);
    }

    #[test]
    fn api_urls_a_token_may_travel_to() {
        assert_eq!(
            check_api_url("https://github.example.com/api/v3/").as_deref(),
            Ok("https://github.example.com/api/v3")
        );
        assert!(check_api_url("http://127.0.0.1:8080").is_ok());
        assert!(check_api_url("http://[::1]:8080").is_ok());
        assert!(check_api_url("http://localhost:1").is_ok());
        for bad in [
            "http://github.example.com",
            "http://127.0.0.2.example.com",
            "https://u:p@github.example.com",
            "https://github.example.com/?a=b",
            "https://github.example.com/#x",
            "file:///etc/passwd",
            "api.github.com",
        ] {
            assert!(check_api_url(bad).is_err(), "{bad}");
        }
        assert!(is_github_com("https://api.github.com"));
        assert!(!is_github_com("https://github.example.com/api/v3"));
        assert!(!is_github_com("http://127.0.0.1:9"));
    }

    #[test]
    fn server_text_becomes_one_short_line() {
        assert_eq!(one_line("two\nlines\r\n"), "two lines");
        let long = "x".repeat(500);
        assert_eq!(one_line(&long).chars().count(), 161);
    }

    #[test]
    fn only_gist_is_needed() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(excess_scopes(&s(&["gist"])).is_empty());
        assert_eq!(excess_scopes(&s(&["gist", "repo"])), s(&["repo"]));
    }
}
