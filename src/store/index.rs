//! The local index, `sync/state.db`: every step of a sync that must survive a crash is
//! one SQLite transaction here.
//!
//! Tables:
//! - `heads`: per path, the versions no other known version supersedes (superseded ones
//!   are pruned on insert: once superseded, a version can never show again, and merging
//!   the heads' vectors equals merging all known vectors). `seq` is the own segment a
//!   local version is assigned to; `published` says whether that segment is in the vault.
//! - `devices`: every device of the vault, its name and how far its log is applied.
//! - `local_files`: what the plain folder held after the last sync, so a scan can tell
//!   local changes (stat first, hash only when size or mtime moved).
//! - `pending_packs`: sealed packs in the cache that are not yet uploaded.
//! - `contents`: sha256 → where that content already lives, so a rename or a copy
//!   uploads nothing.
//! - `meta`: counters and times.
//! - `mount_local` (schema 2): what the mount keeps of a path on this device alone and
//!   never records as a version: its access time, a fifo or socket made here, and which
//!   paths are hard links of one file (see `sync::vault::mount_local`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

mod reclaim;
pub use reclaim::{DeadPack, SeenVector, META_LAST_CONTENT_SEQ};

use crate::model::{
    ContentHash, ContentRef, DeviceId, ObjectId, Seq, Showing, Version, VersionVector,
};

const SCHEMA_VERSION: i64 = 3;

/// Added by schema 2; an index of schema 1 gains it when it is opened.
const MOUNT_LOCAL_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mount_local (
    path TEXT PRIMARY KEY,
    atime_ns INTEGER,
    special TEXT,
    mode INTEGER,
    mtime_ns INTEGER,
    ctime_ns INTEGER,
    link_group INTEGER
);
";

/// Added by schema 3 (reclaiming space, see `store::reclaim`): what each device
/// last said it had seen, and this device's packs found dead, since when.
const RECLAIM_SCHEMA: &str = "
ALTER TABLE devices ADD COLUMN seen TEXT;
ALTER TABLE devices ADD COLUMN heads_view TEXT;
ALTER TABLE devices ADD COLUMN content_seq INTEGER NOT NULL DEFAULT 0;
UPDATE devices SET content_seq = applied_seq;
INSERT OR IGNORE INTO meta(key, value)
    SELECT 'last_content_seq', value FROM meta WHERE key = 'last_published_seq';
CREATE TABLE dead_packs (pack TEXT PRIMARY KEY, since_ms INTEGER NOT NULL, view TEXT NOT NULL);
";

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT,
    applied_seq INTEGER NOT NULL DEFAULT 0,
    last_activity_ms INTEGER,
    problem TEXT
);
CREATE TABLE heads (
    device TEXT NOT NULL,
    counter INTEGER NOT NULL,
    path TEXT NOT NULL,
    record TEXT NOT NULL,
    seq INTEGER,
    published INTEGER NOT NULL,
    PRIMARY KEY (device, counter)
);
CREATE INDEX heads_path ON heads(path);
CREATE INDEX heads_unpublished ON heads(published) WHERE published = 0;
CREATE TABLE local_files (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    sha256 TEXT,
    shows_device TEXT,
    shows_counter INTEGER,
    sibling_of TEXT,
    vector TEXT
);
CREATE TABLE pending_packs (pack TEXT PRIMARY KEY);
CREATE TABLE contents (sha256 TEXT PRIMARY KEY, record TEXT NOT NULL);
";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("the local index {path} is missing")]
    Missing { path: PathBuf },
    #[error("the local index {path} is damaged ({reason})")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the local index failed: {0}")]
    Sql(String),
    /// The disk under the index is full (or over quota): the change was not recorded.
    #[error("the local index cannot grow: the disk is full")]
    DiskFull,
    /// A change would name contents no current version names any more (the file
    /// was replaced or deleted elsewhere a moment ago): not recorded.
    #[error("'{0}' was replaced or deleted on another device a moment ago")]
    Gone(String),
}

impl From<rusqlite::Error> for IndexError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => IndexError::DiskFull,
            _ => IndexError::Sql(e.to_string()),
        }
    }
}

pub type IndexResult<T> = Result<T, IndexError>;

fn decode_version(record: &str) -> IndexResult<Version> {
    serde_json::from_str(record).map_err(|e| IndexError::Sql(format!("bad version record: {e}")))
}

