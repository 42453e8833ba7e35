//! Dropbox's API v2 over HTTP, as the store needs it: RPC calls (JSON in, JSON out)
//! on the api host; content calls (arguments in the `Dropbox-API-Arg` header, bytes
//! in the body, metadata back in `Dropbox-API-Result`) on the content host; the
//! longpoll, which takes no token, on the notify host.
//!
//! Every call is made with an access token from [`AccessTokens`]; one the provider
//! calls expired is replaced once and the call made again, so a token that lapses
//! mid-run costs the user nothing. A 429 (too many requests, or another write into
//! the same Dropbox at that moment) is waited out for as long as Dropbox asks.

use std::ops::Range;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::backend::github::{provider_client, request_timeout};
use crate::backend::{BackendError, Token};

pub use crate::config::DropboxUrls;
pub const DEFAULT_API_URL: &str = crate::config::DROPBOX_API_URL;

/// How many 429s in a row one call waits out before it gives up as a temporary
/// failure (the retry layer above may then try again later).
const MAX_WAITS: u32 = 8;
/// The longest single wait a 429 may ask for before the call gives up instead.
const LONGEST_WAIT: Duration = Duration::from_secs(120);
/// A longpoll may take what the client asks for, plus the up to 90 s of jitter
/// Dropbox documents adding, plus a margin for the answer's way back.
const LONGPOLL_JITTER: Duration = Duration::from_secs(90 + 30);
/// How a 416 (a range past the file's end) is told to the caller.
const RANGE_NOT_SATISFIABLE: &str = "range/not_satisfiable";

/// Hands out access tokens for a provider whose tokens expire. The layers above
/// implement it (a stored login, a refresh token in the environment), so the store
/// never reads a secret itself.
pub trait AccessTokens: Send + Sync {
    /// A token with time left. `refused` is one the provider has just called
    /// expired: that one must not be handed out again.
    fn access_token(&self, refused: Option<&str>) -> Result<Token, BackendError>;
}

/// What a call can end in besides a success.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The endpoint's own error (HTTP 409): `summary` is Dropbox's `error_summary`
    /// (`path/not_found/..`), which callers match on.
    Endpoint { summary: String },
    /// Anything else, already in the store's terms.
    Backend(BackendError),
}

impl ApiError {
    pub fn summary(&self) -> Option<&str> {
        match self {
            ApiError::Endpoint { summary } => Some(summary),
            ApiError::Backend(_) => None,
        }
    }

