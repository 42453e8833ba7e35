//! The fake's HTTP front: one listener, one thread per connection, bodies read
//! (each route's own limit), outages applied, the latency added, the bearer and
//! the rate budget checked, each request routed and recorded.
//!
//! Every route of every Google host the product meets is here, told apart by
//! path alone, since one port plays them all.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::fake_http::{self as http, BodyError, Framing, Head, Response};
use super::auth::{self, Caller};
use super::{files, listing, resumable, wire};
use super::{Outage, Seen, Shared, State, STALL_LIMIT};

/// Google's documented ceiling for `uploadType=media` and `multipart`.
pub const SIMPLE_LIMIT: usize = 5 * 1024 * 1024;
/// Room for a multipart body's metadata and delimiters on top of the media.
const MULTIPART_SLACK: usize = 256 * 1024;
/// One resumable chunk; the product's largest upload goes in one if it likes.
const CHUNK_LIMIT: usize = 1024 * 1024 * 1024;
/// Any other body: metadata JSON, forms.
const METADATA_LIMIT: usize = 1024 * 1024;

/// One authenticated Drive request on its way to its handler.
pub struct Call<'a> {
    pub shared: &'a Shared,
    pub head: &'a Head,
    pub params: HashMap<String, String>,
    pub body: Vec<u8>,
    pub caller: Caller,
}

pub fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Some(id) = shared.register(&stream) else {
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        };
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("fake-gdrive-conn".into())
            .spawn(move || {
                serve(stream, &s);
                s.unregister(id);
            });
        if spawned.is_err() {
            shared.unregister(id);
        }
    }
}

fn body_limit(head: &Head) -> usize {
    if head.query.contains("upload_id=") {
        CHUNK_LIMIT
    } else if head.path.starts_with("/upload/") && !head.query.contains("uploadType=resumable") {
        SIMPLE_LIMIT + MULTIPART_SLACK
    } else {
        METADATA_LIMIT
    }
}

/// Answers one connection's requests in turn until either side closes it.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let head = match http::read_head(&mut reader) {
            Ok(Some(head)) => head,
            Ok(None) | Err(http::HeadError::Io) => return,
            Err(http::HeadError::Malformed { method, target }) => {
                let response = html(400, "Error 400 (Bad Request)!!1");
                shared.state().record(&method, &target, "", &response);
                let _ = response.write_to(&mut writer, true);
                http::linger_close(&mut reader, &writer);
                return;
            }
        };
        let limit = body_limit(&head);
        let framing = http::framing(&head, limit);
        let outage = shared.state().outage;
        if outage == Outage::Stall {
            shared.state().record_unanswered(&head);
            let until = Instant::now() + STALL_LIMIT;
            while shared.state().outage == Outage::Stall
                && Instant::now() < until
                && !shared.stopping.load(SeqCst)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        let body = match framing {
            Framing::Length(n) => http::read_length(&mut reader, n),
            Framing::Chunked => http::read_chunked(&mut reader, limit),
            Framing::Empty | Framing::LengthRequired => Ok(Vec::new()),
            Framing::TooLarge | Framing::Invalid => Ok(Vec::new()),
        };
        if outage == Outage::CutConnections {
            shared.state().record_unanswered(&head);
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        let refused = match (&framing, &body) {
            (Framing::TooLarge, _) | (_, Err(BodyError::TooLarge)) => Some(too_large(&head)),
            (Framing::Invalid, _) | (_, Err(BodyError::Invalid)) => {
                Some(html(400, "Error 400 (Bad Request)!!1"))
            }
            // A client that went away mid-body: what it sent of a chunk is
            // dropped, and its upload session lives on for a resume.
            (_, Err(BodyError::Io)) => return,
            _ => None,
        };
        if let Some(response) = refused {
            shared
                .state()
                .record(&head.method, &head.path, &head.query, &response);
            let _ = response.write_to(&mut writer, true);
            http::linger_close(&mut reader, &writer);
            return;
        }
        let body = body.unwrap_or_default();
        let close = head.wants_close();
        let latency = shared.state().latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let response = answer(shared, &head, body);
        if response.write_to(&mut writer, close).is_err() {
            return;
        }
        if close {
            http::linger_close(&mut reader, &writer);
            return;
        }
    }
}

fn too_large(head: &Head) -> Response {
    if head.path.starts_with("/upload/") && !head.query.contains("upload_id=") {
        wire::error(
            413,
            "uploadTooLarge",
            "Request Too Large: media and multipart uploads are limited to 5 MB; use uploadType=resumable",
        )
    } else {
        wire::error(413, "uploadTooLarge", "Request Too Large")
    }
}

/// A page from Google's front end, for requests no API sees.
pub fn html(status: u16, title: &str) -> Response {
    wire::response(status)
        .with("content-type", "text/html; charset=UTF-8")
        .with_body(
            format!("<!DOCTYPE html><html lang=en><title>{title}</title><p><b>{status}.</b> That’s an error.</html>")
                .into_bytes(),
        )
}

/// The whole answer to one request, recorded before it is sent.
fn answer(shared: &Shared, head: &Head, body: Vec<u8>) -> Response {
    let outage = {
        let mut state = shared.state();
        if state.outage != Outage::None {
            state.outage_answers += 1;
        }
        (state.outage, state.outage_answers)
    };
    let response = match outage {
        (Outage::ServerError, n) if n % 2 == 1 => {
            wire::error(503, "backendError", "The service is currently unavailable.")
        }
        (Outage::ServerError, _) => wire::error(500, "backendError", "Backend Error"),
        (Outage::NotGoogle, _) => wire::response(200)
            .with("content-type", "text/html; charset=utf-8")
            .with_body(
                b"<html><head><title>Welcome</title></head><body><p>Please sign in to \
                  continue to the internet.</p></body></html>"
                    .to_vec(),
            ),
        (Outage::RateLimited, _) => shared.state().rate_refusal(),
        _ => dispatch(shared, head, body).unwrap_or_else(|refused| refused),
    };
    let mut state = shared.state();
    let date = http::http_date(state.now_ms() / 1_000);
    let response = response.with("date", date);
    state.record(&head.method, &head.path, &head.query, &response);
    response
}