/// The next decoded row, or `None` at the end or at the first error (kept in `failed`).
fn next_version(
    rows: &mut impl Iterator<Item = rusqlite::Result<String>>,
    failed: &mut Option<IndexError>,
) -> Option<Version> {
    if failed.is_some() {
        return None;
    }
    let decoded = rows
        .next()?
        .map_err(IndexError::from)
        .and_then(|record| decode_version(&record));
    match decoded {
        Ok(v) => Some(v),
        Err(e) => {
            *failed = Some(e);
            None
        }
    }
}

fn encode<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| unreachable!("plain records always serialise"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    File,
    Dir,
    Symlink,
    /// Nothing is written here on purpose: this device refused the version it shows
    /// (a link pointing outside the folder). Not a deletion: scans leave it alone,
    /// and a newer version replaces it.
    Refused,
}

impl LocalKind {
    fn as_str(self) -> &'static str {
        match self {
            LocalKind::File => "file",
            LocalKind::Dir => "dir",
            LocalKind::Symlink => "symlink",
            LocalKind::Refused => "refused",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "dir" => LocalKind::Dir,
            "symlink" => LocalKind::Symlink,
            "refused" => LocalKind::Refused,
            _ => LocalKind::File,
        }
    }
}

/// The `ctime_ns` recorded for a file that changed within one timestamp tick of being
/// looked at: a later change in the same tick could leave every stat field as it was,
/// so the next scan must hash it ("racily clean" in git's words).
pub const RACY_CTIME: i64 = -1;

/// What the folder held at one path after the last sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub kind: LocalKind,
    pub size: u64,
    pub mtime_ns: i64,
    /// The inode's change time; [`RACY_CTIME`] when it was too recent to trust.
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
    pub sha256: Option<ContentHash>,
    /// The version the folder shows here (written or adopted), if any: what a local
    /// change to this path was made on top of.
    pub showing: Option<Showing>,
}

impl LocalFile {
    /// For a conflict sibling: the path it is a sibling of.
    pub fn sibling_of(&self) -> Option<&str> {
        self.showing.as_ref().and_then(|s| s.sibling_of())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub id: DeviceId,
    pub name: Option<String>,
    pub applied_seq: Seq,
    pub last_activity_ms: Option<i64>,
    pub problem: Option<String>,
}

/// A head version with its publication state.
#[derive(Debug, Clone)]
pub struct HeadRow {
    pub version: Version,
    pub seq: Option<Seq>,
    pub published: bool,
}

pub struct Index {
    pub(super) conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Index({})", self.path.display())
    }
}

impl Index {
    /// Opens the index; `create` makes a new one (setup), otherwise a missing file is
    /// an error rather than a fresh start: an empty index would reuse version counters
    /// this device already published.
    pub fn open(path: &Path, create: bool) -> IndexResult<Self> {
        if !create && !path.exists() {
            return Err(IndexError::Missing {
                path: path.to_path_buf(),
            });
        }
        let corrupt = |e: rusqlite::Error| IndexError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let conn = Connection::open(path).map_err(corrupt)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(corrupt)?;
        // A push of thousands of files is one transaction: a page cache large enough
        // to hold it keeps SQLite from spilling and re-reading pages mid-transaction.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-65536;",
        )
        .map_err(corrupt)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(corrupt)?;
        if create {
            // Paths and names of memories live here in clear: owner only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| IndexError::Sql(format!("cannot protect {}: {e}", path.display())))?;
        }
        match version {
            0 if create => {
                conn.execute_batch(&format!(
                    "BEGIN; {SCHEMA} {MOUNT_LOCAL_SCHEMA} {RECLAIM_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(corrupt)?;
            }
            // Schemas 1 (before the mount kept anything of its own) and 2 (before
            // space was reclaimed): migrated in place, in one transaction, keeping
            // every row they had.
            1 | 2 => {
                let mount_local = if version == 1 { MOUNT_LOCAL_SCHEMA } else { "" };
                conn.execute_batch(&format!("BEGIN; {mount_local} {RECLAIM_SCHEMA}"))
                    .map_err(corrupt)?;
                reclaim::keep_only_live_contents(&conn).map_err(|e| IndexError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))
                    .map_err(corrupt)?;
            }
            SCHEMA_VERSION => {
                // A file that opens but lost its tables is as damaged as garbage.
                conn.query_row("SELECT count(*) FROM heads", [], |r| r.get::<_, i64>(0))
                    .map_err(corrupt)?;
                conn.execute_batch(
                    "SELECT path, vector, ctime_ns, ino FROM local_files LIMIT 0; \
                     SELECT pack FROM pending_packs LIMIT 0; SELECT sha256 FROM contents LIMIT 0; \
                     SELECT path, atime_ns, special, link_group FROM mount_local LIMIT 0; \
                     SELECT seen, heads_view, content_seq FROM devices LIMIT 0; SELECT pack, view FROM dead_packs LIMIT 0;",
                )
                .map_err(corrupt)?;
            }
            other => {
                return Err(IndexError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("schema version {other} is not one this version reads"),
                })
            }
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Commits stop waiting for the disk: a commit survives a crash of this process
    /// (SQLite's WAL is in the kernel's hands) but not a power cut until the next
    /// [`Index::checkpoint`]. The mount acknowledges close() this way and fsync() with
    /// a checkpoint, as a local filesystem does.
    pub fn relax_durability(&self) -> IndexResult<()> {
        // The mount holds the home lock for its whole life, so it may also keep
        // SQLite's file lock instead of taking it for every statement. It checkpoints
        // by itself (`Vault::checkpoint_queue`, and every hundred records in
        // `Vault::record`), after putting the packs its records name on disk, and
        // not at every commit: its commits rewrite the same few pages (counter,
        // index roots), which a checkpoint then copies once. After one, the log file
        // shrinks back to 8 MiB: on a nearly full disk the log is what grows.
        self.conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA locking_mode=EXCLUSIVE; PRAGMA cache_size=-8192; \
             PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=8388608;",
        )?;
        Ok(())
    }

