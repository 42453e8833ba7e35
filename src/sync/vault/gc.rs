//! Reclaiming space: a device deletes its own packs that no version still names,
//! and its own log segments and snapshots that a newer snapshot stands in for.
//! Only the owner deletes (one writer per key), and never what a reader may still
//! need.
//!
//! Why deleting a dead pack is safe without locks. A pack is dead when no head this
//! device knows names any blob in it. Another device could still come to name one
//! of its blobs in two ways: it published a version doing so that this device has
//! not read yet, or it will make one (reusing content it thinks is still there).
//! Neither can happen once every other device has published a record saying it has
//! read at least what this device had read when it found the pack dead (its
//! *view*):
//! - every version that device made before that record is in its log up to the
//!   record, which this device has read (that is how it knows of the record), so a
//!   reference among them would keep the pack alive here;
//! - every version it makes afterwards is made in a view at least as new, in which
//!   the blob is dead too, and a device reuses only contents some head still names
//!   (`store::index::reclaim`).
//!
//! On top of that, a dead pack is kept for a grace period after it was found dead,
//! for readers in flight: a mount with the old version open, a pull that listed it.
//! A reader that still asks for a reclaimed pack is told its version was replaced
//! (`SyncError::Superseded`), never given wrong bytes.
//!
//! Log segments: a reader behind the newest snapshot goes on from the snapshot
//! (`poll.rs`), so segments before it and older snapshots go at once; the
//! snapshot's own segment stays, so that a listing of the log never comes back
//! empty for a device that has one.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::*;
use crate::model::ObjectId;
use crate::store::{DeadPack, SeenVector};

/// How long a pack found dead is kept for readers in flight, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);
/// A collection writes a new snapshot (so that the segments before it can go) once
/// this many segments follow the newest one.
const SNAPSHOT_AFTER: usize = 8;
/// Automatic collections (in `sync` and a running mount) run at most this often.
pub const AUTO_EVERY: Duration = Duration::from_secs(60 * 60);

/// A duration in whole seconds from the environment variable `var`, else `default`.
fn seconds_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(default)
}

/// The timing of automatic collections: `GHOSTIE_GC_GRACE` and `GHOSTIE_GC_EVERY`
/// (seconds) change the defaults.
pub fn auto_timing() -> (Duration, Duration) {
    (
        seconds_from_env("GHOSTIE_GC_GRACE", DEFAULT_GRACE),
        seconds_from_env("GHOSTIE_GC_EVERY", AUTO_EVERY),
    )
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Say what would go, delete nothing.
    pub dry_run: bool,
    pub grace: Duration,
    /// The bytes of old packs one collection reads to repack them (each is read
    /// whole while the publishing and polling locks are held); the packs beyond it
    /// wait for the next collection. Zero repacks nothing.
    pub repack_limit: u64,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            grace: DEFAULT_GRACE,
            repack_limit: super::repack::REPACK_LIMIT,
        }
    }
}

/// What a collection found and did (or, dry, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Objects deleted (or that would be): packs, log segments, snapshots.
    pub packs_deleted: usize,
    pub segments_deleted: usize,
    pub snapshots_deleted: usize,
    /// Their bytes, where the backend's listing tells sizes.
    pub bytes_freed: u64,
    /// Objects deleted whose size the listing did not tell.
    pub sizes_unknown: usize,
    /// A snapshot written first, so that the segments before it can go (bytes).
    pub snapshot_written: Option<u64>,
    /// This device's packs still named by some version.
    pub packs_live: usize,
    /// Dead packs kept: within the grace period, or not yet seen past by every device.
    pub packs_waiting: usize,
    /// The devices that have not yet said they read far enough, by name.
    pub waiting_for: Vec<String>,
    /// The devices whose logs this one must read further first (others read
    /// more of them): until then nothing is found dead.
    pub behind: Vec<String>,
    /// Mostly superseded packs whose live blobs were copied into a new pack (see
    /// `repack.rs`); the old ones are then deleted like any dead pack.
    pub repacked: super::repack::RepackReport,
    /// This device's files sealed again under the current key (`rekey --rewrite`),
    /// and files of removed devices taken over.
    pub resealed: usize,
    /// This device's originals objects (anonymization) merged into one: a trusted
    /// device reads every one of them to restore values, so their number is what
    /// costs.
    pub originals_merged: usize,
}

impl GcReport {
    pub fn objects_deleted(&self) -> usize {
        self.packs_deleted + self.segments_deleted + self.snapshots_deleted
    }
}

