//! Decrypted small files, kept in memory (bounded, least recently used out first), so
//! a `cat` after a listing's prefetch, or a second read of one file, costs nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::model::{ContentRef, DeviceId, ObjectId};

type Key = (DeviceId, ObjectId, u64);

fn key(r: &ContentRef) -> Key {
    (r.owner.clone(), r.pack.clone(), r.offset)
}

#[derive(Debug)]
pub struct PlainCache {
    limit: u64,
    used: u64,
    tick: u64,
    entries: HashMap<Key, (Arc<Vec<u8>>, u64)>,
    order: BTreeMap<u64, Key>,
}

impl PlainCache {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn contains(&self, r: &ContentRef) -> bool {
        self.entries.contains_key(&key(r))
    }

    pub fn get(&mut self, r: &ContentRef) -> Option<Arc<Vec<u8>>> {
        let k = key(r);
        let (data, old_tick) = self.entries.get(&k).cloned()?;
        self.tick += 1;
        self.order.remove(&old_tick);
        self.order.insert(self.tick, k.clone());
        if let Some(e) = self.entries.get_mut(&k) {
            e.1 = self.tick;
        }
        Some(data)
    }

    pub fn insert(&mut self, r: &ContentRef, data: Arc<Vec<u8>>) {
        let len = data.len() as u64;
        if len > self.limit / 4 {
            return;
        }
        let k = key(r);
        if let Some((old, t)) = self.entries.remove(&k) {
            self.used -= old.len() as u64;
            self.order.remove(&t);
        }
        while self.used + len > self.limit {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&victim) {
                self.used -= old.len() as u64;
            }
        }
        self.tick += 1;
        self.used += len;
        self.order.insert(self.tick, k.clone());
        self.entries.insert(k, (data, self.tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlobId, ContentHash};

    fn r(offset: u64) -> ContentRef {
        thread_local! {
            static PACK: ObjectId = ObjectId::new(1);
            static OWNER: DeviceId = DeviceId::random();
        }
        ContentRef {
            owner: OWNER.with(|o| o.clone()),
            pack: PACK.with(|p| p.clone()),
            offset,
            length: 0,
            blob: BlobId([0; 16]),
            sha256: ContentHash([0; 32]),
            size: 0,
            key_epoch: 0,
        }
    }

    #[test]
    fn evicts_least_recently_used_within_the_limit() {
        let mut c = PlainCache::new(400);
        c.insert(&r(1), Arc::new(vec![0; 100]));
        c.insert(&r(2), Arc::new(vec![0; 100]));
        c.insert(&r(3), Arc::new(vec![0; 100]));
        assert!(c.get(&r(1)).is_some()); // 1 is now the most recent
        c.insert(&r(4), Arc::new(vec![0; 100]));
        c.insert(&r(5), Arc::new(vec![0; 100]));
        assert!(c.used() <= 400);
        assert!(c.contains(&r(1)));
        assert!(!c.contains(&r(2)));
        assert!(c.contains(&r(5)));
    }
}