    /// Copies the write-ahead log into the database without waiting for anything.
    pub fn checkpoint_quietly(&self) -> IndexResult<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Makes every commit so far durable on disk.
    pub fn checkpoint(&self) -> IndexResult<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Runs `f` in one transaction: all of it lands, or none of it.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut IndexTx<'_>) -> IndexResult<T>,
    ) -> IndexResult<T> {
        // BEGIN and COMMIT as cached statements: the mount runs one transaction per
        // closed file, and parsing them each time showed in its profile.
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let mut itx = IndexTx { tx: &self.conn };
        let out = match f(&mut itx) {
            Ok(out) => out,
            Err(e) => {
                self.rollback();
                return Err(e);
            }
        };
        if let Err(e) = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
        {
            self.rollback();
            return Err(e.into());
        }
        Ok(out)
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    pub fn meta(&self, key: &str) -> IndexResult<Option<String>> {
        meta_get(&self.conn, key)
    }

    pub fn meta_u64(&self, key: &str) -> IndexResult<u64> {
        Ok(self.meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    pub fn heads_of(&self, path: &str) -> IndexResult<Vec<Version>> {
        heads_of(&self.conn, path)
    }

    pub fn all_heads(&self) -> IndexResult<Vec<HeadRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT record, seq, published FROM heads ORDER BY path")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (record, seq, published) = row?;
            out.push(HeadRow {
                version: decode_version(&record)?,
                seq: seq.map(|s| Seq(s as u64)),
                published,
            });
        }
        Ok(out)
    }

    /// Hands `f` the heads of every path, one path at a time in path order, so that
    /// no caller needs every version of a large vault in memory at once.
    pub fn with_heads_by_path<T>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = (String, Vec<Version>)>) -> T,
    ) -> IndexResult<T> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT record FROM heads ORDER BY path")?;
        let mut rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut failed: Option<IndexError> = None;
        let mut pending: Option<Version> = None;
        let mut groups = std::iter::from_fn(|| {
            let first = match pending.take() {
                Some(v) => v,
                None => next_version(&mut rows, &mut failed)?,
            };
            let path = first.path.clone();
            let mut group = vec![first];
            while let Some(v) = next_version(&mut rows, &mut failed) {
                if v.path != path {
                    pending = Some(v);
                    break;
                }
                group.push(v);
            }
            group.shrink_to_fit();
            Some((path, group))
        });
        let out = f(&mut groups);
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Own versions not yet in a published segment.
    pub fn unpublished(&self) -> IndexResult<Vec<HeadRow>> {
        Ok(self
            .all_heads()?
            .into_iter()
            .filter(|h| !h.published)
            .collect())
    }

    pub fn local_files(&self) -> IndexResult<HashMap<String, LocalFile>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {LOCAL_FILE_COLUMNS} FROM local_files"))?;
        let rows = stmt.query_map([], local_file_row)?;
        let mut out = HashMap::new();
        for row in rows {
            let (path, file) = row?;
            out.insert(path, file);
        }
        Ok(out)
    }

    pub fn devices(&self) -> IndexResult<Vec<DeviceRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, applied_seq, last_activity_ms, problem FROM devices ORDER BY name, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, seq, act, problem) = row?;
            if let Some(id) = DeviceId::parse(&id) {
                out.push(DeviceRow {
                    id,
                    name,
                    applied_seq: Seq(seq as u64),
                    last_activity_ms: act,
                    problem,
                });
            }
        }
        Ok(out)
    }

    pub fn pending_packs(&self) -> IndexResult<Vec<ObjectId>> {
        let mut stmt = self
            .conn
            .prepare("SELECT pack FROM pending_packs ORDER BY pack")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(id) = ObjectId::parse(&r?) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Where each of `hashes` already lives, looked up in one read transaction.
    pub fn contents_by_hash(
        &mut self,
        hashes: &[ContentHash],
    ) -> IndexResult<HashMap<ContentHash, ContentRef>> {
        let tx = self.conn.transaction()?;
        let mut out = HashMap::new();
        {
            let mut stmt = tx.prepare_cached("SELECT record FROM contents WHERE sha256 = ?1")?;
            for sha in hashes {
                let rec: Option<String> =
                    stmt.query_row([sha.to_string()], |r| r.get(0)).optional()?;
                if let Some(r) = rec.and_then(|r| serde_json::from_str::<ContentRef>(&r).ok()) {
                    out.insert(*sha, r);
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Own versions not yet given a segment number.
    pub fn unassigned_count(&self) -> IndexResult<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM heads WHERE published = 0 AND seq IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    pub fn unpublished_count(&self) -> IndexResult<u64> {
        let n: i64 =
            self.conn
                .query_row("SELECT count(*) FROM heads WHERE published = 0", [], |r| {
                    r.get(0)
                })?;
        Ok(n as u64)
    }
}

const LOCAL_FILE_COLUMNS: &str = "path, kind, size, mtime_ns, mode, sha256, shows_device, shows_counter, sibling_of, ctime_ns, ino, vector";

/// One `local_files` row, read with [`LOCAL_FILE_COLUMNS`].
fn local_file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, LocalFile)> {
    let device: Option<String> = r.get(6)?;
    let counter: Option<i64> = r.get(7)?;
    let vector: Option<String> = r.get(11)?;
    let showing = match (device.as_deref().and_then(DeviceId::parse), counter) {
        (Some(device), Some(c)) => Some(Showing {
            device,
            counter: c as u64,
            vector: vector
                .and_then(|v| serde_json::from_str::<VersionVector>(&v).ok())
                .unwrap_or_default(),
            sibling_of: r.get(8)?,
        }),
        _ => None,
    };
    let sha: Option<String> = r.get(5)?;
    let file = LocalFile {
        kind: LocalKind::parse(&r.get::<_, String>(1)?),
        size: r.get::<_, i64>(2)? as u64,
        mtime_ns: r.get(3)?,
        mode: r.get::<_, i64>(4)? as u32,
        sha256: sha.as_deref().and_then(ContentHash::parse),
        ctime_ns: r.get(9)?,
        ino: r.get::<_, i64>(10)? as u64,
        showing,
    };
    Ok((r.get(0)?, file))
}

fn meta_get(conn: &Connection, key: &str) -> IndexResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn heads_of(conn: &Connection, path: &str) -> IndexResult<Vec<Version>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM heads WHERE path = ?1")?;
    let rows = stmt.query_map([path], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode_version(&r?)?);
    }
    Ok(out)
}

/// What happened to a version offered to the heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadChange {
    /// It is a head now (possibly replacing others it supersedes).
    Added,
    /// A known version supersedes or equals it.
    Ignored,
}

