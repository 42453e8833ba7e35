//! Recording: what a front-end says it changed becomes versions, by the rules of
//! `rules.rs`, stamped with this device's counter and recorded with the packs that
//! hold their contents (queued for upload) in one transaction.

use std::collections::HashMap;

use super::*;
use crate::model::{ObjectId, Showing, VersionVector};
use crate::store::index::{HeadChange, IndexTx};
use crate::store::IndexError;
use crate::sync::rules::{self, After, Change, Known, LocalChange};

/// A mount's index copies its log into the database at least this often (about 3 MiB
/// of log for small files).
const RECORDS_PER_CHECKPOINT: u32 = 100;

/// What the rules learn from the index inside the recording transaction.
struct Knowledge<'a> {
    deletions: HashMap<String, VersionVector>,
    current: &'a Namespace,
}

impl Known for Knowledge<'_> {
    fn deletions(&self, path: &str) -> VersionVector {
        self.deletions.get(path).cloned().unwrap_or_default()
    }
    fn shown_now(&self, path: &str) -> Option<(Entry, i64)> {
        self.current
            .get(path)
            .filter(|s| s.sibling_of.is_none() && !s.version.entry.is_deleted())
            .map(|s| (s.version.entry.clone(), s.version.mtime_ns))
    }
}

fn apply_local(
    tx: &mut IndexTx<'_>,
    path: &str,
    local: LocalChange,
    made: Option<&Version>,
) -> Result<(), IndexError> {
    let showing = made.map(|v| Showing::of(v, None));
    match local {
        LocalChange::Set(mut lf) => {
            lf.showing = showing;
            tx.set_local_file(path, &lf)
        }
        LocalChange::Remove => tx.remove_local_file(path),
        LocalChange::Restamp => match (tx.local_file(path)?, showing) {
            (Some(mut lf), Some(s)) => {
                lf.showing = Some(s);
                tx.set_local_file(path, &lf)
            }
            _ => Ok(()),
        },
        LocalChange::Keep => Ok(()),
    }
}

/// The paths a batch of changes touches, and the main paths whose siblings changed
/// (which keep what they show now when only siblings changed).
fn paths_of(changes: &[Change]) -> (Vec<String>, Vec<String>) {
    let mains: Vec<String> = changes
        .iter()
        .filter_map(|c| c.seen.at.as_ref()?.sibling_of().map(str::to_owned))
        .collect();
    let mut paths: Vec<String> = changes
        .iter()
        .map(|c| c.path.clone())
        .chain(mains.iter().cloned())
        .collect();
    paths.sort();
    paths.dedup();
    (paths, mains)
}

fn deletions_at(
    paths: &[String],
    heads_of: impl Fn(&str) -> Result<Vec<Version>, IndexError>,
) -> Result<HashMap<String, VersionVector>, IndexError> {
    let mut out = HashMap::new();
    for p in paths {
        let mut v = VersionVector::default();
        for h in heads_of(p)? {
            if h.entry.is_deleted() {
                v.merge(&h.vector);
            }
        }
        out.insert(p.clone(), v);
    }
    Ok(out)
}

impl Vault {
    fn shown_at(&self, mains: &[String]) -> SyncResult<Namespace> {
        if mains.is_empty() {
            Ok(Namespace::new())
        } else {
            self.namespace_of(mains)
        }
    }

    /// How many versions recording `changes` would make, recording nothing (what
    /// `status` counts as pending in a folder).
    pub fn versions_for(&self, changes: Vec<Change>) -> SyncResult<usize> {
        let (paths, mains) = paths_of(&changes);
        let current = self.shown_at(&mains)?;
        let deletions = {
            let index = self.index();
            deletions_at(&paths, |p| index.heads_of(p))?
        };
        let known = Knowledge {
            deletions,
            current: &current,
        };
        Ok(rules::plan(changes, &known, 0).versions.len())
    }

