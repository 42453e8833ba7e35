//! An in-process store for model tests of the sync protocol: several devices in one
//! process share one `MemoryStore`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use super::{BackendError, BackendResult, ObjectStore};

#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A separate store holding a copy of every object (to fork a prepared vault).
    pub fn duplicate(&self) -> Self {
        Self {
            objects: Mutex::new(self.lock().clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-updated: every
        // operation is one insert, remove or read.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ObjectStore for MemoryStore {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.lock().insert(key.to_owned(), data.to_vec());
        Ok(())
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        let mut map = self.lock();
        if map.contains_key(key) {
            return Err(BackendError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        map.insert(key.to_owned(), data.to_vec());
        Ok(())
    }

    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| BackendError::NotFound {
                key: key.to_owned(),
            })
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        let map = self.lock();
        let data = map.get(key).ok_or_else(|| BackendError::NotFound {
            key: key.to_owned(),
        })?;
        let start = (range.start as usize).min(data.len());
        let end = (range.end as usize).min(data.len()).max(start);
        Ok(data[start..end].to_vec())
    }

    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        Ok(self
            .lock()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), Some(v.len() as u64)))
            .collect())
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        Ok(self
            .lock()
            .range(prefix.to_owned()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .filter(|k| start_after.is_none_or(|s| k.as_str() > s))
            .cloned()
            .collect())
    }

    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for k in self.list(prefix, None)? {
            if let Some((dir, _)) = k[prefix.len()..].split_once('/') {
                let d = format!("{prefix}{dir}/");
                if out.last() != Some(&d) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> BackendResult<()> {
        self.lock().remove(key);
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory store".into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conforms() {
        super::super::tests::check(&super::MemoryStore::new(), super::super::tests::Sizes::Told);
    }
}
