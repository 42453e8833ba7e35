//! The endpoints on single files and folders: upload, download (with ranges),
//! delete, create a folder, read metadata; and the argument rules they share
//! with upload sessions (path patterns, write modes, client_modified).
//!
//! A path argument is checked twice, as Dropbox does: against the endpoint's
//! pattern (a mismatch is malformed input, 400 text: `'foo' did not match
//! pattern …`), then as a name Dropbox would store (a mismatch is the endpoint's
//! own `malformed_path` error, 409).

use serde_json::{json, Value};

use super::super::fake_http::{parse_iso_time, Response};
use super::tree::{self, Content, Found, Mode, Write};
use super::wire::{self, header_json, Obj};
use super::Call;

const WRITE_PATTERN: &str = r"(/(.|[\r\n])*)|(ns:[0-9]+(/.*)?)|(id:.*)";
const READ_PATTERN: &str = r"(/(.|[\r\n])*|id:.*)|(rev:[0-9a-f]{9,})|(ns:[0-9]+(/.*)?)";
const REV_PATTERN: &str = "[0-9a-f]+";

/// A path a write names: Ok(Some) a path Dropbox would store, Ok(None) one it
/// calls `malformed_path`, Err a value that is not a path at all (400).
pub fn write_path(obj: &Obj, field: &str) -> Result<Option<tree::Path>, Response> {
    let p = obj.req_str(field)?;
    if p.starts_with("id:") || p.starts_with("ns:") {
        // Valid for Dropbox, which would resolve them; the product writes by
        // path, so the fake does not resolve them and says so.
        return Err(obj.err(&format!(
            "{field}: the fake Dropbox writes by path only, not '{p}'"
        )));
    }
    if !p.starts_with('/') {
        return Err(obj.err(&format!(
            "{field}: '{p}' did not match pattern '{WRITE_PATTERN}'"
        )));
    }
    Ok(tree::parse_path(p))
}

/// A path a read names, as `Tree::find` takes it: Ok(Some) a checked path,
/// `id:…` or `rev:…`; Ok(None) a malformed one.
fn read_path(obj: &Obj, field: &str) -> Result<Option<String>, Response> {
    let p = obj.req_str(field)?;
    if p.is_empty() {
        return Err(obj.err(&format!("{field}: The root folder is unsupported.")));
    }
    let rev_ok = p
        .strip_prefix("rev:")
        .is_some_and(|r| r.len() >= 9 && r.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    if rev_ok || p.starts_with("id:") {
        return Ok(Some(p.to_owned()));
    }
    if !p.starts_with('/') || p.starts_with("ns:") {
        return Err(obj.err(&format!(
            "{field}: '{p}' did not match pattern '{READ_PATTERN}'"
        )));
    }
    Ok(tree::parse_path(p).map(|path| path.display))
}

/// `WriteMode`: `add` (the default), `overwrite`, or `update` with a rev.
pub fn write_mode(obj: &Obj) -> Result<Mode, Response> {
    match obj.union("mode")? {
        None | Some(("add", _)) => Ok(Mode::Add),
        Some(("overwrite", _)) => Ok(Mode::Overwrite),
        Some(("update", value)) => {
            let rev = value.and_then(|v| v.get("update")).and_then(Value::as_str);
            match rev {
                Some(r)
                    if r.len() >= 9
                        && r.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
                {
                    Ok(Mode::Update(r.to_owned()))
                }
                Some(r) => Err(obj.err(&format!(
                    "mode: update: '{r}' did not match pattern '{REV_PATTERN}'"
                ))),
                None => Err(obj.err("mode: update: missing value")),
            }
        }
        Some((other, _)) => Err(obj.err(&format!("mode: unknown tag '{other}'"))),
    }
}

/// `client_modified`: ISO 8601 to the second, in UTC, exactly.
pub fn client_modified(obj: &Obj) -> Result<Option<u64>, Response> {
    match obj.str("client_modified")? {
        None => Ok(None),
        Some(t) => parse_iso_time(t).map(Some).ok_or_else(|| {
            obj.err(&format!(
                "client_modified: time data '{t}' does not match format '%Y-%m-%dT%H:%M:%SZ'"
            ))
        }),
    }
}

/// The fields of `CommitInfo` (files/upload's argument adds `content_hash`).
pub const COMMIT_FIELDS: &[&str] = &[
    "path",
    "mode",
    "autorename",
    "client_modified",
    "mute",
    "property_groups",
    "strict_conflict",
];

/// A commit's arguments, checked: the path (None: malformed) and the write.
pub struct Commit {
    pub path: Option<tree::Path>,
    pub mode: Mode,
    pub autorename: bool,
    pub strict_conflict: bool,
    pub client_modified: Option<u64>,
}

impl Commit {
    pub fn parse(obj: &Obj) -> Result<Self, Response> {
        Ok(Self {
            path: write_path(obj, "path")?,
            mode: write_mode(obj)?,
            autorename: obj.bool("autorename", false)?,
            strict_conflict: obj.bool("strict_conflict", false)?,
            client_modified: client_modified(obj)?,
        })
    }

    pub fn write<'a>(&self, path: &'a tree::Path, content: Content) -> Write<'a> {
        Write {
            path,
            content,
            mode: match &self.mode {
                Mode::Add => Mode::Add,
                Mode::Overwrite => Mode::Overwrite,
                Mode::Update(r) => Mode::Update(r.clone()),
            },
            autorename: self.autorename,
            strict_conflict: self.strict_conflict,
            client_modified: self.client_modified,
        }
    }
}

