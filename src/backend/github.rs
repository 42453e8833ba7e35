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
    #[error("{url} does not answer as the GitHub API does ({reason}); check --api-url")]
    NotGithub { url: String, reason: String },
    #[error("GitHub's rate limit is spent; it resets at {reset} (Unix time)")]
    RateLimited { reset: String },
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

/// A client of one GitHub API root.
pub struct GithubApi {
    url: String,
    client: Client,
}

impl GithubApi {
    pub fn new(api_url: &str) -> Result<Self, GithubError> {
        let url = api_url.trim_end_matches('/').to_owned();
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("ghostie-fs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GithubError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self { url, client })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn unreachable(&self, e: reqwest::Error) -> GithubError {
        // reqwest's message names the URL but never a header, so no token.
        let reason = if e.is_timeout() {
            "no answer in time".to_owned()
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            "the connection broke".to_owned()
        };
        GithubError::Unreachable {
            url: self.url.clone(),
            reason,
        }
    }

    fn get(&self, path: &str, token: &str) -> Result<Response, GithubError> {
        let auth = Zeroizing::new(format!("Bearer {token}"));
        let mut value =
            reqwest::header::HeaderValue::from_str(&auth).map_err(|_| GithubError::BadToken)?;
        // Kept out of any debug print of the request.
        value.set_sensitive(true);
        self.client
            .get(format!("{}{path}", self.url))
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(AUTHORIZATION, value)
            .send()
            .map_err(|e| self.unreachable(e))
    }

    /// Who the token belongs to and what it may do (`GET /user`, then, for a
    /// fine-grained token, whether the gists answer).
    pub fn check_token(&self, token: &str) -> Result<TokenInfo, GithubError> {
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
        let reaches_gists = match &scopes {
            Some(list) => list.iter().any(|s| s == NEEDED_SCOPE),
            None => {
                let r = self.get("/gists?per_page=1", token)?;
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let body = r.text().map_err(|e| self.unreachable(e))?;
                if status == 404 {
                    false
                } else {
                    self.judge(status, &headers, &body)?;
                    true
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
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        if status == 401 {
            return Err(GithubError::BadToken);
        }
        let spent = header(headers, "x-ratelimit-remaining").as_deref() == Some("0");
        if (status == 403 || status == 429) && spent {
            return Err(GithubError::RateLimited {
                reset: header(headers, "x-ratelimit-reset").unwrap_or_else(|| "?".into()),
            });
        }
        Err(GithubError::Refused { status, message })
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
    fn only_gist_is_needed() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(excess_scopes(&s(&["gist"])).is_empty());
        assert_eq!(excess_scopes(&s(&["gist", "repo"])), s(&["repo"]));
    }
}
