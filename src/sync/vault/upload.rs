//! The one upload path, for a push and for the mount's worker alike: sealed packs in
//! the queue go to the backend a few at a time, each recorded as uploaded as soon as it
//! is there, so a resumed run never sends one twice.
//!
//! A round starts by closing the writer's open pack and listing the pending packs in
//! one step (the writer's lock, then the index's): every pack listed is then complete,
//! and every version recorded so far names a pack that is listed or already uploaded.
//! The round's `up_to` counter says which versions those are; `publish` puts only them
//! in a segment.
//!
//! One rule for a pack that is missing from the queue when its turn comes: if the
//! backend holds it, a run that died after uploading and before recording left it so,
//! and it counts as uploaded; if not, the acknowledged contents it held are gone from
//! this device, and the upload fails with a sentence that says so and what to do.

use std::sync::mpsc;

use super::*;
use crate::model::ObjectId;

/// What one upload round covers.
pub(super) struct Round {
    pub packs: Vec<ObjectId>,
    /// Every own version with a counter up to this one names a pack of this round or
    /// one uploaded before.
    pub up_to: u64,
    /// What this device had applied of every log as the round began: every version
    /// made after this was made in a view at least this new.
    pub seen: crate::store::SeenVector,
}

impl Vault {
    pub(super) fn begin_round(&self) -> SyncResult<Round> {
        let mut writer = self.writer();
        writer.close_open();
        let index = self.index();
        let round = Round {
            packs: index.pending_packs()?,
            up_to: index.meta_u64(META_COUNTER)?,
            seen: index.seen_vector(&self.device)?,
        };
        drop(index);
        // A queue folder removed under a running mount: what this process wrote comes
        // back from its descriptors; the rest is judged pack by pack in `upload_one`.
        writer
            .restore_missing(&round.packs)
            .map_err(SyncError::io(self.queue.dir().to_path_buf()))?;
        Ok(round)
    }

    /// Uploads `packs`, a few at a time; stops at the first failure (what made it is
    /// recorded).
    pub(super) fn upload(
        &self,
        packs: &[ObjectId],
        progress: &dyn Progress,
        report: &mut PublishReport,
    ) -> SyncResult<()> {
        if packs.is_empty() {
            return Ok(());
        }
        crate::failpoint("push-before-upload");
        let sizes: Vec<u64> = packs
            .iter()
            .map(|p| {
                std::fs::metadata(self.queue.path_of(p))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .collect();
        progress.start("Uploading", sizes.iter().sum(), Unit::Bytes);
        let queue = Mutex::new(packs.iter().zip(&sizes).collect::<Vec<_>>());
        let (tx, rx) = mpsc::channel::<SyncResult<(&ObjectId, u64)>>();
        let mut first_error = None;
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL_IO.min(packs.len()) {
                let tx = tx.clone();
                let queue = &queue;
                scope.spawn(move || loop {
                    let next = lock(queue).pop();
                    let Some((pack, size)) = next else { break };
                    let res = self
                        .upload_one(pack)
                        .map(|sent| (pack, if sent { *size } else { 0 }));
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
                        if let Err(e) = self.index().transaction(|t| t.remove_pending_pack(pack)) {
                            first_error.get_or_insert(SyncError::from(e));
                            continue;
                        }
                        self.writer().uploaded(pack);
                        let _ = self.queue.remove(pack);
                        report.packs += 1;
                        report.bytes += size;
                        tracing::info!("uploaded pack {pack} ({size} bytes)");
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

    /// Puts one pack in the backend; false if it was there already.
    fn upload_one(&self, pack: &ObjectId) -> SyncResult<bool> {
        let path = self.queue.path_of(pack);
        let key = self.layout.pack(&self.device, pack);
        if path.exists() {
            self.store.put_file(&key, &path)?;
            return Ok(true);
        }
        // A log entry must never name a pack that is not there: only the backend can
        // tell whether an earlier run sent it.
        match self.store.get_range(&key, 0..8) {
            Ok(b) if !b.is_empty() => Ok(false),
            Ok(_) => Err(SyncError::Invalid(format!(
                "pack {pack} is empty in the vault"
            ))),
            Err(e) if e.is_not_found() => {
                let lost = self.paths_in_pack(pack)?;
                Err(SyncError::Invalid(format!(
                    "the sealed pack {} waiting for upload was removed, and with it the \
                     changes to {}; run 'ghostie-fs setup --force' to rebuild this device \
                     from its folder",
                    path.display(),
                    if lost.is_empty() {
                        "no file still shown".to_owned()
                    } else {
                        lost.join(", ")
                    }
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The files whose unpublished versions name `pack`: what is lost with it.
    fn paths_in_pack(&self, pack: &ObjectId) -> SyncResult<Vec<String>> {
        let mut paths: Vec<String> = self
            .index()
            .unpublished()?
            .into_iter()
            .filter(|h| match &h.version.entry {
                Entry::File { content, .. } => content.pack == *pack,
                _ => false,
            })
            .map(|h| h.version.path)
            .collect();
        paths.sort();
        Ok(paths)
    }
}
