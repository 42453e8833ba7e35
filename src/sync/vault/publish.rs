//! Publish: one upload round (see `upload.rs`), then the log segments that name what it
//! uploaded. The index is taken only to assign and to mark; sealing and writing a
//! segment happen outside it, so a mount keeps recording while a publish waits on the
//! network.

use super::*;
use crate::store::SeenVector;

fn json(seen: &SeenVector) -> String {
    serde_json::to_string(seen).unwrap_or_else(|_| unreachable!("maps of ids serialise"))
}

#[derive(Debug, Default, Clone)]
pub struct PublishReport {
    pub packs: usize,
    pub bytes: u64,
    pub versions: usize,
    /// The versions published, by kind.
    pub changed: crate::model::Tally,
    pub segments: usize,
    /// Paths whose change was lost before upload (a crash damaged its queued copy).
    pub lost: Vec<String>,
    /// Whether contents of queued versions moved or went (a view of them is stale).
    pub repaired: bool,
}

impl Vault {
    /// Uploads queued packs, then publishes every version they cover in new segments.
    pub fn publish(&self, progress: &dyn Progress) -> SyncResult<PublishReport> {
        self.publish_with(progress, false)
    }

    /// Tells the other devices how far this one has read their logs, when it has
    /// read further than its last record said and has nothing else to publish: one
    /// empty segment carrying the news. Their space is reclaimed only once every
    /// device has said so (see `gc.rs`), so a device that only reads must say it.
    pub fn acknowledge(&self) -> SyncResult<bool> {
        Ok(self.publish_with(&crate::sync::NoProgress, true)?.segments > 0)
    }

    fn publish_with(
        &self,
        progress: &dyn Progress,
        acknowledge: bool,
    ) -> SyncResult<PublishReport> {
        let _one_at_a_time = lock(&self.publishing);
        let mut report = PublishReport::default();
        let round = self.begin_round()?;
        let mut ack_due = false;
        {
            let index = self.index();
            let gap = index.meta_u64(META_LAST_PUBLISHED)? < index.meta_u64(META_LAST_SEQ)?;
            if round.packs.is_empty() && index.unpublished_count()? == 0 && !gap {
                if !acknowledge {
                    return Ok(report);
                }
                let acked: SeenVector = index
                    .meta(META_ACKED)?
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
                let others = |v: &SeenVector| -> SeenVector {
                    v.iter()
                        .filter(|(d, _)| **d != self.device)
                        .map(|(d, s)| (d.clone(), *s))
                        .collect()
                };
                let forced = self.force_segment.swap(false, Ordering::AcqRel);
                ack_due = forced || others(&round.seen) != others(&acked);
                if !ack_due {
                    return Ok(report);
                }
            } else if acknowledge && (!round.packs.is_empty() || index.unpublished_count()? > 0) {
                // Something else is queued: the next push carries the news. (A
                // segment number left unpublished alone, by an acknowledgement that
                // failed, is published now: nothing after it could be otherwise.)
                return Ok(report);
            }
        }
        self.keys()?;
        let checked = self.check_queued(round.packs)?;
        report.lost = checked.lost;
        report.repaired = checked.changed;
        self.upload(&checked.packs, progress, &mut report)?;
        // The originals of the tokens these versions carry go first, as their
        // contents do.
        self.upload_originals()?;
        loop {
            let device = self.device.clone();
            // Numbers are published in order with no gap: a number whose versions were
            // all superseded before publication still gets its (empty) segment, or
            // every reader would wait for it forever.
            let assigned = self.index().transaction(|tx| {
                let published = tx.meta_u64(META_LAST_PUBLISHED)?;
                let last = tx.meta_u64(META_LAST_SEQ)?;
                let counter = tx.meta_u64(META_COUNTER)?;
                if published < last {
                    let seq = Seq(published + 1);
                    // The round that assigned it said what it had seen then.
                    let seen: SeenVector = tx
                        .meta(META_ASSIGNED_SEEN)?
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or_default();
                    return Ok(Some((seq, tx.versions_in_segment(seq)?, counter, seen)));
                }
                let next = Seq(last + 1);
                if tx.assign_unpublished(next, round.up_to)? == 0 && !ack_due {
                    return Ok(None);
                }
                ack_due = false;
                tx.set_meta(META_LAST_SEQ, &next.0.to_string())?;
                tx.set_meta(META_ASSIGNED_SEEN, &json(&round.seen))?;
                Ok(Some((
                    next,
                    tx.versions_in_segment(next)?,
                    counter,
                    round.seen.clone(),
                )))
            })?;
            let Some((seq, versions, counter, mut seen)) = assigned else {
                break;
            };
            if !versions.is_empty() {
                seen.insert(device.clone(), seq.0);
            }
            crate::failpoint("push-before-segment");
            let record = LogRecord {
                format: RECORD_FORMAT,
                device: device.clone(),
                seq,
                created_ms: crate::now_ms(),
                counter,
                versions,
                seen,
                built_from: SeenVector::new(),
                reads_moves: true,
            };
            let sealed = seal_log(self.keys()?, RecordKind::Segment, &record);
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
            self.index().transaction(|tx| {
                tx.mark_published(seq)?;
                tx.set_meta(META_LAST_PUBLISHED, &seq.0.to_string())?;
                if !record.seen.is_empty() {
                    tx.set_meta(META_ACKED, &json(&record.seen))?;
                }
                if !record.versions.is_empty() {
                    tx.set_meta(crate::store::META_LAST_CONTENT_SEQ, &seq.0.to_string())?;
                }
                tx.set_device_applied(&device, seq, Some(created))
            })?;
            report.versions += record.versions.len();
            for v in &record.versions {
                report.changed.count(&v.entry);
            }
            report.segments += 1;
            tracing::info!(
                "published segment {} of this device ({} versions)",
                seq.0,
                record.versions.len()
            );
            if seq.0 % SNAPSHOT_EVERY == 0 {
                // A snapshot holds published heads only; with a published version
                // waiting to be replaced by one not yet published, it would leave
                // that path out. Later, then.
                if self.defer_snapshots.load(Ordering::Acquire)
                    || self.index().unpublished_count()? > 0
                {
                    self.snapshot_due.store(true, Ordering::Release);
                } else {
                    self.write_snapshot(seq)?;
                }
            }
        }
        Ok(report)
    }