/// Whether `seen` (a device's word) covers `view` in every log but its own.
fn covers(seen: &SeenVector, view: &SeenVector, device: &DeviceId) -> bool {
    view.iter()
        .filter(|(d, _)| *d != device)
        .all(|(d, seq)| seen.get(d).is_some_and(|s| s >= seq))
}

impl Vault {
    /// Deletes what this device may reclaim (see the module doc). Holds the
    /// publishing lock, so no upload of this process races a deletion; the index is
    /// taken only to read and to note.
    pub fn collect_garbage(&self, options: &GcOptions) -> SyncResult<GcReport> {
        // A rewrite asked for (`rekey --rewrite` on some device): this device seals
        // what it owns again under the current key first.
        let mut resealed = 0;
        if !options.dry_run {
            match self.reseal_own() {
                Ok((own, adopted)) => resealed = own + adopted,
                Err(e) => tracing::warn!(
                    "sealing this device's data again under the new key failed, retried later: {e}"
                ),
            }
        }
        let (listed, repacked) = {
            let _one_at_a_time = lock(&self.publishing);
            let _no_poll = lock(&self.polling);
            self.keys()?;
            let packs_prefix = self.layout.packs_prefix(&self.device);
            let listed: Vec<(ObjectId, Option<u64>)> = self
                .store
                .list_sized(&packs_prefix)?
                .into_iter()
                .filter_map(|(k, size)| Some((Layout::pack_of(&packs_prefix, &k)?, size)))
                .collect();
            let repacked = self.repack(&listed, options.dry_run, options.repack_limit)?;
            (listed, repacked)
        };
        // The moves go out first: the old packs are dead once they are published,
        // and go once every device has read that far.
        if !options.dry_run && repacked.packs > 0 {
            self.publish(&crate::sync::NoProgress)?;
        }
        let mut report = self.collect_listed(options, listed)?;
        report.repacked = repacked;
        report.resealed = resealed;
        report.originals_merged = {
            let _one_at_a_time = lock(&self.publishing);
            match self.merge_own_originals(options.dry_run) {
                Ok(merged) => merged,
                Err(e) => {
                    tracing::warn!("merging this device's originals failed, retried later: {e}");
                    0
                }
            }
        };
        Ok(report)
    }

