//! `MountFs`, the filesystem: inodes and handles over the `Vault`, in plain types.
//! `fuse.rs` only translates between these calls and the kernel protocol, so the whole
//! filesystem can be driven from a test without a kernel (see `tests.rs`).
//!
//! Invariants:
//! - **Acknowledged means recorded.** A close(), fsync(), mkdir, unlink, rename, chmod
//!   or utimens returns only after its version (and the sealed content) is in the
//!   index's write-back queue; the worker uploads and publishes it later. A crash of
//!   this process loses nothing that returned; fsync() also survives a power cut.
//! - **Plaintext only in staging, only while open.** A file opened for writing is a
//!   staging file until its last handle closes; everything else is read from sealed
//!   packs (the queue or the backend) and decrypted in memory.
//! - **No network under the state lock.** Lookups, attributes, listings and cached
//!   reads take the state lock briefly and never wait for the backend; a read that must
//!   fetch, or a write that must first copy a file's old content in, fetches with the
//!   lock released and takes it again to use what it fetched. Recording a change
//!   takes the vault's index, which no network request holds either.
//! - **The kernel never sees stale data.** Remote changes reach the tree only through
//!   `remote.rs`, which returns what the kernel must forget.
//!
//! Locks, outermost first: `state`, then the vault's own (see `sync::Vault`), then the
//! small leaf locks of the reading side (`read.rs`) and `activity`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::errno::{Errno, FsResult};
use super::local::LocalRows;
use super::open_files::{OpenFiles, Staged};
use super::read::Reading;
use super::tree::{parent_path, Ino, Kind, Node, ShownSizes, Tree, ROOT};
use crate::sync::{Seen, SyncError, Vault};

/// A folder's entries (`.` and `..` first), each with its attributes.
pub type Listing = Arc<Vec<(Attr, String)>>;

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// How often other devices' changes are looked for.
    pub poll: Duration,
    /// Bytes of decrypted small files kept in memory.
    pub cache_limit: u64,
    /// fsync() waits until the content is in the backend.
    pub fsync_remote: bool,
    /// How long the kernel may trust attributes and names.
    pub ttl: Duration,
    /// The shortest time between publishes while writes keep coming (the backend's
    /// own, for providers that count writes).
    pub publish_gap: Duration,
    /// The owner every file is shown with (`-o uid=`, `-o gid=`); else the user
    /// running the mount.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            cache_limit: 64 * 1024 * 1024,
            fsync_remote: false,
            ttl: Duration::from_secs(5),
            publish_gap: Duration::ZERO,
            uid: None,
            gid: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub atime_ns: i64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What the worker needs to know about local changes.
#[derive(Debug, Default)]
pub struct Activity {
    pub first_unsent: Option<Instant>,
    pub last_change: Option<Instant>,
    pub publishes_started: u64,
    pub publishes_done: u64,
    pub shutdown: bool,
    pub last_error: Option<String>,
    /// Why the last close() or truncate could not be recorded, until one is again.
    pub last_write_error: Option<String>,
    /// The index changed under the tree (queued contents repaired): rebuild it.
    pub view_stale: bool,
    /// The backend told of another device's change: poll now, not at the interval.
    pub change_heard: bool,
}

/// Everything the state lock guards: the tree the kernel sees and the open files.
pub(super) struct State {
    pub tree: Tree,
    pub files: OpenFiles,
    /// Paths with a row of this device's own in the index (see `local.rs`).
    pub local: LocalRows,
    /// Files whose atime a read moved and that are not written yet.
    pub atimes_due: HashSet<Ino>,
}

pub struct MountFs {
    state: Mutex<State>,
    pub(super) vault: Vault,
    pub(super) reading: Arc<Reading>,
    pub(super) staging_dir: PathBuf,
    /// Listings of open folders, taken when a listing starts: the kernel asks for a
    /// folder one buffer at a time, and building the whole list for each buffer made
    /// listing n files cost n².
    listings: Mutex<HashMap<u64, Listing>>,
    /// Folders listed lately whose small files are fetched together once one of
    /// them is read: `cat *` and `grep -r` then find the rest in memory, while an
    /// `ls -lR` or `find` that reads nothing fetches nothing.
    listed: Mutex<VecDeque<Ino>>,
    next_dir_fh: AtomicU64,
    /// Mounted `-o noatime`: reads leave atime alone (utimens still sets it).
    pub(super) noatime: AtomicBool,
    pub(super) activity: Mutex<Activity>,
    pub(super) wake: Condvar,
    pub opts: MountOptions,
    uid: u32,
    gid: u32,
}

