//! Packing: the contents of many small files go into one pack object of a few MiB, each
//! a separately sealed blob (DESIGN §4), so thousands of memories cost a handful of
//! requests. A large file gets a pack of its own. Packs are written into the cache and
//! flushed to disk before the index records them as pending uploads.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use crate::crypto::blob::{Sealer, PACK_HEADER};
use crate::crypto::SubKeys;
use crate::model::{BlobId, ContentHash, ContentRef, DeviceId, ObjectId};
use crate::store::PackCache;

/// Packs close once they pass this size.
pub const PACK_TARGET: u64 = 4 * 1024 * 1024;
/// Files at least this large get a pack of their own.
pub const OWN_PACK_FROM: u64 = 1024 * 1024;

struct OpenPack {
    id: ObjectId,
    out: BufWriter<File>,
    len: u64,
}

pub struct PackWriter<'a> {
    keys: &'a SubKeys,
    cache: &'a PackCache,
    owner: DeviceId,
    current: Option<OpenPack>,
    done: Vec<ObjectId>,
    bytes: u64,
    sealer: Sealer,
}

impl<'a> PackWriter<'a> {
    pub fn new(keys: &'a SubKeys, cache: &'a PackCache, owner: DeviceId) -> Self {
        Self {
            keys,
            cache,
            owner,
            current: None,
            done: Vec::new(),
            bytes: 0,
            sealer: Sealer::default(),
        }
    }

    fn open(&self) -> io::Result<OpenPack> {
        let id = ObjectId::new(crate::now_ms() as u64);
        let mut out = BufWriter::with_capacity(1 << 20, File::create(self.cache.path_of(&id))?);
        out.write_all(&PACK_HEADER)?;
        Ok(OpenPack {
            id,
            out,
            len: PACK_HEADER.len() as u64,
        })
    }

    fn close(&mut self, pack: OpenPack) -> io::Result<()> {
        let file = pack.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        self.done.push(pack.id);
        Ok(())
    }

    /// Seals one file's content; `size_hint` decides whether it shares a pack.
    pub fn add(&mut self, input: impl Read, size_hint: u64) -> io::Result<ContentRef> {
        self.add_hashed(input, size_hint, None)
    }

    /// As [`Self::add`], for bytes whose hash the caller already computed.
    pub fn add_hashed(
        &mut self,
        input: impl Read,
        size_hint: u64,
        known: Option<ContentHash>,
    ) -> io::Result<ContentRef> {
        if size_hint >= OWN_PACK_FROM {
            if let Some(p) = self.current.take() {
                self.close(p)?;
            }
        }
        let mut pack = match self.current.take() {
            Some(p) => p,
            None => self.open()?,
        };
        let blob = BlobId::random();
        let offset = pack.len;
        let sealed = self
            .sealer
            .seal(self.keys, blob, input, &mut pack.out, known)?;
        pack.len += sealed.sealed_len;
        self.bytes += sealed.plain_len;
        let content = ContentRef {
            owner: self.owner.clone(),
            pack: pack.id.clone(),
            offset,
            length: sealed.sealed_len,
            blob,
            sha256: sealed.sha256,
            size: sealed.plain_len,
        };
        if pack.len >= PACK_TARGET || size_hint >= OWN_PACK_FROM {
            self.close(pack)?;
        } else {
            self.current = Some(pack);
        }
        Ok(content)
    }

    /// Flushes the last pack and returns every pack written, all durable on disk.
    pub fn finish(mut self) -> io::Result<(Vec<ObjectId>, u64)> {
        if let Some(p) = self.current.take() {
            self.close(p)?;
        }
        // The packs' names must survive a power cut too, not only their bytes.
        if !self.done.is_empty() {
            File::open(self.cache.dir())?.sync_all()?;
        }
        Ok((std::mem::take(&mut self.done), self.bytes))
    }
}
