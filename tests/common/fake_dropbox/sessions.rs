//! Upload sessions: a file sent in pieces (start, append_v2 …), committed by
//! `finish`, or many at once by `finish_batch_v2`.
//!
//! Dropbox's rules, each enforced: a session belongs to the namespace that
//! started it; an append names the offset it continues from and is refused
//! `incorrect_offset` (with the right one) otherwise; a closed session takes no
//! more data; `finish_batch_v2` commits only closed sessions (`not_closed`
//! otherwise), at most 1,000 a call, and answers every entry in order; a session
//! lives 7 days on the fake's clock. Appends are not commits and run in parallel;
//! a finish is a commit and takes the namespace's write lock.
//!
//! Each session's data has its own lock, so that appending (copying up to
//! 150 MiB) never holds the state lock: the state lock is taken first, only to
//! find the session, and never while a session's lock is held. A finish takes the
//! data out of its session while it hashes and commits (marking the session
//! `finishing`, so nothing appends meanwhile) and puts it back if the commit
//! fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{json, Map, Value};

use super::super::fake_http::Response;
use super::files::{Commit, COMMIT_FIELDS};
use super::tree::{content_hash, Content};
use super::wire::{self, random_string, Obj};
use super::{Call, Shared};

const SESSION_LIFETIME_MS: u64 = 7 * 24 * 3_600 * 1_000;
const BATCH_LIMIT: usize = 1_000;

struct Data {
    bytes: Vec<u8>,
    closed: bool,
    finishing: bool,
}

pub struct Session {
    ns: u64,
    created_ms: u64,
    data: Mutex<Data>,
}

impl Session {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
pub struct Sessions {
    map: HashMap<String, Arc<Session>>,
}

impl Sessions {
    /// A new session of namespace `ns` holding `bytes`.
    pub fn insert(&mut self, ns: u64, bytes: Vec<u8>, closed: bool, now_ms: u64) -> String {
        let id = format!("pid_upload_session:{}", random_string(40));
        let session = Session {
            ns,
            created_ms: now_ms,
            data: Mutex::new(Data {
                bytes,
                closed,
                finishing: false,
            }),
        };
        self.map.insert(id.clone(), Arc::new(session));
        id
    }

    /// The live session `id` of namespace `ns` (another namespace's is as good
    /// as unknown); an expired one is dropped.
    fn get(&mut self, id: &str, ns: u64, now_ms: u64) -> Option<Arc<Session>> {
        let s = self.map.get(id)?;
        if now_ms >= s.created_ms + SESSION_LIFETIME_MS {
            self.map.remove(id);
            return None;
        }
        (s.ns == ns).then(|| s.clone())
    }

    fn remove(&mut self, id: &str) {
        self.map.remove(id);
    }

    /// The data of every session not yet committed.
    pub fn everything(&self) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = self
            .map
            .iter()
            .map(|(id, s)| (format!("upload_session:{id}"), s.data().bytes.clone()))
            .collect();
        all.sort();
        all
    }
}

fn lookup_error(tag: &str, correct_offset: Option<usize>) -> Value {
    match correct_offset {
        Some(o) => json!({ ".tag": tag, "correct_offset": o }),
        None => json!({ ".tag": tag }),
    }
}

/// An `UploadSessionCursor`.
fn cursor<'a>(obj: &Obj<'a>) -> Result<(&'a str, u64), Response> {
    let c = obj.req_obj("cursor", &["session_id", "offset"])?;
    let id = c.req_str("session_id")?;
    let offset = c
        .u64("offset")?
        .ok_or_else(|| c.err("missing required field 'offset'"))?;
    Ok((id, offset))
}

fn check_hash(obj: &Obj, body: &[u8]) -> Result<(), Response> {
    match obj.str("content_hash")? {
        Some(h) if h != content_hash(body) => Err(wire::route_error(
            409,
            json!({ ".tag": "content_hash_mismatch" }),
        )),
        _ => Ok(()),
    }
}

