//! The originals objects of anonymization in the vault, read and kept few.
//!
//! Each device uploads its originals (pseudonym → value, sealed to the sensitive
//! public key) under `{device}/originals/`: one object per push that met a new
//! value, one bundle per publish of a mount. A trusted device that restores reads
//! every one of them, so their number is what costs; each device's collection
//! merges its own into one bundle once there are [`MERGE_AT`]. The sealed objects
//! are carried as they are (each opens under the context of its own id), so any
//! device merges its own, trusted or not, without opening them. The bundle goes up
//! before anything is deleted: a reader that finds an object it listed gone lists
//! again and finds the bundle.

use std::collections::BTreeSet;
use std::time::Duration;

use super::anonymize::{originals_context, Anonymizer, META_SEEN};
use super::*;
use crate::anonymize::pseudonym::kind_of;
use crate::anonymize::{bundle, policy, SensitiveSecrets};
use crate::model::ObjectId;

/// How many originals objects a device lets gather under its name before its
/// collection merges them.
const MERGE_AT: usize = 8;
/// The pauses before listing a device's originals again when one listed was gone
/// (merged away meanwhile): a provider's listing may lag a write by a moment
/// (Dropbox's is kept for a second), so the bundle may not show at once.
const RELIST_PAUSES: [Duration; 3] = [
    Duration::from_millis(300),
    Duration::from_millis(1_200),
    Duration::from_millis(3_000),
];

/// The id an originals key names, under `prefix`.
fn id_of(prefix: &str, key: &str) -> Option<ObjectId> {
    key.strip_prefix(prefix)
        .and_then(|n| n.strip_suffix(".enc"))
        .and_then(ObjectId::parse)
}

impl Vault {
    /// Reads every originals object of every device not read yet. One that stays
    /// gone after the listings again is a temporary failure: whoever reads restores
    /// later rather than showing pseudonyms it could have restored.
    pub(super) fn read_originals(
        &self,
        a: &Anonymizer,
        secrets: &SensitiveSecrets,
    ) -> SyncResult<()> {
        let mut devices: Vec<DeviceId> = self.device_names()?.into_keys().collect();
        if !devices.contains(&self.device) {
            devices.push(self.device.clone());
        }
        for device in devices {
            let mut missing = self.read_originals_of(a, secrets, &device)?;
            for pause in RELIST_PAUSES {
                let Some(gone) = &missing else {
                    break;
                };
                tracing::debug!("{gone} was gone when read (merged?): listing again");
                std::thread::sleep(pause);
                missing = self.read_originals_of(a, secrets, &device)?;
            }
            if let Some(gone) = missing {
                return Err(SyncError::Backend(BackendError::Io {
                    message: format!(
                        "the originals {gone} were listed but could not be read: tried again later"
                    ),
                    temporary: true,
                    source: std::io::Error::other("listed but gone"),
                }));
            }
        }
        Ok(())
    }

