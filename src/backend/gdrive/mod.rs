//! Google Drive as a store: the vault's objects are files in the app data folder,
//! a hidden space of the owner's Drive that only this app (with the narrow
//! `drive.appdata` scope) can see, and that cannot be shared or trashed. A key is
//! a file's name; the content is the sealed bytes as they are.
//!
//! Drive addresses files by id and lets names repeat, with no create-only write
//! and no compare-and-swap, so:
//! - a view maps keys to ids ([`index`]), built from one listing and kept current
//!   by the changes feed; a poll that finds nothing costs one request;
//! - a name held by several files is read from the first created ([`index`]);
//! - a create-only write that made a new file asks Drive which files hold its
//!   name now, and yields (deleting its own) to one made before it or at the
//!   same moment: two devices can never both believe they made the vault's
//!   keyring or a log segment, and a create retried after a lost answer finds
//!   its first try (the retry layer then compares bytes). A plain write of a key
//!   the view does not know makes a file without asking again: the engine puts
//!   only keys one device writes (packs named by their content, a device's own
//!   record) or keys every device has seen (the keyring), so a second file of
//!   the name can only hold the same bytes; it is removed at the key's next
//!   write, and readers take the first anyway.
//! - requests keep to Google's pace and back off when refused ([`api`]); large
//!   files go up in resumable sessions that survive a cut link ([`upload`]).
//!
//! Drive tells of changes only by webhooks to a public HTTPS address, which a
//! phone or a laptop behind a router does not have: readers poll.

pub mod api;
mod index;
mod pacing;
mod upload;

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use api::{ApiError, DriveApi};
use index::{Entry, Index, FILE_FIELDS};
use upload::{Source, Target};

use super::{AccessTokens, BackendError, BackendResult, ObjectStore, ProviderStatus};
use crate::config::GdriveUrls;

/// Bytes an account uses, and its limit where it has one.
type Space = (u64, Option<u64>);

/// The store over one Google account's app data folder for this app.
pub struct GdriveStore {
    api: DriveApi,
    index: Index,
    account: Mutex<Option<String>>,
}

impl std::fmt::Debug for GdriveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdriveStore")
            .field("urls", self.api.urls())
            .finish_non_exhaustive()
    }
}

/// What `status` and setup call a Drive: the app data folder, and the API when
/// it is not Google's own.
pub fn describe_api(urls: &GdriveUrls) -> String {
    if urls.api.trim_end_matches('/') == crate::config::GDRIVE_API_URL {
        "the app data folder of Google Drive".into()
    } else {
        format!(
            "the app data folder of the Google Drive API at {}",
            urls.api
        )
    }
}

