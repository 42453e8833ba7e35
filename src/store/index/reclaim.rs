//! What the index keeps for reclaiming space (schema 3): which contents a new
//! version may reuse, what every other device last said it had seen, and which of
//! this device's packs were found dead, since when and in what view.
//!
//! Reuse is the one way a device's version comes to name a blob it did not just
//! upload (an unchanged file copied, a reverted edit): `contents` only ever points
//! at a blob some head still names, so a device never makes a new reference to a
//! blob that its owner may already count as dead. See `sync::vault::gc` for why
//! that, with the seen-vectors, makes deleting a dead pack safe.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};

use super::{decode_version, encode, Index, IndexResult, IndexTx};
use crate::model::{ContentRef, DeviceId, Entry, ObjectId, Version};

/// How far each device's log had been applied, counted in segments that hold
/// versions: device → the newest such segment applied. Segments without versions
/// (acknowledgements) do not count, or two devices acknowledging each other's
/// acknowledgements would never stop.
pub type SeenVector = BTreeMap<DeviceId, u64>;

/// This device's newest published segment that holds versions (meta key).
pub const META_LAST_CONTENT_SEQ: &str = "last_content_seq";

/// One of this device's packs that no head names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadPack {
    /// When this device first found it dead (its own clock).
    pub since_ms: i64,
    /// What this device had seen of every log then: once every other device has
    /// seen as much, none can still make a new reference to it.
    pub view: SeenVector,
}

fn content_of(v: &Version) -> Option<&ContentRef> {
    match &v.entry {
        Entry::File { content, .. } => Some(content),
        _ => None,
    }
}

/// Rebuilds `contents` from the heads: an index older than schema 3 remembered
/// every content it ever saw, some of them in blobs no head names any more.
pub(super) fn keep_only_live_contents(conn: &Connection) -> IndexResult<()> {
    conn.execute("DELETE FROM contents", [])?;
    let mut read = conn.prepare("SELECT record FROM heads")?;
    let records: Vec<String> = read
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    let mut insert =
        conn.prepare("INSERT OR IGNORE INTO contents(sha256, record) VALUES(?1, ?2)")?;
    for record in records {
        if let Some(c) = content_of(&decode_version(&record)?) {
            insert.execute(params![c.sha256.to_string(), encode(c)])?;
        }
    }
    Ok(())
}

fn parse_seen(text: Option<String>) -> SeenVector {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

impl Index {
    /// Every pack of `owner` that some head (published or not) names.
    pub fn live_packs_of(&self, owner: &DeviceId) -> IndexResult<HashSet<ObjectId>> {
        let mut stmt = self.conn.prepare("SELECT record FROM heads")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut live = HashSet::new();
        for row in rows {
            let version = decode_version(&row?)?;
            if let Some(c) = content_of(&version).filter(|c| &c.owner == owner) {
                live.insert(c.pack.clone());
            }
        }
        Ok(live)
    }

    /// What every other device last said it had seen, by device.
    pub fn seen_by_devices(&self) -> IndexResult<HashMap<DeviceId, SeenVector>> {
        let mut stmt = self.conn.prepare("SELECT id, seen FROM devices")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (id, seen) = row?;
            if let Some(id) = DeviceId::parse(&id) {
                out.insert(id, parse_seen(seen));
            }
        }
        Ok(out)
    }

    /// For every device, the furthest any other device said it had read of its log
    /// (in an acknowledgement, or as the view a snapshot was built from), and who.
    pub fn furthest_claims(&self) -> IndexResult<HashMap<DeviceId, (DeviceId, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, seen, heads_view FROM devices")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        let mut out: HashMap<DeviceId, (DeviceId, u64)> = HashMap::new();
        for row in rows {
            let (by, seen, heads_view) = row?;
            let Some(by) = DeviceId::parse(&by) else {
                continue;
            };
            for (of, seq) in parse_seen(seen).into_iter().chain(parse_seen(heads_view)) {
                if of == by {
                    continue;
                }
                let further = out.get(&of).is_none_or(|(_, known)| seq > *known);
                if further {
                    out.insert(of, (by.clone(), seq));
                }
            }
        }
        Ok(out)
    }

    /// How far this device has applied each other device's log (any segment).
    pub fn applied_seqs(&self) -> IndexResult<HashMap<DeviceId, u64>> {
        Ok(self
            .devices()?
            .into_iter()
            .map(|d| (d.id, d.applied_seq.0))
            .collect())
    }

    /// How far this device has applied every log, in segments that hold versions:
    /// every other device's, and `me`'s own as published.
    pub fn seen_vector(&self, me: &DeviceId) -> IndexResult<SeenVector> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, content_seq FROM devices WHERE content_seq > 0")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = SeenVector::new();
        for row in rows {
            let (id, seq) = row?;
            if let Some(id) = DeviceId::parse(&id).filter(|id| id != me) {
                out.insert(id, seq as u64);
            }
        }
        let own = self.meta_u64(META_LAST_CONTENT_SEQ)?;
        if own > 0 {
            out.insert(me.clone(), own);
        }
        Ok(out)
    }

    pub fn dead_packs(&self) -> IndexResult<HashMap<ObjectId, DeadPack>> {
        let mut stmt = self
            .conn
            .prepare("SELECT pack, since_ms, view FROM dead_packs")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (pack, since_ms, view) = row?;
            if let Some(pack) = ObjectId::parse(&pack) {
                let view = parse_seen(Some(view));
                out.insert(pack, DeadPack { since_ms, view });
            }
        }
        Ok(out)
    }
}

