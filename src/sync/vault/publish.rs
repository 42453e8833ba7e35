//! Publish: uploading sealed packs, then the log segment that names them.

use super::*;

#[derive(Debug, Default, Clone)]
pub struct PublishReport {
    pub packs: usize,
    pub bytes: u64,
    pub versions: usize,
    pub segments: usize,
}

impl Vault {
    /// Uploads queued packs, then publishes every recorded version in a new segment.
    pub fn publish(&mut self, progress: &dyn Progress) -> SyncResult<PublishReport> {
        let mut report = PublishReport::default();
        self.close_queue_pack()?;
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
                if self.defer_snapshots {
                    self.snapshot_due = true;
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
    pub fn defer_snapshots(&mut self) {
        self.defer_snapshots = true;
    }

    /// Writes the snapshot a deferred publish left due, at the newest published
    /// segment (it holds everything up to there). Returns whether it wrote one.
    pub fn write_due_snapshot(&mut self) -> SyncResult<bool> {
        if !self.snapshot_due {
            return Ok(false);
        }
        let seq = Seq(self.index.meta_u64(META_LAST_PUBLISHED)?);
        if seq.0 > 0 {
            self.write_snapshot(seq)?;
        }
        self.snapshot_due = false;
        Ok(true)
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
}

/// Packs waiting for upload, taken out of the vault so they can be uploaded while
/// the vault goes on recording (the mount's worker): [`Vault::pending_uploads`],
/// then [`UploadBatch::run`] without the vault, then [`Vault::uploaded`].
pub struct UploadBatch {
    store: crate::backend::SharedStore,
    items: Vec<(ObjectId, std::path::PathBuf, String)>,
}

impl UploadBatch {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Uploads every pack, a few at a time; returns those that made it, and the
    /// first error.
    pub fn run(&self) -> (Vec<ObjectId>, Option<SyncError>) {
        let queue = std::sync::Mutex::new(self.items.iter().collect::<Vec<_>>());
        let done = std::sync::Mutex::new(Vec::new());
        let error = std::sync::Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL_IO.min(self.items.len()) {
                scope.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some((pack, path, key)) = next else { break };
                    // Gone from the cache: uploaded by an earlier run; `publish`
                    // checks the backend for it.
                    if !path.exists() {
                        continue;
                    }
                    match self.store.put_file(key, path) {
                        Ok(()) => done
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(pack.clone()),
                        Err(e) => {
                            error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(SyncError::from(e));
                            break;
                        }
                    }
                });
            }
        });
        (
            done.into_inner().unwrap_or_else(|p| p.into_inner()),
            error.into_inner().unwrap_or_else(|p| p.into_inner()),
        )
    }
}

impl Vault {
    /// Closes the open pack and lists every pack waiting for upload.
    pub fn pending_uploads(&mut self) -> SyncResult<UploadBatch> {
        self.close_queue_pack()?;
        let items = self
            .index
            .pending_packs()?
            .into_iter()
            .map(|p| {
                let path = self.cache.path_of(&p);
                let key = self.layout.pack(&self.device, &p);
                (p, path, key)
            })
            .collect();
        Ok(UploadBatch {
            store: self.store.clone(),
            items,
        })
    }

    /// Records packs of an [`UploadBatch`] as uploaded.
    pub fn uploaded(&mut self, packs: &[ObjectId]) -> SyncResult<()> {
        if packs.is_empty() {
            return Ok(());
        }
        self.index.transaction(|t| {
            for p in packs {
                t.remove_pending_pack(p)?;
            }
            Ok(())
        })?;
        for p in packs {
            let _ = self.cache.remove(p);
        }
        Ok(())
    }
}
