//! `Vault`: one device's handle on one vault, the facade both front-ends use.
//!
//! Invariants it keeps (DESIGN §4, §6):
//! - **One writer per key.** This device writes only under its own prefix, and a log
//!   segment or snapshot is written create-only, so a retry after a crash can tell
//!   "already published" from "not yet".
//! - **Publish after upload.** A segment is written only after every pack it names is in
//!   the backend; a reader that sees a version can always fetch its content.
//! - **Record before upload.** Local changes become versions in the index, with their
//!   sealed packs queued, in one transaction; uploads and publication resume from the
//!   index after a crash.
//! - **Counters never repeat.** The index is the only place this device's counter and
//!   sequence number live; a home whose index is gone is refused rather than restarted.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::fetch::{fetch_contents, FetchedContent, Source};
use super::layout::Layout;
use super::namespace::{self, Namespace};
use super::pack::PackWriter;
use super::progress::{Progress, Unit};
use super::records::{
    open_device, open_log, seal_device, seal_log, DeviceRecord, LogRecord, RECORD_FORMAT,
};
use super::{SyncError, SyncResult};
use crate::backend::{self, BackendError, SharedStore};
use crate::config::{Config, Home, CONFIG_FORMAT};
use crate::crypto::envelope::RecordKind;
use crate::crypto::keyring::{random_id, WrappedKey, DEFAULT_ITERATIONS};
use crate::crypto::{MasterKey, SubKeys};
use crate::model::{ContentRef, DeviceId, Entry, ObjectId, Seq, Version, VersionVector};
use crate::store::index::HeadChange;
use crate::store::IndexError;
use crate::store::{HomeLock, Index, LocalFile, PackCache};

/// Uploads and downloads in flight at once.
const PARALLEL_IO: usize = 4;
/// A device writes a snapshot of its log every this many segments.
const SNAPSHOT_EVERY: u64 = 32;

const META_COUNTER: &str = "counter";
const META_LAST_SEQ: &str = "last_assigned_seq";
const META_LAST_PUBLISHED: &str = "last_published_seq";
const META_SETUP_INCOMPLETE: &str = "setup_incomplete";
const META_LAST_SYNC: &str = "last_sync_ms";

/// Where passphrases come from; the CLI asks the terminal, tests pass strings.
pub trait PassphraseSource: Send + Sync {
    /// The passphrase of an existing vault.
    fn existing(&self) -> SyncResult<Zeroizing<String>>;
    /// A new passphrase (asked twice on a terminal).
    fn new_passphrase(&self) -> SyncResult<Zeroizing<String>>;
    /// Whether asking means prompting someone: then keys are never derived ahead of
    /// need, since a prompt must not appear for work that turns out to need no key.
    fn is_interactive(&self) -> bool {
        false
    }
}

fn read_master_key(home: &Home) -> SyncResult<WrappedKey> {
    let path = home.master_key_path();
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SyncError::Invalid(format!(
                "the key file {} is missing; run 'ghostie-fs setup --force' to set this device up again",
                path.display()
            ))
        } else {
            SyncError::io(&path)(e)
        }
    })?;
    let w = WrappedKey::from_json(&bytes).map_err(|e| {
        SyncError::Invalid(format!("the key file {} is damaged ({e})", path.display()))
    })?;
    w.validate()?;
    Ok(w)
}

fn write_master_key(home: &Home, w: &WrappedKey) -> SyncResult<()> {
    crate::config::write_atomic(&home.master_key_path(), &w.to_json(), 0o600)?;
    Ok(())
}

/// A new version a front-end wants recorded.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub path: String,
    pub entry: Entry,
    pub mtime_ns: i64,
    /// The vector of what the device had seen of this path; the device's own counter
    /// is added when the version is recorded.
    pub base: VersionVector,
    /// What to do with the record of what the folder holds at `path`.
    pub local: LocalChange,
}

/// How recording a version changes the record of the folder at its path.
#[derive(Debug, Clone)]
pub enum LocalChange {
    /// The folder holds this (its `shows` is filled in with the new version).
    Set(LocalFile),
    /// The folder holds nothing there.
    Remove,
    /// The folder does not hold the new version yet; a later apply writes it.
    Keep,
}

#[derive(Debug, Default, Clone)]
pub struct PublishReport {
    pub packs: usize,
    pub bytes: u64,
    pub versions: usize,
    pub segments: usize,
}

#[derive(Debug, Default, Clone)]
pub struct PollReport {
    pub new_versions: usize,
    pub devices: usize,
    /// One sentence per device whose log could not be applied past some point.
    pub problems: Vec<String>,
}

pub struct Vault {
    home: Home,
    config: Config,
    device: DeviceId,
    store: SharedStore,
    layout: Layout,
    index: Index,
    cache: PackCache,
    keys: Option<SubKeys>,
    passphrase: Arc<dyn PassphraseSource>,
    /// Key derivation started early (see [`Vault::begin_unlock`]).
    unlocking: Option<std::thread::JoinHandle<SyncResult<SubKeys>>>,
    _lock: HomeLock,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault({:?})", self.device)
    }
}

