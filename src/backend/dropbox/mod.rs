//! Dropbox as a store: the vault's objects are files in the app's own folder
//! (`Apps/<app name>/`), the only part of the owner's Dropbox an app with the "App
//! folder" permission can see. A key is a path there ([`names`]); the content is
//! the sealed bytes as they are.
//!
//! - Writes: Dropbox commits one write into an account at a time, so commits go
//!   through one lane and are batched ([`commit`]); content travels beforehand in
//!   upload sessions, in parallel. A write alone uses one `files/upload`.
//!   Create-only writes use `add` with `strict_conflict`, so an identical file
//!   already there is a conflict too, as the engine needs.
//! - Listing: a view of every key, kept current by the change feed ([`listing`]):
//!   a listing of folders always asks what changed, and listings of keys right
//!   after it share that answer, so a poll that finds nothing costs one request.
//! - Change notification: [`ObjectStore::wait_for_change`] holds a longpoll open on
//!   the view's cursor, so a mount hears of another device's write at once.

pub mod api;
mod commit;
mod listing;
pub mod names;

use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use api::{temporary, ApiError, DropboxApi};
pub use api::{AccessTokens, DropboxUrls};
use commit::{Commits, Staged};
use listing::{Listing, Written};

use super::{BackendError, BackendResult, ObjectStore, ProviderStatus};

/// The piece of a large file sent per request (a multiple of 4 MiB, as Dropbox
/// advises), small enough to arrive within one request's timeout on a slow link.
const CHUNK: usize = 8 * 1024 * 1024;
/// The longpoll's timeout asked of Dropbox (it takes 30 to 480 s).
pub const LONGPOLL_SECS: u32 = 30;
/// How often a failed batch entry that Dropbox refused for contention is tried again.
const ENTRY_RETRIES: u32 = 8;

/// The store over one Dropbox app folder.
pub struct DropboxStore {
    api: DropboxApi,
    listing: Listing,
    commits: Commits,
    /// Until when Dropbox asked not to longpoll again.
    longpoll_backoff: Mutex<Option<Instant>>,
    /// The cursor a longpoll last told a change on.
    told_on: Mutex<Option<String>>,
    account: Mutex<Option<String>>,
}

impl std::fmt::Debug for DropboxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropboxStore")
            .field("urls", self.api.urls())
            .finish_non_exhaustive()
    }
}

/// What `status` and setup call a Dropbox: the app folder, and the API when it is
/// not Dropbox's own.
pub fn describe_api(urls: &DropboxUrls) -> String {
    if urls.api == api::DEFAULT_API_URL {
        "the app folder of Dropbox".into()
    } else {
        format!("the app folder of the Dropbox API at {}", urls.api)
    }
}

/// A success's `.tag` chain as Dropbox writes error summaries (`path/conflict/file`).
fn tags_of(value: &Value) -> String {
    let mut parts = Vec::new();
    let mut at = value;
    while let Some(tag) = at.get(".tag").and_then(Value::as_str) {
        parts.push(tag.to_owned());
        match at.get(tag) {
            Some(next) if next.is_object() => at = next,
            _ => break,
        }
    }
    parts.join("/")
}

impl DropboxStore {
    pub fn new(urls: DropboxUrls, tokens: Arc<dyn AccessTokens>) -> BackendResult<Self> {
        Ok(Self {
            api: DropboxApi::new(urls, tokens)?,
            listing: Listing::default(),
            commits: Commits::default(),
            longpoll_backoff: Mutex::new(None),
            told_on: Mutex::new(None),
            account: Mutex::new(None),
        })
    }