    /// [`Vault::read_originals`] for one device's objects as listed now: the key of
    /// one listed but gone (or unreadable) when read, if any.
    fn read_originals_of(
        &self,
        a: &Anonymizer,
        secrets: &SensitiveSecrets,
        device: &DeviceId,
    ) -> SyncResult<Option<String>> {
        let prefix = self.originals_prefix(device);
        let mut missing = None;
        for key in self.store.list(&prefix, None)? {
            if lock(&a.read).contains(&key) {
                continue;
            }
            let Some(id) = id_of(&prefix, &key) else {
                continue;
            };
            let sealed = match self.store.get(&key) {
                Ok(bytes) => bytes,
                // Gone, or cut (a store keeping a big object in parts meets the
                // parts deleted): merged away, if the next listing lacks it.
                Err(e) if e.is_not_found() || matches!(e, BackendError::Invalid(_)) => {
                    tracing::debug!("originals {key}: {e}");
                    missing = Some(key);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let objects = match bundle::unbundle(&sealed) {
                None => vec![(id, sealed.as_slice())],
                Some(Ok(objects)) => objects,
                Some(Err(e)) => {
                    tracing::warn!("originals {key} are damaged: {e}");
                    Vec::new()
                }
            };
            for (id, object) in objects {
                // Read under its own name too: a listing that still shows it after
                // its device merged it away asks for nothing more.
                lock(&a.read).insert(format!("{prefix}{id}.enc"));
                match policy::open_originals(secrets, &originals_context(device, &id), object) {
                    // Only pairs whose token is the value's own: an object from
                    // any device cannot make a token stand for another value.
                    Ok(originals) => lock(&a.dictionary).extend(originals.into_iter().filter(
                        |(token, value)| {
                            kind_of(token).is_some_and(|kind| a.key.token(kind, value) == *token)
                        },
                    )),
                    // Sealed after this device was untrusted, or damaged: its
                    // tokens stay tokens here.
                    Err(e) => tracing::warn!("originals {key} do not open here: {e}"),
                }
            }
            lock(&a.read).insert(key);
        }
        Ok(missing)
    }

    /// Merges this device's originals objects into one bundle once there are
    /// [`MERGE_AT`] of them (see the module's comment). The largest is left as it
    /// is while the others together are smaller, where the listing tells sizes: a
    /// merge then costs what came since, not the device's whole history. Returns
    /// how many objects were replaced (or, dry, would be).
    pub(super) fn merge_own_originals(&self, dry_run: bool) -> SyncResult<usize> {
        if self.index().meta(META_SEEN)?.is_none() {
            return Ok(0);
        }
        let prefix = self.originals_prefix(&self.device);
        let mut listed: Vec<(String, Option<u64>)> = self
            .store
            .list_sized(&prefix)?
            .into_iter()
            .filter(|(key, _)| id_of(&prefix, key).is_some())
            .collect();
        if listed.len() < MERGE_AT {
            return Ok(0);
        }
        if listed.iter().all(|(_, size)| size.is_some()) {
            listed.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
            let largest = listed[0].1.unwrap_or(0);
            let others: u64 = listed[1..].iter().filter_map(|(_, size)| *size).sum();
            if largest > others {
                listed.remove(0);
            }
        }
        if dry_run {
            return Ok(listed.len());
        }
        let mut objects: Vec<(ObjectId, Vec<u8>)> = Vec::new();
        let mut ids = BTreeSet::new();
        let mut merged = Vec::with_capacity(listed.len());
        for (key, _) in listed {
            let Some(id) = id_of(&prefix, &key) else {
                continue;
            };
            let bytes = match self.store.get(&key) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let unbundled = bundle::unbundle(&bytes).map(|entries| {
                entries.map(|entries| {
                    entries
                        .into_iter()
                        .map(|(id, object)| (id, object.to_vec()))
                        .collect::<Vec<_>>()
                })
            });
            let held = match unbundled {
                Some(Ok(entries)) => entries,
                // What cannot be read whole is left as it is, not rewritten.
                Some(Err(e)) => {
                    tracing::warn!("originals {key} are damaged, left as they are: {e}");
                    continue;
                }
                None => vec![(id, bytes)],
            };
            objects.extend(held.into_iter().filter(|(id, _)| ids.insert(id.clone())));
            merged.push(key);
        }
        if merged.len() < 2 {
            return Ok(0);
        }
        let key = format!("{prefix}{}.enc", ObjectId::new(crate::now_ms() as u64));
        self.store.put(&key, &bundle::bundle(&objects))?;
        for old in &merged {
            match self.store.delete(old) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(
            "merged {} originals objects of this device into one",
            merged.len()
        );
        Ok(merged.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

    use super::*;
    use crate::backend::{BackendResult, MemoryStore, ObjectStore};
    use crate::config::{BackendConfig, Home};
    use crate::sync::{setup_vault, PassphraseSource, SetupRequest};

    struct Pass;

    impl PassphraseSource for Pass {
        fn existing(&self) -> SyncResult<zeroize::Zeroizing<String>> {
            Ok(zeroize::Zeroizing::new("unit test passphrase".into()))
        }
        fn new_passphrase(&self) -> SyncResult<zeroize::Zeroizing<String>> {
            self.existing()
        }
    }

    fn vault_over(dir: &std::path::Path, store: SharedStore) -> Vault {
        let home = Home::new(dir.join("laptop"));
        let req = SetupRequest {
            home: home.clone(),
            backend: BackendConfig::Local {
                path: "/unused".into(),
            },
            prefix: "ghostie".into(),
            device_name: "laptop".into(),
            force: false,
        };
        setup_vault(&req, store.clone(), &Pass).expect("setup");
        Vault::open_with_store(home, store, Box::new(Pass)).expect("open")
    }

    const STILL: u8 = 0;
    /// The next read of an originals object meets what a merge by its device does
    /// between a reader's listing and its read: the object moved into a new bundle.
    const MERGE_AT_NEXT_READ: u8 = 1;
    /// Every originals object listed is gone when read, and no listing shows where.
    const GONE: u8 = 2;

    #[derive(Debug)]
    struct MovingStore {
        inner: MemoryStore,
        mode: AtomicU8,
    }

    impl ObjectStore for MovingStore {
        fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
            self.inner.put(key, data)
        }
        fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
            self.inner.put_if_absent(key, data)
        }
        fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
            let gone = || BackendError::NotFound {
                key: key.to_owned(),
            };
            if key.contains("/originals/") {
                match self.mode.load(SeqCst) {
                    MERGE_AT_NEXT_READ => {
                        self.mode.store(STILL, SeqCst);
                        let (prefix, name) = key.rsplit_once('/').ok_or_else(gone)?;
                        let id = id_of("", name).ok_or_else(gone)?;
                        let moved = bundle::bundle(&[(id, self.inner.get(key)?)]);
                        let to = ObjectId::new(crate::now_ms() as u64 + 1);
                        self.inner.put(&format!("{prefix}/{to}.enc"), &moved)?;
                        self.inner.delete(key)?;
                        return Err(gone());
                    }
                    GONE => return Err(gone()),
                    _ => {}
                }
            }
            self.inner.get(key)
        }
        fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> BackendResult<Vec<u8>> {
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
            self.inner.delete(key)
        }
        fn describe(&self) -> String {
            "memory whose originals move".into()
        }
    }

    #[test]
    fn a_reader_finds_originals_merged_away_between_its_listing_and_its_read() {
        let dir = tempfile::tempdir().unwrap();
        let moving = Arc::new(MovingStore {
            inner: MemoryStore::new(),
            mode: AtomicU8::new(STILL),
        });
        let v = vault_over(dir.path(), moving.clone());
        v.anonymize_on(None).unwrap();
        v.pseudonymized(b"write to anna.smith@example.org")
            .unwrap()
            .expect("an email is pseudonymized");
        v.queue_originals().unwrap();
        v.upload_originals().unwrap();
        // A reader that knows nothing yet, as a later command would be.
        let reader = || {
            v.load_anonymizer(v.read_policy().unwrap().unwrap())
                .unwrap()
        };
        let holds_the_value = |a: &Anonymizer| {
            lock(&a.dictionary)
                .values()
                .any(|v| v == "anna.smith@example.org")
        };

        let a = reader();
        let secrets = a
            .secrets
            .as_ref()
            .expect("the device that turned it on is trusted");
        moving.mode.store(MERGE_AT_NEXT_READ, SeqCst);
        v.read_originals(&a, secrets).unwrap();
        assert_eq!(moving.mode.load(SeqCst), STILL, "the object never moved");
        assert!(holds_the_value(&a), "the merged object was not read");

        // Gone for good: a temporary failure, never a quiet success without it.
        let b = reader();
        moving.mode.store(GONE, SeqCst);
        let err = v
            .read_originals(&b, b.secrets.as_ref().unwrap())
            .unwrap_err();
        assert!(
            matches!(&err, SyncError::Backend(e) if e.is_temporary()),
            "{err}"
        );
        assert!(!holds_the_value(&b));
    }

    #[test]
    fn a_merge_carries_every_object_unchanged_and_leaves_a_larger_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(MemoryStore::new());
        let v = vault_over(dir.path(), store.clone());
        let prefix = v.originals_prefix(&v.device);
        let put = |bytes: &[u8]| {
            let id = ObjectId::new(crate::now_ms() as u64);
            store.put(&format!("{prefix}{id}.enc"), bytes).unwrap();
            id
        };
        // What every object holds, by id, whether alone or in a bundle.
        let held = |key: &str| -> BTreeMap<ObjectId, Vec<u8>> {
            let bytes = store.get(key).unwrap();
            match bundle::unbundle(&bytes) {
                None => BTreeMap::from([(id_of(&prefix, key).unwrap(), bytes)]),
                Some(entries) => entries
                    .unwrap()
                    .into_iter()
                    .map(|(id, o)| (id, o.to_vec()))
                    .collect(),
            }
        };
        let listed = || store.list(&prefix, None).unwrap();
        let mut expected = BTreeMap::new();
        // Objects of about the same size: the bundle of two is not larger than the
        // others together.
        let single = |i: u8| [vec![0, 0, 0, 1], vec![i; 16]].concat();
        for i in 0..5u8 {
            let bytes = single(i);
            expected.insert(put(&bytes), bytes);
        }
        let pair: Vec<(ObjectId, Vec<u8>)> = (0..2u8)
            .map(|i| (ObjectId::new(i.into()), vec![0, 0, 0, 1, 9, i]))
            .collect();
        put(&bundle::bundle(&pair));
        expected.extend(pair);
        let damaged = put(b"GOB1cut");
        let damaged_key = format!("{prefix}{damaged}.enc");

        // Seven objects, and anonymization never seen in use here: nothing merges.
        assert_eq!(v.merge_own_originals(false).unwrap(), 0);
        v.index()
            .transaction(|tx| tx.set_meta(META_SEEN, "1"))
            .unwrap();
        assert_eq!(v.merge_own_originals(false).unwrap(), 0, "seven stay");
        let last = single(8);
        expected.insert(put(&last), last);
        assert_eq!(v.merge_own_originals(true).unwrap(), 8);
        assert_eq!(listed().len(), 8, "a dry run changed something");

        // All but the damaged one merged, every object unchanged under its id.
        assert_eq!(v.merge_own_originals(false).unwrap(), 7);
        let now = listed();
        assert_eq!(now.len(), 2, "{now:?}");
        assert_eq!(store.get(&damaged_key).unwrap(), b"GOB1cut");
        let first = now.into_iter().find(|k| *k != damaged_key).unwrap();
        assert_eq!(held(&first), expected);

        // Six small ones later, next to the merged one, larger than them all:
        // it stays as it is, and only they are merged (the damaged one again left).
        for i in 0..6u8 {
            let bytes = vec![0, 0, 0, 1, 7, i];
            expected.insert(put(&bytes), bytes);
        }
        assert_eq!(listed().len(), 8);
        assert_eq!(v.merge_own_originals(false).unwrap(), 6);
        let now = listed();
        assert_eq!(now.len(), 3, "{now:?}");
        assert!(now.contains(&first), "the larger one was rewritten");
        let mut all = BTreeMap::new();
        for key in now.iter().filter(|k| **k != damaged_key) {
            all.extend(held(key));
        }
        assert_eq!(all, expected);
    }
}