fn dispatch(shared: &Shared, head: &Head, body: Vec<u8>) -> Result<Response, Response> {
    let path = head.path.as_str();
    let method = head.method.as_str();
    let form = || wire::params(&String::from_utf8_lossy(&body));
    match (method, path) {
        ("POST", "/token") => {
            let mut state = shared.state();
            let now = state.now_ms();
            return Ok(state.auth.token(&form(), now));
        }
        ("POST", "/device/code") => {
            let mut state = shared.state();
            let now = state.now_ms();
            return Ok(state.auth.device_code(&form(), now));
        }
        ("POST", "/revoke") => {
            let q = wire::params(&head.query);
            let token = q
                .get("token")
                .cloned()
                .or_else(|| form().get("token").cloned());
            return Ok(shared
                .state()
                .auth
                .revoke_endpoint(token.as_deref().unwrap_or("")));
        }
        ("GET", "/o/oauth2/v2/auth") => return Ok(auth::consent_page()),
        _ => {}
    }
    let drive = path.strip_prefix("/drive/v3/");
    let upload = path.strip_prefix("/upload/drive/v3/");
    if drive.is_none() && upload.is_none() {
        return Err(html(404, "Error 404 (Not Found)!!1"));
    }
    let params = wire::params(&head.query);
    // A resumable session's URI is its own credential, as at Google.
    if upload.is_some() && params.contains_key("upload_id") {
        shared.state().pace()?;
        return resumable::chunk(shared, head, &params, body);
    }
    let caller = {
        let state = shared.state();
        state.auth.authenticate(head, state.now_ms())?
    };
    shared.state().pace()?;
    let call = Call {
        shared,
        head,
        params,
        body,
        caller,
    };
    let segments: Vec<&str> = drive.or(upload).unwrap_or("").split('/').collect();
    if upload.is_some() {
        let kind = call.params.get("uploadType").cloned().unwrap_or_default();
        return match (method, segments.as_slice(), kind.as_str()) {
            ("POST", ["files"], "resumable") => resumable::start(call, None),
            ("PATCH", ["files", id], "resumable") => {
                let id = id.to_string();
                resumable::start(call, Some(id))
            }
            ("POST", ["files"], "media" | "multipart") => files::upload(call, None),
            ("PATCH", ["files", id], "media" | "multipart") => {
                let id = id.to_string();
                files::upload(call, Some(id))
            }
            (_, _, "media" | "multipart" | "resumable") => {
                Err(html(404, "Error 404 (Not Found)!!1"))
            }
            _ => Err(wire::invalid(
                "uploadType",
                &format!("Invalid value '{kind}' for uploadType: media, multipart or resumable"),
            )),
        };
    }
    match (method, segments.as_slice()) {
        ("GET", ["files"]) => listing::list(call),
        ("POST", ["files"]) => files::create(call),
        ("GET", ["files", id]) => {
            let id = id.to_string();
            files::get(call, &id)
        }
        ("PATCH", ["files", id]) => {
            let id = id.to_string();
            files::update(call, &id)
        }
        ("DELETE", ["files", id]) => {
            let id = id.to_string();
            files::delete(call, &id)
        }
        ("POST", ["files", id, "permissions"]) => {
            let id = id.to_string();
            files::share(call, &id)
        }
        ("POST", ["files", _, "copy"]) => Err(wire::unsupported("files.copy")),
        ("GET", ["about"]) => files::about(call),
        ("GET", ["changes", "startPageToken"]) => listing::start_page_token(call),
        ("GET", ["changes"]) => listing::changes(call),
        _ => Err(html(404, "Error 404 (Not Found)!!1")),
    }
}

impl State {
    /// One request's share of the budget, or Google's refusal.
    fn pace(&mut self) -> Result<(), Response> {
        if self.pacer.take() {
            Ok(())
        } else {
            Err(self.rate_refusal())
        }
    }

    /// Google's refusals for rate, in turn: 403 `userRateLimitExceeded`, 429
    /// `rateLimitExceeded`, 403 `rateLimitExceeded` — a client must take all three.
    fn rate_refusal(&mut self) -> Response {
        self.rate_refusals += 1;
        match self.rate_refusals % 3 {
            1 => wire::error(403, "userRateLimitExceeded", "User Rate Limit Exceeded"),
            2 => wire::error(429, "rateLimitExceeded", "Rate Limit Exceeded"),
            _ => wire::error(403, "rateLimitExceeded", "Rate Limit Exceeded"),
        }
    }

    fn record(&mut self, method: &str, path: &str, query: &str, response: &Response) {
        let reason = (response.status >= 400)
            .then(|| serde_json::from_slice::<Value>(response.body()).ok())
            .flatten()
            .and_then(|v| {
                let e = v.get("error")?;
                e.as_str()
                    .or_else(|| e.pointer("/errors/0/reason").and_then(Value::as_str))
                    .map(str::to_owned)
            });
        self.seen.push(Seen {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            status: response.status,
            reason,
        });
    }

    fn record_unanswered(&mut self, head: &Head) {
        self.seen.push(Seen {
            method: head.method.clone(),
            path: head.path.clone(),
            query: head.query.clone(),
            status: 0,
            reason: None,
        });
    }
}
