//! A fault-injection decorator: fails chosen operations so tests can show that an
//! interrupted push leaves the vault consistent and that the next push completes it.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};

use super::{BackendError, BackendResult, ObjectStore};

#[derive(Debug)]
pub struct FaultStore<S> {
    inner: S,
    /// Writes still allowed before every write fails; negative means unlimited.
    writes_left: AtomicI64,
}

impl<S: ObjectStore> FaultStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            writes_left: AtomicI64::new(-1),
        }
    }

    /// Lets `n` more writes through, then fails every write until [`Self::heal`].
    pub fn fail_writes_after(&self, n: i64) {
        self.writes_left.store(n, SeqCst);
    }

    pub fn heal(&self) {
        self.writes_left.store(-1, SeqCst);
    }

    fn admit_write(&self, key: &str) -> BackendResult<()> {
        let left = self.writes_left.load(SeqCst);
        if left < 0 {
            return Ok(());
        }
        if left == 0 {
            return Err(BackendError::Io {
                message: format!("injected fault writing {key}"),
                temporary: true,
                source: std::io::Error::other("injected fault"),
            });
        }
        self.writes_left.fetch_sub(1, SeqCst);
        Ok(())
    }
}

impl<S: ObjectStore> ObjectStore for FaultStore<S> {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.admit_write(key)?;
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.admit_write(key)?;
        self.inner.put_if_absent(key, data)
    }
    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        self.admit_write(key)?;
        self.inner.put_file(key, path)
    }
    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        self.inner.get_range(key, range)
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        self.inner.list(prefix, start_after)
    }
    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        self.inner.list_dirs(prefix)
    }
    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        self.inner.list_sized(prefix)
    }
    fn delete(&self, key: &str) -> BackendResult<()> {
        self.admit_write(key)?;
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn provider_status(&self, look: bool) -> Option<super::ProviderStatus> {
        self.inner.provider_status(look)
    }
    fn wait_for_change(&self, max: std::time::Duration) -> Option<super::BackendResult<bool>> {
        self.inner.wait_for_change(max)
    }
}
