//! Google Drive's API v3 over HTTP, as the store needs it: JSON calls under
//! `<api>/drive/v3`, uploads under `<upload>/upload/drive/v3`, and resumable
//! upload sessions at the address Google hands out.
//!
//! Every call waits for its slot in the pace ([`super::pacing`]) and carries an
//! access token from [`AccessTokens`]; one Google refuses (401) is replaced once
//! and the call made again, so a token that lapses mid-run costs the user
//! nothing. Google's rate-limit refusals (403 `userRateLimitExceeded` /
//! `rateLimitExceeded`, 429) are waited out with exponential backoff, as Google
//! asks of its clients.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use zeroize::Zeroizing;

use super::pacing::Pacer;
use crate::backend::github::{provider_client, request_timeout};
use crate::backend::{AccessTokens, BackendError, Token};
use crate::config::GdriveUrls;

/// Rate-limit refusals one call waits out before it gives up as a temporary
/// failure (1 + 2 + … + 32 s, about a minute, then the retry layer's own).
const MAX_WAITS: u32 = 6;
/// The first backoff; each next one doubles.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Requests a second, and at once: rclone's pace for Drive.
const PACE_PER_SECOND: f64 = 10.0;
const PACE_BURST: u32 = 10;

/// What a call can end in besides a success.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// Drive's 404 for a file (or an upload session) that is not there.
    NotFound,
    /// A 416: a range that starts past the file's end.
    RangeNotSatisfiable,
    /// Anything else, already in the store's terms.
    Backend(BackendError),
}

impl ApiError {
    /// The error in the store's terms, for a call about `key`.
    pub fn into_backend(self, key: &str) -> BackendError {
        match self {
            ApiError::NotFound | ApiError::RangeNotSatisfiable => {
                BackendError::NotFound { key: key.into() }
            }
            ApiError::Backend(e) => e,
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        ApiError::Backend(e)
    }
}

pub(crate) fn temporary(message: String) -> BackendError {
    BackendError::Io {
        source: std::io::Error::other(message.clone()),
        message,
        temporary: true,
    }
}

/// A provider's text fit to quote: one line, and nothing at all when it may echo
/// what the request carried.
fn safe_text(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if lower.contains("authorization") || lower.contains("bearer") || lower.contains("token") {
        return "its answer is not repeated here: it may quote a credential".into();
    }
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Which of Google's roots a request goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    Api,
    Upload,
    /// A resumable session's own address: the address is the credential, so no
    /// token goes with it.
    Session,
}

/// A client of one Google Drive as one user.
pub(crate) struct DriveApi {
    urls: GdriveUrls,
    client: Client,
    tokens: std::sync::Arc<dyn AccessTokens>,
    pacer: Pacer,
    sleep: fn(Duration),
}

impl std::fmt::Debug for DriveApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveApi")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

/// An answer that is not a success, judged.
enum Judged {
    Expired,
    Wait(Option<Duration>),
    Failed(ApiError),
}

impl DriveApi {
    pub(crate) fn new(
        urls: GdriveUrls,
        tokens: std::sync::Arc<dyn AccessTokens>,
    ) -> Result<Self, BackendError> {
        let client = provider_client()
            .map_err(|e| BackendError::Invalid(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            urls,
            client,
            tokens,
            pacer: Pacer::new(PACE_PER_SECOND, PACE_BURST),
            sleep: std::thread::sleep,
        })
    }

    pub(crate) fn urls(&self) -> &GdriveUrls {
        &self.urls
    }

    /// `<api>/drive/v3/<path>`.
    pub(crate) fn api_url(&self, path: &str) -> String {
        format!("{}/drive/v3/{path}", self.urls.api.trim_end_matches('/'))
    }

    /// `<upload>/upload/drive/v3/<path>`.
    pub(crate) fn upload_url(&self, path: &str) -> String {
        format!(
            "{}/upload/drive/v3/{path}",
            self.urls.upload.trim_end_matches('/')
        )
    }