impl Vault {
    /// Opens a set-up home; the passphrase is asked only when keys are first needed.
    pub fn open(home: Home, passphrase: Box<dyn PassphraseSource>) -> SyncResult<Self> {
        let config = home.load_config()?;
        let store = backend::open(&config.backend)?;
        Self::open_with_store(home, store, passphrase)
    }

    /// Opens a set-up home over a given store (tests wrap stores in decorators).
    pub fn open_with_store(
        home: Home,
        store: SharedStore,
        passphrase: Box<dyn PassphraseSource>,
    ) -> SyncResult<Self> {
        Self::open_inner(home, store, passphrase, false)
    }

    fn open_inner(
        home: Home,
        store: SharedStore,
        passphrase: Box<dyn PassphraseSource>,
        during_setup: bool,
    ) -> SyncResult<Self> {
        let config = home.load_config()?;
        let device = home.load_device_id()?;
        let lock = HomeLock::acquire(&home.sync_dir().join("lock"))
            .map_err(SyncError::io(home.sync_dir().join("lock")))?;
        let index = Index::open(&home.state_db(), false)?;
        if !during_setup
            && index
                .meta(META_SETUP_INCOMPLETE)?
                .is_some_and(|v| !v.is_empty())
        {
            return Err(SyncError::Invalid(
                "the setup of this home did not finish; run 'ghostie-fs setup --force' again"
                    .into(),
            ));
        }
        let layout = Layout::new(&config.prefix);
        let cache = PackCache::new(home.cache_dir());
        Ok(Self {
            home,
            config,
            device,
            store,
            layout,
            index,
            cache,
            keys: None,
            passphrase: Arc::from(passphrase),
            unlocking: None,
            _lock: lock,
        })
    }

    pub fn device(&self) -> &DeviceId {
        &self.device
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn home(&self) -> &Home {
        &self.home
    }
    pub fn store(&self) -> &SharedStore {
        &self.store
    }
    pub fn index(&self) -> &Index {
        &self.index
    }
    pub fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    /// The sub-keys, unlocking on first use. The vault's keyring is consulted when the
    /// backend answers, so a passphrase changed on another device takes effect here.
    pub fn keys(&mut self) -> SyncResult<&SubKeys> {
        if self.keys.is_none() {
            let keys = match self.unlocking.take() {
                Some(handle) => handle
                    .join()
                    .map_err(|_| SyncError::Invalid("unlocking the vault failed".into()))??,
                None => self.unlock()?,
            };
            self.keys = Some(keys);
        }
        match &self.keys {
            Some(k) => Ok(k),
            None => unreachable!("keys were just set"),
        }
    }

    fn unlock(&mut self) -> SyncResult<SubKeys> {
        unlock(
            &self.home,
            &self.config,
            self.store.as_ref(),
            &self.layout,
            self.passphrase.as_ref(),
        )
    }

    /// Starts deriving the keys on another core while the caller goes on (scanning the
    /// folder, say): PBKDF2 at 600,000 iterations is a tenth of a second by design.
    pub fn begin_unlock(&mut self) {
        if self.keys.is_some() || self.unlocking.is_some() || self.passphrase.is_interactive() {
            return;
        }
        let (home, config, store, layout, pass) = (
            self.home.clone(),
            self.config.clone(),
            Arc::clone(&self.store),
            self.layout.clone(),
            Arc::clone(&self.passphrase),
        );
        self.unlocking = Some(std::thread::spawn(move || {
            unlock(&home, &config, store.as_ref(), &layout, pass.as_ref())
        }));
    }

    /// Changes the passphrase: rewraps the master key in the vault's keyring and here.
    pub fn change_passphrase(&mut self) -> SyncResult<()> {
        let local = read_master_key(&self.home)?;
        let ring_bytes = self.store.get(&self.layout.keyring())?;
        let ring = WrappedKey::from_json(&ring_bytes)
            .map_err(|e| SyncError::Damaged(format!("the vault's keyring is damaged ({e})")))?;
        let old = self.passphrase.existing()?;
        let master = ring.unwrap_key(old.as_bytes())?;
        if local.vault_id != ring.vault_id {
            return Err(SyncError::Invalid(
                "the backend holds a different vault than this device joined".into(),
            ));
        }
        let new = self.passphrase.new_passphrase()?;
        let generation = random_id();
        let iterations = ring.kdf.iterations.max(DEFAULT_ITERATIONS);
        let new_ring = WrappedKey::wrap(
            &master,
            new.as_bytes(),
            iterations,
            &ring.vault_id,
            &generation,
        );
        let new_local = WrappedKey::wrap(
            &master,
            new.as_bytes(),
            iterations,
            &ring.vault_id,
            &generation,
        );
        // The keyring is the one object ever replaced (DESIGN §4): write it first, so a
        // crash in between leaves a local copy that the next unlock refreshes.
        self.store
            .put(&self.layout.keyring(), &new_ring.to_json())?;
        write_master_key(&self.home, &new_local)?;
        self.keys = Some(SubKeys::derive(&master));
        Ok(())
    }

    fn name_map(&self) -> SyncResult<BTreeMap<DeviceId, String>> {
        let mut names = BTreeMap::new();
        for d in self.index.devices()? {
            let name = d.name.unwrap_or_else(|| d.id.as_str()[..8].to_owned());
            names.insert(d.id, name);
        }
        names.insert(self.device.clone(), self.config.device_name.clone());
        Ok(names)
    }

    /// Heads grouped by path.
    pub fn heads(&self) -> SyncResult<BTreeMap<String, Vec<Version>>> {
        let mut by_path: BTreeMap<String, Vec<Version>> = BTreeMap::new();
        for h in self.index.all_heads()? {
            by_path
                .entry(h.version.path.clone())
                .or_default()
                .push(h.version);
        }
        Ok(by_path)
    }

    /// What the folder should show, from everything this device knows.
    pub fn namespace(&self) -> SyncResult<Namespace> {
        Ok(self.heads_and_namespace()?.1)
    }

    /// The heads by path and the namespace built from them, decoding the index once.
    pub fn heads_and_namespace(&self) -> SyncResult<(BTreeMap<String, Vec<Version>>, Namespace)> {
        let heads = self.heads()?;
        let names = self.name_map()?;
        let name_of = |d: &DeviceId| {
            names
                .get(d)
                .cloned()
                .unwrap_or_else(|| d.as_str()[..8].to_owned())
        };
        let ns = namespace::build(
            heads.iter().map(|(p, v)| (p.as_str(), v.as_slice())),
            &name_of,
        );
        Ok((heads, ns))
    }

    pub fn device_names(&self) -> SyncResult<BTreeMap<DeviceId, String>> {
        self.name_map()
    }

    pub fn pack_cache(&self) -> &PackCache {
        &self.cache
    }

    /// A writer that seals contents into packs in the cache.
    pub fn pack_writer(&mut self) -> SyncResult<PackWriter<'_>> {
        self.keys()?;
        let keys = self
            .keys
            .as_ref()
            .unwrap_or_else(|| unreachable!("unlocked above"));
        Ok(PackWriter::new(keys, &self.cache, self.device.clone()))
    }

