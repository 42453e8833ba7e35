//! The fake's HTTP front: one listener per host, one thread per connection,
//! bodies read (by length or chunks, up to Dropbox's 150 MiB), outages applied,
//! the latency added, and each request routed to its endpoint and recorded.
//!
//! What never reaches the API is answered as the web server in front of
//! Dropbox answers it: an HTML page (a body past the limit is a 413 there,
//! before any endpoint looks at it).

use std::io::BufReader;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::fake_http::{self as http, BodyError, Framing, Head, Response};
use super::wire::{self, Style};
use super::{auth, files, listing, sessions};
use super::{Call, Host, Outage, Seen, Shared, State, BODY_LIMIT, STALL_LIMIT};

pub fn accept_loop(listener: TcpListener, host: Host, shared: Arc<Shared>) {
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
            .name("fake-dropbox-conn".into())
            .spawn(move || {
                serve(stream, host, &s);
                s.unregister(id);
            });
        if spawned.is_err() {
            shared.unregister(id);
        }
    }
}

/// Answers one connection's requests in turn until either side closes it.
fn serve(stream: TcpStream, host: Host, shared: &Shared) {
    // Heads and small answers go out at once: a client waiting on a delayed
    // segment would measure Nagle's algorithm, not the fake.
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let head = match http::read_head(&mut reader) {
            Ok(Some(head)) => head,
            Ok(None) | Err(http::HeadError::Io) => return,
            Err(http::HeadError::Malformed { target, .. }) => {
                let response = wire::text(400, "Bad Request");
                shared.state().record(host, &target, None, &response);
                let _ = response.write_to(&mut writer, true);
                http::linger_close(&mut reader, &writer);
                return;
            }
        };
        let framing = http::framing(&head, BODY_LIMIT);
        let outage = shared.state().outage;
        if outage == Outage::Stall {
            shared.state().record_unanswered(host, &head);
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
            Framing::Chunked => http::read_chunked(&mut reader, BODY_LIMIT),
            // Without a length or chunks a request has no body (RFC 9112 §6.3),
            // as a POST with nothing to send may be written.
            Framing::Empty | Framing::LengthRequired => Ok(Vec::new()),
            Framing::TooLarge | Framing::Invalid => Ok(Vec::new()),
        };
        if outage == Outage::CutConnections {
            // The body was read first: closing on unread bytes makes the kernel
            // send a reset, and the client should see a plain end of stream.
            shared.state().record_unanswered(host, &head);
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        let refused = match (&framing, &body) {
            // What Dropbox's front end says of a body past its limit.
            (Framing::TooLarge, _) | (_, Err(BodyError::TooLarge)) => {
                Some(front_end_page(413, "413 Request Entity Too Large"))
            }
            (Framing::Invalid, _) | (_, Err(BodyError::Invalid)) => {
                Some(front_end_page(400, "400 Bad Request"))
            }
            (_, Err(BodyError::Io)) => return,
            _ => None,
        };
        if let Some(response) = refused {
            // The body was not read (or not all of it): the connection cannot
            // carry another request.
            shared
                .state()
                .record(host, &head.path, head.header("authorization"), &response);
            let _ = response.write_to(&mut writer, true);
            http::linger_close(&mut reader, &writer);
            return;
        }
        let body = body.unwrap_or_default();
        let close = head.wants_close();
        // A network's round trip, outside the lock: requests on other
        // connections travel meanwhile.
        let latency = shared.state().latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let response = answer(shared, host, &head, body);
        if response.write_to(&mut writer, close).is_err() {
            return;
        }
        if close {
            http::linger_close(&mut reader, &writer);
            return;
        }
    }
}

/// An HTML error page from the web server in front of the API (nginx's
/// wording), for requests the API never sees.
fn front_end_page(status: u16, title: &str) -> Response {
    wire::response(status)
        .with("content-type", "text/html")
        .with_body(
            format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
                 <center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
            )
            .into_bytes(),
        )
}

/// The whole answer to one request, recorded before it is sent (so a test that
/// has its answer also finds it in `seen`).
fn answer(shared: &Shared, host: Host, head: &Head, body: Vec<u8>) -> Response {
    let outage = {
        let mut state = shared.state();
        if state.outage != Outage::None {
            state.outage_answers += 1;
        }
        (state.outage, state.outage_answers)
    };
    let response = match outage {
        (Outage::ServerError, n) if n % 2 == 1 => wire::text(503, "Service Unavailable"),
        (Outage::ServerError, _) => front_end_page(500, "500 Internal Server Error"),
        (Outage::NotDropbox, _) => wire::response(200)
            .with("content-type", "text/html; charset=utf-8")
            .with_body(
                b"<html><head><title>Welcome</title></head><body><p>Please sign in to \
                  continue to the internet.</p></body></html>"
                    .to_vec(),
            ),
        (Outage::TooManyRequests { retry_after_secs }, _) => {
            wire::rate_limited("too_many_requests", retry_after_secs)
        }
        _ => dispatch(shared, host, head, body).unwrap_or_else(|refused| refused),
    };
    let mut state = shared.state();
    let response = response.with("date", http::http_date(state.now()));
    state.record(host, &head.path, head.header("authorization"), &response);
    response
}

