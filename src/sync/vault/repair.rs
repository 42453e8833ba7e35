//! Packs a crash may have damaged, found before they are uploaded.
//!
//! A mount acknowledges a close() once the pack bytes are in the page cache and the
//! version is in the index's log. A power cut can then write back the index and not
//! the pack's tail, or the reverse: the next start finds a record naming bytes that
//! are not there, or not whole. So a pack queued by an earlier process is checked,
//! blob by blob, before it goes anywhere (packs this process wrote cannot be damaged
//! that way and are not read again).
//!
//! A damaged pack is never uploaded. Each version that names it gets its content
//! back, in order of preference: the same blob, if it is intact, copied into a new
//! pack (a sealed blob names neither its pack nor its offset); the same content
//! already kept elsewhere in the vault; the same bytes read again from where the
//! front-end took them (a folder's file, if it still hashes the same). A version whose
//! content cannot be found again is dropped (nobody has seen it: it was never
//! published) and its path is reported lost by name, in the log and in `status`;
//! the logs are then read again from the start, so the path shows what it showed
//! before the lost change.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};

use super::*;
use crate::crypto::blob::check_blob;
use crate::model::{ContentRef, ObjectId};

/// Where a front-end can read a file's bytes again: the plain folder of folder sync.
pub trait Retake: Send + Sync {
    /// The bytes now at `path`, if anything is there.
    fn retake(&self, path: &str) -> Option<Box<dyn Read + '_>>;
}

/// Lost files kept in the index for `status`, newest last, at most this many.
const LOST_KEPT: usize = 50;
const META_LOST: &str = "lost_before_upload";

/// What checking the queue found.
#[derive(Debug, Default)]
pub(super) struct Checked {
    /// The packs to upload now: the intact ones, and the new ones holding what was
    /// saved from damaged ones.
    pub packs: Vec<ObjectId>,
    /// Paths whose change was lost.
    pub lost: Vec<String>,
    /// Whether any version's content moved or went: a front-end's view is stale.
    pub changed: bool,
}

impl Vault {
    /// The front-end's source of bytes for contents that must be sealed again.
    pub fn retake_from(&self, source: Arc<dyn Retake>) {
        *lock(&self.retake) = Some(source);
    }

