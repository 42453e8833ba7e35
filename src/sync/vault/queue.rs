//! The write-back queue of the mount: contents sealed one at a time, as files close,
//! appended to one open pack in the cache. A version naming the pack is recorded (and
//! the pack queued for upload) in the same transaction, so after a crash the index
//! still knows every acknowledged write and the pack that holds it. `publish` closes
//! the open pack before uploading, so a published segment never names a pack that is
//! still growing.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};

use super::*;
use crate::crypto::blob::{Sealer, PACK_HEADER};
use crate::model::BlobId;
use crate::sync::pack::{OWN_PACK_FROM, PACK_TARGET};
use crate::sync::reader::ContentReader;

/// Buffers reused from one queued content to the next.
#[derive(Default)]
pub(super) struct QueueScratch {
    sealer: Sealer,
    buf: Vec<u8>,
}

pub(super) struct QueuePack {
    id: ObjectId,
    file: File,
    len: u64,
}

/// Where a queued content went: the caller records a version naming `content` and
/// passes `pack` to [`Vault::record`] so the pack is queued for upload with it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub content: ContentRef,
    pub pack: ObjectId,
}

impl Vault {
    /// Seals `input` into the queue's open pack.
    pub fn queue_content(&mut self, input: impl Read, size_hint: u64) -> SyncResult<Queued> {
        self.keys()?;
        if size_hint >= OWN_PACK_FROM {
            self.close_queue_pack()?;
        }
        if self.queue.is_none() {
            let id = ObjectId::new(crate::now_ms() as u64);
            let path = self.cache.path_of(&id);
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)
                .map_err(SyncError::io(&path))?;
            file.write_all(&PACK_HEADER).map_err(SyncError::io(&path))?;
            self.queue = Some(QueuePack {
                id,
                file,
                len: PACK_HEADER.len() as u64,
            });
        }
        let keys = self
            .keys
            .as_ref()
            .unwrap_or_else(|| unreachable!("unlocked above"));
        let pack = self
            .queue
            .as_mut()
            .unwrap_or_else(|| unreachable!("opened above"));
        let path = self.cache.path_of(&pack.id);
        let blob = BlobId::random();
        let offset = pack.len;
        // Small contents (nearly all memories) are sealed into a reused buffer and
        // written with one call; large ones stream through a buffered writer.
        let scratch = self.queue_scratch.get_or_insert_with(Default::default);
        let sealed = if size_hint < OWN_PACK_FROM {
            scratch.buf.clear();
            scratch
                .sealer
                .seal(keys, blob, input, &mut scratch.buf, None)
                .and_then(|s| pack.file.write_all(&scratch.buf).map(|_| s))
        } else {
            let mut out = BufWriter::with_capacity(1 << 20, &mut pack.file);
            scratch
                .sealer
                .seal(keys, blob, input, &mut out, None)
                .and_then(|s| out.flush().map(|_| s))
        };
        let sealed = match sealed {
            Ok(s) => s,
            Err(e) => {
                // A partly written blob leaves the pack's end unknown: start a new one.
                self.queue = None;
                return Err(SyncError::io(path)(e));
            }
        };
        pack.len += sealed.sealed_len;
        let queued = Queued {
            content: ContentRef {
                owner: self.device.clone(),
                pack: pack.id.clone(),
                offset,
                length: sealed.sealed_len,
                blob,
                sha256: sealed.sha256,
                size: sealed.plain_len,
            },
            pack: pack.id.clone(),
        };
        if pack.len >= PACK_TARGET || size_hint >= OWN_PACK_FROM {
            self.close_queue_pack()?;
        }
        Ok(queued)
    }

    /// Closes the open pack, so it can be uploaded as it is. Its bytes reach the disk
    /// with the next [`Vault::sync_packs`]: a close() promises to survive a crash of
    /// the mount, which the page cache already does; only fsync() waits for the disk.
    pub(super) fn close_queue_pack(&mut self) -> SyncResult<()> {
        if let Some(pack) = self.queue.take() {
            self.unsynced_packs.push(pack.id);
        }
        Ok(())
    }

    /// Puts every queued pack byte on disk: the open pack, the packs closed since the
    /// last call, and the cache folder's names.
    fn sync_packs(&mut self) -> SyncResult<()> {
        if let Some(pack) = &self.queue {
            let path = self.cache.path_of(&pack.id);
            pack.file.sync_data().map_err(SyncError::io(&path))?;
        }
        for id in std::mem::take(&mut self.unsynced_packs) {
            let path = self.cache.path_of(&id);
            match File::open(&path).and_then(|f| f.sync_data()) {
                Ok(()) => {}
                // Uploaded and dropped from the cache meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SyncError::io(&path)(e)),
            }
        }
        let dir = self.cache.dir().to_path_buf();
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(SyncError::io(&dir))?;
        Ok(())
    }

    /// Makes everything queued so far survive a power cut, not only a crash: the
    /// packs, the cache folder's names and the index. What `fsync()` in the mount waits for.
    pub fn sync_queue(&mut self) -> SyncResult<()> {
        self.sync_packs()?;
        self.index.checkpoint()?;
        Ok(())
    }

    /// Copies the index's write-ahead log into the database, after the packs its
    /// records name are on disk: a power cut must never leave a durable record of
    /// bytes that were not. The mount calls this (its index never checkpoints on
    /// its own, see `Index::relax_durability`).
    pub fn checkpoint_queue(&mut self) -> SyncResult<()> {
        self.sync_packs()?;
        self.index.checkpoint_quietly()?;
        Ok(())
    }

    /// Bytes of sealed packs waiting for upload.
    pub fn queued_bytes(&self) -> SyncResult<u64> {
        Ok(self
            .index
            .pending_packs()?
            .iter()
            .filter_map(|p| std::fs::metadata(self.cache.path_of(p)).ok())
            .map(|m| m.len())
            .sum())
    }

    /// A reader that fetches contents on any thread, without this vault.
    pub fn reader(&mut self) -> SyncResult<ContentReader> {
        let keys = self.keys()?.clone();
        Ok(ContentReader::new(
            self.store.clone(),
            self.layout.clone(),
            self.cache.clone(),
            keys,
        ))
    }
}