fn malformed() -> Value {
    json!({ ".tag": "malformed_path", "malformed_path": null })
}

/// `files/upload`: one request, one commit.
pub fn upload(mut call: Call) -> Result<Response, Response> {
    let body = std::mem::take(&mut call.body);
    let mut fields = COMMIT_FIELDS.to_vec();
    fields.push("content_hash");
    let args = call.args(&fields)?;
    let commit = Commit::parse(&args)?;
    let expected_hash = args.str("content_hash")?.map(str::to_owned);
    // Hashed before any lock: bodies run to 150 MiB.
    let content = Content::new(body);
    let ns = call.caller.ns;
    let shared = call.shared;
    // A failed upload leaves its data in a closed session, whose id the error
    // carries, so a client may commit it elsewhere with upload_session/finish.
    let failed = |content: Content, reason: Value| {
        let bytes = std::sync::Arc::try_unwrap(content.bytes).unwrap_or_else(|a| a.to_vec());
        let mut state = shared.state();
        let now = state.now_ms();
        let id = state.sessions.insert(ns, bytes, true, now);
        Err(wire::route_error(
            409,
            json!({ ".tag": "path", "reason": reason, "upload_session_id": id }),
        ))
    };
    if expected_hash.as_ref().is_some_and(|h| *h != content.hash) {
        return Err(wire::route_error(
            409,
            json!({ ".tag": "content_hash_mismatch" }),
        ));
    }
    let Some(path) = &commit.path else {
        return failed(content, malformed());
    };
    shared.commit(ns, || {
        let kept = content.bytes.clone();
        let hash = content.hash.clone();
        let written = {
            let mut state = shared.state();
            let (now, room) = (state.now(), state.room());
            state.tree(ns).write(commit.write(path, content), now, room)
        };
        match written {
            Ok(metadata) => Ok(wire::json(200, &Value::Object(metadata))),
            Err(reason) => failed(Content { bytes: kept, hash }, reason),
        }
    })
}

/// `files/download`: the file's bytes, its metadata in `Dropbox-API-Result`,
/// one `Range` honoured.
pub fn download(call: Call) -> Result<Response, Response> {
    let args = call.args(&["path", "rev"])?;
    let mut target = read_path(&args, "path")?;
    if let Some(rev) = args.str("rev")? {
        target = target.map(|_| format!("rev:{rev}"));
    }
    let Some(target) = target else {
        return Err(wire::route_error(
            409,
            json!({ ".tag": "path", "path": malformed() }),
        ));
    };
    let found = call.shared.state().tree(call.caller.ns).find(&target);
    let revision = match found {
        Found::File(r) => r,
        Found::Folder(_) => {
            return Err(wire::route_error(
                409,
                json!({ ".tag": "path", "path": { ".tag": "not_file" } }),
            ))
        }
        Found::Deleted(_) | Found::Nothing => {
            return Err(wire::route_error(
                409,
                json!({ ".tag": "path", "path": { ".tag": "not_found" } }),
            ))
        }
    };
    let total = revision.content.len();
    let result = header_json(&Value::Object(revision.metadata()));
    let ok = |status: u16| {
        wire::response(status)
            .with("content-type", "application/octet-stream")
            .with("dropbox-api-result", result.clone())
            .with("accept-ranges", "bytes")
            .with("etag", format!("W/\"{}\"", revision.rev))
    };
    match call
        .head
        .header("range")
        .and_then(|r| parse_range(r, total))
    {
        None => Ok(ok(200).with_shared_body(revision.content.clone(), 0..total)),
        Some(None) => Err(wire::response(416)
            .with("content-range", format!("bytes */{total}"))
            .with("content-type", "text/plain; charset=utf-8")
            .with_body(b"Range Not Satisfiable".to_vec())),
        Some(Some((first, last))) => Ok(ok(206)
            .with("content-range", format!("bytes {first}-{last}/{total}"))
            .with_shared_body(revision.content.clone(), first..last + 1)),
    }
}

