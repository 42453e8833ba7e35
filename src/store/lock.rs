//! One command at a time per home: a cron `sync` and a hand-typed `push` must not
//! interleave their transactions and uploads. An advisory `flock` on `sync/lock`,
//! released by the kernel if the process dies.
//!
//! The holder writes into the file it locks who it is: its command, process id and
//! when it took the lock. `status` never waits for the lock; it tries a shared lock
//! without blocking and, when that fails, reads the holder's note to say what is
//! running. The note is trusted only while the lock is held: a holder killed with
//! SIGKILL leaves its note behind, but the kernel releases its lock, and a lock that
//! can be taken means nobody holds the home, whatever the file says.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// What this process is doing, as others see it while it holds a home.
static COMMAND: OnceLock<String> = OnceLock::new();

/// Names what this process does (`push`, `mount`), for the note a holder leaves.
/// The first name given stays.
pub fn name_this_process(command: &str) {
    let _ = COMMAND.set(command.to_owned());
}

/// The note of the process holding a home. Every field may be missing: the note of a
/// holder that has just taken the lock may not be written yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// When it took the lock, in milliseconds since the epoch.
    #[serde(default)]
    pub since_ms: Option<i64>,
}

#[derive(Debug)]
pub struct HomeLock {
    file: File,
}

fn flock(file: &File, how: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a valid, owned file descriptor; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), how) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl HomeLock {
    /// Takes the lock, waiting for another command on this home to finish, and
    /// leaves the note that says who holds it.
    pub fn acquire(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        flock(&file, libc::LOCK_EX)?;
        let note = Holder {
            command: Some(
                COMMAND
                    .get()
                    .cloned()
                    .unwrap_or_else(|| "ghostie-fs".to_owned()),
            ),
            pid: Some(std::process::id()),
            since_ms: Some(crate::now_ms()),
        };
        // The note is a courtesy for `status`: a home that cannot hold it still works.
        if let Ok(bytes) = serde_json::to_vec(&note) {
            let _ = file
                .write_all_at(&bytes, 0)
                .and_then(|()| file.set_len(bytes.len() as u64));
        }
        Ok(Self { file })
    }

    /// Who holds the lock at `path`, without waiting: `None` when nobody does (a
    /// holder that died holds nothing). A holder whose note cannot be read is
    /// returned with every field missing.
    pub fn holder(path: &Path) -> io::Result<Option<Holder>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
            // Free: the shared lock goes with the file, at once.
            Ok(()) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
            Err(e) => return Err(e),
        }
        let mut text = String::new();
        if file.read_to_string(&mut text).is_err() {
            return Ok(Some(Holder::default()));
        }
        Ok(Some(serde_json::from_str(&text).unwrap_or_default()))
    }
}

impl Drop for HomeLock {
    fn drop(&mut self) {
        // Still held here: nobody reads a half-removed note as current.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_named_while_it_holds_and_forgotten_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        assert_eq!(HomeLock::holder(&path).unwrap(), None, "no file, no holder");
        let lock = HomeLock::acquire(&path).unwrap();
        let h = HomeLock::holder(&path).unwrap().expect("held");
        assert_eq!(h.pid, Some(std::process::id()));
        assert!(h.command.is_some());
        assert!(h.since_ms.is_some_and(|t| t > 0));
        drop(lock);
        assert_eq!(HomeLock::holder(&path).unwrap(), None);
    }

    #[test]
    fn a_note_left_behind_means_nothing_once_the_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, br#"{"command":"push","pid":1,"since_ms":5}"#).unwrap();
        assert_eq!(HomeLock::holder(&path).unwrap(), None);
        // Held, with an unreadable note: held all the same.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        flock(&file, libc::LOCK_EX).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(HomeLock::holder(&path).unwrap(), Some(Holder::default()));
    }
}