    fn collect_listed(
        &self,
        options: &GcOptions,
        listed: Vec<(ObjectId, Option<u64>)>,
    ) -> SyncResult<GcReport> {
        let _one_at_a_time = lock(&self.publishing);
        // No poll may name a pack between reading what is live and marking it dead
        // (a mount polls on another thread).
        let _no_poll = lock(&self.polling);
        let me = self.device.clone();
        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        let now = crate::now_ms();
        let (live, dead, seen_by, view, claims, applied) = {
            let mut index = self.index();
            let mut view = index.seen_vector(&me)?;
            // Versions of this device that are not published yet are in the segment
            // numbered last, or will be in the next: the others must have read that
            // one too.
            let last = index.meta_u64(META_LAST_SEQ)?;
            let gap_holds_versions = index.meta_u64(META_LAST_PUBLISHED)? < last
                && !index
                    .transaction(|tx| tx.versions_in_segment(Seq(last)))?
                    .is_empty();
            if index.unassigned_count()? > 0 {
                view.insert(me.clone(), last + 1);
            } else if gap_holds_versions {
                view.insert(me.clone(), last);
            }
            (
                index.live_packs_of(&me)?,
                index.dead_packs()?,
                index.seen_by_devices()?,
                view,
                index.furthest_claims()?,
                index.applied_seqs()?,
            )
        };
        let names = self.name_map()?;
        // Every device in the vault counts, also one this device has not read yet
        // (it has said nothing, so it holds everything back).
        let in_vault: Vec<DeviceId> = self
            .store
            .list_dirs(&self.layout.root())?
            .iter()
            .filter_map(|d| self.layout.device_of_dir(d))
            .collect();
        // A removed device's word no longer counts, and nothing waits for it.
        let removed: BTreeSet<&str> = self
            .removed_devices()?
            .iter()
            .map(|r| r.device.as_str())
            .collect();
        let nothing_said = SeenVector::new();
        let mut others: Vec<&DeviceId> = seen_by
            .keys()
            .chain(in_vault.iter())
            .filter(|d| **d != me && !removed.contains(d.as_str()))
            .collect();
        others.sort();
        others.dedup();
        let seen_of = |d: &DeviceId| seen_by.get(d).unwrap_or(&nothing_said);
        // A log another device read further than this one: its versions may name a
        // blob here, or supersede one another device still names, so nothing is
        // judged until this device has read as far (a snapshot it went on from
        // leaves out what its writer had read elsewhere).
        let mut behind: Vec<String> = claims
            .iter()
            .filter(|(of, (_, seq))| {
                **of != me
                    && in_vault.contains(of)
                    && !removed.contains(of.as_str())
                    && applied.get(*of).copied().unwrap_or(0) < *seq
            })
            .map(|(of, _)| names.get(of).cloned().unwrap_or_else(|| of.to_string()))
            .collect();
        behind.sort();
        report.behind = behind;
        let grace_ms = i64::try_from(options.grace.as_millis()).unwrap_or(i64::MAX);
        let mut newly_dead = Vec::new();
        let mut no_longer_dead = Vec::new();
        let mut doomed: Vec<(ObjectId, Option<u64>)> = Vec::new();
        let mut waiting_for = BTreeSet::new();
        for (pack, size) in &listed {
            if live.contains(pack) {
                report.packs_live += 1;
                if dead.contains_key(pack) {
                    no_longer_dead.push(pack.clone());
                }
                continue;
            }
            if !report.behind.is_empty() {
                report.packs_waiting += 1;
                continue;
            }
            // A pack found dead only now waits its grace period from now, and for
            // every device to have read as far as this one has now.
            // A mark whose own entry waits for versions that were superseded before
            // they were published can never be reached: marked anew.
            let reachable = |f: &DeadPack| {
                f.view.get(&me).copied().unwrap_or(0) <= view.get(&me).copied().unwrap_or(0)
            };
            let found = match dead.get(pack).filter(|f| reachable(f)) {
                Some(found) => found.clone(),
                None => {
                    newly_dead.push(pack.clone());
                    DeadPack {
                        since_ms: now,
                        view: view.clone(),
                    }
                }
            };
            let behind: Vec<&DeviceId> = others
                .iter()
                .copied()
                .filter(|d| !covers(seen_of(d), &found.view, d))
                .collect();
            let old_enough = now.saturating_sub(found.since_ms) >= grace_ms;
            if behind.is_empty() && old_enough {
                doomed.push((pack.clone(), *size));
            } else {
                report.packs_waiting += 1;
                for d in behind {
                    waiting_for.insert(
                        names
                            .get(d)
                            .cloned()
                            .unwrap_or_else(|| format!("a device not yet pulled from ({d})")),
                    );
                }
            }
        }
        report.waiting_for = waiting_for.into_iter().collect();
        let listed_set: HashMap<&ObjectId, ()> = listed.iter().map(|(p, _)| (p, ())).collect();
        let vanished: Vec<ObjectId> = dead
            .keys()
            .filter(|p| !listed_set.contains_key(p))
            .cloned()
            .collect();
        if !options.dry_run {
            self.index().transaction(|tx| {
                for pack in &newly_dead {
                    tx.mark_dead(
                        pack,
                        &DeadPack {
                            since_ms: now,
                            view: view.clone(),
                        },
                    )?;
                }
                for pack in no_longer_dead.iter().chain(&vanished) {
                    tx.forget_dead(pack)?;
                }
                Ok(())
            })?;
        }
        for (pack, size) in doomed {
            if !options.dry_run {
                match self.store.delete(&self.layout.pack(&me, &pack)) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                self.index().transaction(|tx| tx.forget_dead(&pack))?;
            }
            report.packs_deleted += 1;
            count_size(&mut report, size);
        }
        self.reclaim_log(options.dry_run, &mut report)?;
        if !options.dry_run {
            self.index()
                .transaction(|tx| tx.set_meta(META_LAST_GC, &now.to_string()))?;
        }
        Ok(report)
    }

