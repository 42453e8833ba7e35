//! Which Drive file holds each key: Drive addresses files by id, and a name is
//! not unique, so the store keeps a view of the whole app data folder — built
//! from one listing, then kept current from the changes feed, which answers a
//! poll that finds nothing with one request.
//!
//! A name may be held by several files (two devices creating the same key at
//! once, an upload retried after its answer was lost). Every reader settles it
//! the same way: the file created first holds the key (ties broken by id), so
//! all devices read the same bytes whatever order they saw the files in.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::{ApiError, DriveApi};
use crate::backend::{BackendError, BackendResult};

/// Listing calls see what changed this recently without asking again: a poll's
/// listing of folders, then of each folder's keys, costs one request.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(1);
/// Entries per listing page: Drive's largest.
const PAGE_SIZE: &str = "1000";
/// What the store needs of a file.
pub(crate) const FILE_FIELDS: &str = "id,name,createdTime,size";

/// One Drive file holding a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: String,
    /// RFC 3339 as Drive writes it (always with milliseconds and `Z`), so text
    /// order is time order.
    pub created: String,
    /// Bytes, where the answer told them.
    pub size: Option<u64>,
}

impl Entry {
    /// The entry a Drive file resource describes (asked with [`FILE_FIELDS`]).
    pub fn of(file: &Value) -> Option<(String, Entry)> {
        let id = file.get("id")?.as_str()?.to_owned();
        let name = file.get("name")?.as_str()?.to_owned();
        let created = file
            .get("createdTime")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        // Drive writes an int64 as a JSON string.
        let size = file.get("size").and_then(|v| match v {
            Value::String(text) => text.parse().ok(),
            other => other.as_u64(),
        });
        Some((name, Entry { id, created, size }))
    }

    fn order(&self) -> (&str, &str) {
        (&self.created, &self.id)
    }
}

#[derive(Default)]
struct View {
    /// Key → the files holding it, first created first.
    by_key: BTreeMap<String, Vec<Entry>>,
    /// File id → its key, to apply a change that names only the id.
    key_of: HashMap<String, String>,
    /// Where the changes feed goes on from; None until the first listing.
    token: Option<String>,
    looked: Option<Instant>,
    /// This store's own writes while a listing runs, applied again after it (the
    /// listing may have missed them).
    during_look: Option<Vec<Note>>,
}

#[derive(Clone)]
enum Note {
    Holds(String, Entry),
    Gone(String),
}

impl View {
    fn apply(&mut self, note: &Note) {
        match note {
            Note::Holds(key, entry) => {
                self.forget(&entry.id);
                let list = self.by_key.entry(key.clone()).or_default();
                list.push(entry.clone());
                list.sort_by(|a, b| a.order().cmp(&b.order()));
                self.key_of.insert(entry.id.clone(), key.clone());
            }
            Note::Gone(id) => self.forget(id),
        }
    }

    fn forget(&mut self, id: &str) {
        let Some(key) = self.key_of.remove(id) else {
            return;
        };
        if let Some(list) = self.by_key.get_mut(&key) {
            list.retain(|e| e.id != id);
            if list.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }

    fn note(&mut self, note: Note) {
        self.apply(&note);
        if let Some(during) = &mut self.during_look {
            during.push(note);
        }
    }
}

/// The view, and one look at a time.
#[derive(Default)]
pub(crate) struct Index {
    view: Mutex<View>,
    looking: Mutex<()>,
}

impl Index {
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings the view up to date unless it was within `max_age`: the first time
    /// by listing every file, after that by the changes since the last look.
    pub fn fresh(&self, api: &DriveApi, max_age: Duration) -> BackendResult<()> {
        let recent =
            |v: &View| v.token.is_some() && v.looked.is_some_and(|at| at.elapsed() <= max_age);
        if recent(&self.view()) {
            return Ok(());
        }
        let asked = Instant::now();
        let _one_look = self.looking.lock().unwrap_or_else(PoisonError::into_inner);
        // Another caller may have looked while this one waited.
        if self.view().looked.is_some_and(|at| at >= asked) {
            return Ok(());
        }
        let token = self.view().token.clone();
        match token {
            Some(t) => self.follow_changes(api, t, asked),
            None => self.list_everything(api, asked),
        }
    }

