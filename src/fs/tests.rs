//! The filesystem driven without a kernel, as awslabs/mountpoint-s3 tests its own:
//! each device is a `MountFs` over one in-memory store, called as the FUSE binding
//! would call it. What only the kernel shows (page caches, real programs) is left to
//! the real mounts of `tests/mount.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::errno::Errno;
use super::tree::{Invalidation, Kind, ROOT};
use super::{MountFs, MountOptions};
use crate::backend::{BackendResult, MemoryStore, ObjectStore, SharedStore};
use crate::config::{BackendConfig, Home};
use crate::sync::{setup_vault, PassphraseSource, SetupRequest, SyncResult, Vault};

struct Pass;

impl PassphraseSource for Pass {
    fn existing(&self) -> SyncResult<zeroize::Zeroizing<String>> {
        Ok(zeroize::Zeroizing::new("unit test passphrase".into()))
    }
    fn new_passphrase(&self) -> SyncResult<zeroize::Zeroizing<String>> {
        self.existing()
    }
}

/// A device called `name` with its home under `dir`, mounted (without a kernel) on
/// the vault in `store`.
fn device(dir: &Path, name: &str, store: &SharedStore) -> Arc<MountFs> {
    let home = Home::new(dir.join(name));
    let req = SetupRequest {
        home: home.clone(),
        backend: BackendConfig::Local {
            path: "/unused".into(),
        },
        prefix: "ghostie".into(),
        device_name: name.into(),
        force: false,
    };
    setup_vault(&req, store.clone(), &Pass).expect("setup");
    let vault = Vault::open_with_store(home, store.clone(), Box::new(Pass)).expect("open");
    MountFs::new(vault, MountOptions::default()).expect("mount")
}

fn memory() -> SharedStore {
    Arc::new(MemoryStore::new())
}

/// The inode at `path`, walking from the root as the kernel's lookups do.
fn ino_of(fs: &MountFs, path: &str) -> Result<u64, Errno> {
    let mut ino = ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, part)?.ino;
    }
    Ok(ino)
}

fn parent_and_name(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// mkdir -p.
fn mkdirs(fs: &MountFs, dir: &str) -> u64 {
    let mut ino = ROOT;
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        ino = match fs.lookup(ino, part) {
            Ok(a) => a.ino,
            Err(_) => fs.mkdir(ino, part, 0o755).expect("mkdir").ino,
        };
    }
    ino
}

/// What a program does to write a whole file: create (or open and truncate), write,
/// close.
fn write_file(fs: &MountFs, path: &str, data: &[u8]) -> u64 {
    let (dir, name) = parent_and_name(path);
    let parent = mkdirs(fs, dir);
    let (ino, fh) = match fs.lookup(parent, name) {
        Ok(a) => {
            let fh = fs.open(a.ino, libc::O_WRONLY).expect("open");
            fs.setattr(a.ino, None, None, None, Some(0), None, Some(fh))
                .expect("truncate");
            (a.ino, fh)
        }
        Err(_) => {
            let (a, fh) = fs
                .create(parent, name, 0o644, libc::O_WRONLY)
                .expect("create");
            (a.ino, fh)
        }
    };
    assert_eq!(
        fs.write(ino, fh, 0, data).expect("write"),
        data.len() as u32
    );
    fs.flush(ino, fh).expect("close");
    fs.release(ino, fh).expect("release");
    ino
}

fn read_file(fs: &MountFs, path: &str) -> Result<Vec<u8>, Errno> {
    let ino = ino_of(fs, path)?;
    let fh = fs.open(ino, libc::O_RDONLY)?;
    let size = fs.getattr(ino)?.size;
    let data = fs.read(ino, 0, size as u32 + 1).map(|d| d.to_vec());
    fs.release(ino, fh)?;
    data
}

fn names(fs: &MountFs, dir: &str) -> Vec<String> {
    let ino = ino_of(fs, dir).expect("dir");
    fs.readdir(ino)
        .expect("readdir")
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| n != "." && n != "..")
        .collect()
}

#[test]
fn a_file_written_and_closed_is_recorded_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let ino = write_file(&a, "notes/first.json", b"{\"v\":1}");
    let attr = a.getattr(ino).unwrap();
    assert_eq!((attr.kind, attr.size, attr.mode), (Kind::File, 7, 0o644));
    assert_eq!(read_file(&a, "notes/first.json").unwrap(), b"{\"v\":1}");
    // Recorded before close returned: the folder and the file, waiting for upload.
    assert_eq!(a.vault.unpublished_count().unwrap(), 2);
    assert_eq!(names(&a, ""), vec!["notes"]);
    assert_eq!(names(&a, "notes"), vec!["first.json"]);
}

