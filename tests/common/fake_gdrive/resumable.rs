//! Resumable upload sessions: `uploadType=resumable` starts one (200 and a
//! `Location` carrying `upload_id`), `PUT`s with `Content-Range` fill it, and
//! the last byte makes (or replaces) the file.
//!
//! The protocol's edges, enforced: every chunk but the last is a multiple of
//! 256 KiB; a chunk must start where the server's data ends (the client learns
//! where from the 308's `Range`, or by asking with `Content-Range: bytes */N`);
//! a chunk cut off mid-body adds nothing, and the session lives on for a
//! resume; sessions end a week after they began. The session URI is its own
//! credential, as at Google: chunks need no bearer token.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::fake_http::{Head, Response};
use super::auth::Caller;
use super::files::{self, Meta};
use super::server::Call;
use super::store::{self, Space};
use super::{wire, Shared};

const CHUNK_UNIT: usize = 256 * 1024;
const SESSION_MS: u64 = 7 * 24 * 3_600_000;

struct Session {
    target: Option<String>,
    meta: Option<Meta>,
    caller: Caller,
    data: Vec<u8>,
    total: Option<usize>,
    created_ms: u64,
    /// The file made, once the last byte arrived (a repeat gets it again).
    done: Option<String>,
}

#[derive(Default)]
pub struct Sessions {
    open: HashMap<String, Session>,
}

impl Sessions {
    /// Bytes of sessions not yet finished.
    pub fn everything(&self) -> Vec<(String, Vec<u8>)> {
        self.open
            .iter()
            .filter(|(_, s)| s.done.is_none() && !s.data.is_empty())
            .map(|(id, s)| (format!("upload_session:{id}"), s.data.clone()))
            .collect()
    }
}

/// `POST /upload/drive/v3/files?uploadType=resumable` (a new file) or `PATCH
/// …/files/{id}?uploadType=resumable` (new content for `id`).
pub fn start(call: Call, target: Option<String>) -> Result<Response, Response> {
    let meta = Meta::parse(&call.body)?;
    let total = match call.head.header("x-upload-content-length") {
        Some(v) => Some(
            v.trim()
                .parse::<usize>()
                .map_err(|_| wire::bad_request("Invalid X-Upload-Content-Length header"))?,
        ),
        None => None,
    };
    let mut state = call.shared.state();
    let now = state.now_ms();
    // Google checks the metadata when the session starts, not at its end.
    match &target {
        Some(id) => {
            if !state
                .store
                .get(id)
                .is_some_and(|f| files::visible(&call.caller, f))
            {
                return Err(wire::not_found(id));
            }
        }
        None => {
            let parents = meta.parents.clone().unwrap_or_else(|| vec!["root".into()]);
            let Some((_, space)) = parents.first().and_then(|p| state.parent(p)) else {
                return Err(wire::not_found(parents.first().map_or("", String::as_str)));
            };
            let reach = match space {
                Space::AppData => call.caller.sees_app_data(),
                Space::Drive => call.caller.sees_drive(),
            };
            if !reach {
                return Err(wire::error(
                    403,
                    "insufficientPermissions",
                    "Request had insufficient authentication scopes.",
                ));
            }
        }
    }
    let upload_id = format!("AD{}", wire::random_string(70));
    state.sessions.open.insert(
        upload_id.clone(),
        Session {
            target: target.clone(),
            meta: Some(meta),
            caller: Caller {
                scopes: call.caller.scopes.clone(),
            },
            data: Vec::new(),
            total,
            created_ms: now,
            done: None,
        },
    );
    let host = call.head.header("host").unwrap_or("127.0.0.1").to_owned();
    let path = match &target {
        Some(id) => format!("/upload/drive/v3/files/{id}"),
        None => "/upload/drive/v3/files".to_owned(),
    };
    let mut query = format!("uploadType=resumable&upload_id={upload_id}");
    if let Some(f) = call.params.get("fields") {
        query.push_str(&format!("&fields={}", wire::encode(f)));
    }
    Ok(wire::response(200)
        .with("x-guploader-uploadid", upload_id)
        .with("location", format!("http://{host}{path}?{query}")))
}

/// `Content-Range: bytes A-B/T`, `bytes A-B/*`, `bytes */T` or `bytes */*`.
struct ContentRange {
    span: Option<(usize, usize)>,
    total: Option<usize>,
}