    /// Whose Dropbox this is ("Name <email>"), asked of Dropbox: also the check
    /// that the login works, for setup.
    pub fn account(&self) -> BackendResult<String> {
        let answer = self
            .api
            .rpc("users/get_current_account", None)
            .map_err(|e| e.into_backend("the account"))?;
        let name = answer
            .get("name")
            .and_then(|n| n.get("display_name"))
            .and_then(Value::as_str);
        let email = answer.get("email").and_then(Value::as_str);
        let account = match (name, email) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => n.to_owned(),
            (None, Some(e)) => e.to_owned(),
            (None, None) => {
                return Err(BackendError::Refused(format!(
                    "the server at {} does not answer as Dropbox's API does (its account has no name); check --api-url",
                    self.api.urls().api
                )))
            }
        };
        *self.account.lock().unwrap_or_else(PoisonError::into_inner) = Some(account.clone());
        Ok(account)
    }

    /// Bytes used and allocated in the account.
    fn space(&self) -> Option<(u64, Option<u64>)> {
        let answer = self.api.rpc("users/get_space_usage", None).ok()?;
        let used = answer.get("used")?.as_u64()?;
        let allocated = answer
            .get("allocation")
            .and_then(|a| a.get("allocated"))
            .and_then(Value::as_u64);
        Some((used, allocated))
    }

    fn commit_arg(path: &str, create_only: bool) -> Value {
        let mode = if create_only { "add" } else { "overwrite" };
        json!({
            "path": path,
            "mode": { ".tag": mode },
            "autorename": false,
            "mute": true,
            // Only for create-only writes: an identical file there is a conflict
            // too (the engine's log segments must never be written twice).
            "strict_conflict": create_only,
        })
    }

    /// Writes `data` under `key`, by one upload when no other commit is under way,
    /// else staged in a session and committed with the others.
    fn write(&self, key: &str, data: &[u8], create_only: bool) -> BackendResult<()> {
        let path = names::path_of(key)?;
        // One request alone only while it is short: it holds the commit lane for
        // its whole transfer, and must arrive within one request's timeout.
        if data.len() <= CHUNK {
            let direct = self.commits.if_idle(|| {
                self.api
                    .upload("files/upload", &Self::commit_arg(&path, create_only), data)
                    .map(|_| ())
            });
            if let Some(result) = direct {
                result.map_err(|e| e.into_backend(key))?;
                self.listing.note(key, Written::Put(data.len() as u64));
                return Ok(());
            }
        }
        let pieces = data.chunks(CHUNK).map(|piece| Ok(piece.to_vec()));
        let session_id = self.stage(pieces, data.len() as u64)?;
        self.finish(key, path, session_id, data.len() as u64, create_only)
    }

    /// Sends `pieces` (in order, `size` bytes in all) into a new closed upload
    /// session; returns its id.
    fn stage(
        &self,
        mut pieces: impl Iterator<Item = BackendResult<Vec<u8>>>,
        size: u64,
    ) -> BackendResult<String> {
        let first = pieces.next().transpose()?.unwrap_or_default();
        let mut offset = first.len() as u64;
        let started = self
            .api
            .upload(
                "files/upload_session/start",
                &json!({ "close": offset == size }),
                &first,
            )
            .map_err(|e| e.into_backend("an upload session"))?;
        let session_id = started
            .get("session_id")
            .and_then(Value::as_str)
            .ok_or_else(|| BackendError::Refused("Dropbox started a session without an id".into()))?
            .to_owned();
        while offset < size {
            let piece = pieces.next().transpose()?.unwrap_or_default();
            if piece.is_empty() {
                return Err(BackendError::Invalid(
                    "the file shrank while it was uploaded".into(),
                ));
            }
            let next = offset + piece.len() as u64;
            let arg = json!({
                "cursor": { "session_id": session_id, "offset": offset },
                "close": next >= size,
            });
            self.api
                .upload("files/upload_session/append_v2", &arg, &piece)
                .map_err(|e| e.into_backend("an upload session"))?;
            offset = next;
        }
        Ok(session_id)
    }

    fn finish(
        &self,
        key: &str,
        path: String,
        session_id: String,
        size: u64,
        create_only: bool,
    ) -> BackendResult<()> {
        let staged = Staged {
            session_id,
            size,
            path,
            key: key.to_owned(),
            create_only,
        };
        self.commits
            .commit(staged, &|batch| self.finish_batch(batch))?;
        self.listing.note(key, Written::Put(size));
        Ok(())
    }

    /// Commits one batch; an entry Dropbox turns away for contention is tried
    /// again in a batch of its own kind after the wait it asks.
    fn finish_batch(&self, batch: &[Staged]) -> Vec<BackendResult<()>> {
        let mut results: Vec<Option<BackendResult<()>>> = batch.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..batch.len()).collect();
        for attempt in 0..=ENTRY_RETRIES {
            if todo.is_empty() {
                break;
            }
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            let entries: Vec<Value> = todo
                .iter()
                .map(|&i| {
                    let s = &batch[i];
                    json!({
                        "cursor": { "session_id": s.session_id, "offset": s.size },
                        "commit": Self::commit_arg(&s.path, s.create_only),
                    })
                })
                .collect();
            let answer = self.api.rpc(
                "files/upload_session/finish_batch_v2",
                Some(&json!({ "entries": entries })),
            );
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    let e = e.into_backend("a batch commit");
                    for &i in &todo {
                        results[i] = Some(Err(crate::backend::deadline::again(&e)));
                    }
                    todo.clear();
                    break;
                }
            };
            let listed = answer.get("entries").and_then(Value::as_array);
            let mut again = Vec::new();
            for (n, &i) in todo.iter().enumerate() {
                let entry = listed.and_then(|l| l.get(n));
                let Some(entry) = entry else {
                    results[i] = Some(Err(BackendError::Refused(
                        "Dropbox answered a batch commit with too few entries".into(),
                    )));
                    continue;
                };
                match entry.get(".tag").and_then(Value::as_str) {
                    Some("success") => results[i] = Some(Ok(())),
                    _ => {
                        let failure = entry.get("failure").map(tags_of).unwrap_or_default();
                        if failure.contains("too_many_write_operations") {
                            again.push(i);
                        } else {
                            let e = ApiError::Endpoint { summary: failure };
                            results[i] = Some(Err(e.into_backend(&batch[i].key)));
                        }
                    }
                }
            }
            todo = again;
        }
        for i in todo {
            results[i] = Some(Err(temporary(
                "Dropbox kept refusing a commit for other writes at the same time".into(),
            )));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(temporary("a batch commit was not made".into()))))
            .collect()
    }

    fn read(&self, key: &str, range: Option<Range<u64>>) -> BackendResult<Vec<u8>> {
        let path = names::path_of(key)?;
        self.api
            .download(&path, range)
            .map_err(|e| e.into_backend(key))
    }
}