#[test]
fn lookups_readdir_and_refusals_answer_like_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    write_file(&a, "d/x.json", b"x");
    assert_eq!(a.lookup(ROOT, "nothing"), Err(Errno::NOENT));
    let d = ino_of(&a, "d").unwrap();
    assert_eq!(a.mkdir(ROOT, "d", 0o755).map(|_| ()), Err(Errno::EXIST));
    assert_eq!(a.rmdir(ROOT, "d"), Err(Errno::NOTEMPTY));
    assert_eq!(a.unlink(ROOT, "d"), Err(Errno::ISDIR));
    assert_eq!(a.rmdir(d, "x.json"), Err(Errno::NOTDIR));
    assert_eq!(a.rename(ROOT, "d", d, "inside", false), Err(Errno::INVAL));
    assert_eq!(a.mkdir(ROOT, "a/b", 0o755).map(|_| ()), Err(Errno::INVAL));
    assert_eq!(
        a.mknod(ROOT, "blk", libc::S_IFBLK | 0o644).map(|_| ()),
        Err(Errno::PERM)
    );
    assert_eq!(a.link(d, ROOT, "hard").map(|_| ()), Err(Errno::PERM));
    assert_eq!(a.open(d, libc::O_RDONLY), Err(Errno::ISDIR));
    let listing = a.readdir(d).unwrap();
    assert_eq!(listing[0].1, ".");
    assert_eq!(listing[1].1, "..");
    assert_eq!(listing[1].0.ino, ROOT);
    assert_eq!(a.getattr(d).unwrap().nlink, 2);
}

#[test]
fn rename_moves_a_folder_keeps_its_inodes_and_reaches_another_device() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    let x = write_file(&a, "d/sub/x.json", b"moved");
    let d = ino_of(&a, "d").unwrap();
    a.rename(ROOT, "d", ROOT, "e", false).unwrap();
    assert_eq!(
        ino_of(&a, "e/sub/x.json"),
        Ok(x),
        "open files follow the move"
    );
    assert_eq!(a.lookup(ROOT, "d"), Err(Errno::NOENT));
    assert_eq!(ino_of(&a, "e"), Ok(d));
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert_eq!(read_file(&b, "e/sub/x.json").unwrap(), b"moved");
    assert_eq!(b.lookup(ROOT, "d"), Err(Errno::NOENT));
    // A rename onto an existing file replaces it, everywhere.
    write_file(&a, "e/y.json", b"y");
    a.rename(
        x_parent(&a, "e/sub"),
        "x.json",
        ino_of(&a, "e").unwrap(),
        "y.json",
        false,
    )
    .unwrap();
    assert_eq!(read_file(&a, "e/y.json").unwrap(), b"moved");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert_eq!(read_file(&b, "e/y.json").unwrap(), b"moved");
    assert_eq!(names(&b, "e/sub"), Vec::<String>::new());
}

fn x_parent(fs: &MountFs, dir: &str) -> u64 {
    ino_of(fs, dir).unwrap()
}

#[test]
fn unlink_and_rmdir_reach_another_device() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    write_file(&a, "d/x.json", b"x");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert_eq!(read_file(&b, "d/x.json").unwrap(), b"x");
    let d = ino_of(&a, "d").unwrap();
    a.unlink(d, "x.json").unwrap();
    a.rmdir(ROOT, "d").unwrap();
    assert!(names(&a, "").is_empty());
    a.sync_once().unwrap();
    let inval = b.sync_once().unwrap();
    assert!(names(&b, "").is_empty());
    assert!(
        inval.contains(&Invalidation::Entry(ROOT, "d".into())),
        "{inval:?}"
    );
}