    /// Records `changes`, and `folder` record updates that make no version, in one
    /// transaction. Returns the versions made.
    pub fn record(
        &self,
        changes: Vec<Change>,
        folder: Vec<(String, Option<LocalFile>)>,
    ) -> SyncResult<Vec<Version>> {
        if changes.is_empty() && folder.is_empty() {
            return Ok(Vec::new());
        }
        let (paths, mains) = paths_of(&changes);
        let current = self.shown_at(&mains)?;
        let own_packs: Vec<ObjectId> = changes
            .iter()
            .filter_map(|c| match &c.after {
                After::Put {
                    entry: Entry::File { content, .. },
                    ..
                } if content.owner == self.device => Some(content.pack.clone()),
                _ => None,
            })
            .collect();
        let now_ns = crate::now_ms() * 1_000_000;
        let device = self.device.clone();
        let mut writer = self.writer();
        let register = writer.to_register(own_packs);
        if !register.is_empty() && !self.relaxed.load(Ordering::Acquire) {
            // A durable record must not name bytes that are not on disk yet.
            writer
                .sync()
                .map_err(SyncError::io(self.queue.dir().to_path_buf()))?;
        }
        let reused: Vec<(String, ContentRef)> = changes
            .iter()
            .filter_map(|c| match &c.after {
                After::Put {
                    entry: Entry::File { content, .. },
                    ..
                } if !(content.owner == device && register.contains(&content.pack)) => {
                    Some((c.path.clone(), content.clone()))
                }
                _ => None,
            })
            .collect();
        let heads_trusted = self
            .index()
            .meta(META_REUSE_AFTER_POLL)?
            .is_none_or(|v| v.is_empty());
        let recorded = self.index().transaction(|tx| {
            // Contents kept from another version (a rename, a copy, a conflict kept)
            // must still be named by one here: a view a moment old may hold a file
            // another device replaced, whose contents its owner may reclaim.
            for (path, content) in &reused {
                if !tx.may_name(content, &device, heads_trusted)? {
                    return Err(IndexError::Gone(path.clone()));
                }
            }
            let known = Knowledge {
                deletions: deletions_at(&paths, |p| tx.heads_of(p))?,
                current: &current,
            };
            let plan = rules::plan(changes, &known, now_ns);
            for p in &register {
                tx.add_pending_pack(p)?;
            }
            let mut counter = tx.meta_u64(META_COUNTER)?;
            let mut out = Vec::with_capacity(plan.versions.len());
            for planned in plan.versions {
                // Above anything this device ever stamped, even a counter that only
                // survives in another device's vector.
                counter = counter.max(planned.base.get(&device)) + 1;
                let mut vector = planned.base;
                vector.set(&device, counter);
                let v = Version {
                    path: planned.path,
                    device: device.clone(),
                    vector,
                    mtime_ns: planned.mtime_ns,
                    entry: planned.entry,
                };
                if tx.offer_version(&v, None, false)? == HeadChange::Ignored {
                    return Err(IndexError::Sql(format!(
                        "a new version of {} was already superseded; the index is inconsistent",
                        v.path
                    )));
                }
                apply_local(tx, &v.path, planned.local, Some(&v))?;
                out.push(v);
            }
            tx.set_meta(META_COUNTER, &counter.to_string())?;
            for (path, local) in plan.local_only {
                apply_local(tx, &path, local, None)?;
            }
            for (path, lf) in &folder {
                match lf {
                    Some(lf) => tx.set_local_file(path, lf)?,
                    None => tx.remove_local_file(path)?,
                }
            }
            Ok(out)
        })?;
        writer.registered(&register);
        if self.relaxed.load(Ordering::Acquire)
            && self.records_since_checkpoint.fetch_add(1, Ordering::AcqRel) + 1
                >= RECORDS_PER_CHECKPOINT
        {
            // Each relaxed commit adds a few pages to the index's log; a burst of
            // writes must not grow it without bound before a quiet moment comes.
            let synced = writer
                .sync()
                .map_err(SyncError::io(self.queue.dir().to_path_buf()));
            // The originals the versions name reach the disk before they do.
            let synced = synced.and_then(|()| self.sync_originals_queue());
            match synced.and_then(|()| Ok(self.index().checkpoint_quietly()?)) {
                Ok(()) => self.records_since_checkpoint.store(0, Ordering::Release),
                Err(e) => tracing::warn!("index checkpoint failed, retried later: {e}"),
            }
        }
        Ok(recorded)
    }
}
