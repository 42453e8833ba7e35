//! One app folder: the files and folders of one (account, app) namespace, every
//! revision ever stored in it, and the order things changed in.
//!
//! Paths are case-insensitive: every node is keyed by its `path_lower` in one
//! ordered map, so a folder's contents are one contiguous range of keys (a prefix
//! sorts before its extensions, so parents come before children). The casing a
//! node was created with is kept as its `path_display`; later writes with other
//! casing find it and leave that alone. Folders are explicit nodes, created as the
//! implicit parents of an upload; deleting a file leaves its folder, as on
//! Dropbox.
//!
//! Changes are numbered. Each node remembers the number of its last change, and
//! `changes` maps that number back to the path, so each path appears there once,
//! at its latest change: "what changed since N" is a range of that map, as long as
//! the changes since N rather than as long as the namespace. Deleted nodes stay as
//! tombstones, so a cursor learns of a deletion, and `include_deleted` can show
//! them.
//!
//! Nothing is ever dropped: each revision's bytes are shared (`Arc`) between the
//! node, the revision index (`rev:` lookups) and the log of everything stored,
//! which tests read to check what Dropbox could see.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::super::fake_http::iso_time;
use super::wire::{mix, random_string};

/// Dropbox's limit on one path component ("up to 255 characters").
const NAME_LIMIT: usize = 255;
/// The block size of Dropbox's content hash.
const HASH_BLOCK: usize = 4 * 1024 * 1024;