impl IndexTx<'_> {
    /// A head left: where the contents table points at its blob, no later version
    /// may reuse it (its owner may reclaim it once no head names it).
    pub(super) fn forget_content_of(&mut self, gone: &Version) -> IndexResult<()> {
        let Some(content) = content_of(gone) else {
            return Ok(());
        };
        let sha = content.sha256.to_string();
        let record: Option<String> = self
            .tx
            .prepare_cached("SELECT record FROM contents WHERE sha256 = ?1")?
            .query_row([&sha], |r| r.get(0))
            .optional()?;
        let same_blob = record
            .and_then(|r| serde_json::from_str::<ContentRef>(&r).ok())
            .is_some_and(|c| c.blob == content.blob);
        if same_blob {
            self.tx
                .prepare_cached("DELETE FROM contents WHERE sha256 = ?1")?
                .execute([&sha])?;
        }
        Ok(())
    }

    /// Whether a version may name `content` now: some head names its blob, or it is
    /// in a pack of this device not yet uploaded. Otherwise its owner may already
    /// count it dead (see `sync::vault::gc`).
    pub fn may_name(
        &mut self,
        content: &ContentRef,
        me: &DeviceId,
        heads_trusted: bool,
    ) -> IndexResult<bool> {
        if &content.owner == me {
            let pending: Option<i64> = self
                .tx
                .prepare_cached("SELECT 1 FROM pending_packs WHERE pack = ?1")?
                .query_row([content.pack.as_str()], |r| r.get(0))
                .optional()?;
            if pending.is_some() {
                return Ok(true);
            }
        }
        // A home rebuilt from its own log alone shows heads others superseded.
        if !heads_trusted {
            return Ok(false);
        }
        let same = |c: &ContentRef| {
            c.blob == content.blob && c.pack == content.pack && c.owner == content.owner
        };
        let record: Option<String> = self
            .tx
            .prepare_cached("SELECT record FROM contents WHERE sha256 = ?1")?
            .query_row([content.sha256.to_string()], |r| r.get(0))
            .optional()?;
        if record
            .and_then(|r| serde_json::from_str::<ContentRef>(&r).ok())
            .is_some_and(|c| same(&c))
        {
            return Ok(true);
        }
        // Rare: the same bytes stored twice, the table naming the other copy. Blob
        // ids are random, so few records hold this one.
        let blob = serde_json::to_string(&content.blob)
            .unwrap_or_else(|_| unreachable!("a blob id serialises"));
        let mut stmt = self
            .tx
            .prepare_cached("SELECT record FROM heads WHERE record LIKE ?1")?;
        let rows = stmt.query_map([format!("%{}%", blob.trim_matches('"'))], |r| {
            r.get::<_, String>(0)
        })?;
        for row in rows {
            let v = decode_version(&row?)?;
            if content_of(&v).is_some_and(same) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn forget_contents_of_unpublished(
        &mut self,
        device: &DeviceId,
        counter: u64,
    ) -> IndexResult<()> {
        match self.unpublished_version(device, counter)? {
            Some(v) => self.forget_content_of(&v),
            None => Ok(()),
        }
    }

    /// What `device` said, in its newest record applied here, it had seen.
    pub fn set_device_seen(&mut self, device: &DeviceId, seen: &SeenVector) -> IndexResult<()> {
        self.upsert_device(device)?;
        self.tx
            .prepare_cached("UPDATE devices SET seen = ?2 WHERE id = ?1")?
            .execute(params![device.as_str(), encode(seen)])?;
        Ok(())
    }

    /// The view `device`'s newest snapshot applied here was built from.
    pub fn set_device_heads_view(
        &mut self,
        device: &DeviceId,
        view: &SeenVector,
    ) -> IndexResult<()> {
        self.upsert_device(device)?;
        self.tx
            .prepare_cached("UPDATE devices SET heads_view = ?2 WHERE id = ?1")?
            .execute(params![device.as_str(), encode(view)])?;
        Ok(())
    }

    /// `device`'s newest segment holding versions, of those applied here (never
    /// moves back).
    pub fn set_device_content_seq(&mut self, device: &DeviceId, seq: u64) -> IndexResult<()> {
        self.upsert_device(device)?;
        self.tx
            .prepare_cached("UPDATE devices SET content_seq = max(content_seq, ?2) WHERE id = ?1")?
            .execute(params![device.as_str(), seq as i64])?;
        Ok(())
    }

    pub fn mark_dead(&mut self, pack: &ObjectId, dead: &DeadPack) -> IndexResult<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO dead_packs(pack, since_ms, view) VALUES(?1, ?2, ?3)",
            )?
            .execute(params![pack.as_str(), dead.since_ms, encode(&dead.view)])?;
        Ok(())
    }

    /// After going on from a snapshot, which leaves out versions this device never
    /// read: every pack is judged anew, in the new view.
    pub fn forget_all_dead(&mut self) -> IndexResult<()> {
        self.tx.execute("DELETE FROM dead_packs", [])?;
        Ok(())
    }

    pub fn forget_dead(&mut self, pack: &ObjectId) -> IndexResult<()> {
        self.tx
            .prepare_cached("DELETE FROM dead_packs WHERE pack = ?1")?
            .execute([pack.as_str()])?;
        Ok(())
    }
}

