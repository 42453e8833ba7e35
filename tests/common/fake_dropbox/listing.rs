//! Listing a folder and following its changes: `list_folder`,
//! `list_folder/continue`, `list_folder/get_latest_cursor` and the long poll.
//!
//! A cursor is a position, in one of two phases. While a first listing is being
//! paged, it holds the last path shown (paths are listed in order) and the change
//! number the listing started at; once the listing is done, it holds only a
//! change number, and `continue` answers what changed after it (each path once,
//! as it is now; removed ones as `deleted`). A change made while the listing
//! was paged is therefore shown by the listing or by the changes after it, never
//! lost. Cursors are opaque to clients, checked on the way in (a garbled one is
//! malformed input) and carry the epoch they were issued in, so
//! `FakeDropbox::reset_cursors` can make every older one answer `reset`.
//!
//! The long poll takes no token (it is the only such route), waits real time —
//! the timeout asked (30 to 480 s) plus Dropbox's jitter — and answers as soon
//! as the cursor's folder has changed, including before the call. With a backoff
//! set, its answers carry `backoff`, and a poll of the same namespace sooner than
//! that is refused 429 `too_many_requests` with `Retry-After`: Dropbox does not
//! document what it does to a client that ignores the field, and 429 is its
//! answer to a client that calls too often.

use std::hash::{DefaultHasher, Hasher};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::super::fake_http::Response;
use super::tree;
use super::wire::{self, Obj, Style};
use super::{Call, Shared, State};

const LIMIT_MAX: u64 = 2_000;
const LONGPOLL_DEFAULT: u64 = 30;
const LONGPOLL_RANGE: std::ops::RangeInclusive<u64> = 30..=480;

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Paging a first listing that started at change `since`, after `after`.
    Listing { since: u64, after: Option<String> },
    /// Following the changes after `since`.
    Changes { since: u64 },
}

#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    ns: u64,
    epoch: u64,
    /// The folder's path_lower ("" for the root).
    scope: String,
    recursive: bool,
    include_deleted: bool,
    /// The client's `limit` (0: none).
    limit: u64,
    phase: Phase,
}

const SEP: char = '\u{1f}';