    /// Where each content already lives in the vault, if anywhere.
    pub fn contents_by_hash(
        &mut self,
        hashes: &[crate::model::ContentHash],
    ) -> SyncResult<std::collections::HashMap<crate::model::ContentHash, ContentRef>> {
        Ok(self.index.contents_by_hash(hashes)?)
    }

    /// Records new versions, the packs that hold their contents and the folder's new
    /// state, all in one transaction.
    pub fn record(
        &mut self,
        versions: Vec<NewVersion>,
        packs: &[ObjectId],
        local_updates: Vec<(String, Option<LocalFile>)>,
    ) -> SyncResult<Vec<Version>> {
        let device = self.device.clone();
        let recorded = self.index.transaction(|tx| {
            for p in packs {
                tx.add_pending_pack(p)?;
            }
            let mut counter = tx.meta_u64(META_COUNTER)?;
            let mut out = Vec::with_capacity(versions.len());
            for nv in versions {
                // Above anything this device ever stamped, even a counter that only
                // survives in another device's vector.
                counter = counter.max(nv.base.get(&device)) + 1;
                let mut vector = nv.base;
                vector.set(&device, counter);
                let v = Version {
                    path: nv.path,
                    device: device.clone(),
                    vector,
                    mtime_ns: nv.mtime_ns,
                    entry: nv.entry,
                };
                if tx.offer_version(&v, None, false)? == HeadChange::Ignored {
                    return Err(IndexError::Sql(format!(
                        "a new version of {} was already superseded; the index is inconsistent",
                        v.path
                    )));
                }
                match nv.local {
                    LocalChange::Set(mut lf) => {
                        lf.shows = Some((device.clone(), counter));
                        lf.vector = Some(v.vector.clone());
                        tx.set_local_file(&v.path, &lf)?;
                    }
                    LocalChange::Remove => tx.remove_local_file(&v.path)?,
                    LocalChange::Keep => {}
                }
                out.push(v);
            }
            tx.set_meta(META_COUNTER, &counter.to_string())?;
            for (path, lf) in &local_updates {
                match lf {
                    Some(lf) => tx.set_local_file(path, lf)?,
                    None => tx.remove_local_file(path)?,
                }
            }
            Ok(out)
        })?;
        Ok(recorded)
    }