    /// The files whose last change was lost before upload (a crash damaged what was
    /// queued): for `status`.
    pub fn lost_files(&self) -> SyncResult<Vec<String>> {
        Ok(self
            .index()
            .meta(META_LOST)?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    /// Checks the packs an earlier process queued (see the module's essay).
    pub(super) fn check_queued(&self, packs: Vec<ObjectId>) -> SyncResult<Checked> {
        let mut out = Checked::default();
        let unchecked: Vec<ObjectId> = {
            let writer = self.writer();
            let checked = lock(&self.checked);
            packs
                .iter()
                .filter(|p| !writer.made(p) && !checked.contains(*p))
                .cloned()
                .collect()
        };
        let mut damaged = BTreeSet::new();
        if !unchecked.is_empty() {
            let heads = self.index().unpublished()?;
            for pack in &unchecked {
                let path = self.queue.path_of(pack);
                // A missing pack is judged at upload (the backend may hold it).
                if !path.exists() || self.repair_pack(pack, &heads, &mut out)? {
                    lock(&self.checked).insert(pack.clone());
                } else {
                    damaged.insert(pack.clone());
                }
            }
        }
        out.packs = packs.into_iter().filter(|p| !damaged.contains(p)).collect();
        if out.changed {
            // What the repair sealed is in packs of its own: upload them in this round.
            let mut writer = self.writer();
            writer.close_open();
            let pending = self.index().pending_packs()?;
            for p in pending {
                if !out.packs.contains(&p) && !damaged.contains(&p) {
                    out.packs.push(p);
                }
            }
        }
        if !out.lost.is_empty() {
            self.note_lost(&out.lost)?;
            // The lost versions superseded what the paths showed before: read the logs
            // again, so they show it once more.
            let _one_at_a_time = lock(&self.polling);
            let me = self.device.clone();
            let mut changed = None;
            let mut devices: BTreeSet<DeviceId> =
                self.index().devices()?.into_iter().map(|r| r.id).collect();
            devices.insert(me.clone());
            for d in devices {
                let own = d == me;
                self.apply_log_of(&d, Seq(0), own, &crate::sync::NoProgress, &mut changed)?;
            }
        }
        Ok(out)
    }

    /// Checks one pack an earlier process queued; true if it is whole. A damaged one
    /// is taken apart (see the module's essay) and removed from the queue.
    fn repair_pack(
        &self,
        pack: &ObjectId,
        heads: &[crate::store::index::HeadRow],
        out: &mut Checked,
    ) -> SyncResult<bool> {
        let keys = self.keys()?.clone();
        let path = self.queue.path_of(pack);
        let io = |e: std::io::Error| SyncError::io(path.clone())(e);
        let mut file = std::fs::File::open(&path).map_err(&io)?;
        let len = file.metadata().map_err(&io)?.len();
        let naming: Vec<(&Version, &ContentRef)> = heads
            .iter()
            .filter_map(|h| match &h.version.entry {
                Entry::File { content, .. }
                    if content.pack == *pack && content.owner == self.device =>
                {
                    Some((&h.version, content))
                }
                _ => None,
            })
            .collect();
        let mut whole = Vec::with_capacity(naming.len());
        for (_, c) in &naming {
            // Queued here, so sealed under a key this device holds.
            let keys = keys.at_epoch(c.key_epoch)?;
            let intact = c.offset + c.length <= len
                && file.seek(SeekFrom::Start(c.offset)).is_ok()
                && check_blob(
                    &keys,
                    &c.blob,
                    c.size,
                    &c.sha256,
                    (&mut file).take(c.length),
                )
                .is_ok();
            whole.push(intact);
        }
        if whole.iter().all(|w| *w) {
            return Ok(true);
        }
        tracing::error!(
            "the queued pack {} is damaged (a crash before its bytes reached the disk?); \
             it will not be uploaded",
            path.display()
        );
        let elsewhere =
            self.contents_by_hash(&naming.iter().map(|(_, c)| c.sha256).collect::<Vec<_>>())?;
        let retake = lock(&self.retake).clone();
        let mut moves: Vec<(&Version, ContentRef)> = Vec::new();
        let mut gone: Vec<&Version> = Vec::new();
        for ((v, c), intact) in naming.iter().zip(&whole) {
            let saved = if *intact {
                let mut sealed = vec![0u8; c.length as usize];
                file.seek(SeekFrom::Start(c.offset)).map_err(&io)?;
                file.read_exact(&mut sealed).map_err(&io)?;
                let (new_pack, offset) = self
                    .writer()
                    .append_sealed(&sealed)
                    .map_err(SyncError::io(self.queue.dir().to_path_buf()))?;
                Some(ContentRef {
                    pack: new_pack,
                    offset,
                    ..(*c).clone()
                })
            } else if let Some(kept) = elsewhere.get(&c.sha256).filter(|k| k.pack != *pack) {
                Some(kept.clone())
            } else {
                self.seal_again(retake.as_deref(), &v.path, c)?
            };
            match saved {
                Some(new) => moves.push((v, new)),
                None => gone.push(v),
            }
        }
        let new_packs: Vec<ObjectId> = {
            let mut writer = self.writer();
            writer.close_open();
            let register = writer.to_register(moves.iter().map(|(_, c)| c.pack.clone()));
            if !register.is_empty() {
                writer
                    .sync()
                    .map_err(SyncError::io(self.queue.dir().to_path_buf()))?;
            }
            self.index().transaction(|tx| {
                for p in &register {
                    tx.add_pending_pack(p)?;
                }
                tx.forget_contents_in(pack)?;
                for (v, c) in &moves {
                    tx.move_unpublished_content(&v.device, v.counter(), c)?;
                }
                for v in &gone {
                    tx.drop_unpublished(&v.device, v.counter())?;
                }
                tx.remove_pending_pack(pack)
            })?;
            writer.registered(&register);
            register
        };
        let _ = std::fs::remove_file(&path);
        for v in &gone {
            tracing::error!("lost before upload: the change to {} (its queued copy was damaged and nothing else holds it)", v.path);
            out.lost.push(v.path.clone());
        }
        tracing::warn!(
            "{} of {} files of the damaged pack were saved (into {} new packs)",
            moves.len(),
            naming.len(),
            new_packs.len()
        );
        out.changed = true;
        Ok(false)
    }

    /// Reads a content again from the front-end's source and seals it, if the bytes
    /// there still hash the same.
    fn seal_again(
        &self,
        retake: Option<&dyn Retake>,
        path: &str,
        c: &ContentRef,
    ) -> SyncResult<Option<ContentRef>> {
        let Some(mut reader) = retake.and_then(|r| r.retake(path)) else {
            return Ok(None);
        };
        // With anonymization on, the vault held this content's view: the bytes read
        // again become the same view (or a later change's), never an original.
        if self.anonymizer_to_read()?.is_some() {
            let mut data = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(&mut reader, &mut data) {
                tracing::warn!("cannot read {path} again: {e}");
                return Ok(None);
            }
            let view = self.pseudonymized(&data)?.unwrap_or(data);
            self.queue_originals()?;
            let sealed = self.seal(view.as_slice(), view.len() as u64, None)?;
            return Ok((sealed.sha256 == c.sha256).then_some(sealed));
        }
        let sealed = match self.seal(reader, c.size, None) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot read {path} again: {e}");
                return Ok(None);
            }
        };
        // Different bytes are a later change of the file's, which its next scan
        // records; the blob sealed here is then nobody's and leaves with its pack.
        Ok((sealed.sha256 == c.sha256).then_some(sealed))
    }

    fn note_lost(&self, paths: &[String]) -> SyncResult<()> {
        let mut list = self.lost_files()?;
        list.retain(|p| !paths.contains(p));
        list.extend(paths.iter().cloned());
        if list.len() > LOST_KEPT {
            list.drain(..list.len() - LOST_KEPT);
        }
        let value = serde_json::to_string(&list).map_err(|e| SyncError::Invalid(e.to_string()))?;
        self.index()
            .transaction(|tx| tx.set_meta(META_LOST, &value))?;
        Ok(())
    }
}