impl Cursor {
    /// `salt` is the fake's own: a cursor from another fake is no cursor here.
    fn encode(&self, salt: u64) -> String {
        let (kind, since, after) = match &self.phase {
            Phase::Listing { since, after } => ('L', since, after.as_deref().unwrap_or("")),
            Phase::Changes { since } => ('C', since, ""),
        };
        let text = format!(
            "1{SEP}{}{SEP}{}{SEP}{}{SEP}{}{SEP}{}{SEP}{kind}{SEP}{since}{SEP}{after}{SEP}{}",
            self.ns,
            self.epoch,
            u8::from(self.recursive),
            u8::from(self.include_deleted),
            self.limit,
            self.scope
        );
        let mut out = format!("AAE{:016x}", checksum(&text, salt));
        for b in text.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    fn decode(s: &str, salt: u64) -> Option<Self> {
        let rest = s.strip_prefix("AAE")?;
        let sum = u64::from_str_radix(rest.get(..16)?, 16).ok()?;
        let hex = rest.get(16..)?;
        if hex.len() % 2 != 0 {
            return None;
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let text = String::from_utf8(bytes).ok()?;
        if checksum(&text, salt) != sum {
            return None;
        }
        let parts: Vec<&str> = text.split(SEP).collect();
        let [version, ns, epoch, rec, del, limit, kind, since, after, scope] = parts[..] else {
            return None;
        };
        if version != "1" {
            return None;
        }
        let since = since.parse().ok()?;
        let phase = match kind {
            "L" => Phase::Listing {
                since,
                after: (!after.is_empty()).then(|| after.to_owned()),
            },
            "C" => Phase::Changes { since },
            _ => return None,
        };
        Some(Self {
            ns: ns.parse().ok()?,
            epoch: epoch.parse().ok()?,
            scope: scope.to_owned(),
            recursive: rec == "1",
            include_deleted: del == "1",
            limit: limit.parse().ok()?,
            phase,
        })
    }
}

/// Keeps a hand-edited cursor from passing for a real one.
fn checksum(text: &str, salt: u64) -> u64 {
    let mut h = DefaultHasher::new();
    h.write_u64(salt);
    h.write(text.as_bytes());
    h.finish()
}

const LIST_FIELDS: &[&str] = &[
    "path",
    "recursive",
    "include_media_info",
    "include_deleted",
    "include_has_explicit_shared_members",
    "include_mounted_folders",
    "limit",
    "shared_link",
    "include_property_groups",
    "include_non_downloadable_files",
];

/// A new cursor at the start of a listing of `path` (`ListFolderArg`), after
/// checking the folder is there: Err is the answer.
fn new_cursor(call: &Call, args: &Obj) -> Result<Cursor, Response> {
    let path = args.req_str("path")?;
    let scope = match path {
        "" => String::new(),
        "/" => {
            return Err(
                args.err(r#"path: Specify the root folder as an empty string rather than as "/"."#)
            )
        }
        p if p.starts_with('/') => match tree::parse_path(p) {
            Some(p) => p.lower,
            None => {
                return Err(wire::route_error(
                    409,
                    json!({ ".tag": "path", "path": { ".tag": "malformed_path", "malformed_path": null } }),
                ))
            }
        },
        p if p.starts_with("id:") || p.starts_with("ns:") => {
            // Valid for Dropbox; the product lists by path, so the fake does not
            // resolve them and says so.
            return Err(args.err(&format!(
                "path: the fake Dropbox lists by path only, not '{p}'"
            )));
        }
        p => {
            return Err(args.err(&format!(
                r"path: '{p}' did not match pattern '(/(.|[\r\n])*)?|id:.*|(ns:[0-9]+(/.*)?)'"
            )))
        }
    };
    let limit = match args.u64("limit")? {
        None => 0,
        Some(n) if (1..=LIMIT_MAX).contains(&n) => n,
        Some(n) => {
            return Err(args.err(&format!("limit: {n} is not within range [1, {LIMIT_MAX}]")))
        }
    };
    let recursive = args.bool("recursive", false)?;
    let include_deleted = args.bool("include_deleted", false)?;
    let mut state = call.shared.state();
    let epoch = state.cursor_epoch;
    let tree = state.tree(call.caller.ns);
    match tree.kind_at(&scope) {
        Some(true) => {}
        Some(false) => {
            return Err(wire::route_error(
                409,
                json!({ ".tag": "path", "path": { ".tag": "not_folder" } }),
            ))
        }
        None => {
            return Err(wire::route_error(
                409,
                json!({ ".tag": "path", "path": { ".tag": "not_found" } }),
            ))
        }
    }
    Ok(Cursor {
        ns: call.caller.ns,
        epoch,
        scope,
        recursive,
        include_deleted,
        limit,
        phase: Phase::Listing {
            since: tree.seq(),
            after: None,
        },
    })
}

/// One page from `cursor`: `{entries, cursor, has_more}`.
fn page(state: &mut State, mut cursor: Cursor) -> Response {
    let size = match cursor.limit {
        0 => state.page_size,
        n => state.page_size.min(n as usize),
    };
    let tree = state.tree(cursor.ns);
    let (entries, has_more) = match cursor.phase.clone() {
        Phase::Listing { since, after } => {
            let (entries, more) = tree.listing(
                &cursor.scope,
                cursor.recursive,
                cursor.include_deleted,
                after.as_deref(),
                size,
            );
            cursor.phase = match &more {
                Some(k) => Phase::Listing {
                    since,
                    after: Some(k.clone()),
                },
                None => Phase::Changes { since },
            };
            (entries, more.is_some())
        }
        Phase::Changes { since } => {
            let (entries, more) = tree.changes(&cursor.scope, cursor.recursive, since, size);
            cursor.phase = Phase::Changes {
                since: more.unwrap_or(tree.seq()),
            };
            (entries, more.is_some())
        }
    };
    wire::json(
        200,
        &json!({
            "entries": entries,
            "cursor": cursor.encode(state.cursor_salt),
            "has_more": has_more,
        }),
    )
}

/// `files/list_folder`.
pub fn list_folder(call: Call) -> Result<Response, Response> {
    let args = call.args(LIST_FIELDS)?;
    let cursor = new_cursor(&call, &args)?;
    Ok(page(&mut call.shared.state(), cursor))
}

/// `files/list_folder/get_latest_cursor`: a cursor at the present, for a client
/// that wants only what changes from now on.
pub fn latest_cursor(call: Call) -> Result<Response, Response> {
    let args = call.args(LIST_FIELDS)?;
    let mut cursor = new_cursor(&call, &args)?;
    if let Phase::Listing { since, .. } = cursor.phase {
        cursor.phase = Phase::Changes { since };
    }
    let cursor = cursor.encode(call.shared.state().cursor_salt);
    Ok(wire::json(200, &json!({ "cursor": cursor })))
}

/// A cursor from the arguments, checked against the namespace and the epoch.
fn cursor_arg(obj: &Obj, ns: Option<u64>, state: &State) -> Result<Cursor, Response> {
    let text = obj.req_str("cursor")?;
    let cursor = Cursor::decode(text, state.cursor_salt)
        .filter(|c| ns.is_none_or(|ns| c.ns == ns) && state.trees.contains_key(&c.ns))
        .ok_or_else(|| obj.err("cursor: invalid cursor"))?;
    if cursor.epoch < state.cursor_epoch {
        return Err(reset());
    }
    Ok(cursor)
}

fn reset() -> Response {
    wire::route_error(409, json!({ ".tag": "reset" }))
}

/// `files/list_folder/continue`.
pub fn list_continue(call: Call) -> Result<Response, Response> {
    let args = call.args(&["cursor"])?;
    let mut state = call.shared.state();
    let cursor = cursor_arg(&args, Some(call.caller.ns), &state)?;
    Ok(page(&mut state, cursor))
}

/// `files/list_folder/longpoll` (no token: the cursor says whose folder).
pub fn longpoll(shared: &Shared, endpoint: &str, args: &Value) -> Result<Response, Response> {
    let args = Obj::top(args, endpoint, Style::NoAuth, &["cursor", "timeout"])?;
    let timeout = args.u64("timeout")?.unwrap_or(LONGPOLL_DEFAULT);
    if !LONGPOLL_RANGE.contains(&timeout) {
        return Err(args.err(&format!(
            "timeout: {timeout} is not within range [{}, {}]",
            LONGPOLL_RANGE.start(),
            LONGPOLL_RANGE.end()
        )));
    }
    let mut state = shared.state();
    let cursor = cursor_arg(&args, None, &state)?;
    let now = state.now_ms();
    if let Some(&after) = state.longpoll_after.get(&cursor.ns) {
        if now < after {
            return Err(wire::rate_limited(
                "too_many_requests",
                (after - now).div_ceil(1_000),
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(timeout) + state.longpoll_jitter;
    let changes = loop {
        if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(wire::text(503, "Service Unavailable"));
        }
        if cursor.epoch < state.cursor_epoch {
            return Err(reset());
        }
        let changed = match &cursor.phase {
            // More of the first listing is there to read.
            Phase::Listing { .. } => true,
            Phase::Changes { since } => {
                state
                    .tree(cursor.ns)
                    .changed_since(&cursor.scope, cursor.recursive, *since)
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if changed || left.is_zero() {
            break changed;
        }
        state = shared
            .changed
            .wait_timeout(state, left)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner().0);
    };
    let mut body = json!({ "changes": changes });
    if let Some(backoff) = state.longpoll_backoff {
        body["backoff"] = json!(backoff);
        let now = state.now_ms();
        state
            .longpoll_after
            .insert(cursor.ns, now + backoff * 1_000);
    }
    Ok(wire::json(200, &body))
}
