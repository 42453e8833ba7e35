//! The mount's background work, on two threads that never hold the state lock while
//! they wait on the network: the uploader publishes what local changes queued (a
//! moment after the last one, at most half a second after the first), retrying with
//! exponential backoff while the queue survives in the index; the poller looks at
//! other devices' logs, applies what they changed to the tree and tells the kernel to
//! forget it.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::mount_fs::{Activity, MountFs};
use super::status::MountStatus;
use super::tree::Invalidation;
use crate::config::Home;

/// Publish once changes have been quiet this long...
const QUIET: Duration = Duration::from_millis(50);
/// ...or once the oldest unsent change is this old, whichever comes first.
const MAX_DELAY: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// A deferred snapshot is written once changes have paused this long.
const SNAPSHOT_WHEN_QUIET: Duration = Duration::from_secs(2);
/// During long bursts of writes the quiet moment may not come: the index's log is
/// copied into the database at least this often then.
const CHECKPOINT_AT_LEAST_EVERY: Duration = Duration::from_secs(10);
/// How often files whose close could not be recorded (a full disk) are tried again.
const UNSAVED_RETRY: Duration = Duration::from_secs(2);
/// How often a quiet mount says how far it has read and looks for space to
/// reclaim: at most every five minutes (a few writes an hour on request-limited
/// providers), sooner when collections are set to run more often.
/// How often a mount reads the vault's anonymization policy when no poll brought
/// anything (a poll that did reads it at once).
const ANONYMIZATION_READ_EVERY: Duration = Duration::from_secs(60);

fn housekeeping_every() -> Duration {
    crate::sync::gc_auto_timing()
        .1
        .min(Duration::from_secs(300))
}

/// Tells the kernel to drop what it cached.
pub trait Invalidator: Send {
    fn inode(&self, ino: u64);
    fn entry(&self, parent: u64, name: &str);
}

