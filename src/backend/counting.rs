//! A metering decorator: counts requests and bytes per verb, so tests can assert that
//! small files travel in packs and that a partial read fetched only what it needed.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{BackendResult, ObjectStore};

#[derive(Debug, Default)]
struct Counters {
    puts: AtomicU64,
    gets: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    pub puts: u64,
    pub gets: u64,
    pub lists: u64,
    pub deletes: u64,
    /// Bytes sent to the backend.
    pub bytes_in: u64,
    /// Bytes the backend served.
    pub bytes_out: u64,
}

#[derive(Debug)]
pub struct CountingStore<S> {
    inner: S,
    counters: Counters,
    /// Rewritten with the counts after every request, for another process to read
    /// (`GHOSTIE_METER_FILE`: tests of a mount process, diagnostics).
    report: Option<std::path::PathBuf>,
}

impl<S: ObjectStore> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counters: Counters::default(),
            report: None,
        }
    }

    pub fn reporting_to(mut self, path: std::path::PathBuf) -> Self {
        self.report = Some(path);
        self
    }

    fn write_report(&self) {
        let Some(path) = &self.report else { return };
        let Ok(json) = serde_json::to_vec(&self.counts()) else {
            return;
        };
        let tmp = path.with_extension(format!("tmp-{:x}", rand::random::<u64>()));
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    pub fn counts(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            puts: c.puts.load(Relaxed),
            gets: c.gets.load(Relaxed),
            lists: c.lists.load(Relaxed),
            deletes: c.deletes.load(Relaxed),
            bytes_in: c.bytes_in.load(Relaxed),
            bytes_out: c.bytes_out.load(Relaxed),
        }
    }

    pub fn reset(&self) {
        let c = &self.counters;
        for a in [
            &c.puts,
            &c.gets,
            &c.lists,
            &c.deletes,
            &c.bytes_in,
            &c.bytes_out,
        ] {
            a.store(0, Relaxed);
        }
    }

    fn got(&self, r: BackendResult<Vec<u8>>) -> BackendResult<Vec<u8>> {
        self.counters.gets.fetch_add(1, Relaxed);
        if let Ok(data) = &r {
            self.counters
                .bytes_out
                .fetch_add(data.len() as u64, Relaxed);
        }
        self.write_report();
        r
    }

    fn put_counted(&self, len: u64) {
        self.counters.puts.fetch_add(1, Relaxed);
        self.counters.bytes_in.fetch_add(len, Relaxed);
        self.write_report();
    }
}

impl<S: ObjectStore> ObjectStore for CountingStore<S> {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.put_counted(data.len() as u64);
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.put_counted(data.len() as u64);
        self.inner.put_if_absent(key, data)
    }
    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        self.put_counted(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0));
        self.inner.put_file(key, path)
    }
    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.got(self.inner.get(key))
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        self.got(self.inner.get_range(key, range))
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        self.counters.lists.fetch_add(1, Relaxed);
        self.write_report();
        self.inner.list(prefix, start_after)
    }
    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        self.counters.lists.fetch_add(1, Relaxed);
        self.write_report();
        self.inner.list_sized(prefix)
    }
    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        self.counters.lists.fetch_add(1, Relaxed);
        self.write_report();
        self.inner.list_dirs(prefix)
    }
    fn delete(&self, key: &str) -> BackendResult<()> {
        self.counters.deletes.fetch_add(1, Relaxed);
        self.write_report();
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
