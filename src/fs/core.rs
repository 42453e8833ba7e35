//! The mount's filesystem logic, in plain types: inodes and handles over the `Vault`.
//! `fuse.rs` only translates between these calls and the kernel protocol.
//!
//! Invariants:
//! - **Acknowledged means recorded.** A close(), fsync(), mkdir, unlink, rename, chmod
//!   or utimens returns only after its version (and the sealed content) is in the
//!   index's write-back queue; the worker uploads and publishes it later. A crash of
//!   this process loses nothing that returned; fsync() also survives a power cut.
//! - **Plaintext only in staging, only while open.** A file opened for writing is a
//!   staging file until its last handle closes; everything else is read from sealed
//!   packs (the cache or the backend) and decrypted in memory.
//! - **The kernel never sees stale data.** Remote changes reach the tree only in the
//!   worker, which then invalidates the kernel's entries and pages (see `worker.rs`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::changes::{disk_space, drop_sibling, heads_vector};
use super::plain_cache::PlainCache;
use super::staging::StagedBytes;
use super::tree::{join, parent_path, Ino, Invalidation, Kind, Node, Tree, ROOT};
use crate::model::{ContentRef, Entry, VersionVector};
use crate::sync::{ContentReader, LocalChange, NewVersion, SyncError, SyncResult, Vault};

/// A folder's entries (`.` and `..` first), each with its attributes.
pub type Listing = Arc<Vec<(Attr, String)>>;

/// An errno for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type FsResult<T> = Result<T, Errno>;

