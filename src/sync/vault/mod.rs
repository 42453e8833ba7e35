//! `Vault`: one device's handle on one vault, the one facade both front-ends use.
//!
//! Front-ends speak in intents: a path now holds this, or nothing (`record`, with
//! the rules of `rules.rs`); seal this content (`seal`); what does the device show
//! (`namespace`, `namespace_of`); bring in what others published (`poll`); send what
//! is queued (`publish`). They never see the index, the pack writer or a vector.
//!
//! Invariants it keeps (DESIGN §4, §6):
//! - **One writer per key.** This device writes only under its own prefix, and a log
//!   segment or snapshot is written create-only, so a retry after a crash can tell
//!   "already published" from "not yet".
//! - **Publish after upload.** A segment names only versions whose packs were in the
//!   backend before it was written (see `publish.rs`).
//! - **Record before upload.** Local changes become versions in the index, with the
//!   packs that hold their contents queued, in one transaction; uploads and
//!   publication resume from the index after a crash.
//! - **Counters never repeat.** The index is the only place this device's counter and
//!   sequence number live; a home whose index is gone is refused rather than restarted.
//!
//! Threads and locks. A `Vault` is shared (`&self` everywhere): the mount records
//! closes on its FUSE threads while its worker polls and publishes. Locks, outermost
//! first: `publishing` and `polling` (one publish and one poll at a time; held across
//! the network), then `writer` (the open pack), `names`, `index`. The last three are
//! never held across a network request: a poll lists and fetches first and takes the
//! index only to apply what it fetched, a publish takes it only to note what it
//! uploaded. So local work never waits for the backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use zeroize::Zeroizing;

use super::fetch::{fetch_contents, stream_blob, FetchedContent, Source};
use super::layout::Layout;
use super::namespace::{self, Namespace};
use super::pack::PackWriter;
use super::progress::{Progress, Unit};
use super::reader::ContentReader;
use super::records::{
    open_device, open_log, seal_device, seal_log, DeviceRecord, LogRecord, RECORD_FORMAT,
};
use super::{SyncError, SyncResult};
use crate::backend::{self, BackendError, SharedStore};
use crate::config::{Config, Home, CONFIG_FORMAT};
use crate::crypto::envelope::RecordKind;
use crate::crypto::keyring::{random_id, WrappedKey, DEFAULT_ITERATIONS};
use crate::crypto::{MasterKey, RemovedDevice, SubKeys, VaultSecrets};
use crate::model::{ContentHash, ContentRef, DeviceId, Entry, Seq, Version};
use crate::store::{DeviceRow, HomeLock, Index, LocalFile, PackQueue};

mod anonymize;
mod anonymize_mount;
mod conflicts;
mod gc;
mod look;
mod mount_local;
mod originals;
mod poll;
mod provider;
mod publish;
mod record;
mod rekey;
mod repack;
mod repair;
mod rewrite;
mod setup;
mod trust;
mod unlock;
mod upload;

pub use conflicts::{kept_name, Conflict, ConflictSibling, Keep};
pub use gc::{auto_timing as gc_auto_timing, GcOptions, GcReport, DEFAULT_GRACE};
pub use mount_local::{LocalSpecial, MountLocal, SpecialKind};
pub use poll::PollReport;
pub use publish::PublishReport;
pub use rekey::RekeyReport;
pub use repack::{RepackReport, REPACK_AT_LEAST, REPACK_DEAD_SHARE, REPACK_LIMIT};
pub use repair::Retake;
pub use rewrite::RewriteReport;
pub use setup::{setup, setup_vault, setup_with_login, NewLogin, SetupOutcome, SetupRequest};
pub use trust::{TrustReport, ANONYMIZE_MAX};
pub use unlock::PassphraseSource;
use unlock::{
    check_not_rolled_back, local_copy, read_master_key, remember_again, write_master_key,
    NewKeyring, NoPassphrase, Unlocked,
};

/// Uploads and downloads in flight at once.
const PARALLEL_IO: usize = 4;
/// A device writes a snapshot of its log every this many segments.
const SNAPSHOT_EVERY: u64 = 32;