#[test]
fn a_remote_edit_is_applied_and_the_kernel_told_to_forget_the_old_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    write_file(&a, "x.json", b"one");
    a.sync_once().unwrap();
    let inval = b.sync_once().unwrap();
    assert!(inval.contains(&Invalidation::Entry(ROOT, "x.json".into())));
    let x = ino_of(&b, "x.json").unwrap();
    assert_eq!(read_file(&b, "x.json").unwrap(), b"one");
    write_file(&a, "x.json", b"two, longer");
    a.sync_once().unwrap();
    let inval = b.sync_once().unwrap();
    assert_eq!(
        inval,
        vec![Invalidation::Inode(x)],
        "an edit keeps the inode"
    );
    assert_eq!(b.getattr(x).unwrap().size, 11);
    assert_eq!(read_file(&b, "x.json").unwrap(), b"two, longer");
    // Nothing new: nothing to forget.
    assert!(b.sync_once().unwrap().is_empty());
}

#[test]
fn writing_into_a_file_fetches_its_old_content_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    write_file(&a, "x.json", b"hello world");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    let x = ino_of(&b, "x.json").unwrap();
    let fh = b.open(x, libc::O_WRONLY).unwrap();
    b.write(x, fh, 0, b"J").unwrap();
    b.release(x, fh).unwrap();
    assert_eq!(read_file(&b, "x.json").unwrap(), b"Jello world");
    b.sync_once().unwrap();
    a.sync_once().unwrap();
    assert_eq!(read_file(&a, "x.json").unwrap(), b"Jello world");
}

#[test]
fn truncate_and_chmod_of_a_closed_file_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    let x = write_file(&a, "x.json", b"0123456789");
    a.setattr(x, None, None, None, Some(4), None, None).unwrap();
    a.setattr(x, Some(0o600), None, None, None, None, None)
        .unwrap();
    assert_eq!(read_file(&a, "x.json").unwrap(), b"0123");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    let bx = ino_of(&b, "x.json").unwrap();
    assert_eq!(b.getattr(bx).unwrap().mode, 0o600);
    assert_eq!(read_file(&b, "x.json").unwrap(), b"0123");
    assert_eq!(
        a.setattr(x, None, Some(12345), None, None, None, None)
            .map(|_| ()),
        Err(Errno::PERM),
        "chown to another user"
    );
}

#[test]
fn concurrent_edits_become_siblings_and_removing_one_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    write_file(&a, "x.json", b"0");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    write_file(&a, "x.json", b"laptop");
    std::thread::sleep(Duration::from_millis(5));
    write_file(&b, "x.json", b"phone");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    a.sync_once().unwrap();
    for fs in [&a, &b] {
        assert_eq!(names(fs, ""), vec!["x.json", "x.json.conflict-laptop"]);
        assert_eq!(read_file(fs, "x.json").unwrap(), b"phone");
        assert_eq!(read_file(fs, "x.json.conflict-laptop").unwrap(), b"laptop");
    }
    b.unlink(ROOT, "x.json.conflict-laptop").unwrap();
    b.sync_once().unwrap();
    a.sync_once().unwrap();
    for fs in [&a, &b] {
        assert_eq!(names(fs, ""), vec!["x.json"]);
        assert_eq!(read_file(fs, "x.json").unwrap(), b"phone");
    }
}

/// A store whose requests wait while its gate is closed, counting those that wait.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    waiting: AtomicUsize,
}

#[derive(Debug)]
struct GatedStore {
    inner: MemoryStore,
    gate: Arc<Gate>,
    armed: AtomicBool,
}

impl GatedStore {
    fn pass(&self) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let mut closed = self.gate.closed.lock().unwrap();
        if *closed {
            self.gate.waiting.fetch_add(1, Ordering::SeqCst);
        }
        while *closed {
            closed = self.gate.opened.wait(closed).unwrap();
        }
    }
}

impl ObjectStore for GatedStore {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.pass();
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.pass();
        self.inner.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.pass();
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> BackendResult<Vec<u8>> {
        self.pass();
        self.inner.get_range(key, range)
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        self.pass();
        self.inner.list(prefix, start_after)
    }
    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        self.pass();
        self.inner.list_dirs(prefix)
    }
    fn delete(&self, key: &str) -> BackendResult<()> {
        self.pass();
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        "gated memory".into()
    }
}

