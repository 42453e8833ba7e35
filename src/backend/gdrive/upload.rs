//! Putting bytes into Drive: one request up to [`SIMPLE_MAX`] (a multipart
//! create, or a media update), a resumable session beyond. A session survives a
//! cut connection: the store asks Google how much arrived and goes on from
//! there, so a large file never starts over for a broken link.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use serde_json::{json, Value};

use super::api::{temporary, ApiError, DriveApi, Host};
use super::index::FILE_FIELDS;
use crate::backend::{BackendError, BackendResult};

/// Drive takes media and multipart uploads up to 5 MB; beyond, only resumable.
pub(crate) const SIMPLE_MAX: usize = 5_000_000;
/// Bytes per session request: a multiple of 256 KiB, as Drive requires of every
/// piece but the last, and small enough to arrive within one request's timeout.
const CHUNK: u64 = 8 * 1024 * 1024;
/// Failed session requests in a row, with nothing gained, before the upload
/// gives up (the retry layer may start a new session later).
const STUCK_TRIES: u32 = 5;
/// The slowest upload link a request's timeout allows for (about 1 Mbit/s, a
/// weak mobile connection), on top of the usual timeout.
const SLOWEST_BYTES_PER_SECOND: f64 = 128.0 * 1024.0;

/// How long a request carrying `bytes` may take: the body's way up on a slow
/// link must not be cut off by the timeout meant for an answer.
fn upload_timeout(bytes: usize) -> Duration {
    crate::backend::github::request_timeout()
        + Duration::from_secs_f64(bytes as f64 / SLOWEST_BYTES_PER_SECOND)
}

/// Bytes to upload: in memory, or a local file read piece by piece.
pub(crate) enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl Source<'_> {
    fn len(&self) -> BackendResult<u64> {
        match self {
            Source::Bytes(b) => Ok(b.len() as u64),
            Source::File(p) => std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| BackendError::unreadable(p, e)),
        }
    }

    /// Bytes `from..to`.
    fn piece(&self, from: u64, to: u64) -> BackendResult<Vec<u8>> {
        match self {
            Source::Bytes(b) => Ok(b[from as usize..to as usize].to_vec()),
            Source::File(p) => {
                let mut file =
                    std::fs::File::open(p).map_err(|e| BackendError::unreadable(p, e))?;
                file.seek(SeekFrom::Start(from))
                    .map_err(|e| BackendError::unreadable(p, e))?;
                let mut piece = vec![0u8; (to - from) as usize];
                file.read_exact(&mut piece).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        BackendError::Invalid(format!(
                            "{} shrank while it was uploaded",
                            p.display()
                        ))
                    } else {
                        BackendError::unreadable(p, e)
                    }
                })?;
                Ok(piece)
            }
        }
    }
}