const META_COUNTER: &str = "counter";
const META_LAST_SEQ: &str = "last_assigned_seq";
const META_LAST_PUBLISHED: &str = "last_published_seq";
const META_SETUP_INCOMPLETE: &str = "setup_incomplete";
/// Set by setup until a poll has read every log once: a home rebuilt from its own
/// log alone shows own versions that others superseded, whose contents may be
/// reclaimed, so nothing is reused until the whole vault has been read.
const META_REUSE_AFTER_POLL: &str = "reuse_after_poll";
const META_LAST_SYNC: &str = "last_sync_ms";
/// What this device's newest published segment said it had seen (JSON).
/// When this device last collected garbage (ms).
const META_LAST_GC: &str = "last_gc_ms";
const META_ACKED: &str = "acked_seen";
/// What the round that assigned the newest segment number had seen (JSON): a
/// segment published after a crash says what its own round saw.
const META_ASSIGNED_SEEN: &str = "assigned_seen";

pub struct Vault {
    home: Home,
    config: Config,
    device: DeviceId,
    store: SharedStore,
    layout: Layout,
    queue: PackQueue,
    passphrase: Arc<dyn PassphraseSource>,
    keys: OnceLock<Unlocked>,
    /// Key derivation started early (see [`Vault::begin_unlock`]).
    unlocking: Mutex<Option<std::thread::JoinHandle<SyncResult<Unlocked>>>>,
    index: Mutex<Index>,
    writer: Mutex<PackWriter>,
    publishing: Mutex<()>,
    polling: Mutex<()>,
    /// The index commits without waiting for the disk (the mount; see
    /// [`Vault::relax_durability`]).
    relaxed: AtomicBool,
    /// Relaxed commits since the index's log was last copied into the database.
    records_since_checkpoint: AtomicU32,
    defer_snapshots: AtomicBool,
    snapshot_due: AtomicBool,
    /// The next publish writes a segment even with nothing in it (a rewrite needs
    /// this device's newest segment sealed under the current key).
    force_segment: AtomicBool,
    /// Device names by id, read once: a mount names conflict siblings after every
    /// close. Cleared when a device learns its name.
    names: Mutex<Option<Arc<BTreeMap<DeviceId, String>>>>,
    /// Where the front-end can read a file's bytes again (see `repair.rs`).
    retake: Mutex<Option<Arc<dyn Retake>>>,
    /// Packs of earlier processes checked whole in this one.
    checked: Mutex<std::collections::BTreeSet<crate::model::ObjectId>>,
    /// The vault's anonymization as read (once) by this process: `Some(None)` where
    /// the vault has no policy.
    anonymizer: Mutex<Option<Option<Arc<anonymize::Anonymizer>>>>,
    /// For the mount: the size each content shows on this device where it shows
    /// more than its view (see `anonymize.rs`, "The mount").
    shown_sizes: Arc<Mutex<HashMap<ContentHash, anonymize_mount::Learned>>>,
    /// Originals queued under relaxed durability, not yet on disk for sure: made
    /// durable with the index (`sync_queue`, `checkpoint_queue`).
    originals_unsynced: AtomicBool,
    /// The journal a mount appends each close's originals to (`anonymize.rs`).
    originals_journal: Mutex<Option<std::fs::File>>,
    /// The mount learned sizes its file of them does not hold yet.
    learned_unsaved: AtomicBool,
    /// None for a vault opened to look ([`Vault::open_to_look`]).
    _lock: Option<HomeLock>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault({:?})", self.device)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The home's index, refused if its setup never finished (unless this is that setup).
fn open_index(home: &Home, during_setup: bool) -> SyncResult<Index> {
    let index = Index::open(&home.state_db(), false)?;
    if !during_setup
        && index
            .meta(META_SETUP_INCOMPLETE)?
            .is_some_and(|v| !v.is_empty())
    {
        return Err(SyncError::Invalid(
            "the setup of this home did not finish; run 'ghostie-fs setup --force' again".into(),
        ));
    }
    Ok(index)
}

impl Vault {
    /// Opens a set-up home; the passphrase is asked only when keys are first needed.
    pub fn open(home: Home, passphrase: Box<dyn PassphraseSource>) -> SyncResult<Self> {
        Self::open_with_retry(home, passphrase, backend::RetryPolicy::commands())
    }

    /// Opens a set-up home for a mount: its backend requests give up quickly (the
    /// mount's own worker retries its queue), so no file operation waits out an outage.
    pub fn open_for_mount(home: Home, passphrase: Box<dyn PassphraseSource>) -> SyncResult<Self> {
        Self::open_with_retry(home, passphrase, backend::RetryPolicy::mount())
    }