/// Reads a file in pieces of [`CHUNK`].
fn pieces_of(path: &Path) -> BackendResult<(u64, impl Iterator<Item = BackendResult<Vec<u8>>>)> {
    let file = std::fs::File::open(path).map_err(|e| BackendError::unreadable(path, e))?;
    let size = file
        .metadata()
        .map_err(|e| BackendError::unreadable(path, e))?
        .len();
    let owned = path.to_path_buf();
    let mut file = file;
    let mut left = size;
    let iter = std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let want = left.min(CHUNK as u64) as usize;
        let mut piece = vec![0u8; want];
        Some(match file.read_exact(&mut piece) {
            Ok(()) => {
                left -= want as u64;
                Ok(piece)
            }
            Err(e) => {
                left = 0;
                Err(BackendError::unreadable(&owned, e))
            }
        })
    });
    Ok((size, iter))
}

impl ObjectStore for DropboxStore {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.write(key, data, false)
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.write(key, data, true)
    }

    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        let (size, pieces) = pieces_of(path)?;
        if size <= CHUNK as u64 {
            let data = pieces.collect::<BackendResult<Vec<Vec<u8>>>>()?.concat();
            return self.write(key, &data, false);
        }
        let target = names::path_of(key)?;
        let session_id = self.stage(pieces, size)?;
        self.finish(key, target, session_id, size, false)
    }

    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.read(key, None)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        self.read(key, Some(range))
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        Ok(self
            .listing
            .keys(&self.api, prefix, listing::FRESH_FOR)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| start_after.is_none_or(|s| k.as_str() > s))
            .collect())
    }

    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        self.listing.keys(&self.api, prefix, listing::FRESH_FOR)
    }

    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        // A new look always: the engine's polls start here.
        let keys = self.listing.keys(&self.api, prefix, Duration::ZERO)?;
        Ok(super::dirs_below(
            prefix,
            keys.into_iter().map(|(k, _)| k).collect(),
        ))
    }

    fn delete(&self, key: &str) -> BackendResult<()> {
        let path = names::path_of(key)?;
        let result = self.commits.exclusive(|| {
            self.api
                .rpc("files/delete_v2", Some(&json!({ "path": path })))
        });
        match result {
            Ok(_) => {}
            Err(e) if e.summary().is_some_and(|s| s.contains("not_found")) => {}
            Err(e) => return Err(e.into_backend(key)),
        }
        self.listing.note(key, Written::Deleted);
        Ok(())
    }

    fn describe(&self) -> String {
        describe_api(self.api.urls())
    }

    fn provider_status(&self, look: bool) -> Option<ProviderStatus> {
        let mut status = ProviderStatus {
            provider: Some("Dropbox".into()),
            account: self
                .account
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            ..ProviderStatus::default()
        };
        if look {
            status.account = self.account().ok().or(status.account);
            if let Some((used, allocated)) = self.space() {
                status.space_used = Some(used);
                status.space_allocated = allocated;
            }
        }
        Some(status)
    }

    fn wait_for_change(&self, max: Duration) -> Option<BackendResult<bool>> {
        Some(self.longpoll(max))
    }
}

