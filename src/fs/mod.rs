//! Front-end 2, the mount (DESIGN §7): a FUSE filesystem over the memories folder.
//! Reads fetch and decrypt on demand; writes are staged, sealed when they close and
//! queued in the index; an uploader publishes the queue and a poller looks for other
//! devices' changes, then invalidates what the kernel cached of what they changed. It speaks to the engine
//! through `sync::Vault` alone.
//!
//! - `mount_fs`: the filesystem type, its state and the read-only operations.
//! - `write`: files open for writing, from open to the close that records them.
//! - `changes`: mkdir, symlink, unlink, rmdir, rename and chmod, told to the engine.
//! - `read`: reads, the memory cache, prefetch and read-ahead.
//! - `remote`: other devices' changes applied to the tree.
//! - `special`: xattrs, hard links, fifos, sockets, device nodes, ioctls and names:
//!   each answer decided.
//! - `local`: what the mount keeps on this device only (atime, fifos and sockets,
//!   hard-link groups), never a version.
//! - `tree`: the inode table, a pure function of the namespace plus local changes;
//!   `tree/links` maps the names of hard-linked files to one inode.
//! - `open_files`, `staging`, `plain_cache`: the tables and buffers behind them.
//! - `errno`: the errno type, and the one table from engine and I/O errors to errnos.
//! - `worker`: the uploader and the poller, in the background.
//! - `status`: the files other commands read to see a running mount.
//! - `fuse`: the only file that binds fuser.

// A build without FUSE keeps the mount's machinery compiled (and its tests running)
// but has nothing that serves it.
#![cfg_attr(not(feature = "fuse"), allow(dead_code))]

mod changes;
mod errno;
#[cfg(feature = "fuse")]
mod fuse;
mod local;
mod mount_fs;
mod open_files;
mod pacer;
mod plain_cache;
mod read;
mod remote;
mod special;
mod staging;
pub mod status;
pub mod tree;
mod worker;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use errno::{Errno, FsResult};
#[cfg(feature = "fuse")]
pub use fuse::QUIET_LOG;
/// Without FUSE there is no FUSE library to keep quiet.
#[cfg(not(feature = "fuse"))]
pub const QUIET_LOG: &str = "";
pub use mount_fs::{Attr, MountFs, MountOptions};
pub use read::ReadData;
pub use status::{is_ghostie_mount, is_mounted, MountHome, MountStatus};
pub use tree::Invalidation;
pub use worker::Invalidator;
pub use write::Times;

use crate::sync::{SyncError, Vault};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("cannot mount at {}: {source}", path.display())]
    Fuse {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Blocks the signals that end a mount in every thread started from here on, so one
/// thread can wait for them and unmount cleanly. Call it before anything starts
/// threads (an S3 client's runtime): a thread that left SIGTERM unblocked would take
/// it and end the process with the mount still in place.
pub fn block_exit_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a set we own; pthread_sigmask changes only this
    // thread's mask (threads spawned later inherit it).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Undoes [`block_exit_signals`] for this thread only (threads started meanwhile keep
/// them blocked): a prompt before the mount must still end on Ctrl-C.
pub fn unblock_exit_signals(set: &libc::sigset_t) {
    // SAFETY: changes only this thread's mask, with a set built by block_exit_signals.
    unsafe {
        libc::pthread_sigmask(libc::SIG_UNBLOCK, set, std::ptr::null_mut());
    }
}

/// Whether this build can mount (cargo's `fuse` feature).
pub const CAN_MOUNT: bool = cfg!(feature = "fuse");

/// Mounts the vault at `mountpoint` and serves it in this process until it is
/// unmounted (by `ghostie-fs unmount`, `fusermount3 -u`, SIGTERM or SIGINT).
/// `ready` runs once the mount is usable.
#[cfg(feature = "fuse")]
pub fn serve(
    vault: Vault,
    mountpoint: &Path,
    opts: MountOptions,
    mount_options: &[String],
    ready: impl FnOnce(),
) -> Result<(), MountError> {
    let signals = block_exit_signals();
    let home = vault.home().clone();
    let fs = MountFs::new(vault, opts)?;
    // As the kernel will list it (fuser mounts the resolved path), while it still
    // resolves.
    let listed_as = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let (mounted, inval, mut unmounter) = fuse::mount(fs.clone(), mountpoint, mount_options)
        .map_err(|source| MountError::Fuse {
            path: mountpoint.to_path_buf(),
            source,
        })?;
    MountHome::mark(&home, mountpoint).map_err(SyncError::io(home.sync_dir()))?;
    let status = MountStatus {
        pid: std::process::id(),
        mountpoint: mountpoint.to_path_buf(),
        started_ms: crate::now_ms(),
        backend_reachable: true,
        cache_limit: fs.opts.cache_limit,
        poll_ms: fs.opts.poll.as_millis() as u64,
        ..Default::default()
    };
    let _ = status.write(&home);
    let worker = worker::spawn(
        fs.clone(),
        inval,
        worker::WorkerConfig {
            home: home.clone(),
            status,
        },
    )
    .map_err(SyncError::io(home.sync_dir()))?;
    let _ = std::thread::Builder::new()
        .name("ghostie-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on the set blocked above; writes only `sig`.
            if unsafe { libc::sigwait(&signals, &mut sig) } == 0 {
                tracing::info!("signal {sig}: unmounting");
                if let Err(e) = unmounter.unmount() {
                    tracing::error!("cannot unmount: {e}");
                }
            }
        });
    ready();
    let served = mounted.run();
    // fuser unmounts once more when its session ends, and warns when someone else
    // (`ghostie-fs unmount`, fusermount3 -u) already has: the log is filtered of
    // that warning, and says here what the mount point really is now.
    if is_ghostie_mount(&listed_as) {
        tracing::warn!(
            "{} is still mounted after the mount ended; unmount it with 'ghostie-fs unmount'",
            mountpoint.display()
        );
    } else {
        tracing::info!("unmounted {}", mountpoint.display());
    }
    fs.shutdown();
    worker.join();
    MountStatus::remove(&home);
    served.map_err(|source| MountError::Fuse {
        path: mountpoint.to_path_buf(),
        source,
    })
}

/// A build without FUSE (Termux, containers) cannot mount: the folder commands do the
/// same work there.
#[cfg(not(feature = "fuse"))]
pub fn serve(
    _vault: Vault,
    mountpoint: &Path,
    _opts: MountOptions,
    _mount_options: &[String],
    _ready: impl FnOnce(),
) -> Result<(), MountError> {
    Err(MountError::Fuse {
        path: mountpoint.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this ghostie-fs was built without FUSE (cargo's 'fuse' feature)",
        ),
    })
}