/// Writes inside one transaction.
pub struct IndexTx<'c> {
    pub(super) tx: &'c Connection,
}

impl IndexTx<'_> {
    pub fn set_meta(&mut self, key: &str, value: &str) -> IndexResult<()> {
        self.tx.prepare_cached("INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?.execute(params![key, value],
        )?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> IndexResult<Option<String>> {
        meta_get(self.tx, key)
    }

    pub fn meta_u64(&self, key: &str) -> IndexResult<u64> {
        Ok(self.meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    pub fn heads_of(&self, path: &str) -> IndexResult<Vec<Version>> {
        heads_of(self.tx, path)
    }

    /// Offers a version to the heads of its path, pruning what it supersedes.
    pub fn offer_version(
        &mut self,
        v: &Version,
        seq: Option<Seq>,
        published: bool,
    ) -> IndexResult<HeadChange> {
        // Named again, even by a version superseded already: a pack found dead
        // under an older view must be found dead anew (another device may have read
        // this version and reused its contents; see `sync::vault::gc`).
        if let crate::model::Entry::File { content, .. } = &v.entry {
            self.tx
                .prepare_cached("DELETE FROM dead_packs WHERE pack = ?1")?
                .execute([content.pack.as_str()])?;
        }
        let heads = self.heads_of(&v.path)?;
        for h in &heads {
            let same = h.device == v.device && h.counter() == v.counter();
            if same && self.relocated(h, v)? {
                return Ok(HeadChange::Added);
            }
            if same || h.vector.supersedes(&v.vector) {
                return Ok(HeadChange::Ignored);
            }
        }
        for h in heads.iter().filter(|h| v.vector.supersedes(&h.vector)) {
            self.tx
                .prepare_cached("DELETE FROM heads WHERE device = ?1 AND counter = ?2")?
                .execute(params![h.device.as_str(), h.counter() as i64])?;
            self.forget_content_of(h)?;
        }
        self.tx.prepare_cached("INSERT INTO heads(device, counter, path, record, seq, published) VALUES(?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![
                v.device.as_str(),
                v.counter() as i64,
                v.path,
                encode(v),
                seq.map(|s| s.0 as i64),
                published
            ],
        )?;
        if let crate::model::Entry::File { content, .. } = &v.entry {
            self.tx
                .prepare_cached("INSERT OR IGNORE INTO contents(sha256, record) VALUES(?1, ?2)")?
                .execute(params![content.sha256.to_string(), encode(content)])?;
        }
        Ok(HeadChange::Added)
    }

    /// Gives every unpublished own version without a segment, up to counter
    /// `up_to`, the number `seq`.
    pub fn assign_unpublished(&mut self, seq: Seq, up_to: u64) -> IndexResult<usize> {
        Ok(self
            .tx
            .prepare_cached(
                "UPDATE heads SET seq = ?1 WHERE published = 0 AND seq IS NULL AND counter <= ?2",
            )?
            .execute(params![seq.0 as i64, up_to as i64])?)
    }

    pub fn versions_in_segment(&self, seq: Seq) -> IndexResult<Vec<Version>> {
        let mut stmt = self
            .tx
            .prepare("SELECT record FROM heads WHERE published = 0 AND seq = ?1 ORDER BY path")?;
        let rows = stmt.query_map([seq.0 as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(decode_version(&r?)?);
        }
        Ok(out)
    }

    pub fn mark_published(&mut self, seq: Seq) -> IndexResult<()> {
        self.tx
            .prepare_cached("UPDATE heads SET published = 1 WHERE published = 0 AND seq = ?1")?
            .execute([seq.0 as i64])?;
        Ok(())
    }

    pub fn upsert_device(&mut self, id: &DeviceId) -> IndexResult<()> {
        self.tx
            .prepare_cached("INSERT OR IGNORE INTO devices(id) VALUES(?1)")?
            .execute([id.as_str()])?;
        Ok(())
    }

    pub fn set_device_name(&mut self, id: &DeviceId, name: &str) -> IndexResult<()> {
        self.upsert_device(id)?;
        self.tx
            .prepare_cached("UPDATE devices SET name = ?2 WHERE id = ?1")?
            .execute(params![id.as_str(), name])?;
        Ok(())
    }

    pub fn set_device_applied(
        &mut self,
        id: &DeviceId,
        seq: Seq,
        activity_ms: Option<i64>,
    ) -> IndexResult<()> {
        self.upsert_device(id)?;
        self.tx.prepare_cached("UPDATE devices SET applied_seq = ?2, last_activity_ms = coalesce(?3, last_activity_ms) WHERE id = ?1")?.execute(params![id.as_str(), seq.0 as i64, activity_ms],
        )?;
        Ok(())
    }

    pub fn set_device_problem(&mut self, id: &DeviceId, problem: Option<&str>) -> IndexResult<()> {
        self.upsert_device(id)?;
        self.tx
            .prepare_cached("UPDATE devices SET problem = ?2 WHERE id = ?1")?
            .execute(params![id.as_str(), problem])?;
        Ok(())
    }

    pub fn set_local_file(&mut self, path: &str, f: &LocalFile) -> IndexResult<()> {
        self.tx.prepare_cached("INSERT OR REPLACE INTO local_files(path, kind, size, mtime_ns, mode, sha256, shows_device, shows_counter, sibling_of, ctime_ns, ino, vector)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")?.execute(params![
                path,
                f.kind.as_str(),
                f.size as i64,
                f.mtime_ns,
                f.mode as i64,
                f.sha256.map(|s| s.to_string()),
                f.showing.as_ref().map(|s| s.device.as_str().to_owned()),
                f.showing.as_ref().map(|s| s.counter as i64),
                f.showing.as_ref().and_then(|s| s.sibling_of.clone()),
                f.ctime_ns,
                f.ino as i64,
                f.showing.as_ref().map(|s| encode(&s.vector)),
            ],
        )?;
        Ok(())
    }

    /// What the folder holds at `path`, as recorded.
    pub fn local_file(&self, path: &str) -> IndexResult<Option<LocalFile>> {
        let row = self
            .tx
            .prepare_cached(&format!(
                "SELECT {LOCAL_FILE_COLUMNS} FROM local_files WHERE path = ?1"
            ))?
            .query_row([path], local_file_row)
            .optional()?;
        Ok(row.map(|(_, file)| file))
    }

    pub fn remove_local_file(&mut self, path: &str) -> IndexResult<()> {
        self.tx
            .prepare_cached("DELETE FROM local_files WHERE path = ?1")?
            .execute([path])?;
        Ok(())
    }

    pub fn add_pending_pack(&mut self, pack: &ObjectId) -> IndexResult<()> {
        self.tx
            .prepare_cached("INSERT OR IGNORE INTO pending_packs(pack) VALUES(?1)")?
            .execute([pack.as_str()])?;
        Ok(())
    }

    /// Moves an unpublished own version's content to `content` (the same bytes, kept
    /// elsewhere): nobody has seen the version yet, so it keeps its identity.
    pub fn move_unpublished_content(
        &mut self,
        device: &DeviceId,
        counter: u64,
        content: &ContentRef,
    ) -> IndexResult<()> {
        let Some(mut v) = self.unpublished_version(device, counter)? else {
            return Ok(());
        };
        if let crate::model::Entry::File { content: c, .. } = &mut v.entry {
            *c = content.clone();
        }
        self.tx
            .prepare_cached("UPDATE heads SET record = ?3 WHERE device = ?1 AND counter = ?2")?
            .execute(params![device.as_str(), counter as i64, encode(&v)])?;
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO contents(sha256, record) VALUES(?1, ?2)")?
            .execute(params![content.sha256.to_string(), encode(content)])?;
        Ok(())
    }

    /// An own version not yet published, by its counter.
    fn unpublished_version(&self, device: &DeviceId, counter: u64) -> IndexResult<Option<Version>> {
        let record: Option<String> = self
            .tx
            .prepare_cached(
                "SELECT record FROM heads WHERE device = ?1 AND counter = ?2 AND published = 0",
            )?
            .query_row(params![device.as_str(), counter as i64], |r| r.get(0))
            .optional()?;
        record.map(|r| decode_version(&r)).transpose()
    }

    /// Removes an unpublished own version whose content is gone: nobody has seen it.
    pub fn drop_unpublished(&mut self, device: &DeviceId, counter: u64) -> IndexResult<()> {
        self.forget_contents_of_unpublished(device, counter)?;
        self.tx
            .prepare_cached(
                "DELETE FROM heads WHERE device = ?1 AND counter = ?2 AND published = 0",
            )?
            .execute(params![device.as_str(), counter as i64])?;
        Ok(())
    }

    /// Forgets where contents in `pack` live, so no later change reuses them.
    pub fn forget_contents_in(&mut self, pack: &ObjectId) -> IndexResult<()> {
        let mut doomed = Vec::new();
        {
            let mut stmt = self.tx.prepare("SELECT sha256, record FROM contents")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (sha, record) = row?;
                if serde_json::from_str::<ContentRef>(&record).is_ok_and(|c| c.pack == *pack) {
                    doomed.push(sha);
                }
            }
        }
        for sha in doomed {
            self.tx
                .prepare_cached("DELETE FROM contents WHERE sha256 = ?1")?
                .execute([sha])?;
        }
        Ok(())
    }

    pub fn remove_pending_pack(&mut self, pack: &ObjectId) -> IndexResult<()> {
        self.tx
            .prepare_cached("DELETE FROM pending_packs WHERE pack = ?1")?
            .execute([pack.as_str()])?;
        Ok(())
    }
}

/// A fifo or a socket made in the mount: it exists on this device only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    Fifo,
    Socket,
}

