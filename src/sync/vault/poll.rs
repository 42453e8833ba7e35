//! Poll: learning what other devices published, and applying it to the index.

use std::collections::BTreeSet;

use super::*;

#[derive(Debug, Default, Clone)]
pub struct PollReport {
    pub new_versions: usize,
    pub devices: usize,
    /// One sentence per device whose log could not be applied past some point,
    /// found by this poll.
    pub problems: Vec<String>,
    /// The same, for damage an earlier poll already reported: not new.
    pub known_problems: Vec<String>,
    /// The paths whose heads changed, when they are few enough to look at one by one;
    /// `None` after a snapshot, a newly named device or a large batch, when anything
    /// may have moved.
    pub changed_paths: Option<BTreeSet<String>>,
}

/// Beyond this many changed paths, a reader rebuilds its view instead.
const CHANGED_PATHS_MAX: usize = 4096;

fn note_changed(changed: &mut Option<BTreeSet<String>>, path: &str) {
    if let Some(set) = changed {
        set.insert(path.to_owned());
        if set.len() > CHANGED_PATHS_MAX {
            *changed = None;
        }
    }
}

/// A path from another device's log must stay inside the folder.
fn check_path(path: &str) -> SyncResult<()> {
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

impl Vault {
    /// Lists the vault's devices and applies every segment not yet applied. The
    /// listings and fetches run without the index; each fetched segment is applied in a
    /// short transaction of its own.
    pub fn poll(&self, progress: &dyn Progress) -> SyncResult<PollReport> {
        let _one_at_a_time = lock(&self.polling);
        self.keys()?;
        let mut report = PollReport {
            changed_paths: Some(BTreeSet::new()),
            ..PollReport::default()
        };
        let dirs = self.store.list_dirs(&self.layout.root())?;
        let devices: Vec<DeviceId> = dirs
            .iter()
            .filter_map(|d| self.layout.device_of_dir(d))
            .collect();
        report.devices = devices.len();
        let known = self.index().devices()?;
        // What the devices said before this poll listed anything: whatever they had
        // read of a log then was in it before this poll's listing of it.
        let claims = self.index().furthest_claims()?;
        let me = self.device.clone();
        let mut troubled = BTreeSet::new();
        for d in devices.iter().filter(|d| **d != me) {
            let row = known.iter().find(|r| &r.id == d);
            if row.and_then(|r| r.name.as_ref()).is_none() {
                self.learn_device_name(d)?;
                // Its conflict siblings are named after it from now on.
                report.changed_paths = None;
            }
            let applied = row.map(|r| r.applied_seq).unwrap_or_default();
            // A removed device's log is read up to where it was cut, never beyond.
            if self.log_cut(d)?.is_some_and(|cut| applied.0 >= cut) {
                continue;
            }
            let outcome = self
                .apply_log_of(d, applied, false, progress, &mut report.changed_paths)
                .and_then(|n| self.check_not_hidden(d, &claims).map(|()| n));
            if self.note_outcome(d, row, outcome, &mut report)? {
                troubled.insert(d.clone());
            }
        }
        // What the others said in this poll: a log one of them read further than this
        // device found it is listed once more (it may have grown since), and if it
        // still falls short, the backend hides its end.
        let said = self.index().furthest_claims()?;
        let behind: Vec<&DeviceId> = devices
            .iter()
            .filter(|d| **d != me)
            .filter(|d| !troubled.contains(*d))
            .filter(|d| self.log_cut(d).is_ok_and(|cut| cut.is_none()))
            .filter(|d| self.check_not_hidden(d, &said).is_err())
            .collect();
        if !behind.is_empty() {
            let known = self.index().devices()?;
            for d in behind {
                let row = known.iter().find(|r| &r.id == d);
                let applied = row.map(|r| r.applied_seq).unwrap_or_default();
                let outcome = self
                    .apply_log_of(d, applied, false, progress, &mut report.changed_paths)
                    .and_then(|n| self.check_not_hidden(d, &said).map(|()| n));
                self.note_outcome(d, row, outcome, &mut report)?;
            }
        }
        let reuse_waits = self
            .index()
            .meta(META_REUSE_AFTER_POLL)?
            .is_some_and(|v| !v.is_empty());
        // Every log read as far as it goes (one that is damaged here holds this
        // device's own reclaiming back, and is named).
        if reuse_waits {
            self.index()
                .transaction(|tx| tx.set_meta(META_REUSE_AFTER_POLL, ""))?;
        }
        if report.new_versions > 0 {
            let others = report.devices.saturating_sub(1);
            tracing::info!(
                "took {} new {} from the logs of {} other {}",
                report.new_versions,
                if report.new_versions == 1 {
                    "version"
                } else {
                    "versions"
                },
                others,
                if others == 1 { "device" } else { "devices" }
            );
        } else {
            tracing::debug!("nothing new in the logs of the other devices");
        }
        Ok(report)
    }

    /// Counts what a device's log brought, or notes (once) why it could not be
    /// applied (true); a log applied cleanly clears a problem noted before.
    fn note_outcome(
        &self,
        d: &DeviceId,
        row: Option<&crate::store::DeviceRow>,
        outcome: SyncResult<usize>,
        report: &mut PollReport,
    ) -> SyncResult<bool> {
        match outcome {
            Ok(n) => {
                report.new_versions += n;
                if row.and_then(|r| r.problem.as_ref()).is_some() {
                    self.index()
                        .transaction(|tx| tx.set_device_problem(d, None))?;
                }
                Ok(false)
            }
            Err(SyncError::Damaged(why)) => {
                let name = self.name_map()?.get(d).cloned().unwrap_or_default();
                let sentence = format!("the log of device {name} is damaged: {why}");
                if row.and_then(|r| r.problem.as_deref()) == Some(sentence.as_str()) {
                    report.known_problems.push(sentence);
                    return Ok(true);
                }
                self.index()
                    .transaction(|tx| tx.set_device_problem(d, Some(&sentence)))?;
                report.problems.push(sentence);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Another device said it read `d`'s log further than the backend now lets this
    /// one: the backend hides `d`'s newest segments (or lost them), and this
    /// device must not take what it shows for all `d` wrote.
    fn check_not_hidden(
        &self,
        d: &DeviceId,
        claims: &std::collections::HashMap<DeviceId, (DeviceId, u64)>,
    ) -> SyncResult<()> {
        // Against the segments applied, whatever they hold: a claim names a segment
        // its device applied, so having applied that number is having read it.
        let have = self.index().applied_seqs()?.get(d).copied().unwrap_or(0);
        // What a device read of a removed device's log beyond its cut does not count.
        let cut = self.log_cut(d)?.unwrap_or(u64::MAX);
        match claims.get(d) {
            Some((by, seq)) if (*seq).min(cut) > have => {
                let names = self.name_map()?;
                let by = names.get(by).cloned().unwrap_or_else(|| by.to_string());
                Err(SyncError::Damaged(format!(
                    "device {by} has read it up to segment {seq}, but the backend shows it \
                     only up to segment {have}: the backend hides its newest segments (or \
                     lost them)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// A device's log never goes back to an older key: once it sealed under a newer
    /// one, a record under an older one after it was made by someone else who held
    /// that key (a removed device, writing under another's name). Returns the
    /// record's epoch.
    fn check_epoch_order(&self, d: &DeviceId, sealed: &[u8], what: &str) -> SyncResult<u32> {
        let epoch = crate::crypto::envelope::record_epoch(sealed).unwrap_or(0);
        let used = self.index().meta_u64(&epoch_key(d))?;
        if u64::from(epoch) < used {
            return Err(SyncError::Damaged(format!(
                "{what} is sealed under key epoch {epoch}, older than epoch {used} this log \
                 already used: someone who held an older key wrote it (a removed device?); \
                 it is not merged"
            )));
        }
        Ok(epoch)
    }

    fn note_epoch(&self, d: &DeviceId, epoch: u32) -> SyncResult<()> {
        if epoch == 0 {
            return Ok(());
        }
        let key = epoch_key(d);
        self.index().transaction(|tx| {
            if tx.meta_u64(&key)? < u64::from(epoch) {
                tx.set_meta(&key, &epoch.to_string())?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Where `d`'s log stops counting: the segment it had reached when it was
    /// removed from the vault (`devices remove`); None for a device not removed.
    pub(super) fn log_cut(&self, d: &DeviceId) -> SyncResult<Option<u64>> {
        Ok(self
            .removed_devices()?
            .iter()
            .find(|r| r.device == d.as_str())
            .map(|r| r.log_cut))
    }

    fn learn_device_name(&self, d: &DeviceId) -> SyncResult<()> {
        let record = match self.store.get(&self.layout.device_record(d)) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // A removed device's record may be sealed under a key since dropped: the
        // removal names it.
        let removed_name = self
            .removed_devices()?
            .iter()
            .find(|r| r.device == d.as_str())
            .map(|r| r.name.clone());
        let name = open_device(self.keys()?, d, &record)
            .ok()
            .map(|rec| rec.name)
            .or(removed_name);
        if let Some(name) = name {
            let name = crate::config::filename_safe(&name);
            self.index()
                .transaction(|tx| tx.set_device_name(d, &name))?;
            self.forget_names();
        }
        Ok(())
    }

    /// Applies `d`'s snapshot (when starting from nothing) and segments after
    /// `applied`. Stops at the first damaged or missing segment: later ones may depend
    /// on it. Returns the number of versions offered.
    pub(super) fn apply_log_of(
        &self,
        d: &DeviceId,
        mut applied: Seq,
        own: bool,
        progress: &dyn Progress,
        changed: &mut Option<BTreeSet<String>>,
    ) -> SyncResult<usize> {
        let mut offered = 0;
        let log_prefix = self.layout.log_prefix(d);
        // One listing per device and poll: its log from the last segment applied,
        // that one included, so a backend that no longer shows it is caught.
        // Only a device heard from for the first time, with a log, costs a second
        // (its snapshots; a device reclaiming its log keeps the segment of its newest
        // snapshot, so no log means no snapshot).
        let after = (applied.0 > 1).then(|| self.layout.segment(d, Seq(applied.0 - 1)));
        let keys_listed = self.store.list(&log_prefix, after.as_deref())?;
        // Where a snapshot stands in for segments that are gone (a device that
        // reclaimed its log), a reader behind it goes on from the snapshot.
        let mut jump_to = None;
        if applied.0 > 0
            && !keys_listed
                .iter()
                .any(|k| Layout::seq_of(&log_prefix, k) == Some(applied))
        {
            jump_to = Some(self.check_rollback(d, applied)?);
        }
        let first_listed = keys_listed
            .iter()
            .filter_map(|k| Layout::seq_of(&log_prefix, k))
            .find(|seq| seq.0 > applied.0);
        if applied.0 > 0 && jump_to.is_none() {
            if let Some(first) = first_listed.filter(|f| f.0 > applied.0 + 1) {
                jump_to = self.newest_snapshot(d, Seq(first.0 - 1))?;
            }
        }
        if let Some(snapshot) = jump_to.filter(|s| s.0 > applied.0) {
            offered += self.apply_snapshot(d, snapshot, own)?;
            applied = snapshot;
            *changed = None;
        }
        if applied.0 == 0 && !keys_listed.is_empty() {
            if let Some(seq) = self.newest_snapshot(d, Seq(0))? {
                offered += self.apply_snapshot(d, seq, own)?;
                applied = seq;
                *changed = None;
            }
        }
        let cut = if own { None } else { self.log_cut(d)? };
        let seqs: Vec<Seq> = keys_listed
            .iter()
            .filter_map(|k| Layout::seq_of(&log_prefix, k))
            .filter(|seq| cut.is_none_or(|c| seq.0 <= c))
            .filter(|seq| seq.0 > applied.0)
            .collect();
        if !seqs.is_empty() {
            progress.start("Reading logs", seqs.len() as u64, Unit::Files);
        }
        for seq in seqs {
            if seq.0 <= applied.0 {
                continue;
            }
            if seq.0 != applied.0 + 1 {
                return Err(SyncError::Damaged(format!(
                    "segment {} is missing",
                    applied.0 + 1
                )));
            }
            let bytes = match self.store.get(&self.layout.segment(d, seq)) {
                Ok(bytes) => bytes,
                // Reclaimed by its device since the listing: the snapshot that made
                // that safe stands in for it.
                Err(e) if e.is_not_found() => {
                    let snapshot = self.newest_snapshot(d, seq)?.ok_or_else(|| {
                        SyncError::Damaged(format!("segment {seq} vanished as it was read"))
                    })?;
                    offered += self.apply_snapshot(d, snapshot, own)?;
                    applied = snapshot;
                    *changed = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let epoch = self.check_epoch_order(d, &bytes, &format!("segment {seq}"))?;
            // Sealed under a key the vault dropped (`rekey --rewrite`): a removed
            // device's log ends here for good; any other's newest snapshot stands in.
            if matches!(
                self.keys()?.at_epoch(epoch),
                Err(crate::crypto::CryptoError::DroppedKey(_))
            ) {
                if let Some(cut) = cut {
                    // Read as far as it will ever be: say so, or every poll reads
                    // it again.
                    self.index()
                        .transaction(|tx| tx.set_device_applied(d, Seq(cut), None))?;
                    break;
                }
                if let Some(snapshot) = self.newest_snapshot(d, seq)? {
                    offered += self.apply_snapshot(d, snapshot, own)?;
                    applied = snapshot;
                    *changed = None;
                    continue;
                }
            }
            let rec = open_log(self.keys()?, RecordKind::Segment, d, seq, &bytes)
                .map_err(|e| SyncError::Damaged(format!("segment {seq}: {e}")))?;
            offered += self.apply_record(d, &rec, own)?;
            self.note_epoch(d, epoch)?;
            for v in &rec.versions {
                note_changed(changed, &v.path);
            }
            applied = seq;
            progress.advance(1);
        }
        progress.finish();
        Ok(offered)
    }

    /// `d`'s segment `applied`, which this device applied, is not in the listing:
    /// unless a snapshot at or after it stands in for it (returned), the backend
    /// serves an older state of the log than it did (a rollback, or segments
    /// lost), and nothing of it is merged.
    fn check_rollback(&self, d: &DeviceId, applied: Seq) -> SyncResult<Seq> {
        if let Some(snapshot) = self.newest_snapshot(d, applied)? {
            return Ok(snapshot);
        }
        Err(SyncError::Damaged(format!(
            "segment {applied}, which this device already applied, is gone: the backend serves an older state of this log (rolled back, or segments lost)"
        )))
    }

    /// `d`'s newest snapshot, if it is at `at_least` or later.
    pub(super) fn newest_snapshot(&self, d: &DeviceId, at_least: Seq) -> SyncResult<Option<Seq>> {
        let prefix = self.layout.snapshot_prefix(d);
        let cut = if *d == self.device {
            None
        } else {
            self.log_cut(d)?
        };
        Ok(self
            .store
            .list(&prefix, None)?
            .iter()
            .filter_map(|k| Layout::seq_of(&prefix, k))
            .filter(|seq| cut.is_none_or(|c| seq.0 <= c))
            .max()
            .filter(|s| s.0 >= at_least.0))
    }

    /// Applies `d`'s snapshot at `seq`: every version of `d` current up to there.
    fn apply_snapshot(&self, d: &DeviceId, seq: Seq, own: bool) -> SyncResult<usize> {
        let bytes = self.store.get(&self.layout.snapshot(d, seq))?;
        let epoch = self.check_epoch_order(d, &bytes, &format!("snapshot {seq}"))?;
        // A removed device's snapshot under a dropped key: nothing of it counts
        // any more (its files were taken over when the key was dropped).
        if !own
            && self.log_cut(d)?.is_some()
            && matches!(
                self.keys()?.at_epoch(epoch),
                Err(crate::crypto::CryptoError::DroppedKey(_))
            )
        {
            return Ok(0);
        }
        let rec = open_log(self.keys()?, RecordKind::Snapshot, d, seq, &bytes)
            .map_err(|e| SyncError::Damaged(format!("snapshot {seq}: {e}")))?;
        let n = self.apply_record(d, &rec, own)?;
        self.note_epoch(d, epoch)?;
        self.index().transaction(|tx| tx.forget_all_dead())?;
        Ok(n)
    }

    fn apply_record(&self, d: &DeviceId, rec: &LogRecord, own: bool) -> SyncResult<usize> {
        let n = rec.versions.len();
        for v in &rec.versions {
            check_path(&v.path)?;
        }
        self.index().transaction(|tx| {
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
            if !own && !rec.seen.is_empty() {
                tx.set_device_seen(d, &rec.seen)?;
            }
            if !own && !rec.built_from.is_empty() {
                tx.set_device_heads_view(d, &rec.built_from)?;
            }
            if !own {
                // What it said last: a device that went back to an older version
                // stops reading moves again.
                tx.set_meta(&reads_moves_key(d), if rec.reads_moves { "1" } else { "" })?;
            }
            // Where it says so, the record names its device's newest segment with
            // versions; a record of an older version only its own number, if it
            // holds versions.
            let content = rec
                .seen
                .get(d)
                .copied()
                .or((!rec.versions.is_empty()).then_some(rec.seq.0));
            if let Some(seq) = content {
                if own {
                    let kept = tx.meta_u64(crate::store::META_LAST_CONTENT_SEQ)?;
                    tx.set_meta(
                        crate::store::META_LAST_CONTENT_SEQ,
                        &kept.max(seq).to_string(),
                    )?;
                } else {
                    tx.set_device_content_seq(d, seq)?;
                }
            }
            tx.set_device_applied(d, rec.seq, Some(rec.created_ms))
        })?;
        Ok(n)
    }

    /// Rebuilds this device's own history from its log (after `setup --force` on a
    /// home whose device id survived).
    pub(super) fn recover_own(&self) -> SyncResult<()> {
        let me = self.device.clone();
        self.apply_log_of(&me, Seq(0), true, &crate::sync::NoProgress, &mut None)?;
        Ok(())
    }
}

/// The index's meta key for the newest key epoch `d`'s log was read under.
fn epoch_key(d: &DeviceId) -> String {
    format!("log_epoch/{d}")
}

/// The index's meta key: whether `d`'s newest record said it reads moves.
pub(super) fn reads_moves_key(d: &DeviceId) -> String {
    format!("reads_moves/{d}")
}