/// Where new bytes go: a new file of this name, or new content for a file.
pub(crate) enum Target<'a> {
    New { name: &'a str },
    Existing { id: &'a str },
}

/// Uploads `source` to `target`; returns Drive's resource of the file (with
/// [`FILE_FIELDS`]).
pub(crate) fn upload(api: &DriveApi, target: Target, source: &Source) -> Result<Value, ApiError> {
    let size = source.len()?;
    if size <= SIMPLE_MAX as u64 {
        let data = source.piece(0, size)?;
        return match target {
            Target::New { name } => create_multipart(api, name, &data),
            Target::Existing { id } => update_media(api, id, &data),
        };
    }
    let session = start_session(api, &target, size)?;
    send_session(api, &session, source, size)
}

fn metadata(name: &str) -> Value {
    json!({ "name": name, "parents": ["appDataFolder"], "mimeType": "application/octet-stream" })
}

fn create_multipart(api: &DriveApi, name: &str, data: &[u8]) -> Result<Value, ApiError> {
    let boundary = format!("ghostie-{:016x}", rand::random::<u64>());
    let mut body = Vec::with_capacity(data.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n",
            metadata(name)
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let url = api.upload_url("files");
    let content_type = format!("multipart/related; boundary={boundary}");
    let response = api.send(Host::Upload, &url, &|c, u| {
        c.post(u)
            .timeout(upload_timeout(body.len()))
            .query(&[("uploadType", "multipart"), ("fields", FILE_FIELDS)])
            .header(CONTENT_TYPE, content_type.clone())
            .body(body.clone())
    })?;
    api.json_of(Host::Upload, response)
}

fn update_media(api: &DriveApi, id: &str, data: &[u8]) -> Result<Value, ApiError> {
    let url = api.upload_url(&format!("files/{id}"));
    let response = api.send(Host::Upload, &url, &|c, u| {
        c.patch(u)
            .timeout(upload_timeout(data.len()))
            .query(&[("uploadType", "media"), ("fields", FILE_FIELDS)])
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data.to_vec())
    })?;
    api.json_of(Host::Upload, response)
}

/// Opens a session for `size` bytes; returns its address.
fn start_session(api: &DriveApi, target: &Target, size: u64) -> Result<String, ApiError> {
    let (url, meta, is_new) = match target {
        Target::New { name } => (api.upload_url("files"), metadata(name), true),
        Target::Existing { id } => (api.upload_url(&format!("files/{id}")), json!({}), false),
    };
    let body = meta.to_string();
    let response = api.send(Host::Upload, &url, &|c, u| {
        let r = if is_new { c.post(u) } else { c.patch(u) };
        r.query(&[("uploadType", "resumable"), ("fields", FILE_FIELDS)])
            .header(CONTENT_TYPE, "application/json; charset=UTF-8")
            .header("X-Upload-Content-Type", "application/octet-stream")
            .header("X-Upload-Content-Length", size.to_string())
            .body(body.clone())
    })?;
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match location {
        Some(l) if api.is_upload_host(&l) => Ok(l),
        Some(_) => Err(BackendError::Refused(format!(
            "the server at {} handed out an upload session on another host; check --upload-url",
            api.urls().upload
        ))
        .into()),
        None => Err(api.not_google(Host::Upload, 200).into()),
    }
}

/// Where a session stands after a request.
enum Progress {
    /// This many bytes arrived; send the rest.
    Have(u64),
    Done(Value),
}

/// The bytes a 308's `Range: bytes=0-N` says arrived (none without one).
fn received(response: &reqwest::blocking::Response) -> Option<u64> {
    match response.headers().get(reqwest::header::RANGE) {
        None => Some(0),
        Some(v) => {
            let end = v.to_str().ok()?.trim().strip_prefix("bytes=0-")?;
            end.parse::<u64>().ok().map(|n| n + 1)
        }
    }
}

fn progress_of(
    api: &DriveApi,
    response: reqwest::blocking::Response,
    size: u64,
) -> Result<Progress, ApiError> {
    if response.status().as_u16() == 308 {
        return received(&response)
            .filter(|&n| n <= size)
            .map(Progress::Have)
            .ok_or_else(|| api.not_google(Host::Session, 308).into());
    }
    api.json_of(Host::Session, response).map(Progress::Done)
}

fn send_session(
    api: &DriveApi,
    session: &str,
    source: &Source,
    size: u64,
) -> Result<Value, ApiError> {
    let mut have = 0u64;
    let mut stuck = 0u32;
    loop {
        let end = (have + CHUNK).min(size);
        let piece = source.piece(have, end)?;
        let range = format!("bytes {have}-{}/{size}", end - 1);
        let sent = api.send(Host::Session, session, &|c, u| {
            c.put(u)
                .timeout(upload_timeout(piece.len()))
                .header(CONTENT_RANGE, range.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(piece.clone())
        });
        let outcome = match sent {
            Ok(response) => progress_of(api, response, size),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(Progress::Done(file)) => return Ok(file),
            Ok(Progress::Have(n)) if n > have => {
                have = n;
                stuck = 0;
                continue;
            }
            Ok(Progress::Have(_)) => {}
            // A session Google no longer knows (it lapsed after a week, or ended):
            // only a new one helps.
            Err(ApiError::NotFound) => {
                return Err(temporary("Google Drive ended an upload session".into()).into())
            }
            Err(ApiError::Backend(e)) if e.is_temporary() => {
                tracing::debug!("an upload piece failed ({e}); asking where the session stands");
            }
            Err(e) => return Err(e),
        }
        stuck += 1;
        if stuck >= STUCK_TRIES {
            return Err(temporary(
                "an upload to Google Drive made no progress after several tries".into(),
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(250) * 2u32.pow(stuck - 1));
        match status(api, session, size)? {
            Progress::Done(file) => return Ok(file),
            Progress::Have(n) => {
                if n > have {
                    stuck = 0;
                }
                have = n;
            }
        }
    }
}

/// Asks how much of the session arrived (`Content-Range: bytes */size`).
fn status(api: &DriveApi, session: &str, size: u64) -> Result<Progress, ApiError> {
    let range = format!("bytes */{size}");
    let mut tries = 0;
    loop {
        let asked = api.send(Host::Session, session, &|c, u| {
            c.put(u)
                .header(CONTENT_RANGE, range.clone())
                .header(CONTENT_LENGTH, "0")
        });
        match asked {
            Ok(response) => return progress_of(api, response, size),
            Err(ApiError::NotFound) => {
                return Err(temporary("Google Drive ended an upload session".into()).into())
            }
            Err(ApiError::Backend(e)) if e.is_temporary() && tries < STUCK_TRIES => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(250) * 2u32.pow(tries));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_multiples_of_256_kib() {
        assert_eq!(CHUNK % (256 * 1024), 0);
    }
}
