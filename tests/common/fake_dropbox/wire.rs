//! What every Dropbox API v2 request and answer has in common on the wire: which
//! host serves which endpoint and in which style, how arguments arrive (a JSON
//! body, or the `Dropbox-API-Arg` header, which must be ASCII), and the shapes of
//! its errors.
//!
//! Dropbox answers malformed input (bad JSON, a wrong type, an unknown field, a
//! missing header) with `400` and a line of plain text, and an endpoint's own
//! errors with `409` and a JSON document carrying `error_summary` (a readable
//! path of tags, for logs only) and `error` (the union to match on). The summary
//! ends in a varying number of dots, as Dropbox's do ("path/not_found/..",
//! "expired_access_token/."): a client that compares it whole breaks here as it
//! would there.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{Map, Value};

use super::super::fake_http::Response;
use super::Host;

/// How an endpoint takes its arguments and gives its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// JSON body in, JSON body out; `void` endpoints take no arguments.
    Rpc { void: bool },
    /// Arguments in `Dropbox-API-Arg`, data in the body, JSON out.
    Upload,
    /// Arguments in `Dropbox-API-Arg`, data out, metadata in `Dropbox-API-Result`.
    Download,
    /// RPC without authentication (`files/list_folder/longpoll`).
    NoAuth,
}

/// Every endpoint the fake serves, with the host that serves it.
const ROUTES: &[(&str, Host, Style)] = &[
    ("auth/token/revoke", Host::Api, Style::Rpc { void: true }),
    (
        "users/get_current_account",
        Host::Api,
        Style::Rpc { void: true },
    ),
    (
        "users/get_space_usage",
        Host::Api,
        Style::Rpc { void: true },
    ),
    ("files/list_folder", Host::Api, Style::Rpc { void: false }),
    (
        "files/list_folder/continue",
        Host::Api,
        Style::Rpc { void: false },
    ),
    (
        "files/list_folder/get_latest_cursor",
        Host::Api,
        Style::Rpc { void: false },
    ),
    ("files/get_metadata", Host::Api, Style::Rpc { void: false }),
    ("files/delete_v2", Host::Api, Style::Rpc { void: false }),
    (
        "files/create_folder_v2",
        Host::Api,
        Style::Rpc { void: false },
    ),
    (
        "files/upload_session/finish_batch_v2",
        Host::Api,
        Style::Rpc { void: false },
    ),
    ("files/upload", Host::Content, Style::Upload),
    ("files/upload_session/start", Host::Content, Style::Upload),
    (
        "files/upload_session/append_v2",
        Host::Content,
        Style::Upload,
    ),
    ("files/upload_session/finish", Host::Content, Style::Upload),
    ("files/download", Host::Content, Style::Download),
    ("files/list_folder/longpoll", Host::Notify, Style::NoAuth),
];

pub fn route(endpoint: &str) -> Option<(Host, Style)> {
    ROUTES
        .iter()
        .find(|(e, _, _)| *e == endpoint)
        .map(|&(_, host, style)| (host, style))
}

pub fn host_name(host: Host) -> &'static str {
    match host {
        Host::Api => "api.dropboxapi.com",
        Host::Content => "content.dropboxapi.com",
        Host::Notify => "notify.dropboxapi.com",
    }
}

const RPC_TYPES: &str = r#""application/json", "application/json; charset=utf-8", "text/plain; charset=dropbox-cors-hack""#;
const UPLOAD_TYPES: &str = r#""application/octet-stream", "text/plain; charset=dropbox-cors-hack""#;
const DOWNLOAD_TYPES: &str = r#""text/plain", "text/plain; charset=dropbox-cors-hack""#;