fn dispatch(shared: &Shared, host: Host, head: &Head, body: Vec<u8>) -> Result<Response, Response> {
    if let Some(endpoint) = head.path.strip_prefix("/2/") {
        return api(shared, host, head, endpoint, body);
    }
    match (host, head.path.as_str()) {
        (Host::Api, "/oauth2/token") => Ok(auth::token_endpoint(shared, head, &body)),
        (Host::Api, "/oauth2/authorize") => Ok(auth::authorize_page(shared, head)),
        _ => Err(wire::text(404, "Not Found")),
    }
}

/// `POST /2/<endpoint>`: the host, the method, authentication, the arguments in
/// the endpoint's style, then the endpoint.
fn api(
    shared: &Shared,
    host: Host,
    head: &Head,
    endpoint: &str,
    body: Vec<u8>,
) -> Result<Response, Response> {
    let Some((served_by, style)) = wire::route(endpoint) else {
        return Err(wire::text(
            404,
            &format!(r#"Unknown API function: "{endpoint}""#),
        ));
    };
    if served_by != host {
        // The status and the plain text are Dropbox's; the wording is the fake's.
        return Err(wire::bad_input(
            endpoint,
            &format!(
                "this function is served by {}, not {}",
                wire::host_name(served_by),
                wire::host_name(host)
            ),
        ));
    }
    if head.method != "POST" {
        return Err(wire::text(
            405,
            &format!("Method {} not allowed; use POST", head.method),
        ));
    }
    let content_type = head.header("content-type");
    if style == Style::NoAuth {
        if head.header("authorization").is_some() {
            return Err(wire::bad_input(
                endpoint,
                "Your request includes an Authorization header, but this function does not use it.",
            ));
        }
        let args = wire::rpc_args(endpoint, content_type, &body, false)?;
        return listing::longpoll(shared, endpoint, &args);
    }
    let caller = {
        let state = shared.state();
        state.auth.authenticate(head, endpoint, state.now_ms())?
    };
    let args = match style {
        Style::Rpc { void } => wire::rpc_args(endpoint, content_type, &body, void)?,
        Style::Upload | Style::Download | Style::NoAuth => wire::content_args(
            endpoint,
            style,
            head.header("dropbox-api-arg"),
            content_type,
        )?,
    };
    let call = Call {
        shared,
        endpoint,
        style,
        head,
        caller,
        args,
        body,
    };
    match endpoint {
        "auth/token/revoke" => auth::revoke_token(call),
        "users/get_current_account" => auth::current_account(),
        "users/get_space_usage" => auth::space_usage(&shared.state()),
        "files/list_folder" => listing::list_folder(call),
        "files/list_folder/continue" => listing::list_continue(call),
        "files/list_folder/get_latest_cursor" => listing::latest_cursor(call),
        "files/get_metadata" => files::get_metadata(call),
        "files/delete_v2" => files::delete(call),
        "files/create_folder_v2" => files::create_folder(call),
        "files/upload" => files::upload(call),
        "files/download" => files::download(call),
        "files/upload_session/start" => sessions::start(call),
        "files/upload_session/append_v2" => sessions::append(call),
        "files/upload_session/finish" => sessions::finish(call),
        "files/upload_session/finish_batch_v2" => sessions::finish_batch(call),
        _ => Err(wire::text(
            404,
            &format!(r#"Unknown API function: "{endpoint}""#),
        )),
    }
}

impl State {
    pub fn record(
        &mut self,
        host: Host,
        path: &str,
        authorization: Option<&str>,
        response: &Response,
    ) {
        let endpoint = endpoint_of(path);
        let error_summary = (response.status >= 400)
            .then(|| serde_json::from_slice::<Value>(response.body()).ok())
            .flatten()
            .and_then(|v| {
                let key = if endpoint == "oauth2/token" {
                    "error"
                } else {
                    "error_summary"
                };
                v.get(key).and_then(Value::as_str).map(str::to_owned)
            });
        self.seen.push(Seen {
            host,
            endpoint,
            status: response.status,
            error_summary,
            authorization: authorization.map(str::to_owned),
        });
    }

    fn record_unanswered(&mut self, host: Host, head: &Head) {
        self.seen.push(Seen {
            host,
            endpoint: endpoint_of(&head.path),
            status: 0,
            error_summary: None,
            authorization: head.header("authorization").map(str::to_owned),
        });
    }
}

/// `files/upload` for `/2/files/upload`, `oauth2/token` for `/oauth2/token`.
fn endpoint_of(path: &str) -> String {
    let path = path.strip_prefix("/2/").unwrap_or(path);
    path.trim_start_matches('/').to_owned()
}