    /// Loads the view once if it was never loaded; a later call costs nothing.
    pub fn ready(&self, api: &DriveApi) -> BackendResult<()> {
        self.fresh(api, Duration::MAX)
    }

    fn list_everything(&self, api: &DriveApi, asked: Instant) -> BackendResult<()> {
        // The feed's position first: whatever changes during the listing is
        // then in the feed, never lost between the two.
        let start = api
            .get_json("changes/startPageToken", &[])
            .map_err(|e| e.into_backend("the changes feed"))?;
        let token = start
            .get("startPageToken")
            .and_then(Value::as_str)
            .ok_or_else(|| api.not_google(super::api::Host::Api, 200))?
            .to_owned();
        self.view().during_look = Some(Vec::new());
        let listed = self.list_all(api);
        let mut view = self.view();
        let during = view.during_look.take().unwrap_or_default();
        let files = listed?;
        let mut fresh = View::default();
        for (key, entry) in files {
            fresh.apply(&Note::Holds(key, entry));
        }
        for note in &during {
            fresh.apply(note);
        }
        fresh.token = Some(token);
        fresh.looked = Some(asked);
        *view = fresh;
        Ok(())
    }

    /// Every file of the app data folder, page by page: a short or empty page
    /// is not the end, only a missing `nextPageToken` is.
    fn list_all(&self, api: &DriveApi) -> BackendResult<Vec<(String, Entry)>> {
        let fields = format!("nextPageToken,files({FILE_FIELDS})");
        let mut page: Option<String> = None;
        let mut out = Vec::new();
        loop {
            let mut query = vec![
                ("spaces", "appDataFolder"),
                ("q", "trashed = false"),
                ("pageSize", PAGE_SIZE),
                ("fields", fields.as_str()),
            ];
            if let Some(p) = &page {
                query.push(("pageToken", p));
            }
            let answer = api
                .get_json("files", &query)
                .map_err(|e| e.into_backend("the listing"))?;
            let files = answer
                .get("files")
                .and_then(Value::as_array)
                .ok_or_else(|| api.not_google(super::api::Host::Api, 200))?;
            out.extend(files.iter().filter_map(Entry::of));
            match answer.get("nextPageToken").and_then(Value::as_str) {
                Some(next) => page = Some(next.to_owned()),
                None => return Ok(out),
            }
        }
    }

    fn follow_changes(
        &self,
        api: &DriveApi,
        mut token: String,
        asked: Instant,
    ) -> BackendResult<()> {
        let fields = format!(
            "nextPageToken,newStartPageToken,changes(fileId,removed,file({FILE_FIELDS},trashed))"
        );
        loop {
            let query = [
                ("pageToken", token.as_str()),
                ("spaces", "appDataFolder"),
                ("pageSize", PAGE_SIZE),
                ("includeRemoved", "true"),
                ("fields", fields.as_str()),
            ];
            let answer = match api.get_json("changes", &query) {
                Ok(a) => a,
                // A token Google no longer takes (too old): list everything again.
                Err(ApiError::Backend(BackendError::Invalid(_))) => {
                    self.view().token = None;
                    return self.list_everything(api, asked);
                }
                Err(e) => return Err(e.into_backend("the changes feed")),
            };
            let changes = answer
                .get("changes")
                .and_then(Value::as_array)
                .ok_or_else(|| api.not_google(super::api::Host::Api, 200))?;
            {
                let mut view = self.view();
                for change in changes {
                    let Some(id) = change.get("fileId").and_then(Value::as_str) else {
                        continue;
                    };
                    let removed = change.get("removed").and_then(Value::as_bool) == Some(true);
                    let file = change.get("file");
                    let trashed =
                        file.and_then(|f| f.get("trashed")).and_then(Value::as_bool) == Some(true);
                    match file.and_then(Entry::of) {
                        Some((key, entry)) if !removed && !trashed => {
                            view.apply(&Note::Holds(key, entry))
                        }
                        _ => view.apply(&Note::Gone(id.to_owned())),
                    }
                }
            }
            if let Some(next) = answer.get("nextPageToken").and_then(Value::as_str) {
                token = next.to_owned();
                continue;
            }
            let new_start = answer
                .get("newStartPageToken")
                .and_then(Value::as_str)
                .ok_or_else(|| api.not_google(super::api::Host::Api, 200))?;
            let mut view = self.view();
            view.token = Some(new_start.to_owned());
            view.looked = Some(asked);
            return Ok(());
        }
    }