/// A `Content-Type` value as compared: parameters kept, case and spaces not.
fn normal_type(value: &str) -> String {
    value
        .split(';')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The arguments of an RPC request: a JSON body with a JSON content type; a
/// `void` endpoint takes an empty body (no content type needed) or `null`.
pub fn rpc_args(
    endpoint: &str,
    content_type: Option<&str>,
    body: &[u8],
    void: bool,
) -> Result<Value, Response> {
    let ct = content_type.map(normal_type).unwrap_or_default();
    // No arguments may come as nothing at all; a content type, if sent, must
    // still be JSON's (Dropbox refuses a form type even on an empty body).
    if void && body.is_empty() && ct.is_empty() {
        return Ok(Value::Null);
    }
    if ct.is_empty() {
        return Err(bad_input(
            endpoint,
            &format!(
                r#"Missing or empty HTTP "Content-Type" header. Expecting one of {RPC_TYPES}."#
            ),
        ));
    }
    let accepted = [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain; charset=dropbox-cors-hack",
    ];
    if !accepted.contains(&ct.as_str()) {
        return Err(bad_input(
            endpoint,
            &format!(
                r#"Bad HTTP "Content-Type" header: "{}".  Expecting one of {RPC_TYPES}."#,
                content_type.unwrap_or_default()
            ),
        ));
    }
    if void && body.is_empty() {
        return Ok(Value::Null);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| bad_input(endpoint, "request body: could not decode input as JSON"))?;
    if void && !value.is_null() {
        return Err(bad_input(
            endpoint,
            "request body: expected null, got value",
        ));
    }
    Ok(value)
}

/// The arguments of a content request, from `Dropbox-API-Arg`, after checking
/// the body's content type (`upload`: the data's; `download`: none, or text).
pub fn content_args(
    endpoint: &str,
    style: Style,
    arg: Option<&str>,
    content_type: Option<&str>,
) -> Result<Value, Response> {
    let ct = content_type.map(normal_type).unwrap_or_default();
    match style {
        Style::Upload if ct.is_empty() => {
            return Err(bad_input(
                endpoint,
                &format!(
                    r#"Missing or empty HTTP "Content-Type" header. Expecting one of {UPLOAD_TYPES}."#
                ),
            ))
        }
        Style::Upload
            if ct != "application/octet-stream"
                && ct != "text/plain; charset=dropbox-cors-hack" =>
        {
            return Err(bad_input(
                endpoint,
                &format!(
                    r#"Bad HTTP "Content-Type" header: "{}".  Expecting one of {UPLOAD_TYPES}."#,
                    content_type.unwrap_or_default()
                ),
            ))
        }
        // Download sends no body; what the fake does not know it refuses.
        Style::Download
            if !ct.is_empty()
                && ![
                    "text/plain",
                    "text/plain; charset=dropbox-cors-hack",
                    "application/octet-stream",
                ]
                .contains(&ct.as_str()) =>
        {
            return Err(bad_input(
                endpoint,
                &format!(
                    r#"Bad HTTP "Content-Type" header: "{}".  Expecting one of {DOWNLOAD_TYPES}."#,
                    content_type.unwrap_or_default()
                ),
            ))
        }
        _ => {}
    }
    let Some(arg) = arg else {
        return Err(bad_input(
            endpoint,
            r#"Must provide HTTP header "Dropbox-API-Arg" or URL parameter "arg"."#,
        ));
    };
    // Dropbox documents that the header must be "HTTP header safe": 0x7F and
    // every non-ASCII character escaped as \uXXXX. A raw one is refused (it
    // has been seen to pass for valid UTF-8 at times, but the documented rule
    // is what a client can rely on).
    let unsafe_byte = arg
        .bytes()
        .any(|b| !(0x20..0x7F).contains(&b) && b != b'\t');
    if unsafe_byte {
        return Err(bad_input(
            endpoint,
            r#"HTTP header "Dropbox-API-Arg": could not decode input as JSON"#,
        ));
    }
    serde_json::from_str(arg).map_err(|_| {
        bad_input(
            endpoint,
            r#"HTTP header "Dropbox-API-Arg": could not decode input as JSON"#,
        )
    })
}

/// Where an argument came from, as Dropbox's messages name it.
pub fn origin(style: Style) -> &'static str {
    match style {
        Style::Upload | Style::Download => r#"HTTP header "Dropbox-API-Arg""#,
        Style::Rpc { .. } | Style::NoAuth => "request body",
    }
}