/// A single `bytes=` range of a `total`-byte file: None if there is none to
/// honour (absent, or not one the fake reads, served whole as RFC 9110 allows);
/// Some(None) if it starts past the end; else the first and last byte.
fn parse_range(value: &str, total: usize) -> Option<Option<(usize, usize)>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // The last n bytes.
        let n: usize = last.parse().ok()?;
        if n == 0 || total == 0 {
            return Some(None);
        }
        return Some(Some((total.saturating_sub(n), total - 1)));
    }
    let first: usize = first.parse().ok()?;
    let last = match last {
        "" => usize::MAX,
        l => l.parse().ok().filter(|&l: &usize| l >= first)?,
    };
    if first >= total {
        return Some(None);
    }
    Some(Some((first, last.min(total - 1))))
}

/// `files/delete_v2`: a file, or a folder and all in it.
pub fn delete(call: Call) -> Result<Response, Response> {
    let args = call.args(&["path", "parent_rev"])?;
    let Some(path) = write_path(&args, "path")? else {
        return Err(wire::route_error(
            409,
            json!({ ".tag": "path_lookup", "path_lookup": malformed() }),
        ));
    };
    let (shared, ns) = (call.shared, call.caller.ns);
    shared.commit(ns, || {
        let deleted = shared.state().tree(ns).delete(&path);
        match deleted {
            Ok(metadata) => Ok(wire::json(200, &json!({ "metadata": metadata }))),
            Err(()) => Err(wire::route_error(
                409,
                json!({ ".tag": "path_lookup", "path_lookup": { ".tag": "not_found" } }),
            )),
        }
    })
}

/// `files/create_folder_v2`.
pub fn create_folder(call: Call) -> Result<Response, Response> {
    let args = call.args(&["path", "autorename"])?;
    let autorename = args.bool("autorename", false)?;
    let Some(path) = write_path(&args, "path")? else {
        return Err(wire::route_error(
            409,
            json!({ ".tag": "path", "path": malformed() }),
        ));
    };
    let (shared, ns) = (call.shared, call.caller.ns);
    shared.commit(ns, || {
        let made = shared.state().tree(ns).create_folder(&path, autorename);
        match made {
            Ok(metadata) => Ok(wire::json(200, &json!({ "metadata": metadata }))),
            Err(reason) => Err(wire::route_error(
                409,
                json!({ ".tag": "path", "path": reason }),
            )),
        }
    })
}

/// `files/get_metadata`.
pub fn get_metadata(call: Call) -> Result<Response, Response> {
    let args = call.args(&[
        "path",
        "include_media_info",
        "include_deleted",
        "include_has_explicit_shared_members",
        "include_property_groups",
    ])?;
    let include_deleted = args.bool("include_deleted", false)?;
    let Some(target) = read_path(&args, "path")? else {
        return Err(wire::route_error(
            409,
            json!({ ".tag": "path", "path": malformed() }),
        ));
    };
    let not_found = || {
        wire::route_error(
            409,
            json!({ ".tag": "path", "path": { ".tag": "not_found" } }),
        )
    };
    let found = call.shared.state().tree(call.caller.ns).find(&target);
    match found {
        Found::File(r) => {
            let mut m = r.metadata();
            m.insert(".tag".into(), "file".into());
            Ok(wire::json(200, &Value::Object(m)))
        }
        Found::Folder(v) => Ok(wire::json(200, &v)),
        Found::Deleted(v) if include_deleted => Ok(wire::json(200, &v)),
        Found::Deleted(_) | Found::Nothing => Err(not_found()),
    }
}
