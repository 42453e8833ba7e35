//! The mount's background worker: publishes what local changes queued (a moment after
//! the last one, at most a second after the first), polls other devices' logs, applies
//! what they changed to the tree and tells the kernel to forget it. Failures are
//! retried with exponential backoff; the queue survives in the index meanwhile.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::mount_fs::MountFs;
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

/// Tells the kernel to drop what it cached.
pub trait Invalidator: Send {
    fn inode(&self, ino: u64);
    fn entry(&self, parent: u64, name: &str);
}

pub struct WorkerConfig {
    pub home: Home,
    pub status: MountStatus,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn spawn(
    fs: Arc<MountFs>,
    inval: Box<dyn Invalidator>,
    cfg: WorkerConfig,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ghostie-sync".into())
        .spawn(move || run(fs, inval, cfg))
}

fn run(fs: Arc<MountFs>, inval: Box<dyn Invalidator>, mut cfg: WorkerConfig) {
    let mut next_poll = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut retry_at: Option<Instant> = None;
    let mut last_status = Instant::now() - STATUS_EVERY;
    let mut snapshot_checked = false;
    // A poll that failed half-way may have applied some segments whose paths it
    // never reported: the next good poll then rebuilds the whole view.
    let mut poll_failed = false;
    let mut last_checkpoint = Instant::now();
    loop {
        let now = Instant::now();
        let mut a = lock(&fs.activity);
        if a.shutdown {
            break;
        }
        let publish_at = a.first_unsent.map(|first| {
            let ready = (a.last_change.unwrap_or(first) + QUIET).min(first + MAX_DELAY);
            retry_at.map_or(ready, |r| ready.max(r))
        });
        let publish_due = publish_at.is_some_and(|t| now >= t);
        let poll_due = now >= next_poll;
        if !publish_due && !poll_due {
            let quiet = a.first_unsent.is_none()
                && a.last_change
                    .is_none_or(|t| t.elapsed() >= SNAPSHOT_WHEN_QUIET);
            if quiet && !snapshot_checked {
                drop(a);
                snapshot_checked = true;
                if let Err(e) = fs.vault.write_due_snapshot() {
                    tracing::warn!("snapshot failed, retried later: {e}");
                    snapshot_checked = false;
                }
                if let Err(e) = fs.vault.checkpoint_queue() {
                    tracing::warn!("index checkpoint failed: {e}");
                }
                last_checkpoint = Instant::now();
                continue;
            }
            let mut wake = next_poll.min(last_status + STATUS_EVERY);
            if let Some(t) = publish_at {
                wake = wake.min(t);
            }
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            drop(
                fs.wake
                    .wait_timeout(a, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0),
            );
            if last_status.elapsed() >= STATUS_EVERY {
                write_status(&fs, &mut cfg);
                last_status = Instant::now();
            }
            continue;
        }
        if publish_due {
            snapshot_checked = false;
            a.first_unsent = None;
            a.publishes_started += 1;
        }
        drop(a);

        if publish_due {
            let result = fs.publish_queue();
            let mut a = lock(&fs.activity);
            match result {
                Ok(r) => {
                    a.publishes_done = a.publishes_started;
                    a.last_error = None;
                    backoff = FIRST_BACKOFF;
                    retry_at = None;
                    cfg.status.backend_reachable = true;
                    if r.versions > 0 {
                        cfg.status.last_publish_ms = Some(crate::now_ms());
                        tracing::info!("published {} versions in {} packs", r.versions, r.packs);
                    }
                }
                Err(e) => {
                    tracing::warn!("upload failed, retrying in {backoff:?}: {e}");
                    a.first_unsent.get_or_insert(now);
                    a.last_error = Some(e.to_string());
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    cfg.status.backend_reachable = false;
                }
            }
            drop(a);
            fs.wake.notify_all();
        }

        if poll_due {
            next_poll = Instant::now() + fs.opts.poll;
            let polled = fs.poll_vault();
            match polled {
                Ok(r) => {
                    cfg.status.last_poll_ms = Some(crate::now_ms());
                    cfg.status.polls += 1;
                    cfg.status.backend_reachable = true;
                    for p in &r.problems {
                        tracing::error!("{p}");
                    }
                    if r.new_versions > 0 || poll_failed {
                        let changed = if poll_failed {
                            None
                        } else {
                            r.changed_paths.as_ref()
                        };
                        match fs.apply_remote(changed) {
                            Ok(list) => {
                                poll_failed = false;
                                invalidate(inval.as_ref(), &list);
                            }
                            Err(e) => {
                                poll_failed = true;
                                tracing::error!("cannot apply remote changes: {e}");
                            }
                        }
                    }
                }
                Err(e) => {
                    poll_failed = true;
                    tracing::warn!("poll failed: {e}");
                    lock(&fs.activity).last_error = Some(e.to_string());
                    cfg.status.backend_reachable = false;
                }
            }
        }
        let changed_since_checkpoint = lock(&fs.activity)
            .last_change
            .is_some_and(|t| t > last_checkpoint);
        if changed_since_checkpoint && last_checkpoint.elapsed() >= CHECKPOINT_AT_LEAST_EVERY {
            if let Err(e) = fs.vault.checkpoint_queue() {
                tracing::warn!("index checkpoint failed: {e}");
            }
            last_checkpoint = Instant::now();
        }
        if last_status.elapsed() >= STATUS_EVERY || publish_due || poll_due {
            write_status(&fs, &mut cfg);
            last_status = Instant::now();
        }
    }
    // Unmounted: one last try to send what is queued; what fails waits for the next start.
    let pending = fs.vault.unpublished_count().unwrap_or(0);
    if pending > 0 {
        if let Err(e) = fs.publish_queue() {
            tracing::warn!("{pending} changes stay queued for the next mount: {e}");
        }
    }
    let _ = fs.vault.write_due_snapshot();
    let _ = fs.vault.sync_queue();
}

fn invalidate(inval: &dyn Invalidator, list: &[Invalidation]) {
    for i in list {
        match i {
            Invalidation::Inode(ino) => inval.inode(*ino),
            Invalidation::Entry(parent, name) => inval.entry(*parent, name),
        }
    }
}

fn write_status(fs: &MountFs, cfg: &mut WorkerConfig) {
    cfg.status.pending_uploads = fs.vault.unpublished_count().unwrap_or(0);
    cfg.status.pending_bytes = fs.vault.queued_bytes().unwrap_or(0);
    cfg.status.open_dirty = fs.dirty_count() as u64;
    cfg.status.cache_used = fs.plain_cache_used();
    cfg.status.cache_limit = fs.opts.cache_limit;
    cfg.status.last_error = lock(&fs.activity).last_error.clone();
    cfg.status.updated_ms = crate::now_ms();
    if let Err(e) = cfg.status.write(&cfg.home) {
        tracing::warn!("cannot write the mount status: {e}");
    }
}
