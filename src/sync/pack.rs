//! The one pack writer (DESIGN §4): contents are sealed one at a time, each a blob of
//! its own, appended to an open pack in the upload queue (`sync/queue/`), so the
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
//!
//! The queue is acknowledged data, but it is a folder a user or a cleaner can remove.
//! The writer keeps a descriptor of each pack it wrote until the pack is uploaded (up
//! to [`HELD_AT_MOST`]), so a pack whose name vanished is written back from its
//! descriptor before it is appended to, synced or uploaded, and the folder is made
//! again when a new pack needs it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

use crate::crypto::blob::{Sealer, PACK_HEADER};
use crate::crypto::SubKeys;
use crate::model::{BlobId, ContentHash, ContentRef, DeviceId, ObjectId};
use crate::store::PackQueue;

/// Packs close once they pass this size.
pub const PACK_TARGET: u64 = 4 * 1024 * 1024;
/// Files at least this large get a pack of their own.
pub const OWN_PACK_FROM: u64 = 1024 * 1024;
/// Descriptors kept of packs waiting for upload: a bound on open files, not on the
/// queue (older packs are then protected by their names alone).
pub const HELD_AT_MOST: usize = 128;

struct OpenPack {
    id: ObjectId,
    file: File,
    len: u64,
}

pub(crate) struct PackWriter {
    queue: PackQueue,
    owner: DeviceId,
    open: Option<OpenPack>,
    sealer: Sealer,
    buf: Vec<u8>,
    /// Packs holding sealed contents that no recorded version names yet.
    unregistered: BTreeSet<ObjectId>,
    /// Packs whose bytes may still be only in the page cache.
    unsynced: BTreeSet<ObjectId>,
    /// Descriptors of packs written here and not uploaded yet.
    held: BTreeMap<ObjectId, File>,
    /// Every pack this writer made: their bytes went through this process, so no
    /// earlier crash can have cut them short.
    made: BTreeSet<ObjectId>,
}

impl PackWriter {
    pub fn new(queue: PackQueue, owner: DeviceId) -> Self {
        Self {
            queue,
            owner,
            open: None,
            sealer: Sealer::default(),
            buf: Vec::new(),
            unregistered: BTreeSet::new(),
            unsynced: BTreeSet::new(),
            held: BTreeMap::new(),
            made: BTreeSet::new(),
        }
    }

