//! The only file that names fuser: kernel requests in, calls on [`MountFs`], replies
//! out. No filesystem logic lives here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno as KErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, Notifier, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::errno::Errno;
use super::mount_fs::{Attr, MountFs};
use super::special::{name_of, RenameMode};
use super::tree::Kind;
use super::worker::Invalidator;
use super::write::Times;

/// A log filter's directives that keep fuser's own noise out of the log: its session
/// warns at the end of every session someone else unmounted (`serve` says itself
/// whether the mount point is left mounted).
pub const QUIET_LOG: &str = "fuser::session=error";

fn kerr(e: Errno) -> KErrno {
    KErrno::from_i32(e.0)
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time(a.atime_ns),
        mtime: time(a.mtime_ns),
        ctime: time(a.ctime_ns),
        crtime: time(a.mtime_ns),
        kind: match a.kind {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
            Kind::Fifo => FileType::NamedPipe,
            Kind::Socket => FileType::Socket,
        },
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn name_str(name: &OsStr) -> Result<&str, KErrno> {
    name_of(name.as_bytes()).map_err(kerr)
}

fn ns_of(t: TimeOrNow) -> i64 {
    let at = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

const GEN: Generation = Generation(0);

struct Adapter {
    fs: Arc<MountFs>,
    ttl: Duration,
}

impl Adapter {
    fn entry(&self, reply: ReplyEntry, r: Result<Attr, Errno>) {
        match r {
            Ok(a) => reply.entry(&self.ttl, &file_attr(&a), GEN),
            Err(e) => reply.error(kerr(e)),
        }
    }
    fn empty(&self, reply: ReplyEmpty, r: Result<(), Errno>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(kerr(e)),
        }
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Listings return attributes with names (one round trip for `ls -l`), and the
        // kernel keeps pages across opens; remote changes are invalidated explicitly.
        // O_TRUNC is left to the kernel (a size change after the open) rather than
        // done atomically in open: only then does an O_TRUNC open of a running
        // program fail with ETXTBSY before any byte of it is touched.
        let _ = config.add_capabilities(
            InitFlags::FUSE_DO_READDIRPLUS
                | InitFlags::FUSE_READDIRPLUS_AUTO
                // Set-id bits are cleared by us on write, so the kernel need not ask
                // for security.capability before every write.
                | InitFlags::FUSE_HANDLE_KILLPRIV_V2
                | InitFlags::FUSE_CACHE_SYMLINKS
                | InitFlags::FUSE_PARALLEL_DIROPS,
        );
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match name_str(name) {
            Ok(n) => self.entry(reply, self.fs.lookup(parent.0, n)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(kerr(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let times = Times {
            atime_ns: atime.map(ns_of),
            mtime_ns: mtime.map(ns_of),
        };
        let r = self
            .fs
            .setattr_times(ino.0, mode, uid, gid, size, times, fh.map(|f| f.0));
        match r {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(kerr(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(kerr(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let n = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let r = self.fs.mknod(parent.0, n, mode & !umask);
        self.entry(reply, r)
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match name_str(name) {
            Ok(n) => self.entry(reply, self.fs.mkdir(parent.0, n, mode & !umask)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match name_str(name) {
            Ok(n) => self.empty(reply, self.fs.unlink(parent.0, n)),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match name_str(name) {
            Ok(n) => self.empty(reply, self.fs.rmdir(parent.0, n)),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (n, t) = match (name_str(link_name), name_str(target.as_os_str())) {
            (Ok(n), Ok(t)) => (n, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        self.entry(reply, self.fs.symlink(parent.0, n, t))
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (a, b) = match (name_str(name), name_str(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let mode = RenameMode {
            no_replace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            other: flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT),
        };
        self.empty(reply, self.fs.rename_as(parent.0, a, newparent.0, b, mode))
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match name_str(newname) {
            Ok(n) => self.entry(reply, self.fs.link(ino.0, newparent.0, n)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(kerr(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(kerr(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(ino.0, fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(kerr(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, self.fs.flush(ino.0, fh.0))
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, self.fs.release(ino.0, fh.0))
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, self.fs.fsync(ino.0, fh.0))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(kerr(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.listing(ino.0, fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(kerr(e)),
        };
        for (i, (a, name)) in entries.iter().enumerate().skip(offset as usize) {
            let kind = file_attr(a).kind;
            if reply.add(INodeNo(a.ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.fs.listing(ino.0, fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(kerr(e)),
        };
        for (i, (a, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(a.ino),
                (i + 1) as u64,
                name,
                &self.ttl,
                &file_attr(a),
                GEN,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Folder changes are recorded when they happen.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (total, free, files) = self.fs.statfs();
        let bsize = 4096u64;
        reply.statfs(
            total / bsize,
            free / bsize,
            free / bsize,
            files,
            u32::MAX as u64,
            bsize as u32,
            255,
            bsize as u32,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, self.fs.setxattr(name.as_bytes()))
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name.as_bytes()) {
            Err(e) => reply.error(kerr(e)),
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(kerr(Errno::RANGE)),
            Ok(v) => reply.data(&v),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Err(e) => reply.error(kerr(e)),
            Ok(list) if size == 0 => reply.size(list.len() as u32),
            Ok(list) if list.len() > size as usize => reply.error(kerr(Errno::RANGE)),
            Ok(list) => reply.data(&list),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, self.fs.removexattr(name.as_bytes()))
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        match self.fs.ioctl() {
            Ok(()) => reply.ioctl(0, &[]),
            Err(e) => reply.error(kerr(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions).
        self.empty(reply, self.fs.getattr(ino.0).map(|_| ()))
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let n = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.create(parent.0, n, mode & !umask, flags) {
            Ok((a, fh)) => reply.created(
                &self.ttl,
                &file_attr(&a),
                GEN,
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(kerr(e)),
        }
    }
}

struct KernelInvalidator(Notifier);

impl Invalidator for KernelInvalidator {
    fn inode(&self, ino: u64) {
        let _ = self.0.inval_inode(INodeNo(ino), 0, 0);
    }
    fn entry(&self, parent: u64, name: &str) {
        let _ = self.0.inval_entry(INodeNo(parent), OsStr::new(name));
    }
}

/// A mounted filesystem: `run` serves it until it is unmounted.
pub struct Mounted {
    session: fuser::Session<Adapter>,
}

impl Mounted {
    /// Serves requests until the filesystem is unmounted.
    pub fn run(self) -> std::io::Result<()> {
        self.session.run()
    }
}

/// Unmounts from another thread (a signal handler's, say).
pub struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    pub fn unmount(&mut self) -> std::io::Result<()> {
        self.0.unmount()
    }
}

/// Mounts `fs` at `mountpoint`. `options` are `-o` options: `allow_other`, `ro` and
/// the like, passed to the kernel.
pub fn mount(
    fs: Arc<MountFs>,
    mountpoint: &Path,
    options: &[String],
) -> std::io::Result<(Mounted, Box<dyn Invalidator>, Unmounter)> {
    let mut cfg = fuser::Config::default();
    let mut opts = vec![
        MountOption::FSName("ghostie-fs".into()),
        MountOption::Subtype("ghostie-fs".into()),
        MountOption::DefaultPermissions,
    ];
    for o in options {
        match o.as_str() {
            "allow_other" => cfg.acl = fuser::SessionACL::All,
            "allow_root" => cfg.acl = fuser::SessionACL::RootAndOwner,
            "ro" => opts.push(MountOption::RO),
            "rw" | "default_permissions" | "" => {}
            // The mount keeps atime itself (relatime, see `local.rs`); the kernel's
            // own flags only say so in /proc/mounts.
            "noatime" => {
                fs.noatime.store(true, std::sync::atomic::Ordering::Relaxed);
                opts.push(MountOption::NoAtime)
            }
            "nosuid" => opts.push(MountOption::NoSuid),
            "nodev" => opts.push(MountOption::NoDev),
            "noexec" => opts.push(MountOption::NoExec),
            "exec" => opts.push(MountOption::Exec),
            "suid" => opts.push(MountOption::Suid),
            "dev" => opts.push(MountOption::Dev),
            other => opts.push(MountOption::CUSTOM(other.to_owned())),
        }
    }
    cfg.mount_options = opts;
    // A read that waits for the network must not hold up every other request.
    cfg.n_threads = Some(
        std::env::var("GHOSTIE_FUSE_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
    );
    let ttl = fs.opts.ttl;
    let mut session = fuser::Session::new(Adapter { fs, ttl }, mountpoint, &cfg)?;
    let notifier = session.notifier();
    let unmounter = Unmounter(session.unmount_callable());
    Ok((
        Mounted { session },
        Box::new(KernelInvalidator(notifier)),
        unmounter,
    ))
}
