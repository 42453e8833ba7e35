//! A deadline over any store, for a command that must answer at once (`status`): each
//! request runs on a thread of its own, and one that has not answered in time fails
//! as a temporary error ("does not answer"). The store itself is opened on such a
//! thread too, as soon as the decorator is made, so that opening it (an S3 client
//! loading its credentials) overlaps the caller's local work and never blocks it.
//!
//! A request given up on is not cancelled: its thread finishes, or ends with the
//! process. That suits a short-lived command, not a long-running one, so nothing but
//! `status` uses this.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{BackendError, BackendResult, ObjectStore, SharedStore};

type Opener = dyn Fn() -> BackendResult<SharedStore> + Send + Sync;

/// The store once opened, or why it could not be.
struct Opened {
    cell: OnceLock<BackendResult<SharedStore>>,
    open: Box<Opener>,
}

impl Opened {
    fn get(&self) -> &BackendResult<SharedStore> {
        self.cell.get_or_init(|| (self.open)())
    }
}

pub struct DeadlineStore {
    opened: Arc<Opened>,
    patience: Duration,
    described: String,
}

impl std::fmt::Debug for DeadlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeadlineStore({}, {:?})", self.described, self.patience)
    }
}

/// The same error again, for a failure to open that every request reports (and
/// for one failure shared by every write of a batch).
pub(crate) fn again(e: &BackendError) -> BackendError {
    match e {
        BackendError::NotFound { key } => BackendError::NotFound { key: key.clone() },
        BackendError::AlreadyExists { key } => BackendError::AlreadyExists { key: key.clone() },
        BackendError::Io {
            message,
            temporary,
            source,
        } => BackendError::Io {
            message: message.clone(),
            temporary: *temporary,
            source: io::Error::new(source.kind(), message.clone()),
        },
        BackendError::Invalid(m) => BackendError::Invalid(m.clone()),
        BackendError::Refused(m) => BackendError::Refused(m.clone()),
        BackendError::LoginRefused(m) => BackendError::LoginRefused(m.clone()),
    }
}

impl DeadlineStore {
    /// A store that `open` opens (starting now, on another thread), whose requests
    /// fail when they have not answered within `patience`. `described` stands for the
    /// store in messages, before it is open or when it cannot be.
    pub fn new(
        patience: Duration,
        described: String,
        open: impl Fn() -> BackendResult<SharedStore> + Send + Sync + 'static,
    ) -> Self {
        let opened = Arc::new(Opened {
            cell: OnceLock::new(),
            open: Box::new(open),
        });
        let early = Arc::clone(&opened);
        // Without a thread, the first request opens it, within its own deadline.
        let _ = std::thread::Builder::new()
            .name("ghostie-open".into())
            .spawn(move || {
                early.get();
            });
        Self {
            opened,
            patience,
            described,
        }
    }

    fn call<T: Send + 'static>(
        &self,
        request: impl FnOnce(&dyn ObjectStore) -> BackendResult<T> + Send + 'static,
    ) -> BackendResult<T> {
        let (tx, rx) = mpsc::channel();
        let opened = Arc::clone(&self.opened);
        let spawned = std::thread::Builder::new()
            .name("ghostie-request".into())
            .spawn(move || {
                let answer = match opened.get() {
                    Ok(store) => request(store.as_ref()),
                    Err(e) => Err(again(e)),
                };
                let _ = tx.send(answer);
            });
        if let Err(e) = spawned {
            return Err(BackendError::Io {
                message: format!("cannot start a request to {}: {e}", self.described),
                temporary: true,
                source: e,
            });
        }
        match rx.recv_timeout(self.patience) {
            Ok(answer) => answer,
            Err(_) => Err(BackendError::Io {
                message: format!(
                    "{} does not answer within {} s",
                    self.described,
                    self.patience.as_secs_f64()
                ),
                temporary: true,
                source: io::Error::from(io::ErrorKind::TimedOut),
            }),
        }
    }
}

impl ObjectStore for DeadlineStore {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        let (key, data) = (key.to_owned(), data.to_vec());
        self.call(move |s| s.put(&key, &data))
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        let (key, data) = (key.to_owned(), data.to_vec());
        self.call(move |s| s.put_if_absent(&key, &data))
    }
    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        let (key, path): (String, PathBuf) = (key.to_owned(), path.to_path_buf());
        self.call(move |s| s.put_file(&key, &path))
    }
    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        let key = key.to_owned();
        self.call(move |s| s.get(&key))
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        let key = key.to_owned();
        self.call(move |s| s.get_range(&key, range))
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        let (prefix, start_after) = (prefix.to_owned(), start_after.map(str::to_owned));
        self.call(move |s| s.list(&prefix, start_after.as_deref()))
    }
    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        let prefix = prefix.to_owned();
        self.call(move |s| s.list_sized(&prefix))
    }
    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        let prefix = prefix.to_owned();
        self.call(move |s| s.list_dirs(&prefix))
    }
    fn delete(&self, key: &str) -> BackendResult<()> {
        let key = key.to_owned();
        self.call(move |s| s.delete(&key))
    }
    fn describe(&self) -> String {
        self.described.clone()
    }
    fn provider_status(&self, look: bool) -> Option<super::ProviderStatus> {
        self.call(move |s| Ok(s.provider_status(look)))
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{MemoryStore, StallStore};

    #[test]
    fn a_request_that_does_not_answer_in_time_fails_as_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("stall");
        std::fs::write(&control, "").unwrap();
        let memory = Arc::new(MemoryStore::new());
        memory.put("k", b"v").unwrap();
        let inner: SharedStore = Arc::new(StallStore::new(memory, control.clone()));
        let store = DeadlineStore::new(Duration::from_millis(200), "a test store".into(), {
            move || Ok(Arc::clone(&inner))
        });
        let started = std::time::Instant::now();
        let e = store.get("k").unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(e.is_temporary(), "{e}");
        assert!(
            e.to_string().contains("a test store does not answer"),
            "{e}"
        );
        std::fs::remove_file(&control).unwrap();
        assert_eq!(store.get("k").unwrap(), b"v");
        assert_eq!(store.describe(), "a test store");
    }

    #[test]
    fn a_store_that_cannot_open_says_why_at_every_request() {
        let store = DeadlineStore::new(Duration::from_secs(5), "nowhere".into(), || {
            Err(BackendError::Invalid(
                "the vault folder /x does not exist".into(),
            ))
        });
        for _ in 0..2 {
            let e = store.list_dirs("ghostie/").unwrap_err();
            assert_eq!(e.to_string(), "the vault folder /x does not exist");
        }
    }
}