/// How many listed folders wait for a first read to prefetch their files.
const LISTED_FOLDERS_KEPT: usize = 64;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn precise_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Learns the size every file of `ns` shows on this device before the tree shows
/// it (a trusted device with anonymization fetches what it does not know yet; any
/// other fetches nothing). What could not be learned shows the view's size, and is
/// tried again at the next poll.
pub(super) fn resolve_sizes(vault: &Vault, ns: &crate::sync::Namespace) -> bool {
    if !vault.restores_originals() {
        return true;
    }
    match vault.resolve_shown_sizes(&file_contents(ns)) {
        Ok(0) => true,
        Ok(n) => {
            tracing::debug!("read {n} files to learn the sizes they show restored");
            true
        }
        Err(e) => {
            tracing::warn!("could not learn the restored sizes of some files yet: {e}");
            false
        }
    }
}

/// The content of every file `ns` shows.
fn file_contents(ns: &crate::sync::Namespace) -> Vec<crate::model::ContentRef> {
    ns.values()
        .filter_map(|s| match &s.version.entry {
            crate::model::Entry::File { content, .. } => Some(content.clone()),
            _ => None,
        })
        .collect()
}

/// Keeps what a trusted mount learned of the files of `ns` for its next start.
pub(super) fn save_learned(vault: &Vault, ns: &crate::sync::Namespace) {
    if !vault.restores_originals() {
        return;
    }
    if let Err(e) = vault.save_learned_sizes(&file_contents(ns)) {
        tracing::warn!("could not keep the sizes learned for the next start: {e}");
    }
}

pub(super) fn check_name(name: &str) -> FsResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Errno::INVAL);
    }
    if name.len() > 255 {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(())
}

/// What the mount shows of `path`'s conflict group: a change made to `path` now is
/// made on top of exactly that.
pub(super) fn seen_in(tree: &Tree, path: &str) -> Seen {
    let showing_of = |p: &str| {
        tree.ino_of(p)
            .and_then(|i| tree.get(i))
            .and_then(|n| n.shown.as_ref())
            .map(|s| s.showing())
    };
    let at = showing_of(path);
    let main = at
        .as_ref()
        .and_then(|s| s.sibling_of())
        .unwrap_or(path)
        .to_owned();
    let mut group = Vec::new();
    if main != path {
        group.extend(showing_of(&main));
    }
    for i in tree.siblings_of(&main) {
        if let Some(n) = tree.get(i).filter(|n| n.path != path) {
            group.extend(n.shown.as_ref().map(|s| s.showing()));
        }
    }
    Seen { at, group }
}