    /// Opens a set-up home whose backend requests are retried as `policy` says.
    pub fn open_with_retry(
        home: Home,
        passphrase: Box<dyn PassphraseSource>,
        policy: backend::RetryPolicy,
    ) -> SyncResult<Self> {
        let config = home.load_config()?;
        let passphrase: Box<dyn PassphraseSource> = match config.backend {
            crate::config::BackendConfig::Gist { .. }
            | crate::config::BackendConfig::Dropbox { .. }
            | crate::config::BackendConfig::Gdrive { .. } => {
                Box::new(provider::AskOnce::new(passphrase))
            }
            _ => passphrase,
        };
        let token = provider::credential_for(&home, &config.backend, Some(passphrase.as_ref()))?;
        let store = backend::open(&config.backend, policy, token)?;
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
        let index = open_index(&home, during_setup)?;
        let queue = PackQueue::new(home.queue_dir());
        let adopted = queue
            .adopt_old(&home.old_queue_dir())
            .map_err(SyncError::io(home.old_queue_dir()))?;
        if adopted > 0 {
            tracing::info!("moved {adopted} queued packs from sync/cache/ to sync/queue/");
        }
        // Packs no pending upload names are what a run killed between sealing and
        // recording left behind: nobody was told they were kept, and their contents
        // are still where they came from. This process holds the home, so no writer
        // of ours is using them.
        let pending = index.pending_packs()?;
        queue
            .remove_orphans(&pending)
            .map_err(SyncError::io(queue.dir().to_path_buf()))?;
        Ok(Self::assemble(
            home,
            config,
            device,
            store,
            index,
            Arc::from(passphrase),
            Some(lock),
        ))
    }

    /// A vault of the given parts, with nothing unlocked, written or checked yet.
    fn assemble(
        home: Home,
        config: Config,
        device: DeviceId,
        store: SharedStore,
        index: Index,
        passphrase: Arc<dyn PassphraseSource>,
        lock: Option<HomeLock>,
    ) -> Self {
        let layout = Layout::new(&config.prefix);
        let queue = PackQueue::new(home.queue_dir());
        let writer = PackWriter::new(queue.clone(), device.clone());
        Self {
            home,
            config,
            device,
            store,
            layout,
            queue,
            passphrase,
            keys: OnceLock::new(),
            unlocking: Mutex::new(None),
            index: Mutex::new(index),
            writer: Mutex::new(writer),
            publishing: Mutex::new(()),
            polling: Mutex::new(()),
            relaxed: AtomicBool::new(false),
            records_since_checkpoint: AtomicU32::new(0),
            defer_snapshots: AtomicBool::new(false),
            snapshot_due: AtomicBool::new(false),
            force_segment: AtomicBool::new(false),
            names: Mutex::new(None),
            retake: Mutex::new(None),
            checked: Mutex::new(std::collections::BTreeSet::new()),
            anonymizer: Mutex::new(None),
            shown_sizes: Arc::new(Mutex::new(HashMap::new())),
            originals_unsynced: AtomicBool::new(false),
            originals_journal: Mutex::new(None),
            learned_unsaved: AtomicBool::new(false),
            _lock: lock,
        }
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

    fn index(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }

    fn writer(&self) -> MutexGuard<'_, PackWriter> {
        lock(&self.writer)
    }

    /// Where the vault lives, for `status`: kind and place, never credentials.
    pub fn describe_backend(&self) -> String {
        self.store.describe()
    }

    fn name_map(&self) -> SyncResult<Arc<BTreeMap<DeviceId, String>>> {
        let mut cached = lock(&self.names);
        if let Some(names) = cached.as_ref() {
            return Ok(names.clone());
        }
        let mut names = BTreeMap::new();
        for d in self.index().devices()? {
            let name = d.name.unwrap_or_else(|| d.id.as_str()[..8].to_owned());
            names.insert(d.id, name);
        }
        names.insert(self.device.clone(), self.config.device_name.clone());
        let names = Arc::new(names);
        *cached = Some(names.clone());
        Ok(names)
    }

    /// Forgets the device names read so far (after one changed).
    fn forget_names(&self) {
        *lock(&self.names) = None;
    }

    /// What the device shows, from everything it knows. The heads stream from the
    /// index a path at a time: only the namespace is ever whole.
    pub fn namespace(&self) -> SyncResult<Namespace> {
        let names = self.name_map()?;
        self.index()
            .with_heads_by_path(|heads| build_namespace(&names, heads))
            .map_err(SyncError::from)
    }

