//! The store's view of the app folder: every key, kept current from Dropbox's
//! change feed. The first look lists the folder once (`list_folder`, recursive);
//! every later look asks only for what changed since (`list_folder/continue` with
//! the cursor), so a look that finds nothing new costs one request for the whole
//! vault, however many devices and prefixes the caller then lists. A cursor Dropbox
//! resets is answered with a full listing again.
//!
//! A listing of folders (the engine's first call of every poll: the vault's top)
//! always asks; a listing of keys made within [`FRESH_FOR`] of the last look
//! shares it (the engine lists each device's log right after, in the same poll).
//! A longpoll that saw a change, and every write of this process, keep the view
//! right in between.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::{ApiError, DropboxApi};
use super::names::key_of;
use crate::backend::{BackendError, BackendResult};

/// How long one look serves the lookups that follow it.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Entries per page (Dropbox's largest).
const PAGE_LIMIT: u64 = 2_000;

/// Each key's size as its listing entry or this process's write told it.
type Keys = BTreeMap<String, Option<u64>>;

#[derive(Default)]
struct View {
    keys: Keys,
    cursor: Option<String>,
    /// A whole listing has been taken.
    ready: bool,
    looked_at: Option<Instant>,
    /// Something changed that the view may not hold (a longpoll said so).
    stale: bool,
    /// This process's writes while a look is in flight, applied again after it:
    /// the look's pages may predate them.
    refreshing: bool,
    during: Vec<(String, Written)>,
}

#[derive(Default)]
pub(super) struct Listing {
    view: Mutex<View>,
    /// One look at a time; the others wait for it and share it.
    looking: Mutex<()>,
    /// Told when a look moves the cursor.
    moved: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a write of this process did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Put, with this many bytes.
    Put(u64),
    Deleted,
}

impl Written {
    fn apply_to(self, keys: &mut Keys, key: String) {
        match self {
            Written::Put(size) => {
                keys.insert(key, Some(size));
            }
            Written::Deleted => {
                keys.remove(&key);
            }
        }
    }
}

impl Listing {
    /// Records a write of this process.
    pub fn note(&self, key: &str, written: Written) {
        let mut v = lock(&self.view);
        if v.refreshing {
            v.during.push((key.to_owned(), written));
        }
        if v.ready {
            written.apply_to(&mut v.keys, key.to_owned());
        }
    }

    pub fn mark_stale(&self) {
        lock(&self.view).stale = true;
    }

    /// The cursor of the last look, for a longpoll.
    pub fn cursor(&self) -> Option<String> {
        lock(&self.view).cursor.clone()
    }

    /// Waits up to `max` for a look to move the cursor past `cursor`; whether one
    /// did.
    pub fn wait_past(&self, cursor: &str, max: Duration) -> bool {
        let v = lock(&self.view);
        let (v, _) = self
            .moved
            .wait_timeout_while(v, max, |v| v.cursor.as_deref() == Some(cursor))
            .unwrap_or_else(PoisonError::into_inner);
        v.cursor.as_deref() != Some(cursor)
    }

    /// Every key under `prefix` with its size, from a view at most `fresh_for` old.
    pub fn keys(
        &self,
        api: &DropboxApi,
        prefix: &str,
        fresh_for: Duration,
    ) -> BackendResult<Vec<(String, Option<u64>)>> {
        self.fresh(api, fresh_for)?;
        let v = lock(&self.view);
        Ok(v.keys
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, size)| (k.clone(), *size))
            .collect())
    }

    /// Brings the view up to date unless a look started less than `fresh_for` ago.
    pub fn fresh(&self, api: &DropboxApi, fresh_for: Duration) -> BackendResult<()> {
        let asked = Instant::now();
        let is_fresh = |v: &View, since: Option<Instant>| {
            v.ready
                && !v.stale
                && v.looked_at.is_some_and(|t| {
                    t.elapsed() < fresh_for || since.is_some_and(|since| t >= since)
                })
        };
        if is_fresh(&lock(&self.view), None) {
            return Ok(());
        }
        let _one = lock(&self.looking);
        // Another caller's look, started after this call, may have finished while
        // this one waited: it saw everything this one would.
        if is_fresh(&lock(&self.view), Some(asked)) {
            return Ok(());
        }
        self.look(api)
    }

    fn look(&self, api: &DropboxApi) -> BackendResult<()> {
        let cursor = {
            let mut v = lock(&self.view);
            v.refreshing = true;
            v.during.clear();
            v.stale = false;
            v.cursor.clone().filter(|_| v.ready)
        };
        let fetched = fetch(api, cursor);
        let mut v = lock(&self.view);
        v.refreshing = false;
        let during = std::mem::take(&mut v.during);
        let (pages, cursor, whole) = match fetched {
            Ok(f) => f,
            Err(e) => {
                v.stale = true;
                return Err(e);
            }
        };
        if whole {
            v.keys.clear();
        }
        for entry in &pages {
            apply(&mut v.keys, entry);
        }
        replay(&mut v.keys, during);
        v.cursor = Some(cursor);
        v.ready = true;
        // From its end: a look slower than the window must still serve the
        // listings of its poll.
        v.looked_at = Some(Instant::now());
        drop(v);
        self.moved.notify_all();
        Ok(())
    }
}

