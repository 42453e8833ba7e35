//! Repacking: a pack of this device whose bytes are mostly superseded (at least
//! [`REPACK_DEAD_SHARE`]) keeps only a few live blobs, yet holds all its bytes until
//! the last of them goes. Its live blobs are copied, as sealed (a blob's bytes name
//! neither pack nor offset), into a new pack, and the versions that name them are
//! published again, the same versions with their blob's new place. Readers take such
//! a version as a move, not as a change (`store::index::reclaim::is_relocation`),
//! and the old pack is then dead: gc deletes it like any other, once every device
//! has said it read the move and the grace period has passed.
//!
//! Only this device's own versions are moved (one writer per key): a pack another
//! device's version names (a file renamed over there) is left as it is. A repack
//! runs only when it frees at least [`REPACK_AT_LEAST`] bytes in all, so a vault of a
//! few small files is not rewritten for a few bytes. Each pack is read whole while
//! the collection holds the publishing and polling locks, so one collection reads
//! at most [`REPACK_LIMIT`] bytes of them (those freeing the most per byte read
//! first; at least one pack, however large); the rest wait for the next
//! collection, and a vault full of candidates (the first collection after a long
//! time) is worked through in bounded steps. A pack barely past the threshold may
//! wait a while behind packs more superseded: those free more per byte read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use super::*;
use crate::crypto::blob::check_blob;
use crate::model::ObjectId;

/// A pack is repacked once at least this share of its bytes is superseded
/// (numerator, denominator): three quarters.
pub const REPACK_DEAD_SHARE: (u64, u64) = (3, 4);
/// ...and only when the repack frees at least this many bytes in all.
pub const REPACK_AT_LEAST: u64 = 64 * 1024;
/// The bytes of old packs one collection reads to repack them, by default: 16
/// packs of 4 MiB.
pub const REPACK_LIMIT: u64 = 64 * 1024 * 1024;

/// What a repack did (or, dry, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepackReport {
    /// Packs whose live blobs were copied out (they are dead now).
    pub packs: usize,
    /// Blobs copied.
    pub blobs: usize,
    /// Bytes the old packs hold beyond what was copied: what deleting them frees.
    pub bytes_superseded: u64,
    /// Packs worth repacking left for a later collection (beyond the bytes one
    /// collection reads).
    pub packs_left: usize,
}

/// One pack to repack: its size and the own heads that name it.
struct Candidate {
    pack: ObjectId,
    size: u64,
    heads: Vec<Version>,
}

impl Vault {
    /// The devices (by name) whose last word says they would not take a move
    /// (an older version): nothing is moved while there is one.
    pub(super) fn devices_not_reading_moves(&self) -> SyncResult<Vec<String>> {
        let removed: BTreeSet<String> = self
            .removed_devices()?
            .iter()
            .map(|r| r.device.clone())
            .collect();
        let names = self.name_map()?;
        let rows = self.index().devices()?;
        let mut out = Vec::new();
        for row in rows {
            if row.id == self.device || removed.contains(row.id.as_str()) || row.applied_seq.0 == 0
            {
                continue;
            }
            let reads = self
                .index()
                .meta(&super::poll::reads_moves_key(&row.id))?
                .is_some_and(|v| v == "1");
            if !reads {
                out.push(
                    names
                        .get(&row.id)
                        .cloned()
                        .unwrap_or_else(|| row.id.to_string()),
                );
            }
        }
        Ok(out)
    }

    /// Picks the packs worth repacking among this device's packs as listed.
    fn repack_candidates(&self, listed: &[(ObjectId, Option<u64>)]) -> SyncResult<Vec<Candidate>> {
        let me = &self.device;
        let mut naming: BTreeMap<ObjectId, Vec<Version>> = BTreeMap::new();
        let mut foreign: BTreeSet<ObjectId> = BTreeSet::new();
        for h in self.index().all_heads()? {
            let Entry::File { content, .. } = &h.version.entry else {
                continue;
            };
            if &content.owner != me {
                continue;
            }
            if &h.version.device != me {
                foreign.insert(content.pack.clone());
            }
            naming
                .entry(content.pack.clone())
                .or_default()
                .push(h.version.clone());
        }
        let mut out = Vec::new();
        for (pack, size) in listed {
            let (Some(size), Some(heads)) = (size, naming.remove(pack)) else {
                continue;
            };
            if foreign.contains(pack) {
                continue;
            }
            let candidate = Candidate {
                pack: pack.clone(),
                size: *size,
                heads,
            };
            let live = live_bytes(&candidate);
            let (dead_num, dead_den) = REPACK_DEAD_SHARE;
            if live > 0 && size.saturating_sub(live) * dead_den >= size * dead_num {
                out.push(candidate);
            }
        }
        let freed: u64 = out
            .iter()
            .map(|c| c.size.saturating_sub(live_bytes(c)))
            .sum();
        if freed < REPACK_AT_LEAST {
            return Ok(Vec::new());
        }
        Ok(out)
    }