/// Waits (up to a minute) for `cond`.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_stalled_backend_never_holds_up_local_work() {
    let dir = tempfile::tempdir().unwrap();
    let gated = Arc::new(GatedStore {
        inner: MemoryStore::new(),
        gate: Arc::new(Gate::default()),
        armed: AtomicBool::new(false),
    });
    let store: SharedStore = gated.clone();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    write_file(&a, "cached.json", b"cached");
    write_file(&b, "cold.json", b"never read on the laptop yet");
    b.sync_once().unwrap();
    a.sync_once().unwrap();
    assert_eq!(read_file(&a, "cached.json").unwrap(), b"cached");
    write_file(&b, "later.json", b"published while the laptop is stalled");
    b.sync_once().unwrap();
    write_file(&a, "queued.json", b"waits for upload");

    *gated.gate.closed.lock().unwrap() = true;
    gated.armed.store(true, Ordering::SeqCst);
    // A publish, a poll and a cold read, each stuck in the backend.
    let stalled: Vec<std::thread::JoinHandle<bool>> = vec![
        std::thread::spawn({
            let a = a.clone();
            move || a.publish_queue().is_ok()
        }),
        std::thread::spawn({
            let a = a.clone();
            move || {
                a.poll_vault()
                    .and_then(|r| a.apply_remote(r.changed_paths.as_ref()))
                    .is_ok()
            }
        }),
        std::thread::spawn({
            let a = a.clone();
            move || read_file(&a, "cold.json").as_deref() == Ok(b"never read on the laptop yet")
        }),
    ];
    assert!(
        eventually(|| gated.gate.waiting.load(Ordering::SeqCst) >= 3),
        "the three requests never reached the backend"
    );

    // Local work goes on meanwhile: stat, ls -l, cat of a cached file, mkdir, and a
    // new file written and closed.
    let local = std::thread::spawn({
        let a = a.clone();
        move || {
            let x = ino_of(&a, "cached.json").unwrap();
            a.getattr(x).unwrap();
            assert_eq!(names(&a, "").len(), 3);
            assert_eq!(read_file(&a, "cached.json").unwrap(), b"cached");
            a.mkdir(ROOT, "made-while-stalled", 0o755).unwrap();
            write_file(&a, "made-while-stalled/new.json", b"new");
        }
    });
    assert!(
        eventually(|| local.is_finished()),
        "local work waited for the stalled backend"
    );
    local.join().unwrap();
    assert!(
        stalled.iter().all(|t| !t.is_finished()),
        "the stalled requests finished before the gate opened"
    );

    *gated.gate.closed.lock().unwrap() = false;
    gated.gate.opened.notify_all();
    for t in stalled {
        assert!(t.join().unwrap(), "a stalled request failed");
    }
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert_eq!(
        read_file(&b, "made-while-stalled/new.json").unwrap(),
        b"new"
    );
    assert_eq!(read_file(&b, "queued.json").unwrap(), b"waits for upload");
    assert_eq!(
        read_file(&a, "later.json").unwrap(),
        b"published while the laptop is stalled"
    );
}

#[test]
fn a_cold_read_brings_in_what_was_sealed_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    for i in 0..50 {
        write_file(
            &a,
            &format!("m{i:02}.json"),
            format!("memory {i}").as_bytes(),
        );
    }
    a.sync_once().unwrap();
    let b = device(dir.path(), "phone", &store);
    // Read by name, in no listed order, without listing the folder first.
    assert_eq!(read_file(&b, "m37.json").unwrap(), b"memory 37");
    let cached = b.plain_cache_used();
    assert!(
        cached >= 50 * 8,
        "one miss cached only {cached} bytes of its pack"
    );
    for i in (0..50).rev() {
        let ino = ino_of(&b, &format!("m{i:02}.json")).unwrap();
        let c = b
            .state()
            .tree
            .get(ino)
            .and_then(|n| n.content().cloned())
            .unwrap();
        assert!(b.reading.is_cached(&c), "m{i:02}.json was not brought in");
    }
}

/// A store whose ranged reads take a while, counting how many run at once.
#[derive(Debug, Default)]
struct SlowReads {
    inner: MemoryStore,
    now: AtomicUsize,
    most: AtomicUsize,
    ranged: AtomicUsize,
}

impl ObjectStore for SlowReads {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.inner.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> BackendResult<Vec<u8>> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        let r = self.inner.get_range(key, range);
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.ranged.fetch_add(1, Ordering::SeqCst);
        r
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        self.inner.list(prefix, start_after)
    }
    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        self.inner.list_dirs(prefix)
    }
    fn delete(&self, key: &str) -> BackendResult<()> {
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        "slow memory".into()
    }
}

