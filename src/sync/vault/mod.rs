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

use super::fetch::{fetch_contents, stream_blob, FetchedContent, Source};
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

mod poll;
mod publish;
mod queue;
mod setup;
mod unlock;

pub use poll::PollReport;
pub use publish::{PublishReport, UploadBatch};
pub use queue::Queued;
pub use setup::{setup_vault, SetupOutcome, SetupRequest};
pub use unlock::PassphraseSource;
use unlock::{write_master_key, NoPassphrase};

/// Uploads and downloads in flight at once.
const PARALLEL_IO: usize = 4;
/// A device writes a snapshot of its log every this many segments.
const SNAPSHOT_EVERY: u64 = 32;

const META_COUNTER: &str = "counter";
const META_LAST_SEQ: &str = "last_assigned_seq";
const META_LAST_PUBLISHED: &str = "last_published_seq";
const META_SETUP_INCOMPLETE: &str = "setup_incomplete";
const META_LAST_SYNC: &str = "last_sync_ms";

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
    /// The mount's open pack (see `queue.rs`).
    queue: Option<queue::QueuePack>,
    queue_scratch: Option<Box<queue::QueueScratch>>,
    /// Packs of the queue closed but not yet put on disk (see `sync_packs`).
    unsynced_packs: Vec<ObjectId>,
    defer_snapshots: bool,
    snapshot_due: bool,
    /// Device names by id, read once: a mount names conflict siblings after every
    /// close. Cleared when a device learns its name.
    names: std::sync::Mutex<Option<Arc<BTreeMap<DeviceId, String>>>>,
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
        Self::open_with_retry(home, passphrase, backend::RetryPolicy::commands())
    }

    /// Opens a set-up home whose backend requests are retried as `policy` says.
    pub fn open_with_retry(
        home: Home,
        passphrase: Box<dyn PassphraseSource>,
        policy: backend::RetryPolicy,
    ) -> SyncResult<Self> {
        let config = home.load_config()?;
        let store = backend::open(&config.backend, policy)?;
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
            queue: None,
            queue_scratch: None,
            unsynced_packs: Vec::new(),
            defer_snapshots: false,
            snapshot_due: false,
            names: std::sync::Mutex::new(None),
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

    fn name_map(&self) -> SyncResult<Arc<BTreeMap<DeviceId, String>>> {
        let mut cached = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(names) = cached.as_ref() {
            return Ok(names.clone());
        }
        let mut names = BTreeMap::new();
        for d in self.index.devices()? {
            let name = d.name.unwrap_or_else(|| d.id.as_str()[..8].to_owned());
            names.insert(d.id, name);
        }
        names.insert(self.device.clone(), self.config.device_name.clone());
        let names = Arc::new(names);
        *cached = Some(names.clone());
        Ok(names)
    }

    /// Forgets the device names read so far (after one changed).
    pub(super) fn forget_names(&mut self) {
        *self.names.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
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

    /// What the folder should show, from everything this device knows. The heads
    /// stream from the index a path at a time: only the namespace is ever whole.
    pub fn namespace(&self) -> SyncResult<Namespace> {
        self.index
            .with_heads_by_path(|heads| self.build_namespace(heads))?
    }

    /// The merge of `heads`, with conflict siblings named after the devices.
    fn build_namespace<P: AsRef<str>, V: AsRef<[Version]>>(
        &self,
        heads: impl IntoIterator<Item = (P, V)>,
    ) -> SyncResult<Namespace> {
        let names = self.name_map()?;
        let name_of = |d: &DeviceId| {
            names
                .get(d)
                .cloned()
                .unwrap_or_else(|| d.as_str()[..8].to_owned())
        };
        Ok(namespace::build(heads, &name_of))
    }

    /// The namespace restricted to `paths`: what each shows, with its conflict
    /// siblings and parent folders. Cheaper than [`Vault::namespace`] after a change
    /// to a few paths.
    pub fn namespace_of(&self, paths: &[String]) -> SyncResult<Namespace> {
        let mut heads = Vec::with_capacity(paths.len());
        for p in paths {
            heads.push((p.as_str(), self.index.heads_of(p)?));
        }
        self.build_namespace(heads.iter().map(|(p, v)| (*p, v.as_slice())))
    }

    /// Whether the backend answers a listing of the vault's root now.
    /// One listing of the vault's root: why the backend does not serve, if it does not.
    pub fn check_backend(&self) -> Result<(), BackendError> {
        self.store.list_dirs(&self.layout.root()).map(|_| ())
    }

    pub fn device_names(&self) -> SyncResult<BTreeMap<DeviceId, String>> {
        Ok((*self.name_map()?).clone())
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

    /// Where contents are read from, unlocked.
    fn source(&mut self) -> SyncResult<Source<'_>> {
        self.keys()?;
        let keys = self
            .keys
            .as_ref()
            .unwrap_or_else(|| unreachable!("unlocked above"));
        Ok(Source {
            store: self.store.as_ref(),
            layout: &self.layout,
            cache: &self.cache,
            keys,
        })
    }

    /// Fetches one (large) content a window at a time into `out`, checking all of it.
    pub fn stream_content(
        &mut self,
        r: &ContentRef,
        out: &mut dyn std::io::Write,
    ) -> SyncResult<()> {
        stream_blob(&self.source()?, r, out)
    }

    /// Fetches and checks contents; `process` runs on the fetching threads (many at
    /// once), `consume` on this one.
    pub fn fetch_and_process<T: Send>(
        &mut self,
        refs: &[ContentRef],
        process: &(dyn Fn(usize, SyncResult<Vec<u8>>) -> T + Sync),
        consume: impl FnMut(usize, T) -> SyncResult<()>,
    ) -> SyncResult<()> {
        fetch_contents(&self.source()?, refs, PARALLEL_IO, process, consume)
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
        let (small, large): (Vec<_>, Vec<_>) = files
            .iter()
            .partition(|(_, c)| c.size <= super::STREAM_FROM);
        let refs: Vec<ContentRef> = small.iter().map(|(_, c)| c.clone()).collect();
        progress.start("Verifying", files.len() as u64, Unit::Files);
        self.fetch_contents(&refs, |item| {
            match item.result {
                Ok(_) => {}
                // Unreachable is not damaged: say so instead of listing every file.
                Err(e @ SyncError::Backend(_)) => return Err(e),
                Err(e) => damaged.push(format!("{}: {e}", small[item.index].0)),
            }
            progress.advance(1);
            Ok(())
        })?;
        for (path, content) in large {
            match self.stream_content(content, &mut std::io::sink()) {
                Ok(()) => {}
                Err(e @ SyncError::Backend(_)) => return Err(e),
                Err(e) => damaged.push(format!("{path}: {e}")),
            }
            progress.advance(1);
        }
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
}