/// `files/upload_session/start`.
pub fn start(mut call: Call) -> Result<Response, Response> {
    let body = std::mem::take(&mut call.body);
    let args = call.args(&["close", "session_type", "content_hash"])?;
    let close = args.bool("close", false)?;
    match args.union("session_type")? {
        None | Some(("sequential", _)) => {}
        Some(("concurrent", _)) => {
            return Err(args.err("session_type: the fake Dropbox serves sequential sessions only"))
        }
        Some((other, _)) => return Err(args.err(&format!("session_type: unknown tag '{other}'"))),
    }
    check_hash(&args, &body)?;
    let mut state = call.shared.state();
    let now = state.now_ms();
    let id = state.sessions.insert(call.caller.ns, body, close, now);
    Ok(wire::json(200, &json!({ "session_id": id })))
}

/// `files/upload_session/append_v2`.
pub fn append(mut call: Call) -> Result<Response, Response> {
    let body = std::mem::take(&mut call.body);
    let args = call.args(&["cursor", "close", "content_hash"])?;
    let (id, offset) = cursor(&args)?;
    let close = args.bool("close", false)?;
    check_hash(&args, &body)?;
    let session = {
        let mut state = call.shared.state();
        let now = state.now_ms();
        state.sessions.get(id, call.caller.ns, now)
    };
    let refuse = |v: Value| Err(wire::route_error(409, v));
    let Some(session) = session else {
        return refuse(lookup_error("not_found", None));
    };
    let mut data = session.data();
    if data.finishing {
        return refuse(lookup_error("not_found", None));
    }
    if data.closed {
        return refuse(lookup_error("closed", None));
    }
    if offset != data.bytes.len() as u64 {
        return refuse(lookup_error("incorrect_offset", Some(data.bytes.len())));
    }
    data.bytes.extend_from_slice(&body);
    data.closed = close;
    Ok(wire::json(200, &Value::Null))
}

/// A session's data, taken out for a commit; put back by `restore` if the
/// commit fails.
struct Taken {
    session: Arc<Session>,
    content: Content,
    /// The session's length before the finish's own data was added.
    old_len: usize,
}

impl Taken {
    fn restore(self) {
        let mut bytes =
            Arc::try_unwrap(self.content.bytes).unwrap_or_else(|shared| shared.to_vec());
        bytes.truncate(self.old_len);
        let mut data = self.session.data();
        data.bytes = bytes;
        data.finishing = false;
    }
}

/// Takes session `id`'s data for a commit, after `body` (a finish's last
/// piece), checking the offset; `must_be_closed` for a batch. Err: the
/// `UploadSessionLookupError`.
fn take(
    shared: &Shared,
    ns: u64,
    id: &str,
    offset: u64,
    body: &[u8],
    must_be_closed: bool,
) -> Result<Taken, Value> {
    let session = {
        let mut state = shared.state();
        let now = state.now_ms();
        state.sessions.get(id, ns, now)
    };
    let session = session.ok_or_else(|| lookup_error("not_found", None))?;
    let bytes = {
        let mut data = session.data();
        if data.finishing {
            return Err(lookup_error("not_found", None));
        }
        if must_be_closed && !data.closed {
            return Err(lookup_error("not_closed", None));
        }
        if data.closed && !body.is_empty() {
            return Err(lookup_error("closed", None));
        }
        if offset != data.bytes.len() as u64 {
            return Err(lookup_error("incorrect_offset", Some(data.bytes.len())));
        }
        data.finishing = true;
        let mut bytes = std::mem::take(&mut data.bytes);
        bytes.extend_from_slice(body);
        bytes
    };
    let old_len = bytes.len() - body.len();
    // Hashed with no lock held.
    Ok(Taken {
        session,
        content: Content::new(bytes),
        old_len,
    })
}