fn content_range(v: &str) -> Option<ContentRange> {
    let (span, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let span = match span {
        "*" => None,
        s => {
            let (a, b) = s.split_once('-')?;
            let (a, b) = (a.parse().ok()?, b.parse().ok()?);
            (a <= b).then_some((a, b))?;
            Some((a, b))
        }
    };
    Some(ContentRange { span, total })
}

fn incomplete(received: usize) -> Response {
    let r = wire::response(308).with("x-range-md5", "");
    if received == 0 {
        r
    } else {
        r.with("range", format!("bytes=0-{}", received - 1))
    }
}

/// `PUT` to a session URI: a chunk, or a status query.
pub fn chunk(
    shared: &Shared,
    head: &Head,
    params: &HashMap<String, String>,
    body: Vec<u8>,
) -> Result<Response, Response> {
    if head.method != "PUT" {
        return Err(wire::bad_request("Upload chunks are sent with PUT"));
    }
    let upload_id = params.get("upload_id").cloned().unwrap_or_default();
    let gone = || wire::error(404, "notFound", "Upload session not found or expired.");
    let mut state = shared.state();
    let now = state.now_ms();
    let s = state.sessions.open.get_mut(&upload_id).ok_or_else(gone)?;
    if s.created_ms + SESSION_MS <= now {
        state.sessions.open.remove(&upload_id);
        return Err(gone());
    }
    if let Some(id) = s.done.clone() {
        let f = state.store.get(&id).cloned().ok_or_else(gone)?;
        drop(state);
        return files::file_answer(200, &f, params);
    }
    let received = s.data.len();
    let range = match head.header("content-range") {
        Some(v) => content_range(v).ok_or_else(|| {
            wire::bad_request(&format!("Failed to parse Content-Range header: {v}"))
        })?,
        // No Content-Range: the whole upload in this one request.
        None => ContentRange {
            span: (!body.is_empty()).then(|| (0, body.len() - 1)),
            total: Some(body.len()),
        },
    };
    if let (Some(t), Some(known)) = (range.total, s.total) {
        if t != known {
            return Err(wire::bad_request(&format!(
                "Content-Range total {t} disagrees with the upload's length {known}"
            )));
        }
    }
    if range.total.is_some() {
        s.total = range.total;
    }
    match range.span {
        None => {
            if !body.is_empty() {
                return Err(wire::bad_request("A status query carries no bytes"));
            }
            // A status query, or an empty file's only request.
            if s.total != Some(received) {
                return Ok(incomplete(received));
            }
        }
        Some((a, b)) => {
            if body.len() != b - a + 1 {
                return Err(wire::bad_request(&format!(
                    "Content-Range bytes {a}-{b} names {} bytes but the body has {}",
                    b - a + 1,
                    body.len()
                )));
            }
            if a != received {
                return Err(wire::bad_request(&format!(
                    "Content-Range starts at {a} but the server has {received} bytes; \
                     ask with Content-Range: bytes */TOTAL and resume from there"
                )));
            }
            let last = s.total == Some(b + 1);
            if s.total.is_some_and(|t| b + 1 > t) {
                return Err(wire::bad_request(
                    "Content-Range runs past the upload's length",
                ));
            }
            if !last && body.len() % CHUNK_UNIT != 0 {
                return Err(wire::bad_request(&format!(
                    "Invalid request. The number of bytes uploaded is required to be equal or greater than 262144, except for the final request (it's recommended to be the exact multiple of 262144). The received request contained {} bytes, which does not meet this requirement.",
                    body.len()
                )));
            }
            if s.data.is_empty() {
                s.data = body;
            } else {
                s.data.extend_from_slice(&body);
            }
            if !last {
                return Ok(incomplete(s.data.len()));
            }
        }
    }
    // The last byte is in: make the file, hashing outside the lock.
    let data = std::mem::take(&mut s.data);
    let meta = s.meta.take().unwrap_or_default();
    let target = s.target.clone();
    let caller = Caller {
        scopes: s.caller.scopes.clone(),
    };
    drop(state);
    let sha = store::sha256_hex(&data);
    let content = Arc::new(data);
    let made = match target {
        None => files::create_with(shared, &caller, meta, content, sha),
        Some(id) => files::update_with(shared, &caller, &id, meta, Some((content, sha))),
    }?;
    if let Some(s) = shared.state().sessions.open.get_mut(&upload_id) {
        s.done = Some(made.id.clone());
    }
    files::file_answer(200, &made, params)
}