/// `text` as a string literal of Drive's query language.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl GdriveStore {
    pub fn new(urls: GdriveUrls, tokens: Arc<dyn AccessTokens>) -> BackendResult<Self> {
        Ok(Self {
            api: DriveApi::new(urls, tokens)?,
            index: Index::default(),
            account: Mutex::new(None),
        })
    }

    /// Whose Drive this is ("Name <email>"), asked of Google: also the check that
    /// the login works and may use the app data folder, for setup.
    pub fn account(&self) -> BackendResult<String> {
        self.about().map(|(account, _)| account)
    }

    /// Whose Drive this is, and the bytes it uses and may use (one request).
    fn about(&self) -> BackendResult<(String, Option<Space>)> {
        let about = self
            .api
            .get_json(
                "about",
                &[(
                    "fields",
                    "user(displayName,emailAddress),storageQuota(limit,usage)",
                )],
            )
            .map_err(|e| e.into_backend("the account"))?;
        let user = about.get("user");
        let name = user
            .and_then(|u| u.get("displayName"))
            .and_then(Value::as_str);
        let email = user
            .and_then(|u| u.get("emailAddress"))
            .and_then(Value::as_str);
        let account = match (name, email) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => n.to_owned(),
            (None, Some(e)) => e.to_owned(),
            (None, None) => {
                return Err(self.api.not_google(api::Host::Api, 200));
            }
        };
        *self.account.lock().unwrap_or_else(PoisonError::into_inner) = Some(account.clone());
        let number = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
        let space = about.get("storageQuota").and_then(|quota| {
            let used = quota.get("usage").and_then(number)?;
            Some((used, quota.get("limit").and_then(number)))
        });
        Ok((account, space))
    }

    /// Drive's files named `key` now, first created first, asked by name (a
    /// short listing, always complete, however the view stands).
    fn holders(&self, key: &str) -> BackendResult<Vec<Entry>> {
        let q = format!("name = {} and trashed = false", quoted(key));
        let fields = format!("nextPageToken,files({FILE_FIELDS})");
        let mut page: Option<String> = None;
        let mut out = Vec::new();
        loop {
            let mut query = vec![
                ("spaces", "appDataFolder"),
                ("q", q.as_str()),
                ("fields", fields.as_str()),
            ];
            if let Some(p) = &page {
                query.push(("pageToken", p));
            }
            let answer = self
                .api
                .get_json("files", &query)
                .map_err(|e| e.into_backend(key))?;
            let files = answer
                .get("files")
                .and_then(Value::as_array)
                .ok_or_else(|| self.api.not_google(api::Host::Api, 200))?;
            out.extend(
                files
                    .iter()
                    .filter_map(Entry::of)
                    .filter(|(name, _)| name == key)
                    .map(|(_, e)| e),
            );
            match answer.get("nextPageToken").and_then(Value::as_str) {
                Some(next) => page = Some(next.to_owned()),
                None => break,
            }
        }
        out.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        self.index.settle(key, &out);
        Ok(out)
    }

    fn entry_of(&self, key: &str, file: &Value) -> BackendResult<Entry> {
        match Entry::of(file) {
            Some((name, entry)) if name == key => Ok(entry),
            _ => Err(self.api.not_google(api::Host::Upload, 200)),
        }
    }

    /// Writes `source` under `key`.
    fn write(&self, key: &str, source: Source, create_only: bool) -> BackendResult<()> {
        if key.is_empty() {
            return Err(BackendError::Invalid("an empty key".into()));
        }
        self.index.ready(&self.api)?;
        if create_only && self.index.holder(key).is_some() {
            // Drive's answer, not the view's: the file there may be this store's
            // own from a try whose settling was cut off, which must not be taken
            // for a win before it is compared with any earlier file.
            if !self.holders(key)?.is_empty() {
                return Err(BackendError::AlreadyExists { key: key.into() });
            }
        }
        if let Some(holder) = self.index.holder(key) {
            match upload::upload(&self.api, Target::Existing { id: &holder.id }, &source) {
                Ok(file) => {
                    // Its new size, for listings until the changes feed tells it.
                    if let Ok(written) = self.entry_of(key, &file) {
                        self.index.note_holds(key, written);
                    }
                    self.remove_others(key, &holder.id);
                    return Ok(());
                }
                // Deleted since the view last looked: made anew below.
                Err(ApiError::NotFound) => self.index.note_gone(&holder.id),
                Err(e) => return Err(e.into_backend(key)),
            }
            return self.write(key, source, create_only);
        }
        let file = upload::upload(&self.api, Target::New { name: key }, &source)
            .map_err(|e| e.into_backend(key))?;
        let mine = self.entry_of(key, &file)?;
        self.index.note_holds(key, mine.clone());
        if create_only {
            self.settle_new(key, mine)?;
        }
        Ok(())
    }

    /// After a create-only write made a new file for `key`: yields to a file
    /// made before it or at the same moment, so that exactly the first holds the
    /// name.
    fn settle_new(&self, key: &str, mine: Entry) -> BackendResult<()> {
        let holders = self.holders(key)?;
        let earlier: Vec<&Entry> = holders
            .iter()
            .filter(|e| e.id != mine.id && (&e.created, &e.id) < (&mine.created, &mine.id))
            .collect();
        let same_moment = holders
            .iter()
            .any(|e| e.id != mine.id && e.created == mine.created);
        if earlier.is_empty() && !same_moment {
            return Ok(());
        }
        // Ours goes; if the other yields too (the same moment), the caller is
        // told the key exists and finds it missing: setup says to try again.
        self.api
            .delete_file(&mine.id)
            .map_err(|e| e.into_backend(key))?;
        self.index.note_gone(&mine.id);
        Err(BackendError::AlreadyExists { key: key.into() })
    }

    /// Deletes the files other than `keep` that carry `key`'s name (left by a
    /// race or a retried upload): best effort, readers ignore them anyway.
    fn remove_others(&self, key: &str, keep: &str) {
        for other in self.index.all_of(key) {
            if other.id != keep && self.api.delete_file(&other.id).is_ok() {
                self.index.note_gone(&other.id);
            }
        }
    }

    fn read(&self, key: &str, range: Option<Range<u64>>) -> BackendResult<Vec<u8>> {
        self.index.ready(&self.api)?;
        for attempt in 0..2 {
            let holder = match self.index.holder(key) {
                Some(h) => h,
                None if attempt == 0 => {
                    // Written by another device since the view looked.
                    self.index.fresh(&self.api, Duration::ZERO)?;
                    match self.index.holder(key) {
                        Some(h) => h,
                        None => break,
                    }
                }
                None => break,
            };
            match self.api.download(&holder.id, range.clone()) {
                Ok(bytes) => return Ok(bytes),
                Err(ApiError::NotFound) => {
                    self.index.note_gone(&holder.id);
                    self.index.fresh(&self.api, Duration::ZERO)?;
                }
                Err(e) => return Err(e.into_backend(key)),
            }
        }
        Err(BackendError::NotFound { key: key.into() })
    }
}

