//! How Google's answers look on the wire: the JSON error envelope of the Drive
//! API (`{"error":{"code","message","errors":[{domain,reason,message,…}]}}`),
//! the flat one of the OAuth endpoints (`{"error","error_description"}`), query
//! strings and forms, the `fields` selector, and unguessable ids.
//!
//! The envelope matters more than the wording: clients branch on `code` and on
//! `errors[0].reason` (`userRateLimitExceeded`, `notFound`, …), so those are
//! Google's exactly; messages follow Google's where known.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{json, Map, Value};

use super::super::fake_http::Response;

static RANDOM: AtomicU64 = AtomicU64::new(0);

pub fn response(status: u16) -> Response {
    Response::new(status)
        .with("server", "ESF")
        .with("vary", "Origin, X-Origin, Referer")
}

pub fn json(status: u16, value: &Value) -> Response {
    response(status)
        .with("content-type", "application/json; charset=UTF-8")
        .with_body(value.to_string().into_bytes())
}

/// A Drive API error: `reason` is what clients branch on.
pub fn error(status: u16, reason: &str, message: &str) -> Response {
    error_at(status, reason, message, None)
}

/// A Drive API error naming the parameter or header at fault.
pub fn error_at(
    status: u16,
    reason: &str,
    message: &str,
    location: Option<(&str, &str)>,
) -> Response {
    let domain = match reason {
        "userRateLimitExceeded" | "rateLimitExceeded" => "usageLimits",
        _ => "global",
    };
    let mut item = json!({ "domain": domain, "reason": reason, "message": message });
    if let Some((kind, name)) = location {
        item["locationType"] = json!(kind);
        item["location"] = json!(name);
    }
    let mut body = json!({ "error": { "code": status, "message": message, "errors": [item] } });
    if let Some(s) = status_name(status) {
        body["error"]["status"] = json!(s);
    }
    json(status, &body)
}

/// The gRPC-style status Google's newer front end adds to some errors.
fn status_name(status: u16) -> Option<&'static str> {
    match status {
        401 => Some("UNAUTHENTICATED"),
        429 => Some("RESOURCE_EXHAUSTED"),
        _ => None,
    }
}

pub fn not_found(id: &str) -> Response {
    error_at(
        404,
        "notFound",
        &format!("File not found: {id}."),
        Some(("parameter", "fileId")),
    )
}

/// A parameter Google could not accept (`q`, `pageSize`, `pageToken`, …).
pub fn invalid(param: &str, message: &str) -> Response {
    error_at(400, "invalid", message, Some(("parameter", param)))
}

pub fn bad_request(message: &str) -> Response {
    error(400, "badRequest", message)
}

/// What the fake does not serve, said loudly rather than answered wrongly.
pub fn unsupported(what: &str) -> Response {
    bad_request(&format!(
        "{what} is not supported by the fake Google Drive; add it to the fake if the product needs it"
    ))
}

/// An OAuth endpoint's error (`/token`, `/device/code`, `/revoke`).
pub fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    json(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// `a=b&c=d`, percent-decoded, `+` as a space (query strings and forms alike).
/// The first of a repeated name wins.
pub fn params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode(k)).or_insert_with(|| decode(v));
    }
    out
}

pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One part of a `fields` selector: a name, and for a nested object or a list
/// of them, what to keep of each.
#[derive(Debug, Clone)]
pub struct Field {
    name: String,
    sub: Option<Vec<Field>>,
}

/// `files(id,name),nextPageToken` or `files/id`; Err for anything else, as
/// Google answers 400 to a selector it cannot read.
pub fn parse_fields(s: &str) -> Result<Vec<Field>, Response> {
    let chars: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    let mut at = 0;
    let fields = field_list(&chars, &mut at)
        .filter(|_| at == chars.len())
        .ok_or_else(|| invalid("fields", &format!("Invalid field selection {s}")))?;
    Ok(fields)
}

fn field_list(c: &[char], at: &mut usize) -> Option<Vec<Field>> {
    let mut out = vec![field(c, at)?];
    while c.get(*at) == Some(&',') {
        *at += 1;
        out.push(field(c, at)?);
    }
    Some(out)
}

fn field(c: &[char], at: &mut usize) -> Option<Field> {
    let start = *at;
    while c
        .get(*at)
        .is_some_and(|ch| ch.is_ascii_alphanumeric() || *ch == '*' || *ch == '_')
    {
        *at += 1;
    }
    if *at == start {
        return None;
    }
    let name: String = c[start..*at].iter().collect();
    let sub = match c.get(*at) {
        Some('(') => {
            *at += 1;
            let list = field_list(c, at)?;
            if c.get(*at) != Some(&')') {
                return None;
            }
            *at += 1;
            Some(list)
        }
        Some('/') => {
            *at += 1;
            Some(vec![field(c, at)?])
        }
        _ => None,
    };
    Some(Field { name, sub })
}

/// What `fields` keeps of `value`: Google sends only what was asked for, so a
/// client that forgets `nextPageToken` or `size` in its selector never sees them.
pub fn select(value: &Value, fields: &[Field]) -> Value {
    let Value::Object(obj) = value else {
        return value.clone();
    };
    let mut out = Map::new();
    for f in fields {
        if f.name == "*" {
            for (k, v) in obj {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
            continue;
        }
        let Some(v) = obj.get(&f.name) else { continue };
        let kept = match (&f.sub, v) {
            (Some(sub), Value::Array(items)) => {
                Value::Array(items.iter().map(|i| select(i, sub)).collect())
            }
            (Some(sub), Value::Object(_)) => select(v, sub),
            _ => v.clone(),
        };
        out.insert(f.name.clone(), kept);
    }
    Value::Object(out)
}

/// `fields` from the query, or the method's default selection.
pub fn fields_or(params: &HashMap<String, String>, default: &str) -> Result<Vec<Field>, Response> {
    parse_fields(params.get("fields").map_or(default, String::as_str))
}

pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(RANDOM.fetch_add(1, Relaxed));
    h.finish()
}

/// `len` characters of `[A-Za-z0-9_-]`: file ids, tokens, codes, upload ids.
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

/// RFC 3339 with milliseconds, as Drive writes `modifiedTime`.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = super::super::fake_http::iso_time(ms / 1_000);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms % 1_000)
}