impl From<SyncError> for Errno {
    fn from(e: SyncError) -> Self {
        tracing::error!("{e}");
        Errno(libc::EIO)
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    tracing::error!("staging: {e}");
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Files up to this size are read whole, checked against their hash and kept
/// decrypted in memory; larger ones are read a chunk range at a time.
const WHOLE_READ_MAX: u64 = 1024 * 1024;
/// A listing's prefetch fetches this much at a time.
const PREFETCH_BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// How many listed folders wait for a first read to prefetch their files.
const LISTED_FOLDERS_KEPT: usize = 64;

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
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            cache_limit: 64 * 1024 * 1024,
            fsync_remote: false,
            ttl: Duration::from_secs(5),
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
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A file open for writing: its bytes live in a staging file until the last handle
/// closes.
#[derive(Debug)]
struct Staged {
    bytes: StagedBytes,
    size: u64,
    dirty: bool,
    opens: u32,
    /// What this device had seen of the path when it was opened: a commit supersedes
    /// exactly that, and stays concurrent with what arrived since.
    base: VersionVector,
    /// Unlinked while open: reads and writes go on, nothing is recorded.
    unlinked: bool,
    /// The content to copy in before the staging file is first used: opening a file
    /// for writing fetches nothing until a byte of it is needed.
    fill: Option<ContentRef>,
}

#[derive(Debug, Clone, Copy)]
struct Handle {
    ino: Ino,
    writable: bool,
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
}

pub(super) struct State {
    pub vault: Vault,
    pub tree: Tree,
    staged: HashMap<Ino, Staged>,
    /// Unlinked files still open, by inode.
    orphans: HashMap<Ino, Node>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    pub(super) staging_dir: PathBuf,
}

pub struct MountFs {
    state: Mutex<State>,
    reader: ContentReader,
    plain: Arc<Mutex<PlainCache>>,
    prefetching: Arc<AtomicBool>,
    /// Listings of open folders, taken when a listing starts: the kernel asks for a
    /// folder one buffer at a time, and building the whole list for each buffer made
    /// listing n files cost n².
    listings: Mutex<HashMap<u64, Listing>>,
    /// Folders listed lately whose small files are fetched together once one of
    /// them is read: `cat *` and `grep -r` then find the rest in memory, while an
    /// `ls -lR` or `find` that reads nothing fetches nothing.
    listed: Mutex<VecDeque<Ino>>,
    next_dir_fh: std::sync::atomic::AtomicU64,
    pub(super) activity: Mutex<Activity>,
    pub(super) wake: Condvar,
    pub opts: MountOptions,
    uid: u32,
    gid: u32,
}

fn now_ns() -> i64 {
    crate::now_ms() * 1_000_000
}

fn precise_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_name(name: &str) -> FsResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Errno(libc::EINVAL));
    }
    if name.len() > 255 {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

impl MountFs {
    /// Builds the filesystem over an opened vault; unlocks it (the key is needed to
    /// read anything) and shows its namespace.
    pub fn new(mut vault: Vault, opts: MountOptions) -> Result<Arc<Self>, SyncError> {
        vault.index().relax_durability()?;
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
        let ns = vault.namespace()?;
        let tree = Tree::from_namespace(ns, now_ns());
        return_freed_memory();
        let staging_dir = vault.home().staging_dir();
        crate::config::create_private_dir(&staging_dir)?;
        // Left by a crash: bytes of writes no close() acknowledged. Plaintext must not
        // linger on disk.
        if let Ok(entries) = fs::read_dir(&staging_dir) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let pending = vault.unpublished_count()? > 0 || !vault.index().pending_packs()?.is_empty();
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let fs = Arc::new(Self {
            state: Mutex::new(State {
                vault,
                tree,
                staged: HashMap::new(),
                orphans: HashMap::new(),
                handles: HashMap::new(),
                next_fh: 1,
                staging_dir,
            }),
            reader,
            plain: Arc::new(Mutex::new(PlainCache::new(opts.cache_limit))),
            prefetching: Arc::new(AtomicBool::new(false)),
            listings: Mutex::new(HashMap::new()),
            listed: Mutex::new(VecDeque::new()),
            next_dir_fh: std::sync::atomic::AtomicU64::new(1),
            activity: Mutex::new(Activity::default()),
            wake: Condvar::new(),
            opts,
            uid,
            gid,
        });
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
    fn note_change(&self) {
        let mut a = lock(&self.activity);
        let now = Instant::now();
        a.first_unsent.get_or_insert(now);
        a.last_change = Some(now);
        drop(a);
        self.wake.notify_all();
    }

    fn attr_in(&self, tree: &Tree, n: &Node, staged: Option<&Staged>) -> Attr {
        let mut a = self.attr(n, staged);
        if n.kind == Kind::Dir {
            a.nlink = tree.dir_links(n);
        }
        a
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
            nlink: if n.kind == Kind::Dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
        }
    }

    fn node_attr(&self, st: &State, ino: Ino) -> FsResult<Attr> {
        if let Some(n) = st.tree.get(ino) {
            return Ok(self.attr_in(&st.tree, n, st.staged.get(&ino)));
        }
        // Unlinked but still open: no name links to it any more.
        let n = st.orphans.get(&ino).ok_or(Errno(libc::ENOENT))?;
        let mut a = self.attr(n, st.staged.get(&ino));
        a.nlink = 0;
        Ok(a)
    }

    pub fn lookup(&self, parent: Ino, name: &str) -> FsResult<Attr> {
        if name.len() > 255 {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        let st = self.state();
        let ino = st
            .tree
            .lookup(parent, name)
            .map(|n| n.ino)
            .ok_or(Errno(libc::ENOENT))?;
        self.node_attr(&st, ino)
    }

    pub fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let st = self.state();
        self.node_attr(&st, ino)
    }

    pub fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let st = self.state();
        let n = st.tree.get(ino).ok_or(Errno(libc::ENOENT))?;
        if n.kind != Kind::Symlink {
            return Err(Errno(libc::EINVAL));
        }
        Ok(n.target.as_bytes().to_vec())
    }

    /// Children of a folder, `.` and `..` first.
    pub fn readdir(&self, ino: Ino) -> FsResult<Vec<(Attr, String)>> {
        let st = self.state();
        let dir = st.tree.get(ino).ok_or(Errno(libc::ENOENT))?;
        if dir.kind != Kind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        let parent = st.tree.ino_of(parent_path(&dir.path)).unwrap_or(ROOT);
        let mut out = Vec::with_capacity(dir.children.len() + 2);
        out.push((self.node_attr(&st, ino)?, ".".to_owned()));
        out.push((self.node_attr(&st, parent)?, "..".to_owned()));
        for (name, child) in &dir.children {
            if let Some(n) = st.tree.get(*child) {
                out.push((
                    self.attr_in(&st.tree, n, st.staged.get(child)),
                    name.clone(),
                ));
            }
        }
        drop(st);
        self.arm_prefetch(ino);
        Ok(out)
    }

    /// The small files of folder `dir` from `name` on (readers of a whole folder go
    /// in name order), if the folder was listed lately.
    fn prefetch_candidates(&self, st: &State, dir: Ino, name: &str) -> Vec<ContentRef> {
        if !lock(&self.listed).contains(&dir) {
            return Vec::new();
        }
        let Some(d) = st.tree.get(dir) else {
            return Vec::new();
        };
        d.children
            .range::<str, _>((std::ops::Bound::Included(name), std::ops::Bound::Unbounded))
            .map(|(_, i)| i)
            .filter(|i| !st.staged.contains_key(i))
            .filter_map(|i| st.tree.get(*i)?.content())
            .filter(|c| c.size <= WHOLE_READ_MAX)
            .cloned()
            .collect()
    }

    pub fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let st = self.state();
        let dir = st.tree.get(ino).ok_or(Errno(libc::ENOENT))?;
        if dir.kind != Kind::Dir {
            return Err(Errno(libc::ENOTDIR));
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

    /// Starts fetching the small files of a folder being read, many per request, so
    /// the reads that usually follow (`cat *`, `grep -r`) find them in memory. One at
    /// a time; ignored while another runs.
    fn prefetch(&self, mut wanted: Vec<ContentRef>) {
        {
            let plain = lock(&self.plain);
            wanted.retain(|c| !plain.contains(c));
        }
        // At most half the memory cache, so the prefetch never evicts itself.
        let mut budget = self.opts.cache_limit / 2;
        wanted.retain(|c| {
            let fits = c.size <= budget;
            budget = budget.saturating_sub(c.size);
            fits
        });
        if wanted.is_empty() || self.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let reader = self.reader.clone();
        let plain = self.plain.clone();
        let busy = self.prefetching.clone();
        std::thread::spawn(move || {
            // A batch at a time: few large requests, and little memory in flight.
            let mut start = 0;
            while start < wanted.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < wanted.len() && bytes < PREFETCH_BATCH_BYTES {
                    bytes += wanted[end].size;
                    end += 1;
                }
                let batch = &wanted[start..end];
                let fetched = reader.read_many(batch, |i, r| {
                    if let Ok(data) = r {
                        lock(&plain).insert(&batch[i], Arc::new(data));
                    }
                });
                if fetched.is_err() {
                    break;
                }
                start = end;
            }
            busy.store(false, Ordering::Release);
        });
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

    pub fn open(&self, ino: Ino, flags: i32) -> FsResult<u64> {
        let mut st = self.state();
        let n = st.tree.get(ino).ok_or(Errno(libc::ENOENT))?;
        match n.kind {
            Kind::Dir => return Err(Errno(libc::EISDIR)),
            Kind::Symlink => return Err(Errno(libc::ELOOP)),
            Kind::File => {}
        }
        // O_TRUNC never arrives here: the kernel truncates with a setattr after the
        // open (see the adapter's init).
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable {
            self.stage(&mut st, ino, false)?;
        }
        Ok(st.add_handle(ino, writable))
    }

    pub fn create(&self, parent: Ino, name: &str, mode: u32, flags: i32) -> FsResult<(Attr, u64)> {
        check_name(name)?;
        let mut st = self.state();
        let dir = st.tree.get(parent).ok_or(Errno(libc::ENOENT))?;
        if dir.kind != Kind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        let path = join(&dir.path, name);
        if st.tree.ino_of(&path).is_some() {
            return Err(Errno(libc::EEXIST));
        }
        let base = heads_vector(&st.vault, &path)?;
        let now = precise_now_ns();
        let ino = st.tree.add_local(&path, Kind::File, mode, now);
        st.tree.touch_dir(parent, now);
        let staged = st.new_staging(base)?;
        st.staged.insert(ino, staged);
        if let Some(s) = st.staged.get_mut(&ino) {
            s.dirty = true;
        }
        // Even an O_RDONLY|O_CREAT open made the file: it is recorded at close.
        let _ = flags;
        if let Some(s) = st.staged.get_mut(&ino) {
            s.opens += 1;
        }
        let fh = st.add_handle_raw(ino, true);
        Ok((self.node_attr(&st, ino)?, fh))
    }

    /// Makes `ino` writable: a staging file holding its current bytes.
    fn stage(&self, st: &mut State, ino: Ino, truncate: bool) -> FsResult<()> {
        if let Some(s) = st.staged.get_mut(&ino) {
            s.opens += 1;
            if truncate && s.size > 0 {
                s.bytes.set_len(0, &st.staging_dir).map_err(io_errno)?;
                s.size = 0;
                s.fill = None;
                s.dirty = true;
            }
            return Ok(());
        }
        let n = st.tree.get(ino).ok_or(Errno(libc::ENOENT))?;
        let path = n.path.clone();
        let content = n.content().cloned();
        let base = heads_vector(&st.vault, &path)?;
        let mut staged = st.new_staging(base)?;
        staged.opens = 1;
        if truncate {
            staged.dirty = content.as_ref().is_some_and(|c| c.size > 0);
        } else if let Some(c) = content {
            staged.size = c.size;
            staged.fill = (c.size > 0).then_some(c);
        }
        st.staged.insert(ino, staged);
        Ok(())
    }

    /// Copies the file's current content into its staging file, once.
    fn ensure_filled(&self, st: &mut State, ino: Ino) -> FsResult<()> {
        let Some(c) = st.staged.get(&ino).and_then(|s| s.fill.clone()) else {
            return Ok(());
        };
        let data = self.read_content(&c, 0, c.size)?;
        if let Some(s) = st.staged.get_mut(&ino) {
            s.bytes
                .write_at(&data, 0, &st.staging_dir)
                .map_err(io_errno)?;
            s.fill = None;
        }
        Ok(())
    }

    fn read_content(&self, c: &ContentRef, offset: u64, len: u64) -> SyncResult<Vec<u8>> {
        if c.size <= WHOLE_READ_MAX {
            let cached = lock(&self.plain).get(c);
            let data = match cached {
                Some(d) => d,
                None => {
                    let d = Arc::new(self.reader.read_all(c)?);
                    lock(&self.plain).insert(c, d.clone());
                    d
                }
            };
            let start = (offset as usize).min(data.len());
            let end = (offset.saturating_add(len) as usize).min(data.len());
            return Ok(data[start..end].to_vec());
        }
        if offset == 0 && len >= c.size {
            return self.reader.read_all(c);
        }
        self.reader.read_at(c, offset, len)
    }

    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let mut st = self.state();
        if st.staged.contains_key(&ino) {
            self.ensure_filled(&mut st, ino)?;
        }
        if let Some(s) = st.staged.get(&ino) {
            let len = (size as u64).min(s.size.saturating_sub(offset)) as usize;
            let mut buf = vec![0u8; len];
            let n = s.bytes.read_at(&mut buf, offset).map_err(io_errno)?;
            buf.truncate(n);
            return Ok(buf);
        }
        let n = st
            .tree
            .get(ino)
            .or_else(|| st.orphans.get(&ino))
            .ok_or(Errno(libc::ENOENT))?;
        let Some(c) = n.content().cloned() else {
            return Ok(Vec::new());
        };
        let path = n.path.clone();
        // A miss in a listed folder: fetch the files after this one too, unless a
        // prefetch is on its way already (it may bring this very file).
        let busy = self.prefetching.load(Ordering::Acquire);
        let wanted = if !busy && c.size <= WHOLE_READ_MAX && !lock(&self.plain).contains(&c) {
            let dir = st.tree.ino_of(parent_path(&n.path)).unwrap_or(ROOT);
            self.prefetch_candidates(&st, dir, n.name())
        } else {
            Vec::new()
        };
        drop(st);
        if !wanted.is_empty() {
            self.prefetch(wanted);
        }
        self.read_content(&c, offset, size as u64).map_err(|e| {
            tracing::error!("cannot read {path}: {e}");
            Errno(libc::EIO)
        })
    }

    pub fn write(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let mut st = self.state();
        let handle = st.handles.get(&fh).copied().ok_or(Errno(libc::EBADF))?;
        if !handle.writable {
            return Err(Errno(libc::EBADF));
        }
        self.ensure_filled(&mut st, ino)?;
        let st = &mut *st;
        let s = st.staged.get_mut(&ino).ok_or(Errno(libc::EBADF))?;
        s.bytes
            .write_at(data, offset, &st.staging_dir)
            .map_err(io_errno)?;
        s.size = s.size.max(offset + data.len() as u64);
        s.dirty = true;
        let now = precise_now_ns();
        if let Some(n) = st.tree.get_mut(ino) {
            n.mtime_ns = now;
            n.ctime_ns = now;
            // A write drops set-user-id and set-group-id, as on any filesystem
            // (the kernel leaves that to us: FUSE_HANDLE_KILLPRIV_V2).
            n.mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        Ok(data.len() as u32)
    }

    /// close(): what was written becomes a queued version before close returns.
    pub fn flush(&self, ino: Ino, fh: u64) -> FsResult<()> {
        let mut st = self.state();
        let writable = st.handles.get(&fh).is_some_and(|h| h.writable);
        if writable && st.staged.get(&ino).is_some_and(|s| s.dirty) {
            self.commit(&mut st, ino)?;
        }
        Ok(())
    }

    pub fn fsync(&self, ino: Ino, fh: u64) -> FsResult<()> {
        {
            let mut st = self.state();
            let writable = st.handles.get(&fh).is_some_and(|h| h.writable);
            if writable && st.staged.get(&ino).is_some_and(|s| s.dirty) {
                self.commit(&mut st, ino)?;
            }
            st.vault.sync_queue()?;
        }
        if self.opts.fsync_remote {
            self.wait_published(Duration::from_secs(60))?;
        }
        Ok(())
    }

    /// Waits until a publish that started after this call has finished.
    pub fn wait_published(&self, limit: Duration) -> FsResult<()> {
        let deadline = Instant::now() + limit;
        let mut a = lock(&self.activity);
        a.first_unsent.get_or_insert_with(Instant::now);
        a.last_change = Some(Instant::now() - Duration::from_secs(1));
        let target = a.publishes_started + 1;
        self.wake.notify_all();
        while a.publishes_done < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::error!("fsync: the backend did not take the file within {limit:?}");
                return Err(Errno(libc::EIO));
            }
            a = self
                .wake
                .wait_timeout(a, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        Ok(())
    }

    pub fn release(&self, ino: Ino, fh: u64) -> FsResult<()> {
        let mut st = self.state();
        let Some(h) = st.handles.remove(&fh) else {
            return Ok(());
        };
        if !h.writable {
            return Ok(());
        }
        let last = match st.staged.get_mut(&ino) {
            Some(s) => {
                s.opens = s.opens.saturating_sub(1);
                s.opens == 0
            }
            None => false,
        };
        if !last {
            return Ok(());
        }
        // Pages an mmap dirtied reach us after the flush of close().
        let result = if st.staged.get(&ino).is_some_and(|s| s.dirty && !s.unlinked) {
            self.commit(&mut st, ino)
        } else {
            Ok(())
        };
        st.staged.remove(&ino);
        st.orphans.remove(&ino);
        result
    }

    /// Seals the staged bytes of `ino` into the queue and records the version.
    fn commit(&self, st: &mut State, ino: Ino) -> FsResult<()> {
        let Some(node) = st.tree.get(ino).cloned() else {
            return Ok(());
        };
        let Some(s) = st.staged.get_mut(&ino) else {
            return Ok(());
        };
        if s.unlinked {
            s.dirty = false;
            return Ok(());
        }
        self.ensure_filled(st, ino)?;
        let Some(s) = st.staged.get_mut(&ino) else {
            return Ok(());
        };
        let size = s.size;
        let mut input = s.bytes.reader(size).map_err(io_errno)?;
        let queued = st.vault.queue_content(&mut input, size)?;
        drop(input);
        let base = st
            .staged
            .get(&ino)
            .map(|s| s.base.clone())
            .unwrap_or_default();
        let entry = Entry::File {
            content: queued.content,
            mode: node.mode,
        };
        let mut versions = Vec::new();
        let mut scope = vec![node.path.clone()];
        let own_base = match node.sibling_of() {
            // An edited conflict sibling becomes a file of its own; its device's
            // version leaves the conflict.
            Some(main) => {
                versions.extend(drop_sibling(st, &node, main));
                scope.push(main.to_owned());
                VersionVector::default()
            }
            None => base,
        };
        versions.push(NewVersion {
            path: node.path.clone(),
            entry,
            mtime_ns: node.mtime_ns,
            base: own_base,
            local: LocalChange::Keep,
        });
        let recorded = st.vault.record(versions, &[queued.pack], Vec::new())?;
        if let (Some(v), Some(s)) = (recorded.last(), st.staged.get_mut(&ino)) {
            s.dirty = false;
            s.base = v.vector.clone();
        }
        st.refresh(&scope)?;
        drop(recorded);
        self.note_change();
        Ok(())
    }

    pub fn mkdir(&self, parent: Ino, name: &str, mode: u32) -> FsResult<Attr> {
        self.make(
            parent,
            name,
            Entry::Dir {
                mode: mode & 0o7777,
            },
        )
    }

    pub fn symlink(&self, parent: Ino, name: &str, target: &str) -> FsResult<Attr> {
        self.make(
            parent,
            name,
            Entry::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// A new folder or link, recorded before the call returns.
    fn make(&self, parent: Ino, name: &str, entry: Entry) -> FsResult<Attr> {
        check_name(name)?;
        let mut st = self.state();
        let path = st.child_path(parent, name)?;
        if st.tree.ino_of(&path).is_some() {
            return Err(Errno(libc::EEXIST));
        }
        let base = heads_vector(&st.vault, &path)?;
        let now = precise_now_ns();
        st.record_one(&path, entry, now, base)?;
        st.tree.touch_dir(parent, now);
        self.note_change();
        let ino = st.tree.ino_of(&path).ok_or(Errno(libc::EIO))?;
        self.node_attr(&st, ino)
    }

    pub fn unlink(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.remove(parent, name, |n| match n.kind {
            Kind::Dir => Err(Errno(libc::EISDIR)),
            _ => Ok(()),
        })
    }

    pub fn rmdir(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.remove(parent, name, |n| match n.kind {
            Kind::Dir if !n.children.is_empty() => Err(Errno(libc::ENOTEMPTY)),
            Kind::Dir => Ok(()),
            _ => Err(Errno(libc::ENOTDIR)),
        })
    }

    /// unlink and rmdir: `allowed` says whether this call may remove that node.
    fn remove(
        &self,
        parent: Ino,
        name: &str,
        allowed: impl FnOnce(&Node) -> FsResult<()>,
    ) -> FsResult<()> {
        let mut st = self.state();
        let node = st
            .tree
            .lookup(parent, name)
            .cloned()
            .ok_or(Errno(libc::ENOENT))?;
        allowed(&node)?;
        st.remove_node(&node)?;
        st.tree.touch_dir(parent, precise_now_ns());
        self.note_change();
        Ok(())
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        check_name(new_name)?;
        let mut st = self.state();
        let node = st
            .tree
            .lookup(parent, name)
            .cloned()
            .ok_or(Errno(libc::ENOENT))?;
        let to = st.child_path(new_parent, new_name)?;
        if to == node.path {
            return Ok(());
        }
        if node.kind == Kind::Dir && (to.starts_with(&format!("{}/", node.path))) {
            return Err(Errno(libc::EINVAL));
        }
        if let Some(target) = st.tree.ino_of(&to).and_then(|i| st.tree.get(i)) {
            if no_replace {
                return Err(Errno(libc::EEXIST));
            }
            match (node.kind == Kind::Dir, target.kind == Kind::Dir) {
                (true, false) => return Err(Errno(libc::ENOTDIR)),
                (false, true) => return Err(Errno(libc::EISDIR)),
                (true, true) if !target.children.is_empty() => return Err(Errno(libc::ENOTEMPTY)),
                _ => {}
            }
        }
        st.rename(&node, &to)?;
        let now = precise_now_ns();
        st.tree.touch_dir(parent, now);
        st.tree.touch_dir(new_parent, now);
        self.note_change();
        Ok(())
    }

    /// chmod, truncate, utimens (chown to anyone else is refused: one owner).
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: Ino,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime_ns: Option<i64>,
        fh: Option<u64>,
    ) -> FsResult<Attr> {
        let mut st = self.state();
        let node = st.tree.get(ino).cloned().ok_or(Errno(libc::ENOENT))?;
        if uid.is_some_and(|u| u != self.uid) || gid.is_some_and(|g| g != self.gid) {
            return Err(Errno(libc::EPERM));
        }
        let mut changed = false;
        if let Some(size) = size {
            if node.kind == Kind::Dir {
                return Err(Errno(libc::EISDIR));
            }
            let was_staged = st.staged.contains_key(&ino);
            if !was_staged {
                self.stage(&mut st, ino, size == 0)?;
            }
            if size > 0 {
                self.ensure_filled(&mut st, ino)?;
            } else if let Some(s) = st.staged.get_mut(&ino) {
                s.fill = None;
            }
            let dir = st.staging_dir.clone();
            if let Some(s) = st.staged.get_mut(&ino) {
                s.bytes.set_len(size, &dir).map_err(io_errno)?;
                if s.size != size {
                    s.dirty = true;
                }
                s.size = size;
            }
            let now = precise_now_ns();
            if let Some(n) = st.tree.get_mut(ino) {
                n.mtime_ns = now;
                n.ctime_ns = now;
            }
            if !was_staged {
                // truncate(2) on a closed file: recorded now, like a close.
                if let Some(s) = st.staged.get_mut(&ino) {
                    s.dirty = true;
                }
                let r = self.commit(&mut st, ino);
                st.staged.remove(&ino);
                let path = node.path.clone();
                st.refresh(&[path])?;
                r?;
            }
            let _ = fh;
        }
        if let Some(m) = mode {
            if let Some(n) = st.tree.get_mut(ino) {
                changed |= n.mode != m & 0o7777;
                n.mode = m & 0o7777;
                n.ctime_ns = precise_now_ns();
            }
        }
        if let Some(t) = mtime_ns {
            if let Some(n) = st.tree.get_mut(ino) {
                changed |= n.mtime_ns != t;
                n.mtime_ns = t;
                n.ctime_ns = precise_now_ns();
            }
        }
        if changed {
            if let Some(s) = st.staged.get_mut(&ino) {
                // Goes with the content when the file closes.
                s.dirty = true;
            } else {
                st.record_meta(ino)?;
                self.note_change();
            }
        }
        self.node_attr(&st, ino)
    }

    pub fn statfs(&self) -> (u64, u64, u64) {
        let st = self.state();
        let files = st.tree.len() as u64;
        let dir = st.staging_dir.clone();
        drop(st);
        let (blocks, free) = disk_space(&dir).unwrap_or((1 << 30, 1 << 29));
        (blocks, free, files)
    }

    /// `user.ghostie.*`: what the index knows about this file, read-only.
    pub fn xattrs(&self, ino: Ino) -> FsResult<Vec<(String, Vec<u8>)>> {
        let st = self.state();
        let n = st.tree.get(ino).ok_or(Errno(libc::ENOENT))?;
        let Some(shown) = &n.shown else {
            return Ok(Vec::new());
        };
        let names = st.vault.device_names()?;
        let v = &shown.version;
        let device = names
            .get(&v.device)
            .cloned()
            .unwrap_or_else(|| v.device.as_str()[..8].to_owned());
        let mut out = vec![
            (
                "user.ghostie.version".to_owned(),
                format!("{}:{}", v.device, v.counter()).into_bytes(),
            ),
            ("user.ghostie.device".to_owned(), device.into_bytes()),
        ];
        if let Entry::File { content, .. } = &v.entry {
            if !st.staged.get(&ino).is_some_and(|s| s.dirty) {
                out.push((
                    "user.ghostie.sha256".to_owned(),
                    content.sha256.to_string().into_bytes(),
                ));
            }
        }
        let conflict = match &shown.sibling_of {
            Some(main) => format!("sibling of {main}"),
            None => {
                let sibs: Vec<String> = st
                    .tree
                    .siblings_of(&n.path)
                    .iter()
                    .filter_map(|i| st.tree.get(*i).map(|s| s.name().to_owned()))
                    .collect();
                if sibs.is_empty() {
                    "none".to_owned()
                } else {
                    format!("in conflict with {}", sibs.join(", "))
                }
            }
        };
        out.push(("user.ghostie.conflict".to_owned(), conflict.into_bytes()));
        Ok(out)
    }

    /// Applies a poll's result to the tree; returns what the kernel must forget.
    /// A few changed files are refreshed one by one; anything that may move folders
    /// (or too many paths to look at singly) rebuilds the tree from the whole
    /// namespace.
    pub(super) fn apply_remote(
        &self,
        changed: Option<&BTreeSet<String>>,
    ) -> Result<Vec<Invalidation>, SyncError> {
        let mut st = self.state();
        if let Some(paths) = changed {
            let scope: Vec<String> = paths.iter().cloned().collect();
            let ns = st.vault.namespace_of(&scope)?;
            let is_dir = |p: &String| {
                ns.get(p)
                    .is_some_and(|s| matches!(s.version.entry, crate::model::Entry::Dir { .. }))
                    || st
                        .tree
                        .ino_of(p)
                        .and_then(|i| st.tree.get(i))
                        .is_some_and(|n| n.kind == Kind::Dir)
            };
            if !scope.iter().any(is_dir) {
                let staged_paths = st.staged_paths();
                return Ok(st.tree.refresh(&scope, &ns, &|p| staged_paths.contains(p)));
            }
        }
        let ns = st.vault.namespace()?;
        let staged_paths = st.staged_paths();
        let inval = st.tree.apply(&ns, &|p| staged_paths.contains(p));
        drop(ns);
        return_freed_memory();
        Ok(inval)
    }

    pub fn root_ino(&self) -> Ino {
        ROOT
    }

    pub fn plain_cache_used(&self) -> u64 {
        lock(&self.plain).used()
    }

    /// Stops the worker (after its last upload attempt).
    pub fn shutdown(&self) {
        lock(&self.activity).shutdown = true;
        self.wake.notify_all();
    }
}

/// Hands the pages of a large temporary (a whole namespace) back to the system;
/// the allocator would otherwise keep them for a mount's whole life.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl State {
    pub(super) fn add_handle_raw(&mut self, ino: Ino, writable: bool) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, writable });
        fh
    }

    fn new_staging(&mut self, base: VersionVector) -> FsResult<Staged> {
        Ok(Staged {
            bytes: StagedBytes::default(),
            size: 0,
            dirty: false,
            opens: 0,
            base,
            unlinked: false,
            fill: None,
        })
    }

    pub(super) fn dirty_inos(&self) -> Vec<Ino> {
        self.staged
            .iter()
            .filter(|(_, s)| s.dirty && !s.unlinked)
            .map(|(i, _)| *i)
            .collect()
    }

    pub(super) fn is_staged(&self, ino: Ino) -> bool {
        self.staged.contains_key(&ino)
    }

    pub(super) fn is_dirty(&self, ino: Ino) -> bool {
        self.staged.get(&ino).is_some_and(|s| s.dirty)
    }

    pub(super) fn set_staged_base(&mut self, ino: Ino, base: VersionVector) {
        if let Some(s) = self.staged.get_mut(&ino) {
            s.base = base;
        }
    }

    /// Marks an open file as unlinked; true if it was open.
    pub(super) fn mark_unlinked(&mut self, n: &Node) -> bool {
        match self.staged.get_mut(&n.ino) {
            Some(s) => {
                s.unlinked = true;
                true
            }
            None => self.handles.values().any(|h| h.ino == n.ino),
        }
    }

    pub(super) fn keep_orphan(&mut self, n: Node) {
        self.orphans.insert(n.ino, n);
    }

    /// Files open for writing with changes not yet recorded.
    pub fn dirty_count(&self) -> usize {
        self.staged
            .values()
            .filter(|s| s.dirty && !s.unlinked)
            .count()
    }
}