impl MountFs {
    /// Builds the filesystem over an opened vault; unlocks it (the key is needed to
    /// read anything) and shows its namespace.
    pub fn new(vault: Vault, opts: MountOptions) -> Result<Arc<Self>, SyncError> {
        vault.relax_durability()?;
        // Four FUSE threads and the worker each get a malloc arena by default; two
        // keep a mount of 100,000 files from holding memory it freed long ago.
        // SAFETY: mallopt only tunes the allocator; M_ARENA_MAX takes a count.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        vault.defer_snapshots();
        let reader = vault.reader()?;
        // Show what other devices published up to now from the first `ls`; offline,
        // start from what the index knows and catch up later.
        if let Err(e) = vault.poll(&crate::sync::NoProgress) {
            tracing::warn!("starting without the newest changes, the backend did not answer: {e}");
        }
        // With anonymization, a trusted device shows restored sizes from the first
        // stat (see `sync/vault/anonymize_mount.rs`).
        if let Err(e) = vault.refresh_anonymization() {
            tracing::warn!("the vault's anonymization rules could not be read: {e}");
        }
        if vault.restores_originals() {
            match vault.load_learned_sizes() {
                Ok(n) => tracing::debug!("{n} sizes learned by an earlier run"),
                Err(e) => tracing::warn!("sizes learned by an earlier run not used: {e}"),
            }
        }
        let ns = vault.namespace()?;
        resolve_sizes(&vault, &ns);
        save_learned(&vault, &ns);
        let sizes = ShownSizes::new(vault.shown_sizes());
        let tree = Tree::from_namespace_sized(ns, precise_now_ns(), sizes);
        return_freed_memory();
        let staging_dir = vault.home().staging_dir();
        crate::config::create_private_dir(&staging_dir)?;
        // Left by a crash: bytes of writes no close() acknowledged. Plaintext must not
        // linger on disk.
        if let Ok(entries) = std::fs::read_dir(&staging_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let pending = vault.has_pending_work()?;
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (me, my_group) = unsafe { (libc::getuid(), libc::getgid()) };
        let (uid, gid) = (opts.uid.unwrap_or(me), opts.gid.unwrap_or(my_group));
        let fs = Arc::new(Self {
            state: Mutex::new(State {
                tree,
                files: OpenFiles::default(),
                local: LocalRows::default(),
                atimes_due: HashSet::new(),
            }),
            reading: Arc::new(Reading::new(reader, opts.cache_limit)),
            vault,
            staging_dir,
            listings: Mutex::new(HashMap::new()),
            listed: Mutex::new(VecDeque::new()),
            next_dir_fh: AtomicU64::new(1),
            noatime: AtomicBool::new(false),
            activity: Mutex::new(Activity::default()),
            wake: Condvar::new(),
            opts,
            uid,
            gid,
        });
        {
            let mut st = fs.state();
            fs.restore_local(&mut st)?;
        }
        if pending {
            // A queue left by an earlier run resumes at once.
            fs.note_change();
        }
        Ok(fs)
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Tells the worker that something waits for upload.
    pub(super) fn note_change(&self) {
        let mut a = lock(&self.activity);
        let now = Instant::now();
        a.first_unsent.get_or_insert(now);
        a.last_change = Some(now);
        drop(a);
        self.wake.notify_all();
    }

    fn attr(&self, n: &Node, staged: Option<&Staged>) -> Attr {
        let size = match (n.kind, staged) {
            (Kind::File, Some(s)) => s.size,
            _ => n.size,
        };
        Attr {
            ino: n.ino,
            kind: n.kind,
            size,
            mode: n.mode,
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns.max(n.mtime_ns),
            atime_ns: n.atime_ns,
            nlink: if n.kind == Kind::Dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
        }
    }

    fn attr_in(&self, tree: &Tree, n: &Node, staged: Option<&Staged>) -> Attr {
        let mut a = self.attr(n, staged);
        if n.kind == Kind::Dir {
            a.nlink = tree.dir_links(n);
        } else {
            a.nlink = tree.link_count(n.ino);
        }
        a
    }

    pub(super) fn node_attr(&self, st: &State, ino: Ino) -> FsResult<Attr> {
        // An extra name of a hard-linked file answers as the file (its first inode).
        let ino = st.tree.canonical(ino);
        if let Some(n) = st.tree.get(ino) {
            return Ok(self.attr_in(&st.tree, n, st.files.staged.get(&ino)));
        }
        // Unlinked but still open: no name links to it any more.
        let n = st.files.orphans.get(&ino).ok_or(Errno::NOENT)?;
        let mut a = self.attr(n, st.files.staged.get(&ino));
        a.nlink = 0;
        Ok(a)
    }

    pub(super) fn owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    pub fn lookup(&self, parent: Ino, name: &str) -> FsResult<Attr> {
        if name.len() > 255 {
            return Err(Errno::NAMETOOLONG);
        }
        let st = self.state();
        let ino = st
            .tree
            .lookup(parent, name)
            .map(|n| n.ino)
            .ok_or(Errno::NOENT)?;
        self.node_attr(&st, ino)
    }

    pub fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let st = self.state();
        self.node_attr(&st, ino)
    }

    pub fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let st = self.state();
        let n = st.tree.get(ino).ok_or(Errno::NOENT)?;
        if n.kind != Kind::Symlink {
            return Err(Errno::INVAL);
        }
        Ok(n.target.as_bytes().to_vec())
    }