impl ObjectStore for GdriveStore {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.write(key, Source::Bytes(data), false)
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.write(key, Source::Bytes(data), true)
    }

    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        self.write(key, Source::File(path), false)
    }

    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.read(key, None)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        self.read(key, Some(range))
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        self.index.fresh(&self.api, index::FRESH_FOR)?;
        Ok(self
            .index
            .keys(prefix)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| start_after.is_none_or(|s| k.as_str() > s))
            .collect())
    }

    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        self.index.fresh(&self.api, index::FRESH_FOR)?;
        Ok(self.index.keys(prefix))
    }

    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        // A new look always: the engine's polls start here.
        self.index.fresh(&self.api, Duration::ZERO)?;
        let keys = self
            .index
            .keys(prefix)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        Ok(super::dirs_below(prefix, keys))
    }

    fn delete(&self, key: &str) -> BackendResult<()> {
        self.index.ready(&self.api)?;
        let mut entries = self.index.all_of(key);
        if entries.is_empty() {
            // Written elsewhere since the view looked, perhaps.
            entries = self.holders(key)?;
        }
        for entry in entries {
            self.api
                .delete_file(&entry.id)
                .map_err(|e| e.into_backend(key))?;
            self.index.note_gone(&entry.id);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        describe_api(self.api.urls())
    }

    fn provider_status(&self, look: bool) -> Option<ProviderStatus> {
        let mut status = ProviderStatus {
            provider: Some("Google Drive".into()),
            account: self
                .account
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            ..ProviderStatus::default()
        };
        if look {
            if let Ok((account, space)) = self.about() {
                status.account = Some(account);
                if let Some((used, limit)) = space {
                    status.space_used = Some(used);
                    status.space_allocated = limit;
                }
            }
        }
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_for_drive_queries() {
        assert_eq!(quoted("a/b"), "'a/b'");
        assert_eq!(quoted("it's"), "'it\\'s'");
        assert_eq!(quoted("a\\b"), "'a\\\\b'");
    }
}