    /// The file holding `key`: the first created of those that carry its name.
    pub fn holder(&self, key: &str) -> Option<Entry> {
        self.view().by_key.get(key).and_then(|l| l.first().cloned())
    }

    /// Every file carrying `key`'s name, first created first.
    pub fn all_of(&self, key: &str) -> Vec<Entry> {
        self.view().by_key.get(key).cloned().unwrap_or_default()
    }

    /// The keys under `prefix`, in order, each with the size of the file that
    /// holds it.
    pub fn keys(&self, prefix: &str) -> Vec<(String, Option<u64>)> {
        self.view()
            .by_key
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, files)| (k.clone(), files.first().and_then(|f| f.size)))
            .collect()
    }

    /// This store wrote `entry` under `key`.
    pub fn note_holds(&self, key: &str, entry: Entry) {
        self.view().note(Note::Holds(key.to_owned(), entry));
    }

    /// What Drive says holds `key` now (an answer to a query by name) replaces
    /// what the view had for it.
    pub fn settle(&self, key: &str, entries: &[Entry]) {
        let mut view = self.view();
        for old in view.by_key.get(key).cloned().unwrap_or_default() {
            view.note(Note::Gone(old.id));
        }
        for e in entries {
            view.note(Note::Holds(key.to_owned(), e.clone()));
        }
    }

    /// The file `id` is gone.
    pub fn note_gone(&self, id: &str) {
        self.view().note(Note::Gone(id.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, created: &str) -> Entry {
        Entry {
            id: id.into(),
            created: created.into(),
            size: None,
        }
    }

    #[test]
    fn the_first_created_file_holds_a_name_whatever_order_it_is_seen_in() {
        let orders = [["b", "a", "c"], ["c", "b", "a"], ["a", "c", "b"]];
        let created = |id: &str| match id {
            "a" => "2026-01-01T00:00:01.000Z",
            "b" => "2026-01-01T00:00:00.500Z",
            _ => "2026-01-01T00:00:00.500Z",
        };
        for order in orders {
            let index = Index::default();
            for id in order {
                index.note_holds("k", entry(id, created(id)));
            }
            // b and c tie on time; the id breaks it.
            assert_eq!(index.holder("k").map(|e| e.id), Some("b".into()));
            assert_eq!(index.all_of("k").len(), 3);
        }
    }

    #[test]
    fn a_file_gone_leaves_the_next_one_holding_the_name() {
        let index = Index::default();
        index.note_holds("k", entry("a", "1"));
        index.note_holds("k", entry("b", "2"));
        index.note_gone("a");
        assert_eq!(index.holder("k").map(|e| e.id), Some("b".into()));
        index.note_gone("b");
        assert!(index.holder("k").is_none());
        assert!(index.keys("").is_empty());
    }

    #[test]
    fn keys_are_listed_in_order_under_a_prefix() {
        let index = Index::default();
        for (i, k) in ["v/b", "v/a", "w/a", "v0"].iter().enumerate() {
            index.note_holds(k, entry(&i.to_string(), "1"));
        }
        let names: Vec<String> = index.keys("v/").into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["v/a".to_owned(), "v/b".to_owned()]);
    }

    #[test]
    fn a_key_is_listed_with_the_size_of_the_file_that_holds_it() {
        let index = Index::default();
        let file = |id: &str, created: &str, size: Value| {
            Entry::of(&serde_json::json!({
                "id": id, "name": "k", "createdTime": created, "size": size,
            }))
            .map(|(_, e)| e)
        };
        // Drive's string, and a number too; the later file does not hold the name.
        let (first, later) = (file("a", "1", "1234".into()), file("b", "2", 99.into()));
        assert_eq!(later.as_ref().and_then(|e| e.size), Some(99));
        index.note_holds("k", later.unwrap());
        index.note_holds("k", first.unwrap());
        assert_eq!(index.keys(""), vec![("k".to_owned(), Some(1234))]);
        // Written again: the answer's size replaces the one seen before.
        index.note_holds("k", file("a", "1", "7".into()).unwrap());
        assert_eq!(index.keys(""), vec![("k".to_owned(), Some(7))]);
        // An answer without a size leaves it unknown, not zero.
        index.note_holds("k", file("a", "1", Value::Null).unwrap());
        assert_eq!(index.keys(""), vec![("k".to_owned(), None)]);
    }
}