    /// The namespace restricted to `paths`: what each shows, with its conflict
    /// siblings and parent folders. Cheaper than [`Vault::namespace`] after a change
    /// to a few paths.
    pub fn namespace_of(&self, paths: &[String]) -> SyncResult<Namespace> {
        let names = self.name_map()?;
        let mut heads = Vec::with_capacity(paths.len());
        {
            let index = self.index();
            for p in paths {
                heads.push((p.as_str(), index.heads_of(p)?));
            }
        }
        Ok(build_namespace(
            &names,
            heads.iter().map(|(p, v)| (*p, v.as_slice())),
        ))
    }

    /// One listing of the vault's root: why the backend does not serve, if it does not.
    pub fn check_backend(&self) -> Result<(), BackendError> {
        self.store.list_dirs(&self.layout.root()).map(|_| ())
    }

    /// Waits up to about `max` for the backend to tell of a change another writer
    /// made (Dropbox's longpoll): `Some(Ok(true))` as soon as one comes; None for a
    /// backend that cannot tell.
    pub fn wait_for_change(&self, max: std::time::Duration) -> Option<SyncResult<bool>> {
        self.store
            .wait_for_change(max)
            .map(|r| r.map_err(SyncError::from))
    }

    /// The provider's account and request budget (Gist), asking it when `look`.
    pub fn provider_status(&self, look: bool) -> Option<backend::ProviderStatus> {
        self.store.provider_status(look)
    }

    pub fn device_names(&self) -> SyncResult<BTreeMap<DeviceId, String>> {
        Ok((*self.name_map()?).clone())
    }

    /// Every device of the vault this device knows, with how far it is applied.
    pub fn devices(&self) -> SyncResult<Vec<DeviceRow>> {
        Ok(self.index().devices()?)
    }

    /// Seals one content into the upload queue; the version that names it is recorded
    /// with [`Vault::record`]. With `known`, the caller vouches for its SHA-256.
    pub fn seal(
        &self,
        input: impl std::io::Read,
        size_hint: u64,
        known: Option<ContentHash>,
    ) -> SyncResult<ContentRef> {
        let keys = self.keys()?;
        self.writer()
            .seal(keys, input, size_hint, known)
            .map_err(SyncError::io(self.queue.dir().to_path_buf()))
    }

    /// Where each content already lives in the vault, if anywhere: a rename or a copy
    /// needs no new upload.
    pub fn contents_by_hash(
        &self,
        hashes: &[ContentHash],
    ) -> SyncResult<std::collections::HashMap<ContentHash, ContentRef>> {
        if self
            .index()
            .meta(META_REUSE_AFTER_POLL)?
            .is_some_and(|v| !v.is_empty())
        {
            return Ok(std::collections::HashMap::new());
        }
        Ok(self.index().contents_by_hash(hashes)?)
    }

    /// What the plain folder held after the last sync, by path (folder sync only).
    pub fn local_files(&self) -> SyncResult<std::collections::HashMap<String, LocalFile>> {
        Ok(self.index().local_files()?)
    }