    /// Copies the live blobs of this device's mostly superseded packs into new
    /// packs and records the moves (published by the next push). The caller holds
    /// the publishing and polling locks.
    pub(super) fn repack(
        &self,
        listed: &[(ObjectId, Option<u64>)],
        dry_run: bool,
        limit: u64,
    ) -> SyncResult<RepackReport> {
        let mut report = RepackReport::default();
        // A version not published yet may be replaced before it is: moving the
        // blobs of settled versions only keeps the two apart.
        if self.index().unpublished_count()? > 0 {
            return Ok(report);
        }
        let worth = self.repack_candidates(listed)?;
        if worth.is_empty() {
            return Ok(report);
        }
        let older = self.devices_not_reading_moves()?;
        if !older.is_empty() {
            tracing::info!(
                "no pack is repacked while {} runs a version that would not follow the move",
                older.join(", ")
            );
            return Ok(report);
        }
        let (candidates, left) = within_limit(worth, limit);
        report.packs_left = left;
        let keys = self.keys()?.clone();
        let me = self.device.clone();
        let mut moves: Vec<(Version, Version)> = Vec::new();
        let mut new_packs = Vec::new();
        for c in &candidates {
            let live = live_bytes(c);
            if dry_run {
                report.packs += 1;
                report.blobs += c.heads.len();
                report.bytes_superseded += c.size.saturating_sub(live);
                continue;
            }
            let bytes = match self.store.get(&self.layout.pack(&me, &c.pack)) {
                Ok(b) => b,
                // Gone already: nothing to move from it.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            // Every live blob checked before any is copied: a damaged one is not
            // spread further (verify names it), and the pack stays as it is.
            let mut blobs: BTreeMap<u64, &[u8]> = BTreeMap::new();
            let mut whole = true;
            for v in &c.heads {
                let Entry::File { content, .. } = &v.entry else {
                    continue;
                };
                let range = content.offset as usize..(content.offset + content.length) as usize;
                let intact = bytes.get(range).filter(|sealed| {
                    keys.at_epoch(content.key_epoch).is_ok_and(|k| {
                        let check = Cursor::new(*sealed);
                        check_blob(&k, &content.blob, content.size, &content.sha256, check).is_ok()
                    })
                });
                match intact {
                    Some(sealed) => {
                        blobs.insert(content.offset, sealed);
                    }
                    None => {
                        whole = false;
                        break;
                    }
                }
            }
            if !whole {
                tracing::warn!(
                    "pack {} was not repacked: a blob in it does not check (run 'ghostie-fs verify')",
                    c.pack
                );
                continue;
            }
            let mut placed: BTreeMap<u64, (ObjectId, u64)> = BTreeMap::new();
            for (offset, sealed) in &blobs {
                let at = self
                    .writer()
                    .append_sealed(sealed)
                    .map_err(SyncError::io(self.queue.dir().to_path_buf()))?;
                new_packs.push(at.0.clone());
                placed.insert(*offset, at);
            }
            for v in &c.heads {
                let mut moved = v.clone();
                if let Entry::File { content, .. } = &mut moved.entry {
                    if let Some((pack, offset)) = placed.get(&content.offset) {
                        content.pack = pack.clone();
                        content.offset = *offset;
                        moves.push((v.clone(), moved));
                    }
                }
            }
            report.packs += 1;
            report.blobs += placed.len();
            report.bytes_superseded += c.size.saturating_sub(live);
        }
        if moves.is_empty() {
            return Ok(report);
        }
        let mut writer = self.writer();
        writer.close_open();
        writer
            .sync()
            .map_err(SyncError::io(self.queue.dir().to_path_buf()))?;
        let register = writer.to_register(new_packs);
        self.index().transaction(|tx| {
            for p in &register {
                tx.add_pending_pack(p)?;
            }
            for (old, new) in &moves {
                tx.relocate_own(old, new)?;
            }
            Ok(())
        })?;
        writer.registered(&register);
        Ok(report)
    }
}

/// The candidates one collection repacks, those freeing the most per byte read
/// first, while their sizes add up to at most `limit` (a first one larger than
/// `limit` still goes, so that a small limit does not stop repacking for good;
/// a limit of zero takes none); and how many are left for a later collection
/// (none when together they free too little for one to repack them).
fn within_limit(mut candidates: Vec<Candidate>, limit: u64) -> (Vec<Candidate>, usize) {
    let freed = |c: &Candidate| u128::from(c.size.saturating_sub(live_bytes(c)));
    // a before b when freed(a) / size(a) > freed(b) / size(b), without division.
    candidates
        .sort_by(|a, b| (freed(b) * u128::from(a.size)).cmp(&(freed(a) * u128::from(b.size))));
    let mut taken = Vec::new();
    let mut left = 0;
    let mut left_frees = 0u128;
    let mut read = 0u64;
    for c in candidates {
        let fits = read.saturating_add(c.size) <= limit || (taken.is_empty() && limit > 0);
        if fits && left == 0 {
            read = read.saturating_add(c.size);
            taken.push(c);
        } else {
            left += 1;
            left_frees += freed(&c);
        }
    }
    if left_frees < u128::from(REPACK_AT_LEAST) {
        left = 0;
    }
    (taken, left)
}

/// The bytes of the blobs still named in `c` (two heads naming one blob, a copy,
/// count it once).
fn live_bytes(c: &Candidate) -> u64 {
    c.heads
        .iter()
        .filter_map(|v| match &v.entry {
            Entry::File { content, .. } => Some((content.offset, content.length)),
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .iter()
        .map(|(_, len)| len)
        .sum()
}