#[test]
fn a_sequential_read_keeps_a_few_windows_in_flight_ahead_of_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(SlowReads::default());
    let store: SharedStore = slow.clone();
    let a = device(dir.path(), "laptop", &store);
    let big: Vec<u8> = (0..40u32 << 20).map(|i| (i % 251) as u8).collect();
    write_file(&a, "big.bin", &big);
    a.sync_once().unwrap();
    let b = device(dir.path(), "phone", &store);
    slow.most.store(0, Ordering::SeqCst);
    slow.ranged.store(0, Ordering::SeqCst);
    let x = ino_of(&b, "big.bin").unwrap();
    let fh = b.open(x, libc::O_RDONLY).unwrap();
    let mut back = Vec::with_capacity(big.len());
    while back.len() < big.len() {
        let part = b.read(x, back.len() as u64, 128 * 1024).unwrap().to_vec();
        assert!(!part.is_empty());
        back.extend_from_slice(&part);
    }
    b.release(x, fh).unwrap();
    assert!(back == big, "the bytes read back differ");
    let (most, ranged) = (
        slow.most.load(Ordering::SeqCst),
        slow.ranged.load(Ordering::SeqCst),
    );
    assert!(most >= 3, "at most {most} requests were in flight");
    assert!(most <= 6, "{most} requests in flight: unbounded");
    assert!(ranged <= 40, "{ranged} ranged requests for 40 MiB");
}

/// The same device mounted again (after an unmount): a new `MountFs` over its home.
fn remount(dir: &Path, name: &str, store: &SharedStore, old: Arc<MountFs>) -> Arc<MountFs> {
    drop(old);
    let home = Home::new(dir.join(name));
    let vault = Vault::open_with_store(home, store.clone(), Box::new(Pass)).expect("open");
    MountFs::new(vault, MountOptions::default()).expect("mount")
}

#[test]
fn mknod_of_a_regular_file_makes_an_empty_recorded_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    let attr = a.mknod(ROOT, "empty", libc::S_IFREG | 0o640).unwrap();
    assert_eq!((attr.kind, attr.size, attr.mode), (Kind::File, 0, 0o640));
    assert_eq!(
        a.mknod(ROOT, "empty", libc::S_IFREG | 0o640).map(|_| ()),
        Err(Errno::EXIST)
    );
    assert_eq!(
        a.mknod(ROOT, "dev", libc::S_IFCHR | 0o640).map(|_| ()),
        Err(Errno::PERM),
        "device nodes stay refused"
    );
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert_eq!(read_file(&b, "empty").unwrap(), b"");
}

#[test]
fn fifos_and_sockets_live_on_this_device_only_and_survive_a_remount() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    let d = mkdirs(&a, "run");
    let fifo = a.mknod(d, "p.fifo", libc::S_IFIFO | 0o600).unwrap();
    let sock = a.mknod(d, "s.sock", libc::S_IFSOCK | 0o644).unwrap();
    assert_eq!((fifo.kind, fifo.mode, fifo.nlink), (Kind::Fifo, 0o600, 1));
    assert_eq!(sock.kind, Kind::Socket);
    // Only the folder is a version; the fifo and the socket are not.
    assert_eq!(a.vault.unpublished_count().unwrap(), 1);
    a.setattr(fifo.ino, Some(0o640), None, None, None, None, None)
        .unwrap();
    a.rename(d, "p.fifo", d, "q.fifo", false).unwrap();
    assert_eq!(a.vault.unpublished_count().unwrap(), 1);
    assert_eq!(a.local_only(), vec!["run/q.fifo", "run/s.sock"]);
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert!(
        names(&b, "run").is_empty(),
        "another device never sees them"
    );
    // A socket renamed onto a file replaces it, everywhere.
    write_file(&a, "run/f.json", b"f");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert_eq!(names(&b, "run"), vec!["f.json"]);
    a.rename(d, "s.sock", d, "f.json", false).unwrap();
    a.rename(d, "f.json", d, "s.sock", false).unwrap();
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert!(names(&b, "run").is_empty());

    let a = remount(dir.path(), "laptop", &store, a);
    let q = a.lookup(ino_of(&a, "run").unwrap(), "q.fifo").unwrap();
    assert_eq!(
        (q.kind, q.mode),
        (Kind::Fifo, 0o640),
        "kept across a remount"
    );
    assert_eq!(names(&a, "run"), vec!["q.fifo", "s.sock"]);
    let d = ino_of(&a, "run").unwrap();
    a.unlink(d, "s.sock").unwrap();
    let a = remount(dir.path(), "laptop", &store, a);
    assert_eq!(names(&a, "run"), vec!["q.fifo"], "an unlink is kept too");

    // Another device's file at the same path takes the name.
    write_file(&b, "run/q.fifo", b"a file");
    b.sync_once().unwrap();
    a.sync_once().unwrap();
    assert_eq!(read_file(&a, "run/q.fifo").unwrap(), b"a file");
    assert!(a.local_only().is_empty());
    let a = remount(dir.path(), "laptop", &store, a);
    assert_eq!(
        a.lookup(ino_of(&a, "run").unwrap(), "q.fifo").unwrap().kind,
        Kind::File
    );
}