    /// The error in the store's terms, for a call about `what`.
    pub fn into_backend(self, what: &str) -> BackendError {
        match self {
            ApiError::Backend(e) => e,
            ApiError::Endpoint { summary } => endpoint_error(&summary, what),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        ApiError::Backend(e)
    }
}

/// An endpoint's 409 in the store's terms.
fn endpoint_error(summary: &str, what: &str) -> BackendError {
    let has = |tag: &str| summary.split('/').any(|part| part == tag);
    // An upload session that lapsed or was spent by an earlier try: the content
    // goes up again in a new one.
    if has("lookup_failed") {
        return temporary(format!(
            "Dropbox lost an upload session ({})",
            one_line(summary)
        ));
    }
    if has("not_found") {
        BackendError::NotFound { key: what.into() }
    } else if has("conflict") {
        BackendError::AlreadyExists { key: what.into() }
    } else if has("insufficient_space") {
        BackendError::Refused(
            "the Dropbox account is full: free some space or upgrade the plan, then try again"
                .into(),
        )
    } else if has("too_many_write_operations") || has("too_many_requests") {
        temporary(format!("Dropbox asks to slow down ({})", one_line(summary)))
    } else {
        BackendError::Invalid(format!(
            "Dropbox refused {what}: {}",
            one_line(summary.trim_end_matches('.').trim_end_matches('/'))
        ))
    }
}

pub(crate) fn temporary(message: String) -> BackendError {
    BackendError::Io {
        source: std::io::Error::other(message.clone()),
        message,
        temporary: true,
    }
}

/// A provider's text fit to quote to the user: one line, and nothing at all when
/// it may echo what the request carried (Dropbox's 400 for a malformed header
/// quotes the `Authorization` header back, token and all).
fn safe_text(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if lower.contains("authorization") || lower.contains("bearer") || lower.contains("token") {
        return "its answer is not repeated here: it may quote a credential".into();
    }
    one_line(text)
}

fn one_line(text: &str) -> String {
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    line.trim().to_owned()
}

/// `Dropbox-API-Arg` must be ASCII: JSON with every other character escaped.
pub(crate) fn ascii_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// A client of one Dropbox (its three hosts) as one user.
pub(crate) struct DropboxApi {
    urls: DropboxUrls,
    client: Client,
    longpoll_client: Client,
    tokens: std::sync::Arc<dyn AccessTokens>,
    sleep: fn(Duration),
}

impl std::fmt::Debug for DropboxApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropboxApi")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

/// Which host an endpoint lives on.
#[derive(Clone, Copy)]
enum Host {
    Api,
    Content,
    Notify,
}

impl DropboxApi {
    pub(crate) fn new(
        urls: DropboxUrls,
        tokens: std::sync::Arc<dyn AccessTokens>,
    ) -> Result<Self, BackendError> {
        let build = |b: reqwest::Result<Client>| {
            b.map_err(|e| BackendError::Invalid(format!("cannot make an HTTP client: {e}")))
        };
        let client = build(provider_client())?;
        let longpoll_client = build(
            Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(u64::from(super::LONGPOLL_SECS)) + LONGPOLL_JITTER)
                .user_agent(concat!("ghostie-fs/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .build(),
        )?;
        Ok(Self {
            urls,
            client,
            longpoll_client,
            tokens,
            sleep: std::thread::sleep,
        })
    }

    pub(crate) fn urls(&self) -> &DropboxUrls {
        &self.urls
    }

    fn url(&self, host: Host, endpoint: &str) -> String {
        let root = match host {
            Host::Api => &self.urls.api,
            Host::Content => &self.urls.content,
            Host::Notify => &self.urls.notify,
        };
        format!("{}/2/{endpoint}", root.trim_end_matches('/'))
    }

    fn unreachable(&self, host: Host, e: &reqwest::Error) -> BackendError {
        let url = match host {
            Host::Api => &self.urls.api,
            Host::Content => &self.urls.content,
            Host::Notify => &self.urls.notify,
        };
        let reason = if e.is_timeout() {
            format!("no answer in {} s", request_timeout().as_secs_f64())
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            "the connection broke".to_owned()
        };
        temporary(format!("Dropbox at {url} does not answer ({reason})"))
    }

    /// Sends what `build` makes with a token, replacing a token Dropbox calls
    /// expired once and waiting out 429s; returns the successful response.
    fn send(
        &self,
        host: Host,
        endpoint: &str,
        build: &dyn Fn(&Client, String) -> RequestBuilder,
    ) -> Result<Response, ApiError> {
        let mut refused: Option<Token> = None;
        let mut waits = 0;
        loop {
            let token = match host {
                Host::Notify => None,
                _ => Some(
                    self.tokens
                        .access_token(refused.as_deref().map(|t| t.as_str()))?,
                ),
            };
            let client = match host {
                Host::Notify => &self.longpoll_client,
                _ => &self.client,
            };
            let mut request = build(client, self.url(host, endpoint));
            if let Some(t) = &token {
                let auth = Zeroizing::new(format!("Bearer {}", t.as_str()));
                match reqwest::header::HeaderValue::from_str(&auth) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        request = request.header(AUTHORIZATION, value);
                    }
                    Err(_) => {
                        return Err(BackendError::LoginRefused(
                            "the Dropbox token holds characters no token has: log in again with 'ghostie-fs login dropbox'".into(),
                        )
                        .into())
                    }
                }
            }
            let response = request.send().map_err(|e| self.unreachable(host, &e))?;
            let status = response.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(response);
            }
            let headers = response.headers().clone();
            let body = response.text().unwrap_or_default();
            match self.judge(host, status, &headers, &body) {
                Judged::Expired if refused.is_none() => refused = token,
                Judged::Wait(wait) if waits < MAX_WAITS && wait <= LONGEST_WAIT => {
                    waits += 1;
                    tracing::debug!("Dropbox asks to wait {wait:?} ({endpoint})");
                    (self.sleep)(wait);
                }
                Judged::Wait(wait) => {
                    return Err(temporary(format!(
                        "Dropbox keeps asking to wait ({} s)",
                        wait.as_secs()
                    ))
                    .into())
                }
                Judged::Expired => {
                    return Err(BackendError::LoginRefused(
                        "Dropbox refused the new access token too: run 'ghostie-fs login dropbox' again"
                            .into(),
                    )
                    .into())
                }
                Judged::Failed(e) => return Err(e),
            }
        }
    }

    /// An answer that is not a success, in the terms the caller acts on.
    fn judge(&self, host: Host, status: u16, headers: &HeaderMap, body: &str) -> Judged {
        let json = serde_json::from_str::<Value>(body).ok();
        let summary = json
            .as_ref()
            .and_then(|j| j.get("error_summary")?.as_str().map(str::to_owned));
        let tag = |v: &Value| -> Option<String> {
            v.get("error")
                .and_then(|e| e.get(".tag").or_else(|| e.get("reason")?.get(".tag")))
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        };
        match status {
            401 => {
                let tag = json.as_ref().and_then(tag).unwrap_or_default();
                match tag.as_str() {
                    "expired_access_token" => Judged::Expired,
                    // The app lacks a permission: a new login of the same app
                    // cannot help until it is ticked in the App Console.
                    "missing_scope" => {
                        let scope = json
                            .as_ref()
                            .and_then(|j| j.get("error")?.get("required_scope")?.as_str())
                            .filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                            .unwrap_or("a permission")
                            .to_owned();
                        Judged::Failed(ApiError::Backend(BackendError::LoginRefused(format!(
                            "your Dropbox app lacks the permission {scope}: tick it on the app's Permissions tab in the App Console, then run 'ghostie-fs login dropbox' again"
                        ))))
                    }
                    _ => Judged::Failed(ApiError::Backend(BackendError::LoginRefused(
                        "Dropbox no longer accepts this login (it was revoked, or the token is wrong): run 'ghostie-fs login dropbox' again"
                            .into(),
                    ))),
                }
            }
            409 if summary.is_some() => Judged::Failed(ApiError::Endpoint {
                summary: summary.unwrap_or_default(),
            }),
            429 => {
                let secs = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .or_else(|| json.as_ref()?.get("error")?.get("retry_after")?.as_u64())
                    .unwrap_or(1);
                Judged::Wait(Duration::from_secs(secs.max(1)))
            }
            500..=599 => Judged::Failed(ApiError::Backend(temporary(format!(
                "Dropbox's service failed ({status}); it usually recovers soon"
            )))),
            400 => Judged::Failed(ApiError::Backend(BackendError::Invalid(format!(
                "Dropbox refused a request of ghostie-fs ({})",
                safe_text(body)
            )))),
            416 => Judged::Failed(ApiError::Endpoint {
                summary: RANGE_NOT_SATISFIABLE.into(),
            }),
            403 => Judged::Failed(ApiError::Backend(BackendError::Refused(format!(
                "Dropbox does not let this app do that ({})",
                summary
                    .as_deref()
                    .map(safe_text)
                    .unwrap_or_else(|| safe_text(body))
            )))),
            _ => Judged::Failed(ApiError::Backend(self.not_dropbox(host, status))),
        }
    }

    fn not_dropbox(&self, host: Host, status: u16) -> BackendError {
        let (url, flag) = match host {
            Host::Api => (&self.urls.api, "--api-url"),
            Host::Content => (&self.urls.content, "--content-url"),
            Host::Notify => (&self.urls.notify, "--notify-url"),
        };
        BackendError::Refused(format!(
            "the server at {url} does not answer as Dropbox's API does (it answered {status}); check {flag}"
        ))
    }

    fn json_of(&self, host: Host, response: Response) -> Result<Value, ApiError> {
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("json"));
        let status = response.status().as_u16();
        let text = response.text().map_err(|e| self.unreachable(host, &e))?;
        match serde_json::from_str(&text) {
            Ok(v) if is_json => Ok(v),
            _ => Err(self.not_dropbox(host, status).into()),
        }
    }

    /// An RPC call: `arg` as the JSON body (None: an endpoint without arguments).
    pub(crate) fn rpc(&self, endpoint: &str, arg: Option<&Value>) -> Result<Value, ApiError> {
        let body = arg.map(Value::to_string);
        let response = self.send(Host::Api, endpoint, &|client, url| {
            let r = client.post(url);
            match &body {
                Some(b) => r.header(CONTENT_TYPE, "application/json").body(b.clone()),
                None => r,
            }
        })?;
        self.json_of(Host::Api, response)
    }

    /// A content upload: `arg` in the header, `data` as the body; the result's JSON.
    pub(crate) fn upload(
        &self,
        endpoint: &str,
        arg: &Value,
        data: &[u8],
    ) -> Result<Value, ApiError> {
        let header = ascii_json(arg);
        let response = self.send(Host::Content, endpoint, &|client, url| {
            client
                .post(url)
                .header("Dropbox-API-Arg", header.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(data.to_vec())
        })?;
        self.json_of(Host::Content, response)
    }

    /// A file's bytes, or `range` of them (shorter where the file ends first).
    pub(crate) fn download(
        &self,
        path: &str,
        range: Option<Range<u64>>,
    ) -> Result<Vec<u8>, ApiError> {
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            return Ok(Vec::new());
        }
        let header = ascii_json(&serde_json::json!({ "path": path }));
        let result = self.send(Host::Content, "files/download", &|client, url| {
            let r = client.post(url).header("Dropbox-API-Arg", header.clone());
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
            // A range that starts past the end: nothing there, as for other stores.
            Err(ApiError::Endpoint { summary }) if summary == RANGE_NOT_SATISFIABLE => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        if response.headers().get("dropbox-api-result").is_none() {
            let status = response.status().as_u16();
            return Err(self.not_dropbox(Host::Content, status).into());
        }
        let whole = response.status().as_u16() == 200;
        let bytes = response
            .bytes()
            .map_err(|e| self.unreachable(Host::Content, &e))?;
        Ok(crate::backend::part_of_answer(range, whole, &bytes))
    }

    /// Waits up to `timeout_secs` for a change after `cursor`; returns whether one
    /// came, and how long Dropbox asks to wait before the next longpoll.
    pub(crate) fn longpoll(
        &self,
        cursor: &str,
        timeout_secs: u32,
    ) -> Result<(bool, u64), ApiError> {
        let body = serde_json::json!({ "cursor": cursor, "timeout": timeout_secs }).to_string();
        let response = self.send(
            Host::Notify,
            "files/list_folder/longpoll",
            &|client, url| {
                client
                    .post(url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            },
        )?;
        let json = self.json_of(Host::Notify, response)?;
        let changes = json.get("changes").and_then(Value::as_bool).ok_or_else(|| {
            ApiError::Backend(BackendError::Refused(format!(
                "the server at {} does not answer as Dropbox's notify host does; check --notify-url",
                self.urls.notify
            )))
        })?;
        let backoff = json.get("backoff").and_then(Value::as_u64).unwrap_or(0);
        Ok((changes, backoff))
    }
}

enum Judged {
    Expired,
    Wait(Duration),
    Failed(ApiError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_arg_is_ascii_json() {
        let v = serde_json::json!({ "path": "/é/😀" });
        let text = ascii_json(&v);
        assert!(text.is_ascii());
        assert_eq!(serde_json::from_str::<Value>(&text).ok(), Some(v));
    }

    #[test]
    fn endpoint_errors_map_to_store_errors() {
        assert!(endpoint_error("path/not_found/..", "k").is_not_found());
        assert!(endpoint_error("path_lookup/not_found/...", "k").is_not_found());
        assert!(matches!(
            endpoint_error("path/conflict/file/..", "k"),
            BackendError::AlreadyExists { .. }
        ));
        assert!(matches!(
            endpoint_error("path/insufficient_space/..", "k"),
            BackendError::Refused(_)
        ));
        assert!(endpoint_error("too_many_write_operations/..", "k").is_temporary());
        assert!(endpoint_error("lookup_failed/not_found/.", "k").is_temporary());
        assert!(endpoint_error("lookup_failed/closed/...", "k").is_temporary());
    }

    #[test]
    fn an_answer_that_may_quote_a_credential_is_never_repeated() {
        let echoed = "Error in call to API function \"files/upload\": Invalid authorization value in HTTP header \"Authorization\": \"Bearer sl.secret\"";
        assert!(!safe_text(echoed).contains("sl.secret"));
        assert_eq!(safe_text("path: bad\nmore"), "path: bad");
    }
}