    /// Updates the record of what the folder holds, in one transaction.
    pub fn update_local(&mut self, updates: &[(String, Option<LocalFile>)]) -> SyncResult<()> {
        self.index.transaction(|tx| {
            for (path, lf) in updates {
                match lf {
                    Some(lf) => tx.set_local_file(path, lf)?,
                    None => tx.remove_local_file(path)?,
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Own versions not yet in the vault.
    pub fn unpublished_count(&self) -> SyncResult<u64> {
        Ok(self.index.unpublished_count()?)
    }

    pub fn touch_last_sync(&mut self) -> SyncResult<()> {
        let now = crate::now_ms().to_string();
        self.index
            .transaction(|tx| tx.set_meta(META_LAST_SYNC, &now))?;
        Ok(())
    }

    /// Uploads queued packs, then publishes every recorded version in a new segment.
    pub fn publish(&mut self, progress: &dyn Progress) -> SyncResult<PublishReport> {
        let mut report = PublishReport::default();
        let pending = self.index.pending_packs()?;
        self.cache
            .remove_orphans(&pending)
            .map_err(SyncError::io(self.cache.dir().to_path_buf()))?;
        let gap = self.index.meta_u64(META_LAST_PUBLISHED)? < self.index.meta_u64(META_LAST_SEQ)?;
        if pending.is_empty() && self.index.unpublished_count()? == 0 && !gap {
            return Ok(report);
        }
        self.keys()?;
        self.upload_packs(&pending, progress, &mut report)?;
        loop {
            let device = self.device.clone();
            // Numbers are published in order with no gap: a number whose versions were
            // all superseded before publication still gets its (empty) segment, or
            // every reader would wait for it forever.
            let assigned = self.index.transaction(|tx| {
                let published = tx.meta_u64(META_LAST_PUBLISHED)?;
                let last = tx.meta_u64(META_LAST_SEQ)?;
                let counter = tx.meta_u64(META_COUNTER)?;
                if published < last {
                    let seq = Seq(published + 1);
                    return Ok(Some((seq, tx.versions_in_segment(seq)?, counter)));
                }
                let next = Seq(last + 1);
                if tx.assign_unpublished(next)? == 0 {
                    return Ok(None);
                }
                tx.set_meta(META_LAST_SEQ, &next.0.to_string())?;
                Ok(Some((next, tx.versions_in_segment(next)?, counter)))
            })?;
            let Some((seq, versions, counter)) = assigned else {
                break;
            };
            crate::failpoint("push-before-segment");
            let record = LogRecord {
                format: RECORD_FORMAT,
                device: device.clone(),
                seq,
                created_ms: crate::now_ms(),
                counter,
                versions,
            };
            let keys = self
                .keys
                .as_ref()
                .unwrap_or_else(|| unreachable!("unlocked above"));
            let sealed = seal_log(keys, RecordKind::Segment, &record);
            match self
                .store
                .put_if_absent(&self.layout.segment(&device, seq), &sealed)
            {
                Ok(()) => {}
                // Already there: a run killed after writing it and before recording
                // that. It must hold these versions (or more, if some were superseded
                // since); anything else means this index is behind the vault.
                Err(BackendError::AlreadyExists { .. }) => self.check_existing_segment(&record)?,
                Err(e) => return Err(e.into()),
            }
            crate::failpoint("push-after-segment");
            let created = record.created_ms;
            self.index.transaction(|tx| {
                tx.mark_published(seq)?;
                tx.set_meta(META_LAST_PUBLISHED, &seq.0.to_string())?;
                tx.set_device_applied(&device, seq, Some(created))
            })?;
            report.versions += record.versions.len();
            report.segments += 1;
            if seq.0 % SNAPSHOT_EVERY == 0 {
                self.write_snapshot(seq)?;
            }
        }
        Ok(report)
    }

    fn check_existing_segment(&self, ours: &LogRecord) -> SyncResult<()> {
        let key = self.layout.segment(&ours.device, ours.seq);
        let bytes = self.store.get(&key)?;
        let keys = self
            .keys
            .as_ref()
            .unwrap_or_else(|| unreachable!("unlocked before publishing"));
        let theirs = open_log(keys, RecordKind::Segment, &ours.device, ours.seq, &bytes)?;
        let known: std::collections::HashSet<(u64, &str)> = theirs
            .versions
            .iter()
            .map(|v| (v.counter(), v.path.as_str()))
            .collect();
        if ours
            .versions
            .iter()
            .all(|v| known.contains(&(v.counter(), v.path.as_str())))
        {
            return Ok(());
        }
        Err(SyncError::Invalid(format!(
            "segment {} of this device in the vault holds other versions than the local index; \
             run 'ghostie-fs setup --force' to rebuild this device from the vault",
            ours.seq
        )))
    }

    fn upload_packs(
        &mut self,
        pending: &[ObjectId],
        progress: &dyn Progress,
        report: &mut PublishReport,
    ) -> SyncResult<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let sizes: Vec<u64> = pending
            .iter()
            .map(|p| {
                std::fs::metadata(self.cache.path_of(p))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .collect();
        progress.start("Uploading", sizes.iter().sum(), Unit::Bytes);
        let queue = std::sync::Mutex::new(pending.iter().zip(&sizes).collect::<Vec<_>>());
        let (tx, rx) = std::sync::mpsc::channel::<SyncResult<(ObjectId, u64)>>();
        let store = &self.store;
        let layout = &self.layout;
        let cache = &self.cache;
        let device = &self.device;
        let mut first_error = None;
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL_IO {
                let tx = tx.clone();
                let queue = &queue;
                scope.spawn(move || loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some((pack, size)) = next else { break };
                    let path = cache.path_of(pack);
                    let key = layout.pack(device, pack);
                    let res = if path.exists() {
                        store
                            .put_file(&key, &path)
                            .map(|_| (pack.clone(), *size))
                            .map_err(SyncError::from)
                    } else {
                        // Uploaded by an earlier run that died before recording it, or
                        // lost: only the backend can tell, and a log entry must never
                        // name a pack that is not there.
                        match store.get_range(&key, 0..8) {
                            Ok(b) if !b.is_empty() => Ok((pack.clone(), 0)),
                            Ok(_) => Err(SyncError::Invalid(format!(
                                "pack {pack} is empty in the vault"
                            ))),
                            Err(e) if e.is_not_found() => Err(SyncError::Invalid(format!(
                                "the sealed pack {} waiting for upload is missing; run \
                                 'ghostie-fs setup --force' to rebuild this device from its folder",
                                path.display()
                            ))),
                            Err(e) => Err(e.into()),
                        }
                    };
                    let failed = res.is_err();
                    if tx.send(res).is_err() || failed {
                        break;
                    }
                });
            }
            drop(tx);
            for res in rx {
                match res {
                    Ok((pack, size)) => {
                        // Recording each upload keeps a resumed push from redoing it.
                        if let Err(e) = self.index.transaction(|t| t.remove_pending_pack(&pack)) {
                            first_error.get_or_insert(SyncError::from(e));
                            continue;
                        }
                        let _ = self.cache.remove(&pack);
                        report.packs += 1;
                        report.bytes += size;
                        progress.advance(size);
                        crate::failpoint("push-mid-upload");
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        });
        progress.finish();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn write_snapshot(&mut self, seq: Seq) -> SyncResult<()> {
        let versions: Vec<Version> = self
            .index
            .all_heads()?
            .into_iter()
            .filter(|h| h.version.device == self.device && h.published)
            .map(|h| h.version)
            .collect();
        let record = LogRecord {
            format: RECORD_FORMAT,
            device: self.device.clone(),
            seq,
            created_ms: crate::now_ms(),
            counter: self.index.meta_u64(META_COUNTER)?,
            versions,
        };
        let keys = self.keys()?;
        let sealed = seal_log(keys, RecordKind::Snapshot, &record);
        match self
            .store
            .put_if_absent(&self.layout.snapshot(&self.device, seq), &sealed)
        {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists the vault's devices and applies every segment not yet applied.
    pub fn poll(&mut self, progress: &dyn Progress) -> SyncResult<PollReport> {
        self.keys()?;
        let mut report = PollReport::default();
        let dirs = self.store.list_dirs(&self.layout.root())?;
        let devices: Vec<DeviceId> = dirs
            .iter()
            .filter_map(|d| self.layout.device_of_dir(d))
            .collect();
        report.devices = devices.len();
        let known = self.index.devices()?;
        let me = self.device.clone();
        for d in devices.iter().filter(|d| **d != me) {
            let row = known.iter().find(|r| &r.id == d);
            if row.and_then(|r| r.name.as_ref()).is_none() {
                self.learn_device_name(d)?;
            }
            let applied = row.map(|r| r.applied_seq).unwrap_or_default();
            match self.apply_log_of(d, applied, false, progress) {
                Ok(n) => {
                    report.new_versions += n;
                    if row.and_then(|r| r.problem.as_ref()).is_some() {
                        self.index
                            .transaction(|tx| tx.set_device_problem(d, None))?;
                    }
                }
                Err(SyncError::Damaged(why)) => {
                    let name = self.name_map()?.get(d).cloned().unwrap_or_default();
                    let sentence = format!("the log of device {name} is damaged: {why}");
                    self.index
                        .transaction(|tx| tx.set_device_problem(d, Some(&sentence)))?;
                    report.problems.push(sentence);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    fn learn_device_name(&mut self, d: &DeviceId) -> SyncResult<()> {
        let record = match self.store.get(&self.layout.device_record(d)) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let keys = self.keys()?;
        if let Ok(rec) = open_device(keys, d, &record) {
            let name = crate::config::filename_safe(&rec.name);
            self.index.transaction(|tx| tx.set_device_name(d, &name))?;
        }
        Ok(())
    }

    /// Applies `d`'s snapshot (when starting from nothing) and segments after
    /// `applied`. Stops at the first damaged or missing segment: later ones may depend
    /// on it. Returns the number of versions offered.
    fn apply_log_of(
        &mut self,
        d: &DeviceId,
        mut applied: Seq,
        own: bool,
        progress: &dyn Progress,
    ) -> SyncResult<usize> {
        let mut offered = 0;
        if applied.0 == 0 {
            let snaps = self.store.list(&self.layout.snapshot_prefix(d), None)?;
            let prefix = self.layout.snapshot_prefix(d);
            if let Some(seq) = snaps
                .iter()
                .filter_map(|k| Layout::seq_of(&prefix, k))
                .max()
            {
                let bytes = self.store.get(&self.layout.snapshot(d, seq))?;
                let keys = self.keys()?;
                let rec = open_log(keys, RecordKind::Snapshot, d, seq, &bytes)
                    .map_err(|e| SyncError::Damaged(format!("snapshot {seq}: {e}")))?;
                offered += self.apply_record(d, &rec, own)?;
                applied = seq;
            }
        }
        let log_prefix = self.layout.log_prefix(d);
        let after = (applied.0 > 0).then(|| self.layout.segment(d, applied));
        let keys_listed = self.store.list(&log_prefix, after.as_deref())?;
        let seqs: Vec<Seq> = keys_listed
            .iter()
            .filter_map(|k| Layout::seq_of(&log_prefix, k))
            .collect();
        if !seqs.is_empty() {
            progress.start("Reading logs", seqs.len() as u64, Unit::Files);
        }
        for seq in seqs {
            if seq.0 != applied.0 + 1 {
                return Err(SyncError::Damaged(format!(
                    "segment {} is missing",
                    applied.0 + 1
                )));
            }
            let bytes = self.store.get(&self.layout.segment(d, seq))?;
            let keys = self.keys()?;
            let rec = open_log(keys, RecordKind::Segment, d, seq, &bytes)
                .map_err(|e| SyncError::Damaged(format!("segment {seq}: {e}")))?;
            offered += self.apply_record(d, &rec, own)?;
            applied = seq;
            progress.advance(1);
        }
        progress.finish();
        Ok(offered)
    }

    fn apply_record(&mut self, d: &DeviceId, rec: &LogRecord, own: bool) -> SyncResult<usize> {
        let n = rec.versions.len();
        for v in &rec.versions {
            check_path(&v.path)?;
        }
        self.index.transaction(|tx| {
            let mut max_counter = 0;
            for v in &rec.versions {
                tx.offer_version(v, own.then_some(rec.seq), true)?;
                max_counter = max_counter.max(v.counter());
            }
            if own {
                // Recovering this device's own history: never reuse a counter or a seq.
                let c = tx.meta_u64(META_COUNTER)?.max(max_counter).max(rec.counter);
                tx.set_meta(META_COUNTER, &c.to_string())?;
                let s = tx.meta_u64(META_LAST_SEQ)?.max(rec.seq.0);
                tx.set_meta(META_LAST_SEQ, &s.to_string())?;
                tx.set_meta(META_LAST_PUBLISHED, &s.to_string())?;
            }
            tx.set_device_applied(d, rec.seq, Some(rec.created_ms))
        })?;
        Ok(n)
    }

    /// Fetches and checks contents, handing each to `consume` on this thread.
    pub fn fetch_contents(
        &mut self,
        refs: &[ContentRef],
        mut consume: impl FnMut(FetchedContent) -> SyncResult<()>,
    ) -> SyncResult<()> {
        self.fetch_and_process(refs, &|_, r| r, |index, result| {
            consume(FetchedContent { index, result })
        })
    }

    /// Fetches and checks contents; `process` runs on the fetching threads (many at
    /// once), `consume` on this one.
    pub fn fetch_and_process<T: Send>(
        &mut self,
        refs: &[ContentRef],
        process: &(dyn Fn(usize, SyncResult<Vec<u8>>) -> T + Sync),
        consume: impl FnMut(usize, T) -> SyncResult<()>,
    ) -> SyncResult<()> {
        self.keys()?;
        let keys = self
            .keys
            .as_ref()
            .unwrap_or_else(|| unreachable!("unlocked above"));
        let source = Source {
            store: self.store.as_ref(),
            layout: &self.layout,
            cache: &self.cache,
            keys,
        };
        fetch_contents(&source, refs, PARALLEL_IO, process, consume)
    }

    fn check_log_record(
        &self,
        kind: RecordKind,
        d: &DeviceId,
        seq: Seq,
        key: &str,
    ) -> SyncResult<()> {
        let keys = self
            .keys
            .as_ref()
            .unwrap_or_else(|| unreachable!("unlocked before checking"));
        let bytes = self.store.get(key)?;
        open_log(keys, kind, d, seq, &bytes).map(|_| ())
    }

    /// Checks every segment of every device and every content the namespace shows.
    /// Returns one line per damaged thing.
    pub fn verify(&mut self, progress: &dyn Progress) -> SyncResult<Vec<String>> {
        let mut damaged = Vec::new();
        self.keys()?;
        let names = self.name_map()?;
        let dirs = self.store.list_dirs(&self.layout.root())?;
        for d in dirs.iter().filter_map(|x| self.layout.device_of_dir(x)) {
            let name = names
                .get(&d)
                .cloned()
                .unwrap_or_else(|| d.as_str()[..8].to_owned());
            let prefix = self.layout.log_prefix(&d);
            let mut expect = 1;
            for key in self.store.list(&prefix, None)? {
                let Some(seq) = Layout::seq_of(&prefix, &key) else {
                    continue;
                };
                if seq.0 != expect {
                    damaged.push(format!("log of {name}: segment {expect} is missing"));
                }
                expect = seq.0 + 1;
                if let Err(e) = self.check_log_record(RecordKind::Segment, &d, seq, &key) {
                    damaged.push(format!("log of {name}: segment {seq}: {e}"));
                }
            }
            let snap_prefix = self.layout.snapshot_prefix(&d);
            for key in self.store.list(&snap_prefix, None)? {
                let Some(seq) = Layout::seq_of(&snap_prefix, &key) else {
                    continue;
                };
                if let Err(e) = self.check_log_record(RecordKind::Snapshot, &d, seq, &key) {
                    damaged.push(format!("snapshot of {name} at {seq}: {e}"));
                }
            }
        }
        let ns = self.namespace()?;
        let files: Vec<(String, ContentRef)> = ns
            .iter()
            .filter_map(|(p, s)| match &s.version.entry {
                Entry::File { content, .. } => Some((p.clone(), content.clone())),
                _ => None,
            })
            .collect();
        let refs: Vec<ContentRef> = files.iter().map(|(_, c)| c.clone()).collect();
        progress.start("Verifying", refs.len() as u64, Unit::Files);
        self.fetch_contents(&refs, |item| {
            if let Err(e) = item.result {
                damaged.push(format!("{}: {e}", files[item.index].0));
            }
            progress.advance(1);
            Ok(())
        })?;
        progress.finish();
        damaged.sort();
        Ok(damaged)
    }

    pub fn last_sync_ms(&self) -> SyncResult<Option<i64>> {
        Ok(self
            .index
            .meta(META_LAST_SYNC)?
            .and_then(|v| v.parse().ok()))
    }

    /// Rebuilds this device's own history from its log (after `setup --force` on a
    /// home whose device id survived).
    fn recover_own(&mut self) -> SyncResult<()> {
        let me = self.device.clone();
        self.apply_log_of(&me, Seq(0), true, &super::NoProgress)?;
        Ok(())
    }
}

/// Opens the master key: from the vault's keyring when the passphrase was changed
/// elsewhere (refreshing the local copy), else from this device's own copy.
fn unlock(
    home: &Home,
    config: &Config,
    store: &dyn crate::backend::ObjectStore,
    layout: &Layout,
    passphrase: &dyn PassphraseSource,
) -> SyncResult<SubKeys> {
    let local = read_master_key(home)?;
    if local.vault_id != config.vault_id {
        return Err(SyncError::Invalid(format!(
            "the key file {} belongs to another vault",
            home.master_key_path().display()
        )));
    }
    let remote = match store.get(&layout.keyring()) {
        Ok(bytes) => Some(
            WrappedKey::from_json(&bytes)
                .map_err(|e| SyncError::Damaged(format!("the vault's keyring is damaged ({e})")))?,
        ),
        Err(e) if e.is_not_found() => {
            return Err(SyncError::Damaged(
                "the vault has no keyring: is this the right vault path?".into(),
            ))
        }
        // Offline: the local copy of the key still opens the vault.
        Err(_) => None,
    };
    let pass = passphrase.existing()?;
    let master = match remote {
        Some(ring) if ring.generation != local.generation => {
            if ring.vault_id != config.vault_id {
                return Err(SyncError::Invalid(
                    "the backend holds a different vault than this device joined".into(),
                ));
            }
            // The passphrase was changed on another device: only the new one opens
            // the keyring; refresh the local copy under it.
            let master = ring.unwrap_key(pass.as_bytes())?;
            let rewrapped = WrappedKey::wrap(
                &master,
                pass.as_bytes(),
                ring.kdf.iterations.max(DEFAULT_ITERATIONS),
                &ring.vault_id,
                &ring.generation,
            );
            write_master_key(home, &rewrapped)?;
            master
        }
        _ => local.unwrap_key(pass.as_bytes())?,
    };
    Ok(SubKeys::derive(&master))
}

/// A path from another device's log must stay inside the folder.
pub(crate) fn check_path(path: &str) -> SyncResult<()> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(SyncError::Damaged(format!(
            "log names an unsafe path {path:?}"
        )))
    }
}

/// What `setup` was asked to do.
#[derive(Debug, Clone)]
pub struct SetupRequest {
    pub home: Home,
    pub backend: crate::config::BackendConfig,
    pub prefix: String,
    pub device_name: String,
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOutcome {
    Created,
    Joined { devices: usize },
}

/// Creates a vault where the backend holds none, else joins it. Everything that can
/// fail on the network or with the passphrase happens before anything is written to
/// the home, so a failed setup leaves no partial state.
pub fn setup_vault(
    req: &SetupRequest,
    store: SharedStore,
    pass: &dyn PassphraseSource,
) -> SyncResult<SetupOutcome> {
    let home = &req.home;
    if home.is_set_up() && !req.force {
        return Err(SyncError::Invalid(format!(
            "{} is already set up; add --force to set it up again",
            home.root().display()
        )));
    }
    let layout = Layout::new(&req.prefix);
    let (master, ring, outcome, passphrase) = match store.get(&layout.keyring()) {
        Ok(bytes) => {
            let ring = WrappedKey::from_json(&bytes)
                .map_err(|e| SyncError::Damaged(format!("the vault's keyring is damaged ({e})")))?;
            let p = pass.existing()?;
            let master = ring.unwrap_key(p.as_bytes())?;
            let devices = store
                .list_dirs(&layout.root())?
                .iter()
                .filter_map(|d| layout.device_of_dir(d))
                .count();
            (master, ring, SetupOutcome::Joined { devices }, p)
        }
        Err(e) if e.is_not_found() => {
            let p = pass.new_passphrase()?;
            let master = MasterKey::random();
            let ring = WrappedKey::wrap(
                &master,
                p.as_bytes(),
                DEFAULT_ITERATIONS,
                &random_id(),
                &random_id(),
            );
            (master, ring, SetupOutcome::Created, p)
        }
        Err(e) => return Err(e.into()),
    };
    let keys = SubKeys::derive(&master);

    // On --force, keep this home's device id (and rebuild its history from the vault)
    // unless the device is being renamed: then it starts afresh under a new id, so
    // no device ever shows under two names.
    let previous = home.load_device_id().ok();
    let reuse = match &previous {
        None => false,
        Some(id) => match store.get(&layout.device_record(id)) {
            Ok(b) => open_device(&keys, id, &b).is_ok_and(|r| r.name == req.device_name),
            Err(e) if e.is_not_found() => true,
            Err(e) => return Err(e.into()),
        },
    };
    let device = match (&previous, reuse) {
        (Some(id), true) => id.clone(),
        _ => DeviceId::random(),
    };
    for dir in store.list_dirs(&layout.root())? {
        let Some(other) = layout.device_of_dir(&dir) else {
            continue;
        };
        if other == device {
            continue;
        }
        let rec = match store.get(&layout.device_record(&other)) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        if let Ok(r) = open_device(&keys, &other, &rec) {
            if r.name == req.device_name {
                return Err(SyncError::Invalid(format!(
                    "another device of this vault is already called '{}'; choose another name with --device",
                    req.device_name
                )));
            }
        }
    }

    // The home's folders before anything reaches the vault: a home that cannot hold
    // them (a file where a folder must be) must not leave a device record behind.
    home.create_dirs()?;

    if outcome == SetupOutcome::Created {
        match store.put_if_absent(&layout.keyring(), &ring.to_json()) {
            Ok(()) => {}
            Err(BackendError::AlreadyExists { .. }) => return Err(SyncError::Invalid(
                "another device created this vault at the same moment; run setup again to join it"
                    .into(),
            )),
            Err(e) => return Err(e.into()),
        }
    }
    let record = DeviceRecord {
        format: RECORD_FORMAT,
        id: device.clone(),
        name: req.device_name.clone(),
        created_ms: crate::now_ms(),
    };
    store.put(&layout.device_record(&device), &seal_device(&keys, &record))?;

    if req.force {
        for suffix in ["", "-wal", "-shm"] {
            let p = std::path::PathBuf::from(format!("{}{suffix}", home.state_db().display()));
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_file(home.config_path());
    }
    // The same key under this device's own salt.
    let local = WrappedKey::wrap(
        &master,
        passphrase.as_bytes(),
        ring.kdf.iterations.max(DEFAULT_ITERATIONS),
        &ring.vault_id,
        &ring.generation,
    );
    let mut index = Index::open(&home.state_db(), true)?;
    index.transaction(|tx| {
        tx.set_device_name(&device, &req.device_name)?;
        // Cleared once the device's own history is rebuilt: a setup killed before
        // that must not leave a home that reuses counters.
        tx.set_meta(META_SETUP_INCOMPLETE, "1")
    })?;
    drop(index);
    home.save_device_id(&device)?;
    write_master_key(home, &local)?;
    let config = Config {
        format: CONFIG_FORMAT,
        backend: req.backend.clone(),
        prefix: req.prefix.clone(),
        device_name: req.device_name.clone(),
        vault_id: ring.vault_id.clone(),
    };
    home.save_config(&config)?;
    let mut vault = Vault::open_inner(
        home.clone(),
        Arc::clone(&store),
        Box::new(NoPassphrase),
        true,
    )?;
    vault.keys = Some(keys);
    if reuse {
        vault.recover_own()?;
    }
    vault
        .index
        .transaction(|tx| tx.set_meta(META_SETUP_INCOMPLETE, ""))?;
    Ok(outcome)
}

/// Used right after setup, when the keys are already in hand.
struct NoPassphrase;

impl PassphraseSource for NoPassphrase {
    fn existing(&self) -> SyncResult<Zeroizing<String>> {
        Err(SyncError::Passphrase("no passphrase is needed here".into()))
    }
    fn new_passphrase(&self) -> SyncResult<Zeroizing<String>> {
        self.existing()
    }
}