/// This process's writes made while a look ran, applied again over its pages (which
/// may predate them). A put whose size differs from the one the view holds now
/// met a page that told another (from before this write, or from another device's
/// write after it: which, no one can tell), so its size is left unknown.
fn replay(keys: &mut Keys, during: Vec<(String, Written)>) {
    for (key, written) in during {
        let disagrees =
            matches!((written, keys.get(&key)), (Written::Put(n), Some(Some(m))) if *m != n);
        if disagrees {
            keys.insert(key, None);
        } else {
            written.apply_to(keys, key);
        }
    }
}

/// One entry of a listing, applied to the keys.
fn apply(keys: &mut Keys, entry: &Value) {
    let tag = entry
        .get(".tag")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(key) = entry
        .get("path_lower")
        .and_then(Value::as_str)
        .and_then(key_of)
    else {
        return;
    };
    match tag {
        "file" => {
            keys.insert(key, entry.get("size").and_then(Value::as_u64));
        }
        "deleted" => {
            // A deleted folder takes everything under it.
            let under = format!("{key}/");
            let gone: Vec<String> = keys
                .range(under.clone()..)
                .take_while(|(k, _)| k.starts_with(&under))
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                keys.remove(&k);
            }
            keys.remove(&key);
        }
        _ => {}
    }
}

/// The entries since `cursor` (or all of them, when there is none or Dropbox reset
/// it), the cursor after them, and whether they are the whole folder.
fn fetch(api: &DropboxApi, cursor: Option<String>) -> BackendResult<(Vec<Value>, String, bool)> {
    let mut entries = Vec::new();
    let (mut page, mut whole) = match cursor {
        Some(c) => match api.rpc("files/list_folder/continue", Some(&json!({ "cursor": c }))) {
            Ok(p) => (p, false),
            Err(e) if e.summary().is_some_and(|s| s.starts_with("reset")) => {
                tracing::info!("Dropbox reset the listing's cursor; listing the app folder again");
                (first_page(api)?, true)
            }
            Err(e) => return Err(e.into_backend("the listing")),
        },
        None => (first_page(api)?, true),
    };
    loop {
        let Some(list) = page.get("entries").and_then(Value::as_array) else {
            return Err(not_a_listing());
        };
        entries.extend(list.iter().cloned());
        let cursor = page
            .get("cursor")
            .and_then(Value::as_str)
            .ok_or_else(not_a_listing)?
            .to_owned();
        if !page
            .get("has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return Ok((entries, cursor, whole));
        }
        page = match api.rpc(
            "files/list_folder/continue",
            Some(&json!({ "cursor": cursor })),
        ) {
            Ok(p) => p,
            // Reset in the middle of paging: a whole listing, from the start.
            Err(e) if e.summary().is_some_and(|s| s.starts_with("reset")) => {
                entries.clear();
                whole = true;
                first_page(api)?
            }
            Err(e) => return Err(e.into_backend("the listing")),
        };
    }
}

fn first_page(api: &DropboxApi) -> BackendResult<Value> {
    let arg = json!({
        "path": "",
        "recursive": true,
        "include_deleted": false,
        "limit": PAGE_LIMIT,
    });
    api.rpc("files/list_folder", Some(&arg))
        .map_err(|e: ApiError| e.into_backend("the listing"))
}

fn not_a_listing() -> BackendError {
    BackendError::Refused("Dropbox answered a listing without entries or cursor".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_folder_takes_its_keys_and_only_those() {
        let mut keys: Keys = ["v/a/x", "v/a/y", "v/ab", "v/b/z"]
            .iter()
            .map(|s| (s.to_string(), None))
            .collect();
        apply(
            &mut keys,
            &json!({".tag": "deleted", "path_lower": "/v/a", "name": "a"}),
        );
        assert_eq!(
            keys.into_keys().collect::<Vec<_>>(),
            vec!["v/ab".to_owned(), "v/b/z".to_owned()]
        );
    }

    #[test]
    fn a_write_made_during_a_look_keeps_its_size_unless_a_page_told_another() {
        // As a look leaves the view: "x" as a page told it, "y" as this process's
        // last write during the look set it (no page named it).
        let mut keys: Keys = [("x".to_owned(), Some(5)), ("y".to_owned(), Some(2))].into();
        replay(
            &mut keys,
            vec![
                ("x".into(), Written::Put(9)),
                ("y".into(), Written::Put(1)),
                ("y".into(), Written::Put(2)),
                ("z".into(), Written::Put(4)),
            ],
        );
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            vec![
                ("x".to_owned(), None),
                ("y".to_owned(), Some(2)),
                ("z".to_owned(), Some(4)),
            ]
        );
    }

    #[test]
    fn a_file_entry_keeps_its_size_and_a_write_of_this_process_its_own() {
        let mut keys = Keys::new();
        apply(
            &mut keys,
            &json!({".tag": "file", "path_lower": "/v/a/x", "name": "x", "size": 1234}),
        );
        apply(
            &mut keys,
            &json!({".tag": "file", "path_lower": "/v/a/y", "name": "y"}),
        );
        Written::Put(7).apply_to(&mut keys, "v/a/z".into());
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            vec![
                ("v/a/x".to_owned(), Some(1234)),
                ("v/a/y".to_owned(), None),
                ("v/a/z".to_owned(), Some(7)),
            ]
        );
    }
}