    /// Updates the record of what the folder holds, in one transaction.
    pub fn update_local(&self, updates: &[(String, Option<LocalFile>)]) -> SyncResult<()> {
        if updates.is_empty() {
            return Ok(());
        }
        self.index().transaction(|tx| {
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

    /// Forgets every record of what the folder held (it becomes a mount point, or it
    /// vanished): nothing is read as deleted from a folder that is not there.
    pub fn forget_local_files(&self) -> SyncResult<usize> {
        let recorded: Vec<(String, Option<LocalFile>)> =
            self.local_files()?.into_keys().map(|p| (p, None)).collect();
        self.update_local(&recorded)?;
        Ok(recorded.len())
    }

    /// Own versions not yet in the vault.
    pub fn unpublished_count(&self) -> SyncResult<u64> {
        Ok(self.index().unpublished_count()?)
    }

    /// Whether anything waits to be uploaded or published.
    pub fn has_pending_work(&self) -> SyncResult<bool> {
        let index = self.index();
        let gap = index.meta_u64(META_LAST_PUBLISHED)? < index.meta_u64(META_LAST_SEQ)?;
        Ok(index.unpublished_count()? > 0 || !index.pending_packs()?.is_empty() || gap)
    }

    pub fn touch_last_sync(&self) -> SyncResult<()> {
        let now = crate::now_ms().to_string();
        self.index()
            .transaction(|tx| tx.set_meta(META_LAST_SYNC, &now))?;
        Ok(())
    }

    pub fn last_sync_ms(&self) -> SyncResult<Option<i64>> {
        Ok(self
            .index()
            .meta(META_LAST_SYNC)?
            .and_then(|v| v.parse().ok()))
    }

    /// Where contents are read from, unlocked.
    fn source(&self) -> SyncResult<Source<'_>> {
        Ok(Source {
            store: self.store.as_ref(),
            layout: &self.layout,
            queue: &self.queue,
            keys: self.keys()?,
        })
    }

    /// Fetches and checks contents, handing each to `consume` on this thread.
    pub fn fetch_contents(
        &self,
        refs: &[ContentRef],
        mut consume: impl FnMut(FetchedContent) -> SyncResult<()>,
    ) -> SyncResult<()> {
        self.fetch_and_process(refs, &|_, r| r, |index, result| {
            consume(FetchedContent { index, result })
        })
    }

    /// Fetches one (large) content a window at a time into `out`, checking all of it.
    pub fn stream_content(&self, r: &ContentRef, out: &mut dyn std::io::Write) -> SyncResult<()> {
        stream_blob(&self.source()?, r, out)
    }

    /// Fetches and checks contents; `process` runs on the fetching threads (many at
    /// once), `consume` on this one.
    pub fn fetch_and_process<T: Send>(
        &self,
        refs: &[ContentRef],
        process: &(dyn Fn(usize, SyncResult<Vec<u8>>) -> T + Sync),
        consume: impl FnMut(usize, T) -> SyncResult<()>,
    ) -> SyncResult<()> {
        fetch_contents(&self.source()?, refs, PARALLEL_IO, process, consume)
    }

    /// A reader that fetches contents on any thread, sharing nothing with the vault's
    /// locks.
    pub fn reader(&self) -> SyncResult<ContentReader> {
        Ok(ContentReader::new(
            self.store.clone(),
            self.layout.clone(),
            self.queue.clone(),
            self.keys()?.clone(),
        ))
    }

    /// Index commits stop waiting for the disk: a commit survives a crash of this
    /// process but not a power cut until the next [`Vault::sync_queue`] or
    /// [`Vault::checkpoint_queue`]. The mount acknowledges close() this way and
    /// fsync() with a checkpoint, as a local filesystem does.
    pub fn relax_durability(&self) -> SyncResult<()> {
        self.index().relax_durability()?;
        self.relaxed.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes everything recorded so far survive a power cut, not only a crash: the
    /// queued packs, the queue folder's names and the index. What fsync() in the
    /// mount waits for.
    pub fn sync_queue(&self) -> SyncResult<()> {
        self.writer()
            .sync()
            .map_err(SyncError::io(self.queue.dir().to_path_buf()))?;
        self.sync_originals_queue()?;
        self.index().checkpoint()?;
        Ok(())
    }

    /// Copies the index's write-ahead log into the database, after the packs its
    /// records name are on disk: a power cut must never leave a durable record of
    /// bytes that were not. The mount calls this (its index never checkpoints on
    /// its own).
    pub fn checkpoint_queue(&self) -> SyncResult<()> {
        self.writer()
            .sync()
            .map_err(SyncError::io(self.queue.dir().to_path_buf()))?;
        self.sync_originals_queue()?;
        self.index().checkpoint_quietly()?;
        Ok(())
    }

    /// Bytes of sealed packs waiting for upload.
    pub fn queued_bytes(&self) -> SyncResult<u64> {
        let pending = self.index().pending_packs()?;
        Ok(pending
            .iter()
            .filter_map(|p| std::fs::metadata(self.queue.path_of(p)).ok())
            .map(|m| m.len())
            .sum())
    }

    fn check_log_record(
        &self,
        kind: RecordKind,
        d: &DeviceId,
        seq: Seq,
        key: &str,
    ) -> SyncResult<()> {
        let bytes = self.store.get(key)?;
        open_log(self.keys()?, kind, d, seq, &bytes).map(|_| ())
    }

    /// Checks every segment of every device and every content the namespace shows.
    /// Returns one line per damaged thing.
    pub fn verify(&self, progress: &dyn Progress) -> SyncResult<Vec<String>> {
        let mut damaged = Vec::new();
        self.keys()?;
        let names = self.name_map()?;
        // How far this device has read each log (its own: published): a log that
        // now ends before that was rolled back.
        let mut seen: BTreeMap<DeviceId, u64> = self
            .index()
            .devices()?
            .into_iter()
            .map(|r| (r.id, r.applied_seq.0))
            .collect();
        seen.insert(
            self.device.clone(),
            self.index().meta_u64(META_LAST_PUBLISHED)?,
        );
        let claims = self.index().furthest_claims()?;
        let dirs = self.store.list_dirs(&self.layout.root())?;
        for d in dirs.iter().filter_map(|x| self.layout.device_of_dir(x)) {
            let name = names
                .get(&d)
                .cloned()
                .unwrap_or_else(|| d.as_str()[..8].to_owned());
            let prefix = self.layout.log_prefix(&d);
            let snap_prefix = self.layout.snapshot_prefix(&d);
            // The log first: a device reclaiming it between the two listings removes
            // only what a snapshot listed next stands in for.
            let segments = self.store.list(&prefix, None)?;
            let snapshots = self.store.list(&snap_prefix, None)?;
            // Segments up to the newest snapshot may have been reclaimed, also while
            // this runs.
            let reclaimed = |e: &SyncError| matches!(e, SyncError::Backend(b) if b.is_not_found());
            // Sealed under a key `rekey --rewrite` dropped: what a snapshot stands
            // in for, or a removed device's log, which no longer counts.
            let removed = self.log_cut(&d)?.is_some();
            let dropped = |e: &SyncError| {
                matches!(
                    e,
                    SyncError::Crypto(crate::crypto::CryptoError::DroppedKey(_))
                )
            };
            let covered = snapshots
                .iter()
                .filter_map(|k| Layout::seq_of(&snap_prefix, k))
                .map(|s| s.0)
                .max()
                .unwrap_or(0);
            let mut expect = 1;
            let mut newest = 0;
            for key in segments {
                let Some(seq) = Layout::seq_of(&prefix, &key) else {
                    continue;
                };
                if seq.0 != expect && seq.0.saturating_sub(1) > covered {
                    damaged.push(format!("log of {name}: segment {expect} is missing"));
                }
                expect = seq.0 + 1;
                newest = newest.max(seq.0);
                match self.check_log_record(RecordKind::Segment, &d, seq, &key) {
                    // Reclaimed since the listings: a snapshot at or after it (maybe
                    // one written since) stands in for it.
                    Err(e) if reclaimed(&e) && self.newest_snapshot(&d, seq)?.is_some() => {}
                    Err(e) if dropped(&e) && (removed || seq.0 <= covered) => {}
                    Err(e) => damaged.push(format!("log of {name}: segment {seq}: {e}")),
                    Ok(()) => {}
                }
            }
            for key in snapshots {
                let Some(seq) = Layout::seq_of(&snap_prefix, &key) else {
                    continue;
                };
                newest = newest.max(seq.0);
                match self.check_log_record(RecordKind::Snapshot, &d, seq, &key) {
                    Err(e)
                        if reclaimed(&e) && self.newest_snapshot(&d, Seq(seq.0 + 1))?.is_some() => {
                    }
                    Err(e) if dropped(&e) && (removed || seq.0 < covered) => {}
                    Err(e) => damaged.push(format!("snapshot of {name} at {seq}: {e}")),
                    Ok(()) => {}
                }
            }
            let read = seen.get(&d).copied().unwrap_or(0);
            if read > newest {
                damaged.push(format!(
                    "log of {name}: rolled back: this device has read it up to segment {read}, the backend shows only up to {newest}"
                ));
            }
            // What the other devices said they read of it.
            if let Some((by, claimed)) = claims.get(&d).filter(|(_, seq)| *seq > newest) {
                let by = names.get(by).cloned().unwrap_or_else(|| by.to_string());
                damaged.push(format!(
                    "log of {name}: hidden: device {by} has read it up to segment {claimed}, the backend shows only up to {newest}"
                ));
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
}

/// The merge of `heads`, with conflict siblings named after the devices.
fn build_namespace<P: AsRef<str>, V: AsRef<[Version]>>(
    names: &BTreeMap<DeviceId, String>,
    heads: impl IntoIterator<Item = (P, V)>,
) -> Namespace {
    let name_of = |d: &DeviceId| {
        names
            .get(d)
            .cloned()
            .unwrap_or_else(|| d.as_str()[..8].to_owned())
    };
    namespace::build(heads, &name_of)
}
