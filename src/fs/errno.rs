//! Every error the mount answers the kernel with comes through here: one table per
//! error type, so what a program sees for a given failure is decided in one place.
//! Every EIO is logged with its reason (the program only learns "I/O error").

use crate::sync::SyncError;

/// An errno for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type FsResult<T> = Result<T, Errno>;

impl Errno {
    pub const NOENT: Errno = Errno(libc::ENOENT);
    pub const EXIST: Errno = Errno(libc::EEXIST);
    pub const NOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const ISDIR: Errno = Errno(libc::EISDIR);
    pub const NOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const INVAL: Errno = Errno(libc::EINVAL);
    pub const NAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const BADF: Errno = Errno(libc::EBADF);
    pub const PERM: Errno = Errno(libc::EPERM);
    pub const LOOP: Errno = Errno(libc::ELOOP);
    pub const IO: Errno = Errno(libc::EIO);
    pub const NOTTY: Errno = Errno(libc::ENOTTY);
    pub const NODATA: Errno = Errno(libc::ENODATA);
    pub const NOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const RANGE: Errno = Errno(libc::ERANGE);
    pub const NXIO: Errno = Errno(libc::ENXIO);
    pub const STALE: Errno = Errno(libc::ESTALE);
}

/// The engine failed: the disk under the home (full, gone, unwritable) says so in
/// its own errno; anything else (the backend, damage, the index) is EIO.
impl From<SyncError> for Errno {
    fn from(e: SyncError) -> Self {
        let errno = match &e {
            SyncError::Io { source, .. } => from_io_kind(source),
            SyncError::Index(crate::sync::IndexError::DiskFull) => Errno(libc::ENOSPC),
            // The file went elsewhere a moment before this view of it caught up.
            SyncError::Index(crate::sync::IndexError::Gone(_)) => Errno::NOENT,
            _ => Errno::IO,
        };
        tracing::error!("{e} (answered {})", name(errno));
        errno
    }
}

/// A local file operation of the mount's own (staging) failed.
pub fn from_io(e: std::io::Error) -> Errno {
    let errno = from_io_kind(&e);
    tracing::error!("staging: {e} (answered {})", name(errno));
    errno
}

fn from_io_kind(e: &std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(code @ (libc::ENOSPC | libc::EDQUOT | libc::EROFS | libc::EACCES)) => Errno(code),
        Some(libc::ENOENT) | None => Errno::IO,
        Some(other) => Errno(other),
    }
}

fn name(e: Errno) -> &'static str {
    match e.0 {
        libc::EIO => "EIO",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::EROFS => "EROFS",
        libc::EACCES => "EACCES",
        _ => "an errno",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_enospc_and_everything_else_unknown_is_eio() {
        let full = SyncError::Io {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(Errno::from(full), Errno(libc::ENOSPC));
        // A folder of ours that vanished is our failure, not a missing file of theirs.
        let gone = SyncError::Io {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(Errno::from(gone), Errno::IO);
        assert_eq!(Errno::from(SyncError::Damaged("bad".into())), Errno::IO);
        let index_full = SyncError::Index(crate::sync::IndexError::DiskFull);
        assert_eq!(Errno::from(index_full), Errno(libc::ENOSPC));
        assert_eq!(
            from_io(std::io::Error::from_raw_os_error(libc::EDQUOT)),
            Errno(libc::EDQUOT)
        );
    }
}
