//! The user's Drive: files by id, every revision and name ever held, and the
//! change log the changes feed reads.
//!
//! Invariants: names are NOT keys — any number of files may share a name in
//! one folder, as in Drive. The change log keeps one entry per file, its
//! latest: a file changed twice since a page token shows once, as Drive
//! coalesces. Both the files and the log are ordered maps, so a page resumes
//! where the last one stopped without a scan from the start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::wire;

/// Where a file lives: the app's hidden folder or the user's own Drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    AppData,
    Drive,
}

#[derive(Clone)]
pub struct File {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub space: Space,
    pub parents: Vec<String>,
    pub description: Option<String>,
    pub app_properties: BTreeMap<String, String>,
    pub content: Arc<Vec<u8>>,
    pub sha256: String,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub version: u64,
    pub revision: String,
    pub trashed: bool,
}

impl File {
    /// The whole `drive#file` resource; `fields` picks from it.
    pub fn resource(&self) -> Value {
        let mut v = json!({
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime,
            "parents": self.parents,
            "spaces": [match self.space { Space::AppData => "appDataFolder", Space::Drive => "drive" }],
            "trashed": self.trashed,
            "explicitlyTrashed": self.trashed,
            "createdTime": wire::rfc3339_ms(self.created_ms),
            "modifiedTime": wire::rfc3339_ms(self.modified_ms),
            "version": self.version.to_string(),
            "size": self.content.len().to_string(),
            "quotaBytesUsed": self.content.len().to_string(),
            "sha256Checksum": self.sha256,
            "headRevisionId": self.revision,
        });
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        if !self.app_properties.is_empty() {
            let m: Map<String, Value> = self
                .app_properties
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            v["appProperties"] = Value::Object(m);
        }
        v
    }

    /// How `everything_stored` names one state of the file.
    fn label(&self) -> String {
        format!(
            "{} | {} | {:?}",
            self.name,
            self.description.as_deref().unwrap_or(""),
            self.app_properties
        )
    }
}

pub struct Change {
    pub file_id: String,
    pub time_ms: u64,
    pub space: Space,
}

#[derive(Default)]
pub struct Store {
    pub files: BTreeMap<String, File>,
    /// Every state a file's name, metadata or content has had, in order.
    history: Vec<(String, Arc<Vec<u8>>)>,
    /// Change number → the change; one entry per file, its latest.
    changes: BTreeMap<u64, Change>,
    latest: HashMap<String, u64>,
    next_change: u64,
    next_version: u64,
    /// How many current appDataFolder files carry each name.
    names: HashMap<String, usize>,
}

impl Store {
    pub fn new() -> Self {
        Self {
            next_change: 1,
            next_version: 1,
            ..Self::default()
        }
    }

    pub fn get(&self, id: &str) -> Option<&File> {
        self.files.get(id)
    }

    /// Stores `file` (new or changed) and logs the change.
    pub fn put(&mut self, mut file: File, now: u64) -> &File {
        self.next_version += 1;
        file.version = self.next_version;
        file.modified_ms = now;
        self.history.push((file.label(), file.content.clone()));
        if let Some(old) = self.files.get(&file.id) {
            let name = old.name.clone();
            if old.space == Space::AppData {
                self.forget_name(&name);
            }
        }
        if file.space == Space::AppData {
            *self.names.entry(file.name.clone()).or_default() += 1;
        }
        self.log(&file.id, file.space, now);
        let id = file.id.clone();
        self.files.insert(id.clone(), file);
        &self.files[&id]
    }

    pub fn delete(&mut self, id: &str, now: u64) -> bool {
        let Some(old) = self.files.remove(id) else {
            return false;
        };
        if old.space == Space::AppData {
            self.forget_name(&old.name);
        }
        self.log(id, old.space, now);
        true
    }

    fn forget_name(&mut self, name: &str) {
        if let Some(n) = self.names.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.names.remove(name);
            }
        }
    }

    fn log(&mut self, id: &str, space: Space, now: u64) {
        if let Some(old) = self.latest.insert(id.to_owned(), self.next_change) {
            self.changes.remove(&old);
        }
        self.changes.insert(
            self.next_change,
            Change {
                file_id: id.to_owned(),
                time_ms: now,
                space,
            },
        );
        self.next_change += 1;
    }

    /// The page token that shows only changes after now.
    pub fn start_token(&self) -> u64 {
        self.next_change
    }

    /// Changes numbered `from` on, in order.
    pub fn changes_from(&self, from: u64) -> impl Iterator<Item = (&u64, &Change)> {
        self.changes.range(from..)
    }

    pub fn history(&self) -> Vec<(String, Vec<u8>)> {
        self.history
            .iter()
            .map(|(l, c)| (l.clone(), c.as_ref().clone()))
            .collect()
    }

    pub fn duplicate_names(&self) -> usize {
        self.names.values().filter(|n| **n > 1).count()
    }
}

/// A new file's id: Drive's are 33 characters of `[A-Za-z0-9_-]`.
pub fn new_id() -> String {
    format!("1{}", wire::random_string(32))
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}