/// `new` is `old` with its blob moved (repacked, or sealed again under a newer
/// key): the same version, the same bytes, somewhere else.
pub fn is_relocation(old: &Version, new: &Version) -> bool {
    let (Some(a), Some(b)) = (content_of(old), content_of(new)) else {
        return false;
    };
    old.device == new.device
        && old.counter() == new.counter()
        && old.vector == new.vector
        && old.path == new.path
        && old.mtime_ns == new.mtime_ns
        // The new place is in the version's own device's packs (only the author
        // moves a version, and only into what it owns); the blob may be new (sealed
        // again under a newer key, or again after a crash), its bytes the same.
        && b.owner == new.device
        && a.key_epoch <= b.key_epoch
        && a.sha256 == b.sha256
        && a.size == b.size
        && (a.pack != b.pack || a.offset != b.offset || a.key_epoch != b.key_epoch)
        && matches!((&old.entry, &new.entry),
            (Entry::File { mode: m1, .. }, Entry::File { mode: m2, .. }) if m1 == m2)
}

impl IndexTx<'_> {
    /// A head `h` offered again as `v` with its blob moved (its owner repacked it):
    /// the head now names the new place, and so does what reuse finds for its bytes.
    /// False when `v` is not such a move.
    pub(super) fn relocated(&mut self, h: &Version, v: &Version) -> IndexResult<bool> {
        if !is_relocation(h, v) {
            return Ok(false);
        }
        self.tx
            .prepare_cached("UPDATE heads SET record = ?3 WHERE device = ?1 AND counter = ?2")?
            .execute(params![v.device.as_str(), v.counter() as i64, encode(v)])?;
        self.follow_move(h, v)?;
        Ok(true)
    }

    /// This device moves the blob of its own head `old` to where `new` says: the
    /// head is published again (the next segment carries the move to the others).
    pub fn relocate_own(&mut self, old: &Version, new: &Version) -> IndexResult<()> {
        if !is_relocation(old, new) {
            return Err(super::IndexError::Sql(format!(
                "a move of {} changed more than where its blob lives",
                old.path
            )));
        }
        let moved = self
            .tx
            .prepare_cached(
                "UPDATE heads SET record = ?3, published = 0, seq = NULL \
                 WHERE device = ?1 AND counter = ?2",
            )?
            .execute(params![
                new.device.as_str(),
                new.counter() as i64,
                encode(new)
            ])?;
        // Superseded in the meantime: nothing names the new place, and reuse must
        // not find it either.
        if moved == 0 {
            return Ok(());
        }
        self.follow_move(old, new)
    }

    /// Where `contents` named the old place of a moved blob, it names the new one.
    fn follow_move(&mut self, old: &Version, new: &Version) -> IndexResult<()> {
        let (Some(from), Some(to)) = (content_of(old), content_of(new)) else {
            return Ok(());
        };
        let record: Option<String> = self
            .tx
            .prepare_cached("SELECT record FROM contents WHERE sha256 = ?1")?
            .query_row([from.sha256.to_string()], |r| r.get(0))
            .optional()?;
        let names_old = record
            .and_then(|r| serde_json::from_str::<ContentRef>(&r).ok())
            .is_some_and(|c| c.blob == from.blob && c.pack == from.pack);
        if names_old {
            self.tx
                .prepare_cached("UPDATE contents SET record = ?2 WHERE sha256 = ?1")?
                .execute(params![to.sha256.to_string(), encode(to)])?;
        }
        Ok(())
    }
}