/// A struct argument: checks its fields' presence and types, refusing any
/// field the endpoint does not have (Dropbox does: "unknown field 'path'").
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    /// `request body: ` or `request body: cursor: `, for messages.
    at: String,
    endpoint: &'a str,
}

impl<'a> Obj<'a> {
    /// The top-level argument of `endpoint`; `fields` are all it may have.
    pub fn top(
        value: &'a Value,
        endpoint: &'a str,
        style: Style,
        fields: &[&str],
    ) -> Result<Self, Response> {
        let at = format!("{}: ", origin(style));
        Self::of(value, at, endpoint, fields)
    }

    fn of(
        value: &'a Value,
        at: String,
        endpoint: &'a str,
        fields: &[&str],
    ) -> Result<Self, Response> {
        let Value::Object(map) = value else {
            return Err(bad_input(
                endpoint,
                &format!("{at}expected object, got {}", kind(value)),
            ));
        };
        if let Some(k) = map.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(bad_input(endpoint, &format!("{at}unknown field '{k}'")));
        }
        Ok(Self { map, at, endpoint })
    }

    pub fn err(&self, msg: &str) -> Response {
        bad_input(self.endpoint, &format!("{}{msg}", self.at))
    }

    fn field_err(&self, k: &str, expected: &str, got: &Value) -> Response {
        self.err(&format!("{k}: expected {expected}, got {}", kind(got)))
    }

    /// A present, non-null field.
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.map.get(k).filter(|v| !v.is_null())
    }

    pub fn str(&self, k: &str) -> Result<Option<&'a str>, Response> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.field_err(k, "string", v)),
        }
    }

    pub fn req_str(&self, k: &str) -> Result<&'a str, Response> {
        self.str(k)?
            .ok_or_else(|| self.err(&format!("missing required field '{k}'")))
    }

    pub fn bool(&self, k: &str, default: bool) -> Result<bool, Response> {
        match self.get(k) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.field_err(k, "boolean", v)),
        }
    }

    pub fn u64(&self, k: &str) -> Result<Option<u64>, Response> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.field_err(k, "integer", v)),
        }
    }

    pub fn list(&self, k: &str) -> Result<Option<&'a Vec<Value>>, Response> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(v) => Err(self.field_err(k, "list", v)),
        }
    }

    /// A struct-valued field.
    pub fn obj(&self, k: &str, fields: &[&str]) -> Result<Option<Obj<'a>>, Response> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => Obj::of(v, format!("{}{k}: ", self.at), self.endpoint, fields).map(Some),
        }
    }

    pub fn req_obj(&self, k: &str, fields: &[&str]) -> Result<Obj<'a>, Response> {
        self.obj(k, fields)?
            .ok_or_else(|| self.err(&format!("missing required field '{k}'")))
    }

    /// An element of a list field, as a struct (`entries: [..]`).
    pub fn item(
        &self,
        k: &str,
        i: usize,
        v: &'a Value,
        fields: &[&str],
    ) -> Result<Obj<'a>, Response> {
        Obj::of(v, format!("{}{k}: [{i}]: ", self.at), self.endpoint, fields)
    }

    /// A union-valued field, in either of Stone's spellings: `"add"`, or
    /// `{".tag": "update", "update": "…"}`. The tag, and the whole object.
    pub fn union(&self, k: &str) -> Result<Option<(&'a str, Option<&'a Value>)>, Response> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(tag)) => Ok(Some((tag, None))),
            Some(v @ Value::Object(m)) => match m.get(".tag") {
                Some(Value::String(tag)) => Ok(Some((tag, Some(v)))),
                _ => Err(self.err(&format!("{k}: missing '.tag' key"))),
            },
            Some(v) => Err(self.field_err(k, "union", v)),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Every answer of the fake starts here: Dropbox's request id, which clients