/// Dropbox's content hash: SHA-256 over the concatenated SHA-256s of each 4 MiB
/// block (an empty file has no blocks: the SHA-256 of nothing).
pub fn content_hash(bytes: &[u8]) -> String {
    let mut outer = Sha256::new();
    for block in bytes.chunks(HASH_BLOCK) {
        outer.update(Sha256::digest(block));
    }
    hex(&outer.finalize())
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A checked path of a file or folder inside the app folder (never the root).
#[derive(Debug, Clone)]
pub struct Path {
    /// As the request spelled it.
    pub display: String,
    pub lower: String,
}

/// `p` as a path Dropbox would store: `/`-separated, no empty, `.` or `..`
/// component, none over 255 characters, none ending in whitespace or a dot, no
/// trailing slash, no NUL. None: `malformed_path`. The caller has checked that
/// it starts with `/`.
pub fn parse_path(p: &str) -> Option<Path> {
    let rest = p.strip_prefix('/')?;
    for name in rest.split('/') {
        let bad = name.is_empty()
            || name == "."
            || name == ".."
            || name.chars().count() > NAME_LIMIT
            || name.ends_with(|c: char| c.is_whitespace() || c == '.')
            || name.contains('\0');
        if bad {
            return None;
        }
    }
    Some(Path {
        display: p.to_owned(),
        lower: p.to_lowercase(),
    })
}

/// The last component of a path.
fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// Whether `lower` is listed under `scope` ("" is the root); a recursive listing
/// of a folder includes the folder itself.
pub fn in_scope(lower: &str, scope: &str, recursive: bool) -> bool {
    if recursive {
        return scope.is_empty()
            || lower == scope
            || lower
                .strip_prefix(scope)
                .is_some_and(|rest| rest.starts_with('/'));
    }
    parent_of(lower) == scope
}

/// One stored version of a file.
pub struct Revision {
    pub rev: String,
    pub id: String,
    /// The file's `path_display` when this revision was stored.
    pub display: String,
    pub content: Arc<Vec<u8>>,
    pub hash: String,
    pub client_modified: u64,
    pub server_modified: u64,
}

impl Revision {
    /// `FileMetadata`, untagged (upload and finish answer it bare; listings add
    /// `.tag`).
    pub fn metadata(&self) -> Map<String, Value> {
        let v = json!({
            "name": name_of(&self.display),
            "path_lower": self.display.to_lowercase(),
            "path_display": self.display,
            "id": self.id,
            "client_modified": iso_time(self.client_modified),
            "server_modified": iso_time(self.server_modified),
            "rev": self.rev,
            "size": self.content.len(),
            "is_downloadable": true,
            "content_hash": self.hash,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

/// What an upload carries, its hash computed before any lock is taken.
pub struct Content {
    pub bytes: Arc<Vec<u8>>,
    pub hash: String,
}

impl Content {
    pub fn new(bytes: Vec<u8>) -> Self {
        let hash = content_hash(&bytes);
        Self {
            bytes: Arc::new(bytes),
            hash,
        }
    }
}

enum Kind {
    File(Arc<Revision>),
    Folder,
    Deleted,
}

struct Node {
    display: String,
    id: String,
    kind: Kind,
    /// The number of its latest change (its key in `Tree::changes`).
    seq: u64,
}

impl Node {
    fn live(&self) -> bool {
        !matches!(self.kind, Kind::Deleted)
    }

    /// `Metadata` with its `.tag`, as listings and get_metadata show it.
    fn tagged(&self) -> Value {
        match &self.kind {
            Kind::File(r) => {
                let mut m = r.metadata();
                m.insert(".tag".into(), "file".into());
                Value::Object(m)
            }
            Kind::Folder => {
                let mut m = self.folder_metadata();
                m.insert(".tag".into(), "folder".into());
                Value::Object(m)
            }
            Kind::Deleted => json!({
                ".tag": "deleted",
                "name": name_of(&self.display),
                "path_lower": self.display.to_lowercase(),
                "path_display": self.display,
            }),
        }
    }

    fn folder_metadata(&self) -> Map<String, Value> {
        match json!({
            "name": name_of(&self.display),
            "path_lower": self.display.to_lowercase(),
            "path_display": self.display,
            "id": self.id,
        }) {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

/// How an upload treats what is already at its path.
pub enum Mode {
    Add,
    Overwrite,
    /// Overwrite only the revision named.
    Update(String),
}

/// One commit of a file.
pub struct Write<'a> {
    pub path: &'a Path,
    pub content: Content,
    pub mode: Mode,
    pub autorename: bool,
    pub strict_conflict: bool,
    pub client_modified: Option<u64>,
}

/// What a lookup by path, `id:` or `rev:` found.
pub enum Found {
    File(Arc<Revision>),
    Folder(Value),
    /// A tombstone: what was there, tagged `deleted`.
    Deleted(Value),
    Nothing,
}

static REVS: AtomicU64 = AtomicU64::new(1);

pub struct Tree {
    nodes: BTreeMap<String, Node>,
    changes: BTreeMap<u64, String>,
    seq: u64,
    /// Live nodes' paths by id.
    ids: HashMap<String, String>,
    revs: HashMap<String, Arc<Revision>>,
    /// Every path and revision stored, in order; folders with no bytes.
    stored: Vec<(String, Arc<Vec<u8>>)>,
    /// Bytes of the files there now (what counts against the quota).
    pub used: u64,
}

impl Tree {
    pub fn new() -> Self {
        Self {
            nodes: BTreeMap::new(),
            changes: BTreeMap::new(),
            seq: 0,
            ids: HashMap::new(),
            revs: HashMap::new(),
            stored: Vec::new(),
            used: 0,
        }
    }

    /// The number of the latest change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn live(&self, lower: &str) -> Option<&Node> {
        self.nodes.get(lower).filter(|n| n.live())
    }

    /// A new change to `lower`, numbered after every other.
    fn touch(&mut self, lower: &str, old_seq: Option<u64>) -> u64 {
        if let Some(old) = old_seq {
            self.changes.remove(&old);
        }
        self.seq += 1;
        self.changes.insert(self.seq, lower.to_owned());
        self.seq
    }

    /// The lowered paths of `lower`'s ancestors, outermost first ("/a", "/a/b").
    fn ancestors(lower: &str) -> Vec<&str> {
        lower
            .match_indices('/')
            .skip(1)
            .map(|(i, _)| &lower[..i])
            .collect()
    }

    /// A conflict with a file among the ancestors, if any.
    fn file_ancestor(&self, lower: &str) -> bool {
        Self::ancestors(lower)
            .iter()
            .any(|a| matches!(self.live(a).map(|n| &n.kind), Some(Kind::File(_))))
    }

    /// The folders above `path` that are missing, created with the request's
    /// casing under whatever casing exists; the path's own display under them.
    fn make_parents(&mut self, path: &Path) -> String {
        let mut display = String::new();
        for (i, name) in path.display[1..].split('/').enumerate() {
            let lower_end = path
                .lower
                .match_indices('/')
                .nth(i + 1)
                .map_or(path.lower.len(), |(j, _)| j);
            let lower = &path.lower[..lower_end];
            if lower_end == path.lower.len() {
                display = format!("{display}/{name}");
                break;
            }
            match self.live(lower) {
                Some(n) => display = n.display.clone(),
                None => {
                    display = format!("{display}/{name}");
                    self.put_folder(lower, &display);
                }
            }
        }
        display
    }

    fn put_folder(&mut self, lower: &str, display: &str) {
        let old = self.nodes.get(lower).map(|n| n.seq);
        let seq = self.touch(lower, old);
        let id = format!("id:{}", random_string(22));
        self.ids.insert(id.clone(), lower.to_owned());
        self.nodes.insert(
            lower.to_owned(),
            Node {
                display: display.to_owned(),
                id,
                kind: Kind::Folder,
                seq,
            },
        );
        self.stored.push((display.to_owned(), Arc::new(Vec::new())));
    }

    /// A free name next to `path` for an autorename: "a (1).txt", "a (2).txt",
    /// or for an update "a (conflicted copy).txt".
    fn free_name(&self, path: &Path, update: bool) -> Path {
        let parent = parent_of(&path.display);
        let name = name_of(&path.display);
        let (stem, ext) = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
            _ => (name, String::new()),
        };
        for n in 1.. {
            let tag = match (update, n) {
                (true, 1) => "conflicted copy".to_owned(),
                (true, n) => format!("conflicted copy {}", n - 1),
                (false, n) => n.to_string(),
            };
            let display = format!("{parent}/{stem} ({tag}){ext}");
            let lower = display.to_lowercase();
            if self.live(&lower).is_none() {
                return Path { display, lower };
            }
        }
        unreachable!("some name is free")
    }

    /// Commits a file: Dropbox's write modes, conflicts, autorename and the
    /// quota (`room`: bytes the account may still add). Ok: the file's metadata
    /// (that of the file already there when nothing had to change). Err: the
    /// `WriteError` (`conflict`, `insufficient_space`).
    pub fn write(&mut self, w: Write, now: u64, room: u64) -> Result<Map<String, Value>, Value> {
        if self.file_ancestor(&w.path.lower) {
            return Err(conflict("file_ancestor"));
        }
        let current = self.live(&w.path.lower);
        let same =
            |r: &Revision| r.hash == w.content.hash && r.content.len() == w.content.bytes.len();
        let mut target = w.path.clone();
        let clash = match current.map(|n| &n.kind) {
            Some(Kind::Folder) => Some("folder"),
            Some(Kind::File(r)) => match &w.mode {
                Mode::Add if same(r) && !w.strict_conflict => return Ok(r.metadata()),
                Mode::Add => Some("file"),
                Mode::Overwrite if same(r) => return Ok(r.metadata()),
                Mode::Overwrite => None,
                Mode::Update(rev) if *rev == r.rev && same(r) => return Ok(r.metadata()),
                Mode::Update(rev) if *rev == r.rev => None,
                Mode::Update(_) if same(r) && !w.strict_conflict => return Ok(r.metadata()),
                Mode::Update(_) => Some("file"),
            },
            // The rev named cannot match a file that is not there; only a
            // strict update calls that a conflict.
            Some(Kind::Deleted) | None => match &w.mode {
                Mode::Update(_) if w.strict_conflict => Some("file"),
                _ => None,
            },
        };
        if let Some(what) = clash {
            if !w.autorename {
                return Err(conflict(what));
            }
            target = self.free_name(w.path, matches!(w.mode, Mode::Update(_)));
        }
        let replaced = match self.live(&target.lower).map(|n| &n.kind) {
            Some(Kind::File(r)) => r.content.len() as u64,
            _ => 0,
        };
        let size = w.content.bytes.len() as u64;
        if size > room.saturating_add(replaced) {
            return Err(json!({ ".tag": "insufficient_space" }));
        }

        let display = self.make_parents(&target);
        let old = self.nodes.get(&target.lower);
        let (display, id, old_seq) = match old {
            Some(n) if n.live() => (n.display.clone(), n.id.clone(), Some(n.seq)),
            Some(n) => (display, format!("id:{}", random_string(22)), Some(n.seq)),
            None => (display, format!("id:{}", random_string(22)), None),
        };
        let revision = Arc::new(Revision {
            rev: format!("{:016x}", mix(REVS.fetch_add(1, Relaxed))),
            id: id.clone(),
            display: display.clone(),
            content: w.content.bytes,
            hash: w.content.hash,
            client_modified: w.client_modified.unwrap_or(now),
            server_modified: now,
        });
        let seq = self.touch(&target.lower, old_seq);
        self.used = self.used - replaced + size;
        self.ids.insert(id.clone(), target.lower.clone());
        self.revs.insert(revision.rev.clone(), revision.clone());
        self.stored
            .push((display.clone(), revision.content.clone()));
        let metadata = revision.metadata();
        self.nodes.insert(
            target.lower,
            Node {
                display,
                id,
                kind: Kind::File(revision),
                seq,
            },
        );
        Ok(metadata)
    }

    /// Creates a folder (and its parents). Ok: its metadata, untagged.
    pub fn create_folder(
        &mut self,
        path: &Path,
        autorename: bool,
    ) -> Result<Map<String, Value>, Value> {
        if self.file_ancestor(&path.lower) {
            return Err(conflict("file_ancestor"));
        }
        let mut target = path.clone();
        if let Some(n) = self.live(&path.lower) {
            if !autorename {
                return Err(conflict(match n.kind {
                    Kind::File(_) => "file",
                    _ => "folder",
                }));
            }
            target = self.free_name(path, false);
        }
        let display = self.make_parents(&target);
        self.put_folder(&target.lower, &display);
        Ok(self
            .nodes
            .get(&target.lower)
            .map(Node::folder_metadata)
            .unwrap_or_default())
    }

    /// Deletes a file, or a folder with everything in it. Ok: what was there,
    /// tagged. Err: nothing was there.
    pub fn delete(&mut self, path: &Path) -> Result<Value, ()> {
        let Some(node) = self.live(&path.lower) else {
            return Err(());
        };
        let metadata = node.tagged();
        let mut doomed: Vec<String> = Vec::new();
        if let Kind::Folder = node.kind {
            let from = format!("{}/", path.lower);
            let to = format!("{}0", path.lower);
            doomed.extend(
                self.nodes
                    .range::<str, _>((Bound::Included(from.as_str()), Bound::Excluded(to.as_str())))
                    .filter(|(_, n)| n.live())
                    .map(|(k, _)| k.clone()),
            );
        }
        doomed.push(path.lower.clone());
        for lower in doomed {
            let Some(n) = self.nodes.get(&lower) else {
                continue;
            };
            let (old_seq, id) = (n.seq, n.id.clone());
            if let Kind::File(r) = &n.kind {
                self.used -= r.content.len() as u64;
            }
            let seq = self.touch(&lower, Some(old_seq));
            self.ids.remove(&id);
            if let Some(n) = self.nodes.get_mut(&lower) {
                n.kind = Kind::Deleted;
                n.seq = seq;
            }
        }
        Ok(metadata)
    }

    /// A path (already checked), `id:…` or `rev:…`.
    pub fn find(&self, p: &str) -> Found {
        if let Some(rev) = p.strip_prefix("rev:") {
            return match self.revs.get(rev) {
                Some(r) => Found::File(r.clone()),
                None => Found::Nothing,
            };
        }
        let lower = match p.strip_prefix("id:") {
            Some(_) => match self.ids.get(p) {
                Some(lower) => lower.clone(),
                None => return Found::Nothing,
            },
            None => p.to_lowercase(),
        };
        match self.nodes.get(&lower) {
            Some(n) => match &n.kind {
                Kind::File(r) => Found::File(r.clone()),
                Kind::Folder => Found::Folder(n.tagged()),
                Kind::Deleted => Found::Deleted(n.tagged()),
            },
            None => Found::Nothing,
        }
    }

    /// One page of a first listing of `scope`, in path order from after the key
    /// `after`: at most `page` entries, and the key to go on from if there are
    /// more.
    pub fn listing(
        &self,
        scope: &str,
        recursive: bool,
        include_deleted: bool,
        after: Option<&str>,
        page: usize,
    ) -> (Vec<Value>, Option<String>) {
        let upper = format!("{scope}0");
        let range = (
            match after {
                Some(k) => Bound::Excluded(k),
                None if scope.is_empty() => Bound::Unbounded,
                None => Bound::Included(scope),
            },
            match scope.is_empty() {
                true => Bound::Unbounded,
                false => Bound::Excluded(upper.as_str()),
            },
        );
        let mut entries = Vec::new();
        let mut last = None;
        let listed = self
            .nodes
            .range::<str, _>(range)
            .filter(|(k, n)| in_scope(k, scope, recursive) && (include_deleted || n.live()));
        for (k, n) in listed {
            if entries.len() == page {
                return (entries, last);
            }
            entries.push(n.tagged());
            last = Some(k.clone());
        }
        (entries, None)
    }

    /// One page of what changed under `scope` after change `since`, each path
    /// once, as it is now (a deleted path as a `deleted` entry), in the order of
    /// the changes; and the change to go on from if there are more.
    pub fn changes(
        &self,
        scope: &str,
        recursive: bool,
        since: u64,
        page: usize,
    ) -> (Vec<Value>, Option<u64>) {
        let mut entries = Vec::new();
        let mut last = since;
        let changed = self
            .changes
            .range(since + 1..)
            .filter(|(_, lower)| in_scope(lower, scope, recursive));
        for (&seq, lower) in changed {
            if entries.len() == page {
                return (entries, Some(last));
            }
            if let Some(n) = self.nodes.get(lower) {
                entries.push(n.tagged());
            }
            last = seq;
        }
        (entries, None)
    }

    /// Whether anything under `scope` changed after change `since`.
    pub fn changed_since(&self, scope: &str, recursive: bool, since: u64) -> bool {
        self.changes
            .range(since + 1..)
            .any(|(_, lower)| in_scope(lower, scope, recursive))
    }

    /// Whether `lower` is a folder there now ("" is the root, always).
    pub fn kind_at(&self, lower: &str) -> Option<bool> {
        if lower.is_empty() {
            return Some(true);
        }
        self.live(lower).map(|n| matches!(n.kind, Kind::Folder))
    }

    /// The files there now: path_display and bytes, in path order.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        self.nodes
            .values()
            .filter_map(|n| match &n.kind {
                Kind::File(r) => Some((n.display.clone(), r.content.to_vec())),
                _ => None,
            })
            .collect()
    }

    /// Every path and revision ever stored, folders with no bytes.
    pub fn everything(&self) -> Vec<(String, Vec<u8>)> {
        self.stored
            .iter()
            .map(|(p, bytes)| (p.clone(), bytes.to_vec()))
            .collect()
    }
}

/// A `WriteError.conflict` of that kind (`file`, `folder`, `file_ancestor`).
fn conflict(what: &str) -> Value {
    json!({ ".tag": "conflict", "conflict": { ".tag": what } })
}