    /// Children of a folder, `.` and `..` first.
    pub fn readdir(&self, ino: Ino) -> FsResult<Vec<(Attr, String)>> {
        let mut st = self.state();
        let dir = st.tree.get(ino).ok_or(Errno::NOENT)?;
        if dir.kind != Kind::Dir {
            return Err(Errno::NOTDIR);
        }
        let parent = st.tree.ino_of(parent_path(&dir.path)).unwrap_or(ROOT);
        let mut out = Vec::with_capacity(dir.children.len() + 2);
        out.push((self.node_attr(&st, ino)?, ".".to_owned()));
        out.push((self.node_attr(&st, parent)?, "..".to_owned()));
        for (name, child) in &dir.children {
            if st.tree.get(*child).is_some() {
                out.push((self.node_attr(&st, *child)?, name.clone()));
            }
        }
        self.accessed(&mut st, ino);
        drop(st);
        self.arm_prefetch(ino);
        Ok(out)
    }

    /// Marks folder `dir` for a prefetch at the first read of one of its files.
    fn arm_prefetch(&self, dir: Ino) {
        let mut listed = lock(&self.listed);
        if !listed.contains(&dir) {
            if listed.len() >= LISTED_FOLDERS_KEPT {
                listed.pop_front();
            }
            listed.push_back(dir);
        }
    }

    /// Whether folder `dir` was listed lately.
    pub(super) fn was_listed(&self, dir: Ino) -> bool {
        lock(&self.listed).contains(&dir)
    }

    pub fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let st = self.state();
        let dir = st.tree.get(ino).ok_or(Errno::NOENT)?;
        if dir.kind != Kind::Dir {
            return Err(Errno::NOTDIR);
        }
        Ok(self.next_dir_fh.fetch_add(1, Ordering::Relaxed))
    }

    /// The listing of an open folder from `offset` on: taken afresh when a listing
    /// starts (offset 0, which is also what rewinddir asks), then served from there.
    pub fn listing(&self, ino: Ino, fh: u64, offset: u64) -> FsResult<Listing> {
        if offset > 0 {
            if let Some(l) = lock(&self.listings).get(&fh) {
                return Ok(l.clone());
            }
        }
        let l = Arc::new(self.readdir(ino)?);
        lock(&self.listings).insert(fh, l.clone());
        Ok(l)
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.listings).remove(&fh);
    }

    /// Total and free bytes of the disk under the home, and the number of nodes.
    pub fn statfs(&self) -> (u64, u64, u64) {
        let files = self.state().tree.len() as u64;
        let (blocks, free) = disk_space(&self.staging_dir).unwrap_or((1 << 30, 1 << 29));
        (blocks, free, files)
    }

    pub fn root_ino(&self) -> Ino {
        ROOT
    }

    pub fn plain_cache_used(&self) -> u64 {
        self.reading.cache_used()
    }

    /// Files open for writing with changes not recorded yet.
    pub fn dirty_count(&self) -> usize {
        self.state().files.dirty_inos().count()
    }

    /// Keeps what a trusted mount learned of restored sizes since it last did, for
    /// its next start (local: the index and one file).
    pub(super) fn keep_learned_sizes(&self) {
        if self.vault.restores_originals() && self.vault.learned_sizes_unsaved() {
            if let Ok(ns) = self.vault.namespace() {
                save_learned(&self.vault, &ns);
            }
        }
    }

    /// Stops the worker (after its last upload attempt).
    pub fn shutdown(&self) {
        self.flush_atimes();
        self.keep_learned_sizes();
        lock(&self.activity).shutdown = true;
        self.wake.notify_all();
    }
}

pub(super) fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes only into `s`, which we own; the path is a C string.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    Some((s.f_blocks as u64 * frsize, s.f_bavail as u64 * frsize))
}

/// Hands the pages of a large temporary (a whole namespace) back to the system;
/// the allocator would otherwise keep them for a mount's whole life.
pub(super) fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