/// quote in bug reports.
pub fn response(status: u16) -> Response {
    let n = REQUESTS.fetch_add(1, Relaxed);
    Response::new(status).with("x-dropbox-request-id", format!("{:032x}", mix(n)))
}

pub fn json(status: u16, value: &Value) -> Response {
    response(status)
        .with("content-type", "application/json")
        .with_body(value.to_string().into_bytes())
}

pub fn text(status: u16, body: &str) -> Response {
    response(status)
        .with("content-type", "text/plain; charset=utf-8")
        .with_body(body.as_bytes().to_vec())
}

/// Malformed input, as Dropbox answers it: 400, one line of text.
pub fn bad_input(endpoint: &str, message: &str) -> Response {
    text(
        400,
        &format!(r#"Error in call to API function "{endpoint}": {message}"#),
    )
}

/// An endpoint's error: `{"error_summary": …, "error": …}`.
pub fn route_error(status: u16, error: Value) -> Response {
    let body = serde_json::json!({ "error_summary": summary(&error), "error": error });
    json(status, &body)
}

static SUMMARIES: AtomicU64 = AtomicU64::new(0);

/// The tags of an error, outermost first, joined by `/`, then `/` and one to
/// three dots: `{".tag":"path","path":{".tag":"not_found"}}` is
/// `path/not_found/..`. A union member's value is under its tag; an upload's
/// write error under `reason`; a rate limit has only a `reason`.
pub fn summary(error: &Value) -> String {
    let mut parts = Vec::new();
    let mut at = error;
    loop {
        let tag = at.get(".tag").and_then(Value::as_str);
        if let Some(tag) = tag {
            parts.push(tag.to_owned());
        }
        let next = tag
            .and_then(|t| at.get(t))
            .filter(|v| v.get(".tag").is_some())
            .or_else(|| at.get("reason").filter(|v| v.get(".tag").is_some()));
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    let dots = 1 + (SUMMARIES.fetch_add(1, Relaxed) % 3) as usize;
    format!("{}/{}", parts.join("/"), ".".repeat(dots))
}

/// 401 for a token Dropbox does not honour (`invalid_access_token`,
/// `expired_access_token`).
pub fn auth_error(tag: &str) -> Response {
    route_error(401, serde_json::json!({ ".tag": tag }))
}

/// 429 with Dropbox's RateLimitError and `Retry-After`.
pub fn rate_limited(reason: &str, retry_after: u64) -> Response {
    let error = serde_json::json!({ "reason": { ".tag": reason }, "retry_after": retry_after });
    route_error(429, error).with("retry-after", retry_after.to_string())
}

/// JSON safe for an HTTP header: 0x7F and every non-ASCII character as
/// `\uXXXX` (surrogate pairs past the BMP), as Dropbox writes
/// `Dropbox-API-Result`. serde_json writes them raw; they can only occur inside
/// strings, so escaping them in the text is exact.
pub fn header_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// A well-spread 64 bits from a counter (SplitMix64's finaliser).
pub fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

static RANDOM: AtomicU64 = AtomicU64::new(0);

/// 64 bits no one can guess, from std's per-process random hasher keys.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(RANDOM.fetch_add(1, Relaxed));
    h.finish()
}

/// `len` characters of `[A-Za-z0-9_-]` no one can guess from the others: tokens,
/// codes, session ids. Seeded per process by std's random hasher keys.
pub fn random_string(len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut bits = random_u64();
        for _ in 0..10 {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(bits & 63) as usize] as char);
            bits >>= 6;
        }
    }
    out
}

/// Base64url without padding (RFC 4648 §5), as PKCE's S256 challenge is written.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `application/x-www-form-urlencoded` pairs (also a query string), decoded.
pub fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