    /// Whether `url` (a session address Google handed out) is on the upload
    /// root's scheme, host and port: a session elsewhere is not followed.
    pub(crate) fn is_upload_host(&self, url: &str) -> bool {
        let (Ok(a), Ok(b)) = (
            reqwest::Url::parse(url),
            reqwest::Url::parse(&self.urls.upload),
        ) else {
            return false;
        };
        a.scheme() == b.scheme()
            && a.host_str() == b.host_str()
            && a.port_or_known_default() == b.port_or_known_default()
    }

    fn root(&self, host: Host) -> (&str, &'static str) {
        match host {
            Host::Api => (&self.urls.api, "--api-url"),
            Host::Upload | Host::Session => (&self.urls.upload, "--upload-url"),
        }
    }

    fn unreachable(&self, host: Host, e: &reqwest::Error) -> BackendError {
        let reason = if e.is_timeout() {
            format!("no answer in {} s", request_timeout().as_secs_f64())
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            "the connection broke".to_owned()
        };
        temporary(format!(
            "Google Drive at {} does not answer ({reason})",
            self.root(host).0
        ))
    }

    pub(crate) fn not_google(&self, host: Host, status: u16) -> BackendError {
        let (url, flag) = self.root(host);
        BackendError::Refused(format!(
            "the server at {url} does not answer as Google Drive's API does (it answered {status}); check {flag}"
        ))
    }

    /// Sends what `build` makes (with a token, except to a session), replacing a
    /// token Google refuses once and waiting out rate limits; returns a response
    /// of 2xx, or 308 for a session.
    pub(crate) fn send(
        &self,
        host: Host,
        url: &str,
        build: &dyn Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<Response, ApiError> {
        let mut refused: Option<Token> = None;
        let mut waits = 0;
        loop {
            self.pacer.wait();
            let token = match host {
                Host::Session => None,
                _ => Some(
                    self.tokens
                        .access_token(refused.as_deref().map(|t| t.as_str()))?,
                ),
            };
            let mut request = build(&self.client, url);
            if let Some(t) = &token {
                let auth = Zeroizing::new(format!("Bearer {}", t.as_str()));
                let Ok(mut value) = HeaderValue::from_str(&auth) else {
                    return Err(BackendError::LoginRefused(
                        "the Google token holds characters no token has: log in again with 'ghostie-fs login google'".into(),
                    )
                    .into());
                };
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
            let response = request.send().map_err(|e| self.unreachable(host, &e))?;
            let status = response.status().as_u16();
            if (200..300).contains(&status) || (status == 308 && host == Host::Session) {
                return Ok(response);
            }
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.text().unwrap_or_default();
            match self.judge(host, status, &body) {
                Judged::Expired if refused.is_none() && token.is_some() => refused = token,
                Judged::Expired => return Err(BackendError::LoginRefused(
                    "Google refused a new access token too: run 'ghostie-fs login google' again"
                        .into(),
                )
                .into()),
                Judged::Wait(asked) if waits < MAX_WAITS => {
                    let backoff = FIRST_WAIT * 2u32.pow(waits);
                    let wait = asked.or(retry_after).unwrap_or(backoff).max(backoff) + jitter();
                    waits += 1;
                    tracing::debug!("Google Drive asks to slow down; waiting {wait:?}");
                    (self.sleep)(wait);
                }
                Judged::Wait(_) => return Err(temporary(
                    "Google Drive keeps refusing requests for rate; it will be tried again later"
                        .into(),
                )
                .into()),
                Judged::Failed(e) => return Err(e),
            }
        }
    }

    /// A refusal in the terms the caller acts on.
    fn judge(&self, host: Host, status: u16, body: &str) -> Judged {
        let json = serde_json::from_str::<Value>(body).ok();
        let error = json.as_ref().and_then(|j| j.get("error"));
        // Drive's envelope: {"error": {"code", "message", "errors": [{"reason"}]}}.
        let reason = error
            .and_then(|e| e.get("errors")?.get(0)?.get("reason")?.as_str())
            .unwrap_or_default()
            .to_owned();
        let message = error
            .and_then(|e| e.get("message")?.as_str())
            .map(safe_text)
            .unwrap_or_default();
        let drive = error.is_some_and(Value::is_object);
        match status {
            // A session's address is its own credential: refused, it is over.
            401 if host == Host::Session => Judged::Failed(ApiError::NotFound),
            401 => Judged::Expired,
            429 => Judged::Wait(None),
            403 if reason == "userRateLimitExceeded" || reason == "rateLimitExceeded" => {
                Judged::Wait(None)
            }
            403 if reason == "insufficientPermissions"
                || reason == "insufficientScopes"
                || message.contains("insufficient authentication scopes") =>
            {
                Judged::Failed(ApiError::Backend(BackendError::LoginRefused(
                    "the Google login does not allow Drive's app data folder (drive.appdata): run 'ghostie-fs login google' again and allow it".into(),
                )))
            }
            403 if reason == "storageQuotaExceeded" => {
                Judged::Failed(ApiError::Backend(BackendError::Refused(
                    "the Google account's storage is full: free some space or buy more, then try again".into(),
                )))
            }
            403 if drive => Judged::Failed(ApiError::Backend(BackendError::Refused(format!(
                "Google Drive does not let ghostie-fs do that ({reason}: {message})"
            )))),
            404 if drive || host == Host::Session => Judged::Failed(ApiError::NotFound),
            410 if host == Host::Session => Judged::Failed(ApiError::NotFound),
            416 => Judged::Failed(ApiError::RangeNotSatisfiable),
            400 | 413 if drive => Judged::Failed(ApiError::Backend(BackendError::Invalid(
                format!("Google Drive refused a request of ghostie-fs ({message})"),
            ))),
            500 | 502 | 503 | 504 => Judged::Failed(ApiError::Backend(temporary(format!(
                "Google Drive's service failed ({status}); it usually recovers soon"
            )))),
            _ => Judged::Failed(ApiError::Backend(self.not_google(host, status))),
        }
    }

    /// The JSON body of a successful answer.
    pub(crate) fn json_of(&self, host: Host, response: Response) -> Result<Value, ApiError> {
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("json"));
        let status = response.status().as_u16();
        let text = response.text().map_err(|e| self.unreachable(host, &e))?;
        match serde_json::from_str(&text) {
            Ok(v) if is_json => Ok(v),
            _ => Err(self.not_google(host, status).into()),
        }
    }

    /// A GET of `<api>/drive/v3/<path>` with `query`; its JSON.
    pub(crate) fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        let url = self.api_url(path);
        let response = self.send(Host::Api, &url, &|c, u| c.get(u).query(query))?;
        self.json_of(Host::Api, response)
    }