#[test]
fn atime_follows_relatime_is_set_by_utimens_and_kept_locally() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    let x = write_file(&a, "x.json", b"x");
    let before = a.getattr(x).unwrap();
    read_file(&a, "x.json").unwrap();
    let after = a.getattr(x).unwrap();
    assert!(
        after.atime_ns > before.mtime_ns,
        "the first read after a write moves atime"
    );
    read_file(&a, "x.json").unwrap();
    assert_eq!(
        a.getattr(x).unwrap().atime_ns,
        after.atime_ns,
        "a later read leaves it (relatime)"
    );
    // Reads' times are written in batches, by the worker (here by hand).
    a.flush_atimes();
    let a = remount(dir.path(), "laptop", &store, a);
    let x = ino_of(&a, "x.json").unwrap();
    assert_eq!(a.getattr(x).unwrap().atime_ns, after.atime_ns);
    let pending = a.vault.unpublished_count().unwrap();
    let old = 1_000_000_000i64 * 1_000_000_000;
    let times = super::Times {
        atime_ns: Some(old),
        mtime_ns: None,
    };
    a.setattr_times(x, None, None, None, None, times, None)
        .unwrap();
    assert_eq!(a.getattr(x).unwrap().atime_ns, old);
    assert_eq!(
        a.vault.unpublished_count().unwrap(),
        pending,
        "an access time is never a version"
    );
    let a = remount(dir.path(), "laptop", &store, a);
    let x = ino_of(&a, "x.json").unwrap();
    assert_eq!(a.getattr(x).unwrap().atime_ns, old, "kept across a remount");
    // A day old: the next read moves it.
    read_file(&a, "x.json").unwrap();
    assert!(a.getattr(x).unwrap().atime_ns > old);
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    let bx = ino_of(&b, "x.json").unwrap();
    assert_ne!(
        b.getattr(bx).unwrap().atime_ns,
        old,
        "atime is this device's own"
    );
}

#[test]
fn hard_links_share_an_inode_here_and_are_separate_files_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    let x = write_file(&a, "x.json", b"one");
    let d = mkdirs(&a, "d");
    let l = a.link(x, d, "y.json").unwrap();
    assert_eq!((l.ino, l.nlink), (x, 2));
    assert_eq!(ino_of(&a, "d/y.json"), Ok(x), "both names are one inode");
    assert_eq!(a.getattr(x).unwrap().nlink, 2);
    assert_eq!(a.link(x, d, "y.json").map(|_| ()), Err(Errno::EXIST));
    // A write through one name is read through the other.
    write_file(&a, "d/y.json", b"two, written via y");
    assert_eq!(read_file(&a, "x.json").unwrap(), b"two, written via y");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    let (bx, by) = (
        ino_of(&b, "x.json").unwrap(),
        ino_of(&b, "d/y.json").unwrap(),
    );
    assert_ne!(bx, by, "another device sees two files");
    assert_eq!(b.getattr(bx).unwrap().nlink, 1);
    assert_eq!(read_file(&b, "x.json").unwrap(), b"two, written via y");
    assert_eq!(read_file(&b, "d/y.json").unwrap(), b"two, written via y");

    let a = remount(dir.path(), "laptop", &store, a);
    let x = ino_of(&a, "x.json").unwrap();
    assert_eq!(ino_of(&a, "d/y.json"), Ok(x), "the link survives a remount");
    assert_eq!(a.getattr(x).unwrap().nlink, 2);
    // Unlinking one name keeps the other, with the same inode.
    a.unlink(ROOT, "x.json").unwrap();
    assert_eq!(ino_of(&a, "d/y.json"), Ok(x));
    assert_eq!(a.getattr(x).unwrap().nlink, 1);
    assert_eq!(read_file(&a, "d/y.json").unwrap(), b"two, written via y");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert_eq!(b.lookup(ROOT, "x.json").map(|_| ()), Err(Errno::NOENT));
    assert_eq!(read_file(&b, "d/y.json").unwrap(), b"two, written via y");
}