    fn open_pack(&mut self) -> io::Result<()> {
        if let Some(p) = &self.open {
            if !self.queue.path_of(&p.id).exists() {
                let id = p.id.clone();
                self.write_back(&id)?;
                if let (Some(p), Some(f)) = (self.open.as_mut(), self.held.get(&id)) {
                    p.file = f.try_clone()?;
                }
            }
        }
        if self.open.is_none() {
            self.queue.ensure_dir()?;
            let id = ObjectId::new(crate::now_ms() as u64);
            let mut file = OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .open(self.queue.path_of(&id))?;
            file.write_all(&PACK_HEADER)?;
            self.hold(&id, &file);
            self.made.insert(id.clone());
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
                key_epoch: keys.epoch(),
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

    /// Appends a blob sealed earlier (its bytes are position-free: nothing in them
    /// names the pack or the offset) and returns where it now lives.
    pub fn append_sealed(&mut self, sealed: &[u8]) -> io::Result<(ObjectId, u64)> {
        if sealed.len() as u64 >= OWN_PACK_FROM {
            self.close_open();
        }
        self.open_pack()?;
        let pack = self
            .open
            .as_mut()
            .unwrap_or_else(|| unreachable!("opened above"));
        let offset = pack.len;
        if let Err(e) = pack.file.write_all(sealed) {
            self.open = None;
            return Err(e);
        }
        pack.len += sealed.len() as u64;
        let id = pack.id.clone();
        self.unregistered.insert(id.clone());
        if pack.len >= PACK_TARGET || sealed.len() as u64 >= OWN_PACK_FROM {
            self.close_open();
        }
        Ok((id, offset))
    }

    /// Whether this writer made `pack` (in this process).
    pub fn made(&self, pack: &ObjectId) -> bool {
        self.made.contains(pack)
    }

    /// Closes the open pack, so it can be uploaded as it is.
    pub fn close_open(&mut self) {
        self.open = None;
    }

    fn hold(&mut self, id: &ObjectId, file: &File) {
        if self.held.len() >= HELD_AT_MOST {
            // The oldest pack is the likeliest to be uploaded soon.
            self.held.pop_first();
        }
        if let Ok(copy) = file.try_clone() {
            self.held.insert(id.clone(), copy);
        }
    }

    /// Writes a held pack back under its name in the queue (made again if need be)
    /// from the descriptor this writer kept; the new file is held from then on.
    fn write_back(&mut self, id: &ObjectId) -> io::Result<()> {
        let Some(old) = self.held.get(id) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the queued pack {id} was removed"),
            ));
        };
        self.queue.ensure_dir()?;
        let path = self.queue.path_of(id);
        let tmp = path.with_extension("enc.tmp");
        let mut new = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tmp)?;
        let len = old.metadata()?.len();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < len {
            let n = old.read_at(&mut buf, at)?;
            if n == 0 {
                break;
            }
            new.write_all(&buf[..n])?;
            at += n as u64;
        }
        new.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        File::open(self.queue.dir())?.sync_all()?;
        tracing::warn!(
            "{} was removed while waiting for upload; written back from this process",
            path.display()
        );
        self.held.insert(id.clone(), new);
        Ok(())
    }

    /// Of `packs` (waiting for upload), writes back those whose name is gone from the
    /// queue while this writer still holds them. The rest of the missing ones are
    /// returned: their bytes are gone from this device.
    pub fn restore_missing(&mut self, packs: &[ObjectId]) -> io::Result<Vec<ObjectId>> {
        let mut gone = Vec::new();
        for id in packs {
            if self.queue.path_of(id).exists() {
                continue;
            }
            if self.held.contains_key(id) {
                self.write_back(id)?;
                if let (Some(p), Some(f)) = (self.open.as_mut(), self.held.get(id)) {
                    if p.id == *id {
                        p.file = f.try_clone()?;
                    }
                }
            } else {
                gone.push(id.clone());
            }
        }
        Ok(gone)
    }

    /// The backend holds `pack`: its descriptor is of no more use.
    pub fn uploaded(&mut self, pack: &ObjectId) {
        self.held.remove(pack);
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
        // Syncing a descriptor whose name is gone would make nothing durable.
        let ids: Vec<ObjectId> = self.unsynced.iter().cloned().collect();
        self.restore_missing(&ids)?;
        if let Some(p) = &self.open {
            p.file.sync_data()?;
        }
        for id in std::mem::take(&mut self.unsynced) {
            if self.open.as_ref().is_some_and(|p| p.id == id) {
                continue;
            }
            let synced = match self.held.get(&id) {
                Some(f) => f.sync_data(),
                None => File::open(self.queue.path_of(&id)).and_then(|f| f.sync_data()),
            };
            match synced {
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
        self.queue.ensure_dir()?;
        File::open(self.queue.dir())?.sync_all()
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

/// What anonymization adds to a push (for `ghostie-fs bench-anonymize`): seconds to
/// seal each of `memories` as its own blob with its hash computed, as a push does,
/// and seconds to look for sensitive values in each with every built-in detector
/// and replace them by pseudonyms; and how many memories held any.
pub fn anonymize_cost(memories: &[Vec<u8>]) -> io::Result<(f64, f64, usize, f64)> {
    use crate::anonymize::{pseudonymize, Detector, PseudonymKey, Rules};
    let keys = SubKeys::derive(&crate::crypto::MasterKey::random());
    let mut sealer = Sealer::default();
    let started = std::time::Instant::now();
    for m in memories {
        sealer.seal(&keys, BlobId::random(), m.as_slice(), &mut io::sink(), None)?;
    }
    let sealing = started.elapsed().as_secs_f64();
    let rules = Rules::with_detectors(Detector::ALL.to_vec());
    let key = PseudonymKey::new(&[7; 32]);
    let started = std::time::Instant::now();
    let found = memories
        .iter()
        .filter(|m| pseudonymize(m, &rules, &key).is_some())
        .count();
    let detecting = started.elapsed().as_secs_f64();
    // The floor of any detector: one pass over every byte that splits the text into
    // words, as the scanners do, and nothing else.
    let started = std::time::Instant::now();
    let mut words = 0usize;
    for m in memories {
        let mut inside = false;
        for b in m {
            let now = b.is_ascii_alphanumeric();
            words += usize::from(now && !inside);
            inside = now;
        }
    }
    std::hint::black_box(words);
    Ok((sealing, detecting, found, started.elapsed().as_secs_f64()))
}
