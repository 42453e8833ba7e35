//! The one pack writer (DESIGN §4): contents are sealed one at a time, each a blob of
//! its own, appended to an open pack in the upload queue (`sync/cache/`), so the
//! contents of many small files travel in one object while a large file gets a pack of
//! its own. A push seals a folder's changes through it, the mount each file as it
//! closes.
//!
//! A pack becomes a pending upload only in the index transaction that records the first
//! version naming it (see `Vault::record`): until then it is this writer's alone, and
//! packs that were never registered are leftovers of work nobody acknowledged. The
//! writer remembers which packs still need registering and which bytes are not on disk
//! yet: a record in a durable index syncs them first; a mount, whose index commits
//! lazily, syncs them at its checkpoints, so a durable record never names bytes that
//! were not.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
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
    file: File,
    len: u64,
}

pub(crate) struct PackWriter {
    cache: PackCache,
    owner: DeviceId,
    open: Option<OpenPack>,
    sealer: Sealer,
    buf: Vec<u8>,
    /// Packs holding sealed contents that no recorded version names yet.
    unregistered: BTreeSet<ObjectId>,
    /// Packs whose bytes may still be only in the page cache.
    unsynced: BTreeSet<ObjectId>,
}

impl PackWriter {
    pub fn new(cache: PackCache, owner: DeviceId) -> Self {
        Self {
            cache,
            owner,
            open: None,
            sealer: Sealer::default(),
            buf: Vec::new(),
            unregistered: BTreeSet::new(),
            unsynced: BTreeSet::new(),
        }
    }

    fn open_pack(&mut self) -> io::Result<()> {
        if self.open.is_none() {
            let id = ObjectId::new(crate::now_ms() as u64);
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(self.cache.path_of(&id))?;
            file.write_all(&PACK_HEADER)?;
            self.unsynced.insert(id.clone());
            self.open = Some(OpenPack {
                id,
                file,
                len: PACK_HEADER.len() as u64,
            });
        }
        Ok(())
    }

    /// Seals one content; `size_hint` decides whether it shares a pack. With `known`,
    /// the caller vouches for the plaintext's hash (it hashed the same bytes).
    pub fn seal(
        &mut self,
        keys: &SubKeys,
        input: impl Read,
        size_hint: u64,
        known: Option<ContentHash>,
    ) -> io::Result<ContentRef> {
        let own_pack = size_hint >= OWN_PACK_FROM;
        if own_pack {
            self.close_open();
        }
        let result = self.open_pack().and_then(|()| {
            let Self {
                open,
                sealer,
                buf,
                owner,
                ..
            } = self;
            let pack = open
                .as_mut()
                .unwrap_or_else(|| unreachable!("opened above"));
            let blob = BlobId::random();
            let offset = pack.len;
            // Small contents (nearly all memories) are sealed into a reused buffer and
            // written with one call; large ones stream through a buffered writer.
            let sealed = if own_pack {
                let mut out = BufWriter::with_capacity(1 << 20, &mut pack.file);
                let s = sealer.seal(keys, blob, input, &mut out, known)?;
                out.flush()?;
                s
            } else {
                buf.clear();
                let s = sealer.seal(keys, blob, input, buf, known)?;
                pack.file.write_all(buf)?;
                s
            };
            pack.len += sealed.sealed_len;
            Ok(ContentRef {
                owner: owner.clone(),
                pack: pack.id.clone(),
                offset,
                length: sealed.sealed_len,
                blob,
                sha256: sealed.sha256,
                size: sealed.plain_len,
            })
        });
        match result {
            Ok(content) => {
                self.unregistered.insert(content.pack.clone());
                let full = self.open.as_ref().is_some_and(|p| p.len >= PACK_TARGET);
                if full || own_pack {
                    self.close_open();
                }
                Ok(content)
            }
            Err(e) => {
                // A partly written blob leaves the pack's end unknown: the next
                // content starts a new pack.
                self.open = None;
                Err(e)
            }
        }
    }

    /// Closes the open pack, so it can be uploaded as it is.
    pub fn close_open(&mut self) {
        self.open = None;
    }

    /// Of `packs`, those that still need registering as pending uploads.
    pub fn to_register(&self, packs: impl IntoIterator<Item = ObjectId>) -> Vec<ObjectId> {
        let mut out: Vec<ObjectId> = packs
            .into_iter()
            .filter(|p| self.unregistered.contains(p))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn registered(&mut self, packs: &[ObjectId]) {
        for p in packs {
            self.unregistered.remove(p);
        }
    }

    /// Puts every written pack byte on disk, and the queue folder's names.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        if let Some(p) = &self.open {
            p.file.sync_data()?;
        }
        for id in std::mem::take(&mut self.unsynced) {
            if self.open.as_ref().is_some_and(|p| p.id == id) {
                continue;
            }
            match File::open(self.cache.path_of(&id)).and_then(|f| f.sync_data()) {
                Ok(()) => {}
                // Uploaded and dropped from the queue meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.unsynced.insert(id);
                    return Err(e);
                }
            }
        }
        if let Some(p) = &self.open {
            self.unsynced.insert(p.id.clone());
        }
        File::open(self.cache.dir())?.sync_all()
    }
}

/// How fast this machine seals (for `ghostie-fs bench-seal`): seconds to seal `data`
/// as one blob with its hash given, and with the hash computed as every version
/// records it. Memory to memory, as `openssl speed` measures.
pub fn seal_speed(data: &[u8]) -> io::Result<(f64, f64)> {
    let keys = SubKeys::derive(&crate::crypto::MasterKey::random());
    let mut sealer = Sealer::default();
    let mut run = |known| -> io::Result<f64> {
        let started = std::time::Instant::now();
        sealer.seal(&keys, BlobId::random(), data, &mut io::sink(), known)?;
        Ok(started.elapsed().as_secs_f64())
    };
    Ok((run(Some(ContentHash([0; 32])))?, run(None)?))
}