    /// Deletes own segments before the newest snapshot, and older snapshots. A log
    /// with [`SNAPSHOT_AFTER`] segments after its newest snapshot first gets a new
    /// one at its newest segment: the versions in those segments are mostly
    /// superseded, and the snapshot holds only what still stands.
    fn reclaim_log(&self, dry_run: bool, report: &mut GcReport) -> SyncResult<()> {
        let me = &self.device;
        let snapshot_prefix = self.layout.snapshot_prefix(me);
        let log_prefix = self.layout.log_prefix(me);
        let list = |prefix: &str| -> SyncResult<Vec<(Seq, String, Option<u64>)>> {
            Ok(self
                .store
                .list_sized(prefix)?
                .into_iter()
                .filter_map(|(k, size)| Some((Layout::seq_of(prefix, &k)?, k, size)))
                .collect())
        };
        // A snapshot holds published heads only: one taken while a published
        // version waits to be replaced by one not yet published would leave its
        // path out, and the segments that hold it are about to go.
        if self.index().unpublished_count()? > 0 {
            return Ok(());
        }
        let mut snapshots = list(&snapshot_prefix)?;
        let segments = list(&log_prefix)?;
        let published = Seq(self.index().meta_u64(META_LAST_PUBLISHED)?);
        let newest = snapshots.iter().map(|(s, _, _)| *s).max().unwrap_or(Seq(0));
        let after_snapshot = segments.iter().filter(|(s, _, _)| s.0 > newest.0).count();
        // A snapshot holds every head of this device: written only once enough
        // segments follow the last one to be worth it.
        let newest = if after_snapshot >= SNAPSHOT_AFTER
            && published.0 > newest.0
            && segments.iter().any(|(s, _, _)| *s == published)
        {
            if !dry_run {
                self.write_snapshot(published)?;
                snapshots = list(&snapshot_prefix)?;
                report.snapshot_written = Some(
                    snapshots
                        .iter()
                        .find(|(s, _, _)| *s == published)
                        .and_then(|(_, _, size)| *size)
                        .unwrap_or(0),
                );
            }
            published
        } else {
            newest
        };
        if newest.0 == 0 {
            return Ok(());
        }
        // The snapshot's own segment must be there before anything before it goes.
        if !segments.iter().any(|(s, _, _)| *s == newest) {
            return Ok(());
        }
        for (_, key, size) in segments.into_iter().filter(|(s, _, _)| s.0 < newest.0) {
            if !dry_run {
                self.delete_quietly(&key)?;
            }
            report.segments_deleted += 1;
            count_size(report, size);
        }
        for (_, key, size) in snapshots.iter().filter(|(s, _, _)| s.0 < newest.0) {
            let (key, size) = (key.clone(), *size);
            if !dry_run {
                self.delete_quietly(&key)?;
            }
            report.snapshots_deleted += 1;
            count_size(report, size);
        }
        Ok(())
    }

    fn delete_quietly(&self, key: &str) -> SyncResult<()> {
        match self.store.delete(key) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// An automatic collection, when one is due (see [`auto_timing`]): None when
    /// not. The caller reports a failure and carries on: nothing depends on it.
    pub fn collect_garbage_if_due(&self) -> SyncResult<Option<GcReport>> {
        let (grace, every) = auto_timing();
        let last = self.index().meta_u64(META_LAST_GC)?;
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        // A rewrite asked for does not wait for the hour: the older keys stay in
        // the keyring until every device has done its part.
        let rewrite_due = self.unlocked()?.rewrite_below > 0
            && self.index().meta_u64(super::rewrite::META_RESEALED_BELOW)?
                < u64::from(self.unlocked()?.rewrite_below);
        if !rewrite_due && (crate::now_ms() as u64).saturating_sub(last) < every_ms {
            return Ok(None);
        }
        self.collect_garbage(&GcOptions {
            grace,
            ..GcOptions::default()
        })
        .map(Some)
    }

    /// Where the bytes of `r` live now, if their owner moved them (a repack, or
    /// sealed again under a newer key) and some head names them there: a reader of
    /// the old place reads them there instead.
    pub fn moved_to(&self, r: &ContentRef) -> SyncResult<Option<ContentRef>> {
        Ok(self
            .index()
            .all_heads()?
            .into_iter()
            .find_map(|h| match h.version.entry {
                Entry::File { content, .. }
                    if content.sha256 == r.sha256
                        && content.size == r.size
                        && (content.pack != r.pack || content.offset != r.offset) =>
                {
                    Some(content)
                }
                _ => None,
            }))
    }

    /// Whether some head still names the blob `r` (a reader whose pack is gone was
    /// either superseded, or finds real damage).
    pub fn content_is_current(&self, r: &ContentRef) -> SyncResult<bool> {
        Ok(self.index().all_heads()?.iter().any(
            |h| matches!(&h.version.entry, Entry::File { content, .. } if content.blob == r.blob),
        ))
    }
}

fn count_size(report: &mut GcReport, size: Option<u64>) {
    match size {
        Some(n) => report.bytes_freed += n,
        None => report.sizes_unknown += 1,
    }
}