#[test]
fn a_name_another_device_changes_leaves_the_hard_link() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    let x = write_file(&a, "x", b"same");
    a.link(x, ROOT, "y").unwrap();
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    write_file(&b, "y", b"changed on the phone");
    b.sync_once().unwrap();
    a.sync_once().unwrap();
    assert_eq!(read_file(&a, "x").unwrap(), b"same");
    assert_eq!(read_file(&a, "y").unwrap(), b"changed on the phone");
    assert_ne!(ino_of(&a, "y"), Ok(x));
    assert_eq!(a.getattr(x).unwrap().nlink, 1);
}

#[test]
fn removing_the_first_name_of_a_hard_link_keeps_the_inode_at_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    let x = write_file(&a, "x", b"kept");
    a.link(x, ROOT, "y").unwrap();
    a.link(x, ROOT, "z").unwrap();
    assert_eq!(a.getattr(x).unwrap().nlink, 3);
    a.unlink(ROOT, "x").unwrap();
    assert_eq!(ino_of(&a, "y"), Ok(x), "the kernel's inode lives on");
    assert_eq!(ino_of(&a, "z"), Ok(x));
    assert_eq!(a.getattr(x).unwrap().nlink, 2);
    // rename(2) between two names of one file does nothing.
    a.rename(ROOT, "y", ROOT, "z", false).unwrap();
    assert_eq!(names(&a, ""), vec!["y", "z"]);
    write_file(&a, "z", b"written via z");
    assert_eq!(read_file(&a, "y").unwrap(), b"written via z");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert_eq!(names(&b, ""), vec!["y", "z"]);
    assert_eq!(read_file(&b, "y").unwrap(), b"written via z");
}

/// Makes the queue folder unusable for new packs (as root, permissions would not
/// stop us): a regular file where the folder should be.
fn block_queue(home: &Path) {
    let queue = home.join("sync/queue");
    std::fs::remove_dir_all(&queue).unwrap();
    std::fs::write(&queue, b"not a folder").unwrap();
}

fn unblock_queue(home: &Path) {
    std::fs::remove_file(home.join("sync/queue")).unwrap();
}

#[test]
fn a_close_that_cannot_be_recorded_keeps_its_bytes_until_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    write_file(&a, "before.json", b"before");
    a.sync_once().unwrap();
    block_queue(&dir.path().join("laptop"));

    let (attr, fh) = a.create(ROOT, "kept.json", 0o644, libc::O_WRONLY).unwrap();
    a.write(attr.ino, fh, 0, b"kept later").unwrap();
    assert!(a.flush(attr.ino, fh).is_err(), "close says it was not kept");
    assert!(a.release(attr.ino, fh).is_err());
    assert!(a.has_unsaved());
    assert_eq!(read_file(&a, "kept.json").unwrap(), b"kept later");
    a.save_unsaved();
    assert!(a.has_unsaved(), "still blocked");

    unblock_queue(&dir.path().join("laptop"));
    a.save_unsaved();
    assert!(!a.has_unsaved());
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    assert_eq!(read_file(&b, "kept.json").unwrap(), b"kept later");

    // Removing such a file drops its bytes with it, and nothing waits for them.
    a.sync_once().unwrap();
    block_queue(&dir.path().join("laptop"));
    let (attr, fh) = a
        .create(ROOT, "dropped.json", 0o644, libc::O_WRONLY)
        .unwrap();
    a.write(attr.ino, fh, 0, b"dropped").unwrap();
    assert!(a.release(attr.ino, fh).is_err());
    assert!(a.has_unsaved());
    a.unlink(ROOT, "dropped.json").unwrap();
    assert!(!a.has_unsaved());
    assert_eq!(a.dirty_count(), 0);
    let st = a.state();
    assert!(
        st.files.staged.is_empty(),
        "the staged bytes were left behind"
    );
    assert!(st.files.orphans.is_empty(), "no handle holds the node");
}