impl DropboxStore {
    /// Holds a longpoll on the view's cursor: true as soon as anything in the app
    /// folder changed since the view's last look (the view is then marked stale, so
    /// the next listing asks), false when `max` passed. Once a change is told on a
    /// cursor, the next call waits for a look to move the cursor instead of asking
    /// Dropbox again (which would answer at once, for the same change).
    fn longpoll(&self, max: Duration) -> BackendResult<bool> {
        let until = *self
            .longpoll_backoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(until) = until {
            let wait = until.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait.min(max));
                return Ok(false);
            }
        }
        let cursor = match self.listing.cursor() {
            Some(c) => c,
            None => {
                self.listing.fresh(&self.api, listing::FRESH_FOR)?;
                self.listing
                    .cursor()
                    .ok_or_else(|| BackendError::Refused("Dropbox gave no cursor".into()))?
            }
        };
        let told = self
            .told_on
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if told.as_deref() == Some(cursor.as_str()) {
            // The look that takes that change in is to come: wait for it, then
            // longpoll again on the cursor it leaves.
            self.listing.wait_past(&cursor, max);
            return Ok(false);
        }
        let (changed, backoff) = match self.api.longpoll(&cursor, LONGPOLL_SECS) {
            Ok(answer) => answer,
            // The cursor no longer holds: the next look lists everything again,
            // which is what a change would have asked for.
            Err(e) if e.summary().is_some_and(|s| s.starts_with("reset")) => (true, 0),
            Err(e) => return Err(e.into_backend("the change notification")),
        };
        if backoff > 0 {
            *self
                .longpoll_backoff
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                Some(Instant::now() + Duration::from_secs(backoff));
        }
        if changed {
            // Told even when a look moved the cursor meanwhile: that look may
            // have come before the change.
            *self.told_on.lock().unwrap_or_else(PoisonError::into_inner) = Some(cursor);
            self.listing.mark_stale();
        }
        Ok(changed)
    }
}

impl DropboxStore {
    /// Revokes the access token in use and, with it, its refresh token.
    pub fn revoke_login(&self) -> BackendResult<()> {
        self.api
            .rpc("auth/token/revoke", None)
            .map(|_| ())
            .map_err(|e| e.into_backend("the login"))
    }
}