/// Commits a taken session under `commit`, in the state lock. Ok: the file's
/// metadata; Err: the `WriteError`, the data back in its session.
fn commit_one(
    shared: &Shared,
    ns: u64,
    id: &str,
    commit: &Commit,
    taken: Taken,
) -> Result<Map<String, Value>, Value> {
    let Some(path) = &commit.path else {
        taken.restore();
        return Err(json!({ ".tag": "malformed_path", "malformed_path": null }));
    };
    let kept = taken.content.bytes.clone();
    let hash = taken.content.hash.clone();
    let Taken {
        session,
        old_len,
        content,
    } = taken;
    let written = {
        let mut state = shared.state();
        let (now, room) = (state.now(), state.room());
        let written = state.tree(ns).write(commit.write(path, content), now, room);
        if written.is_ok() {
            state.sessions.remove(id);
        }
        written
    };
    if written.is_err() {
        Taken {
            session,
            content: Content { bytes: kept, hash },
            old_len,
        }
        .restore();
    }
    written
}

/// `files/upload_session/finish`.
pub fn finish(mut call: Call) -> Result<Response, Response> {
    let body = std::mem::take(&mut call.body);
    let args = call.args(&["cursor", "commit", "content_hash"])?;
    let (id, offset) = cursor(&args)?;
    let commit = Commit::parse(&args.req_obj("commit", COMMIT_FIELDS)?)?;
    let expected_hash = args.str("content_hash")?.map(str::to_owned);
    let (shared, ns) = (call.shared, call.caller.ns);
    shared.commit(ns, || {
        let taken = take(shared, ns, id, offset, &body, false).map_err(|e| {
            wire::route_error(409, json!({ ".tag": "lookup_failed", "lookup_failed": e }))
        })?;
        if expected_hash
            .as_ref()
            .is_some_and(|h| *h != taken.content.hash)
        {
            taken.restore();
            return Err(wire::route_error(
                409,
                json!({ ".tag": "content_hash_mismatch" }),
            ));
        }
        match commit_one(shared, ns, id, &commit, taken) {
            Ok(metadata) => Ok(wire::json(200, &Value::Object(metadata))),
            Err(reason) => Err(wire::route_error(
                409,
                json!({ ".tag": "path", "path": reason }),
            )),
        }
    })
}

/// `files/upload_session/finish_batch_v2`: up to 1,000 closed sessions in one
/// commit, answered entry by entry.
pub fn finish_batch(call: Call) -> Result<Response, Response> {
    let args = call.args(&["entries"])?;
    let items = args
        .list("entries")?
        .ok_or_else(|| args.err("missing required field 'entries'"))?;
    if items.len() > BATCH_LIMIT {
        return Err(args.err(&format!(
            "entries: list has {} items, more than the maximum of {BATCH_LIMIT}",
            items.len()
        )));
    }
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let entry = args.item("entries", i, item, &["cursor", "commit"])?;
        let (id, offset) = cursor(&entry)?;
        let commit = Commit::parse(&entry.req_obj("commit", COMMIT_FIELDS)?)?;
        entries.push((id, offset, commit));
    }
    let (shared, ns) = (call.shared, call.caller.ns);
    shared.commit(ns, || {
        let results: Vec<Value> = entries
            .iter()
            .map(|(id, offset, commit)| {
                let failure = |f: Value| json!({ ".tag": "failure", "failure": f });
                let taken = match take(shared, ns, id, *offset, &[], true) {
                    Ok(t) => t,
                    Err(e) => {
                        return failure(json!({ ".tag": "lookup_failed", "lookup_failed": e }))
                    }
                };
                match commit_one(shared, ns, id, commit, taken) {
                    Ok(mut metadata) => {
                        metadata.insert(".tag".into(), "success".into());
                        Value::Object(metadata)
                    }
                    Err(reason) => failure(json!({ ".tag": "path", "path": reason })),
                }
            })
            .collect();
        Ok(wire::json(200, &json!({ "entries": results })))
    })
}