#[test]
fn a_read_of_a_repacked_blob_whose_old_pack_is_gone_reads_it_where_it_moved() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    let body = |i: usize, v: usize| {
        format!(
            "{{\"memory\":{i},\"v\":{v},\"pad\":\"{}\"}}",
            "x".repeat(4000)
        )
    };
    for i in 0..40 {
        write_file(&a, &format!("m{i:02}.json"), body(i, 0).as_bytes());
    }
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    let first_packs: Vec<String> = store
        .list("ghostie/", None)
        .unwrap()
        .into_iter()
        .filter(|k| k.contains("/memories/"))
        .collect();
    for i in 0..36 {
        write_file(&a, &format!("m{i:02}.json"), body(i, 1).as_bytes());
    }
    a.sync_once().unwrap();
    let options = crate::sync::GcOptions {
        grace: std::time::Duration::ZERO,
        ..crate::sync::GcOptions::default()
    };
    assert_eq!(a.vault.collect_garbage(&options).unwrap().repacked.packs, 1);
    // The phone's index knows of the move; its tree not yet, and the old pack
    // went in between.
    b.vault.poll(&crate::sync::NoProgress).unwrap();
    for k in &first_packs {
        store.delete(k).unwrap();
    }
    let x = ino_of(&b, "m39.json").unwrap();
    let fh = b.open(x, libc::O_RDONLY).unwrap();
    let data = b.read(x, 0, 8192).unwrap();
    assert_eq!(data.to_vec(), body(39, 0).as_bytes());
    b.release(x, fh).unwrap();
}

#[test]
fn a_read_of_a_reclaimed_version_says_stale_and_of_a_lost_one_eio() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    write_file(&a, "x.json", b"one");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    let first_packs: Vec<String> = store
        .list("ghostie/", None)
        .unwrap()
        .into_iter()
        .filter(|k| k.contains("/memories/"))
        .collect();
    write_file(&a, "x.json", b"two, longer");
    a.sync_once().unwrap();
    // The phone's index knows of the newer version; its tree not yet, and the
    // laptop reclaimed the old pack in between.
    b.vault.poll(&crate::sync::NoProgress).unwrap();
    for k in &first_packs {
        store.delete(k).unwrap();
    }
    let x = ino_of(&b, "x.json").unwrap();
    let fh = b.open(x, libc::O_RDONLY).unwrap();
    assert_eq!(b.read(x, 0, 64).err(), Some(Errno::STALE));
    b.release(x, fh).unwrap();
    // Once applied, the newer version reads.
    b.apply_remote(None).unwrap();
    assert_eq!(read_file(&b, "x.json").unwrap(), b"two, longer");

    // A pack missing while its version is still the newest is damage: EIO.
    write_file(&a, "y.json", b"lost");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    let y_pack = store
        .list("ghostie/", None)
        .unwrap()
        .into_iter()
        .rfind(|k| k.contains("/memories/") && !first_packs.contains(k))
        .unwrap();
    store.delete(&y_pack).unwrap();
    assert_eq!(read_file(&b, "y.json").err(), Some(Errno::IO));
}

#[test]
fn a_rename_from_a_view_a_moment_old_never_names_contents_deleted_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let a = device(dir.path(), "laptop", &store);
    let b = device(dir.path(), "phone", &store);
    write_file(&a, "x.json", b"one");
    write_file(&a, "kept.json", b"two");
    a.sync_once().unwrap();
    b.sync_once().unwrap();
    a.unlink(ROOT, "x.json").unwrap();
    a.sync_once().unwrap();
    // The phone's index knows x is gone; its tree not yet. A rename there would
    // make a new version name a blob its owner may reclaim at once.
    b.vault.poll(&crate::sync::NoProgress).unwrap();
    assert_eq!(
        b.rename(ROOT, "x.json", ROOT, "y.json", false),
        Err(Errno::NOENT)
    );
    // The refused rename asks the poller to rebuild the view from the index, where
    // neither name holds anything.
    assert!(b.activity.lock().unwrap().view_stale);
    b.apply_remote(None).unwrap();
    assert_eq!(ino_of(&b, "x.json"), Err(Errno::NOENT));
    assert_eq!(ino_of(&b, "y.json"), Err(Errno::NOENT));
    // A file still current renames as ever, its contents kept.
    b.rename(ROOT, "kept.json", ROOT, "moved.json", false)
        .unwrap();
    b.sync_once().unwrap();
    a.sync_once().unwrap();
    assert_eq!(read_file(&a, "moved.json").unwrap(), b"two");
}
