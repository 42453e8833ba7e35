//! A stalling decorator: while a control file exists, every request waits, as if the
//! network had stopped answering. It lets a test or a benchmark stall a running
//! mount's backend from outside the process (`GHOSTIE_STALL_FILE`), to show that
//! local work never waits for it.
//!
//! The control file holds a number of seconds (each request waits at most that long)
//! or nothing (requests wait until the file is removed). Every request that waited is
//! counted with a line in `<control file>.held`.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{BackendResult, ObjectStore};

#[derive(Debug)]
pub struct StallStore<S> {
    inner: S,
    control: PathBuf,
}

impl<S: ObjectStore> StallStore<S> {
    pub fn new(inner: S, control: PathBuf) -> Self {
        Self { inner, control }
    }

    fn hold(&self) {
        let Ok(first) = std::fs::read_to_string(&self.control) else {
            return;
        };
        let held = self.control.with_extension("held");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(held)
        {
            let _ = f.write_all(b"held\n");
        }
        let limit = first
            .trim()
            .parse::<f64>()
            .ok()
            .map(Duration::from_secs_f64);
        let started = Instant::now();
        while self.control.exists() && limit.is_none_or(|l| started.elapsed() < l) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl<S: ObjectStore> ObjectStore for StallStore<S> {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.hold();
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.hold();
        self.inner.put_if_absent(key, data)
    }
    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        self.hold();
        self.inner.put_file(key, path)
    }
    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.hold();
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        self.hold();
        self.inner.get_range(key, range)
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        self.hold();
        self.inner.list(prefix, start_after)
    }
    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        self.hold();
        self.inner.list_sized(prefix)
    }
    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        self.hold();
        self.inner.list_dirs(prefix)
    }
    fn delete(&self, key: &str) -> BackendResult<()> {
        self.hold();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryStore;

    #[test]
    fn requests_wait_while_the_control_file_exists_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("stall");
        let store = std::sync::Arc::new(StallStore::new(MemoryStore::new(), control.clone()));
        store.put("k", b"v").unwrap();
        assert!(
            !control.with_extension("held").exists(),
            "no stall, no count"
        );
        std::fs::write(&control, "").unwrap();
        let waiting = std::thread::spawn({
            let store = store.clone();
            move || store.get("k")
        });
        let counted =
            || std::fs::read_to_string(control.with_extension("held")).unwrap_or_default();
        while counted().is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiting.is_finished(), "a request went through a stall");
        std::fs::remove_file(&control).unwrap();
        assert_eq!(waiting.join().unwrap().unwrap(), b"v");
        // A number of seconds bounds each wait.
        std::fs::write(&control, "0.05").unwrap();
        assert_eq!(store.get("k").unwrap(), b"v");
        assert_eq!(counted().lines().count(), 2);
    }
}