pub struct WorkerConfig {
    pub home: Home,
    pub status: MountStatus,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The two background threads of a mount; [`Workers::join`] waits for both.
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The status both threads report into, written out at most every `STATUS_EVERY`
/// (and after each publish and poll).
struct Reporter {
    home: Home,
    status: Mutex<(MountStatus, Instant)>,
}

impl Reporter {
    fn update(&self, fs: &MountFs, force: bool, change: impl FnOnce(&mut MountStatus)) {
        let mut guard = lock(&self.status);
        change(&mut guard.0);
        if !force && guard.1.elapsed() < STATUS_EVERY {
            return;
        }
        let status = &mut guard.0;
        status.pending_uploads = fs.vault.unpublished_count().unwrap_or(0);
        status.pending_bytes = fs.vault.queued_bytes().unwrap_or(0);
        status.open_dirty = fs.dirty_count() as u64;
        status.local_only = fs.local_only();
        status.cache_used = fs.plain_cache_used();
        status.cache_limit = fs.opts.cache_limit;
        status.lost = fs.vault.lost_files().unwrap_or_default();
        status.provider = fs.vault.provider_status(false);
        status.last_error = {
            let a = lock(&fs.activity);
            a.last_write_error.clone().or_else(|| a.last_error.clone())
        };
        status.updated_ms = crate::now_ms();
        if let Err(e) = status.write(&self.home) {
            tracing::warn!("cannot write the mount status: {e}");
        }
        guard.1 = Instant::now();
    }
}

/// Starts the uploader and the poller. They run apart, so an upload that waits out
/// an outage never delays seeing other devices' changes, nor the reverse.
pub fn spawn(
    fs: Arc<MountFs>,
    inval: Box<dyn Invalidator>,
    cfg: WorkerConfig,
) -> std::io::Result<Workers> {
    let reporter = Arc::new(Reporter {
        home: cfg.home,
        status: Mutex::new((cfg.status, Instant::now() - STATUS_EVERY)),
    });
    let upload = std::thread::Builder::new()
        .name("ghostie-upload".into())
        .spawn({
            let (fs, reporter) = (fs.clone(), reporter.clone());
            move || upload_loop(&fs, &reporter)
        })?;
    // Not joined at unmount: a longpoll may hold it for a minute, and it holds
    // nothing that needs cleaning up.
    std::thread::Builder::new()
        .name("ghostie-notify".into())
        .spawn({
            let fs = fs.clone();
            move || notify_loop(&fs)
        })?;
    let poll = std::thread::Builder::new()
        .name("ghostie-poll".into())
        .spawn(move || poll_loop(&fs, inval.as_ref(), &reporter))?;
    Ok(Workers {
        threads: vec![upload, poll],
    })
}

/// Publishes what local changes queued, a moment after the last one; retries with
/// backoff; checkpoints and writes deferred snapshots when things are quiet.
fn upload_loop(fs: &MountFs, reporter: &Reporter) {
    let mut backoff = FIRST_BACKOFF;
    let mut retry_at: Option<Instant> = None;
    let mut snapshot_checked = false;
    let mut last_checkpoint = Instant::now();
    let mut last_unsaved_try = Instant::now();
    let mut pacer = super::pacer::PublishPacer::new(fs.opts.publish_gap, Instant::now());
    let mut last_housekeeping = Instant::now();
    loop {
        if last_unsaved_try.elapsed() >= UNSAVED_RETRY && fs.has_unsaved() {
            fs.save_unsaved();
            last_unsaved_try = Instant::now();
        }
        let now = Instant::now();
        let mut a = lock(&fs.activity);
        if a.shutdown {
            break;
        }
        let publish_at = a.first_unsent.map(|first| {
            let ready = (a.last_change.unwrap_or(first) + QUIET).min(first + MAX_DELAY);
            let ready = ready.max(pacer.next_allowed(now));
            retry_at.map_or(ready, |r| ready.max(r))
        });
        if publish_at.is_none_or(|t| now < t) {
            let quiet = a.first_unsent.is_none()
                && a.last_change
                    .is_none_or(|t| t.elapsed() >= SNAPSHOT_WHEN_QUIET);
            let changed_since_checkpoint = a.last_change.is_some_and(|t| t > last_checkpoint);
            drop(a);
            if quiet && !snapshot_checked {
                snapshot_checked = true;
                if let Err(e) = fs.vault.write_due_snapshot() {
                    tracing::warn!("snapshot failed, retried later: {e}");
                    snapshot_checked = false;
                }
                checkpoint(fs, &mut last_checkpoint);
                continue;
            }
            if quiet && last_housekeeping.elapsed() >= housekeeping_every() {
                last_housekeeping = Instant::now();
                housekeeping(fs);
                continue;
            }
            // During long bursts of writes the quiet moment may not come.
            if changed_since_checkpoint && last_checkpoint.elapsed() >= CHECKPOINT_AT_LEAST_EVERY {
                checkpoint(fs, &mut last_checkpoint);
            }
            reporter.update(fs, false, |_| {});
            let a = lock(&fs.activity);
            let mut wake = now + STATUS_EVERY;
            if let Some(t) = publish_at {
                wake = wake.min(t);
            }
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            drop(
                fs.wake
                    .wait_timeout(a, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0),
            );
            continue;
        }
        snapshot_checked = false;
        a.first_unsent = None;
        a.publishes_started += 1;
        drop(a);
        pacer.spend(now);

        let result = fs.publish_queue();
        let mut a = lock(&fs.activity);
        let reached = match &result {
            Ok(r) => {
                a.publishes_done = a.publishes_started;
                a.last_error = None;
                // Contents moved or went while the queue was checked: the poller
                // rebuilds the tree from the index.
                a.view_stale |= r.repaired;
                backoff = FIRST_BACKOFF;
                retry_at = None;
                if r.versions > 0 {
                    tracing::info!("published {} versions in {} packs", r.versions, r.packs);
                }
                true
            }
            Err(e) => {
                tracing::warn!("upload failed, retrying in {backoff:?}: {e}");
                a.first_unsent.get_or_insert(now);
                a.last_error = Some(e.to_string());
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                false
            }
        };
        drop(a);
        fs.wake.notify_all();
        reporter.update(fs, true, |s| {
            s.backend_reachable = reached;
            if result.as_ref().is_ok_and(|r| r.versions > 0) {
                s.last_publish_ms = Some(crate::now_ms());
            }
        });
    }
    // Unmounted: one last try to record and send what is queued; what fails to be
    // sent waits for the next start.
    fs.save_unsaved();
    let pending = fs.vault.unpublished_count().unwrap_or(0);
    if pending > 0 {
        if let Err(e) = fs.publish_queue() {
            tracing::warn!("{pending} changes stay queued for the next mount: {e}");
        }
    }
    let _ = fs.vault.write_due_snapshot();
    let _ = fs.vault.sync_queue();
}

/// When quiet: tell the other devices how far this one has read (they reclaim
/// space only once every device has), and reclaim this device's own when due.
fn housekeeping(fs: &MountFs) {
    match fs.vault.acknowledge() {
        Ok(true) => tracing::debug!("told the other devices how far this one has read"),
        Ok(false) => {}
        Err(e) => tracing::warn!("could not tell how far this device has read, retried later: {e}"),
    }
    // A keyring served older than the one this mount unlocked with (a rollback).
    if let Ok(Some(problem)) = fs.vault.keyring_problem() {
        tracing::error!("{problem}");
    }
    // What a trusted mount learned of restored sizes, for its next start.
    fs.keep_learned_sizes();
    let collected = fs.vault.collect_garbage_if_due();
    // Files whose bytes moved (a repack, or sealed again under a new key): the
    // view takes their new place at the next poll.
    if let Ok(Some(r)) = &collected {
        if r.repacked.packs > 0 || r.resealed > 0 {
            lock(&fs.activity).view_stale = true;
        }
        if r.repacked.packs_left > 0 {
            tracing::info!(
                "repacked {} packs; {} more mostly superseded packs wait for the next collection",
                r.repacked.packs,
                r.repacked.packs_left
            );
        }
    }
    match collected {
        Ok(Some(r)) if r.objects_deleted() > 0 => tracing::info!(
            "reclaimed {} objects ({} bytes): {} packs, {} log segments, {} snapshots",
            r.objects_deleted(),
            r.bytes_freed,
            r.packs_deleted,
            r.segments_deleted,
            r.snapshots_deleted
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("reclaiming space failed, retried later: {e}"),
    }
}

fn checkpoint(fs: &MountFs, last: &mut Instant) {
    if let Err(e) = fs.vault.checkpoint_queue() {
        tracing::warn!("index checkpoint failed: {e}");
    }
    *last = Instant::now();
}

/// How long one wait for the backend's change notification lasts (Dropbox's
/// shortest longpoll).
const NOTIFY_WAIT: Duration = Duration::from_secs(30);
/// The pause after a failed wait, so an outage is not hammered.
const NOTIFY_PAUSE: Duration = Duration::from_secs(5);

/// Waits on the backend's change notification, where it has one, and wakes the
/// poller as soon as another device changed something: a change is seen within
/// a request's time instead of the poll interval.
fn notify_loop(fs: &MountFs) {
    // For the benchmark that compares against polling alone.
    if std::env::var_os("GHOSTIE_NO_CHANGE_NOTIFY").is_some() {
        return;
    }
    loop {
        if lock(&fs.activity).shutdown {
            return;
        }
        match fs.wait_for_remote_change(NOTIFY_WAIT) {
            None => return,
            Some(Ok(false)) => {}
            Some(Ok(true)) => {
                lock(&fs.activity).change_heard = true;
                fs.wake.notify_all();
            }
            Some(Err(e)) => {
                tracing::debug!("the change notification failed: {e}");
                let a = lock(&fs.activity);
                let _ = fs.wake.wait_timeout_while(a, NOTIFY_PAUSE, |a| !a.shutdown);
            }
        }
    }
}

/// Looks for other devices' changes every `--poll` (at once when the backend tells
/// of one), applies them to the tree and tells the kernel what to forget.
fn poll_loop(fs: &MountFs, inval: &dyn Invalidator, reporter: &Reporter) {
    // A poll that failed half-way may have applied some segments whose paths it
    // never reported: the next good poll then rebuilds the whole view.
    let mut poll_failed = false;
    let mut rules_read = Instant::now();
    loop {
        if lock(&fs.activity).shutdown {
            break;
        }
        let next_poll = Instant::now() + fs.opts.poll;
        lock(&fs.activity).change_heard = false;
        fs.flush_atimes();
        match fs.poll_vault() {
            Ok(r) => {
                for p in &r.problems {
                    tracing::error!("{p}");
                }
                let stale = std::mem::take(&mut lock(&fs.activity).view_stale);
                if stale {
                    poll_failed = true;
                }
                // Anonymization turned on or off, its rules changed, or the
                // sensitive key came or went: every file may show otherwise.
                if r.new_versions > 0 || rules_read.elapsed() >= ANONYMIZATION_READ_EVERY {
                    rules_read = Instant::now();
                    match fs.vault.refresh_anonymization() {
                        Ok(true) => {
                            tracing::info!("the vault's anonymization changed: showing it");
                            poll_failed = true;
                        }
                        Ok(false) => {}
                        Err(e) => tracing::error!("the vault's anonymization: {e}"),
                    }
                }
                if r.new_versions > 0 || poll_failed {
                    let changed = if poll_failed {
                        None
                    } else {
                        r.changed_paths.as_ref()
                    };
                    let learned = fs.learn_sizes(changed);
                    match fs.apply_remote(changed) {
                        Ok(list) => {
                            poll_failed = !learned;
                            invalidate(inval, &list);
                        }
                        Err(e) => {
                            poll_failed = true;
                            tracing::error!("cannot apply remote changes: {e}");
                        }
                    }
                }
                let damaged: Vec<String> = r
                    .problems
                    .iter()
                    .chain(&r.known_problems)
                    .cloned()
                    .collect();
                reporter.update(fs, true, |s| {
                    s.last_poll_ms = Some(crate::now_ms());
                    s.polls += 1;
                    s.backend_reachable = true;
                    s.damaged_logs = damaged;
                });
            }
            Err(e) => {
                poll_failed = true;
                tracing::warn!("poll failed: {e}");
                lock(&fs.activity).last_error = Some(e.to_string());
                reporter.update(fs, true, |s| s.backend_reachable = false);
            }
        }
        // A change told by the backend cuts the wait short, unless this poll
        // failed: then the interval stands, so an outage is not hammered.
        let mut a = lock(&fs.activity);
        let heard = |a: &Activity| a.change_heard && !poll_failed;
        while !a.shutdown && !heard(&a) && Instant::now() < next_poll {
            let wait = next_poll.saturating_duration_since(Instant::now());
            a = fs
                .wake
                .wait_timeout(a, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

fn invalidate(inval: &dyn Invalidator, list: &[Invalidation]) {
    for i in list {
        match i {
            Invalidation::Inode(ino) => inval.inode(*ino),
            Invalidation::Entry(parent, name) => inval.entry(*parent, name),
        }
    }
}