    /// A snapshot reads every published version of this device: the mount defers
    /// it to a quiet moment ([`Vault::write_due_snapshot`]) instead of making the
    /// writes that happen to publish segment 32, 64, … wait for it.
    pub fn defer_snapshots(&self) {
        self.defer_snapshots.store(true, Ordering::Release);
    }

    /// Writes the snapshot a deferred publish left due, at the newest published
    /// segment (it holds everything up to there). Returns whether it wrote one.
    pub fn write_due_snapshot(&self) -> SyncResult<bool> {
        let _one_at_a_time = lock(&self.publishing);
        if !self.snapshot_due.load(Ordering::Acquire) {
            return Ok(false);
        }
        if self.index().unpublished_count()? > 0 {
            return Ok(false);
        }
        let seq = Seq(self.index().meta_u64(META_LAST_PUBLISHED)?);
        if seq.0 > 0 {
            self.write_snapshot(seq)?;
        }
        self.snapshot_due.store(false, Ordering::Release);
        Ok(true)
    }

    fn check_existing_segment(&self, ours: &LogRecord) -> SyncResult<()> {
        let key = self.layout.segment(&ours.device, ours.seq);
        let bytes = self.store.get(&key)?;
        let theirs = open_log(
            self.keys()?,
            RecordKind::Segment,
            &ours.device,
            ours.seq,
            &bytes,
        )?;
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

    /// Writes a snapshot of this device's published versions up to `seq`. Only the
    /// reading of the index holds it; sealing and the upload do not.
    pub(super) fn write_snapshot(&self, seq: Seq) -> SyncResult<()> {
        let (versions, counter, seen, built_from) = {
            let index = self.index();
            let versions: Vec<Version> = index
                .all_heads()?
                .into_iter()
                .filter(|h| h.version.device == self.device && h.published)
                .map(|h| h.version)
                .collect();
            // What the newest segment said holds for everything after it.
            let seen: SeenVector = index
                .meta(META_ACKED)?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let built_from = index.seen_vector(&self.device)?;
            (versions, index.meta_u64(META_COUNTER)?, seen, built_from)
        };
        let record = LogRecord {
            format: RECORD_FORMAT,
            device: self.device.clone(),
            seq,
            created_ms: crate::now_ms(),
            counter,
            versions,
            seen,
            built_from,
            reads_moves: true,
        };
        let sealed = seal_log(self.keys()?, RecordKind::Snapshot, &record);
        match self
            .store
            .put_if_absent(&self.layout.snapshot(&self.device, seq), &sealed)
        {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