impl SpecialKind {
    fn as_str(self) -> &'static str {
        match self {
            SpecialKind::Fifo => "fifo",
            SpecialKind::Socket => "socket",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "fifo" => Some(SpecialKind::Fifo),
            "socket" => Some(SpecialKind::Socket),
            _ => None,
        }
    }
}

/// A special file's attributes (it has no version to hold them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSpecial {
    pub kind: SpecialKind,
    pub mode: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// What the mount keeps of one path on this device only: a `mount_local` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountLocal {
    /// The access time, once a read or utimens set it.
    pub atime_ns: Option<i64>,
    pub special: Option<LocalSpecial>,
    /// Paths with the same group are hard links of one file.
    pub link_group: Option<i64>,
}

impl MountLocal {
    pub fn is_empty(&self) -> bool {
        *self == MountLocal::default()
    }
}

impl Index {
    pub fn mount_local(&self) -> IndexResult<HashMap<String, MountLocal>> {
        let mut stmt = self.conn.prepare(
            "SELECT path, atime_ns, special, mode, mtime_ns, ctime_ns, link_group FROM mount_local",
        )?;
        let rows = stmt.query_map([], |r| {
            let special = r
                .get::<_, Option<String>>(2)?
                .and_then(|k| SpecialKind::parse(&k));
            Ok((
                r.get::<_, String>(0)?,
                MountLocal {
                    atime_ns: r.get(1)?,
                    special: match special {
                        Some(kind) => Some(LocalSpecial {
                            kind,
                            mode: r.get::<_, Option<u32>>(3)?.unwrap_or(0o644),
                            mtime_ns: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                            ctime_ns: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                        }),
                        None => None,
                    },
                    link_group: r.get(6)?,
                },
            ))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (path, local) = row?;
            out.insert(path, local);
        }
        Ok(out)
    }
}

impl IndexTx<'_> {
    /// Sets (or, with an empty value, removes) the `mount_local` row of `path`.
    pub fn set_mount_local(&mut self, path: &str, local: &MountLocal) -> IndexResult<()> {
        if local.is_empty() {
            self.tx
                .prepare_cached("DELETE FROM mount_local WHERE path = ?1")?
                .execute([path])?;
            return Ok(());
        }
        let s = local.special.as_ref();
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO mount_local(path, atime_ns, special, mode, mtime_ns, \
                 ctime_ns, link_group) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                path,
                local.atime_ns,
                s.map(|s| s.kind.as_str()),
                s.map(|s| s.mode),
                s.map(|s| s.mtime_ns),
                s.map(|s| s.ctime_ns),
                local.link_group,
            ])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, VersionVector};

    fn version(path: &str, dev: &DeviceId, vv: &[(&DeviceId, u64)]) -> Version {
        let mut vector = VersionVector::default();
        for (d, c) in vv {
            vector.set(d, *c);
        }
        Version {
            path: path.into(),
            device: dev.clone(),
            vector,
            mtime_ns: 0,
            entry: Entry::Deleted,
        }
    }

    #[test]
    fn an_index_of_schema_1_is_migrated_in_place_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            // Exactly what a release before schema 2 made.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!("BEGIN; {SCHEMA} PRAGMA user_version = 1; COMMIT;"))
                .unwrap();
            conn.execute("INSERT INTO meta(key, value) VALUES('counter', '41')", [])
                .unwrap();
        }
        let mut idx = Index::open(&path, false).unwrap();
        assert_eq!(idx.meta("counter").unwrap().as_deref(), Some("41"));
        assert!(idx.mount_local().unwrap().is_empty());
        let fifo = MountLocal {
            atime_ns: Some(5),
            special: Some(LocalSpecial {
                kind: SpecialKind::Fifo,
                mode: 0o600,
                mtime_ns: 6,
                ctime_ns: 7,
            }),
            link_group: None,
        };
        idx.transaction(|tx| tx.set_mount_local("p", &fifo))
            .unwrap();
        drop(idx);
        let idx = Index::open(&path, false).unwrap();
        assert_eq!(idx.mount_local().unwrap().get("p"), Some(&fifo));
        let version: i64 = idx
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    fn file_version(path: &str, dev: &DeviceId, counter: u64, sha: u8) -> Version {
        let mut v = version(path, dev, &[(dev, counter)]);
        v.entry = Entry::File {
            content: ContentRef {
                owner: dev.clone(),
                pack: ObjectId::new(counter),
                offset: 8,
                length: 100,
                blob: crate::model::BlobId::random(),
                sha256: ContentHash([sha; 32]),
                size: 50,
                key_epoch: 0,
            },
            mode: 0o644,
        };
        v
    }

    #[test]
    fn an_index_of_schema_2_is_migrated_and_forgets_contents_no_head_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let dev = DeviceId::random();
        let live = file_version("kept.json", &dev, 2, 1);
        let gone = file_version("kept.json", &dev, 1, 9);
        let other = DeviceId::random();
        {
            // Exactly what a release before schema 3 made, with a content of a
            // version superseded long ago still in `contents`.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA} {MOUNT_LOCAL_SCHEMA} PRAGMA user_version = 2; COMMIT;"
            ))
            .unwrap();
            conn.execute(
                "INSERT INTO heads(device, counter, path, record, seq, published) VALUES(?1, 2, 'kept.json', ?2, 1, 1)",
                params![dev.as_str(), encode(&live)],
            )
            .unwrap();
            for v in [&live, &gone] {
                let Entry::File { content, .. } = &v.entry else {
                    unreachable!()
                };
                conn.execute(
                    "INSERT INTO contents(sha256, record) VALUES(?1, ?2)",
                    params![content.sha256.to_string(), encode(content)],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO devices(id, applied_seq) VALUES(?1, 7)",
                [other.as_str()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('last_published_seq', '5')",
                [],
            )
            .unwrap();
        }
        let mut idx = Index::open(&path, false).unwrap();
        let found = idx
            .contents_by_hash(&[ContentHash([1; 32]), ContentHash([9; 32])])
            .unwrap();
        assert!(found.contains_key(&ContentHash([1; 32])));
        assert!(
            !found.contains_key(&ContentHash([9; 32])),
            "a content no head names must not be reused"
        );
        // What it had read counts as read in segments with versions, and its own
        // published log as its own: nothing is taken for less than it was.
        let me = DeviceId::random();
        let seen = idx.seen_vector(&me).unwrap();
        assert_eq!(seen.get(&other), Some(&7));
        assert_eq!(seen.get(&me), Some(&5));
        assert_eq!(idx.heads_of("kept.json").unwrap(), vec![live]);
    }

    #[test]
    fn heads_prune_superseded() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("s.db"), true).unwrap();
        let a = DeviceId::random();
        let b = DeviceId::random();
        idx.transaction(|tx| {
            assert_eq!(
                tx.offer_version(&version("x", &a, &[(&a, 1)]), None, true)?,
                HeadChange::Added
            );
            assert_eq!(
                tx.offer_version(&version("x", &b, &[(&b, 1)]), None, true)?,
                HeadChange::Added
            );
            assert_eq!(
                tx.offer_version(&version("x", &a, &[(&a, 1)]), None, true)?,
                HeadChange::Ignored
            );
            assert_eq!(
                tx.offer_version(&version("x", &a, &[(&a, 2), (&b, 1)]), None, true)?,
                HeadChange::Added
            );
            Ok(())
        })
        .unwrap();
        let heads = idx.heads_of("x").unwrap();
        assert_eq!(heads.len(), 1);
        assert_eq!(heads[0].counter(), 2);
    }

    #[test]
    fn missing_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.db");
        assert!(matches!(
            Index::open(&p, false),
            Err(IndexError::Missing { .. })
        ));
        std::fs::write(&p, vec![0x5a; 8192]).unwrap();
        assert!(matches!(
            Index::open(&p, false),
            Err(IndexError::Corrupt { .. })
        ));
    }
}