    /// A DELETE of a file; a file already gone is not an error.
    pub(crate) fn delete_file(&self, id: &str) -> Result<(), ApiError> {
        let url = self.api_url(&format!("files/{id}"));
        match self.send(Host::Api, &url, &|c, u| c.delete(u)) {
            Ok(_) | Err(ApiError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A file's bytes, or `range` of them (shorter where the file ends first).
    pub(crate) fn download(
        &self,
        id: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Vec<u8>, ApiError> {
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            return Ok(Vec::new());
        }
        let url = self.api_url(&format!("files/{id}"));
        let result = self.send(Host::Api, &url, &|c, u| {
            let r = c.get(u).query(&[("alt", "media")]);
            match &range {
                Some(r2) => r.header(
                    reqwest::header::RANGE,
                    format!("bytes={}-{}", r2.start, r2.end - 1),
                ),
                None => r,
            }
        });
        let response = match result {
            Ok(r) => r,
            Err(ApiError::RangeNotSatisfiable) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let whole = response.status().as_u16() == 200;
        let html = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/html"));
        if html {
            // A captive portal's page is not a sealed object.
            return Err(self
                .not_google(Host::Api, response.status().as_u16())
                .into());
        }
        let bytes = response
            .bytes()
            .map_err(|e| self.unreachable(Host::Api, &e))?;
        Ok(crate::backend::part_of_answer(range, whole, &bytes))
    }
}

/// Up to a quarter second, so devices refused together do not come back together.
fn jitter() -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::thread_rng().gen_range(0..250))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_may_quote_a_credential_is_never_repeated() {
        assert!(!safe_text("Invalid Credentials: Bearer ya29.secret").contains("ya29"));
        assert_eq!(safe_text("File not found: x.\nmore"), "File not found: x.");
    }
}
