//! DESIGN §6 for this device's own changes: what the owner did to the paths a
//! front-end shows, turned into new versions and the vectors they start from.
//!
//! Both front-ends describe a change the same way: a path now holds an entry, or
//! nothing, and this is what the device showed of it (and of the conflict siblings
//! beside it) when the owner acted. So a mount and a plain folder that see the same
//! edit record the same versions, and every device shows the same namespace. Pure: the
//! vault hands in what it knows from the index and stamps the results with the
//! device's counter in one transaction.
//!
//! The rules, per conflict group (a path and the `.conflict-` siblings beside it):
//! - **The path itself changed** (written, made, removed, chmod, renamed onto): one
//!   version there, on top of everything the group showed. It supersedes the siblings
//!   too, so writing or deleting the main file resolves the conflict.
//! - **Only siblings changed** (removed, moved away, edited): the path keeps what it
//!   shows now, in a version on top of what it showed and of those siblings; their
//!   devices' versions leave the conflict, the others stay in it.
//! - **An edited sibling** becomes a file of its own at the sibling's name, on top of
//!   nothing there.
//! - A change also starts from the deletions the device knows at its path: they are
//!   never shown, so it could not see them otherwise, and a deletion never beats an
//!   edit anyway. It never starts from a live version the device has not shown: that
//!   one stays concurrent and becomes a conflict, never an overwrite.

use std::collections::{BTreeMap, HashSet};

use crate::model::{Entry, Showing, VersionVector};
use crate::store::LocalFile;

/// What the device showed of one conflict group when the owner acted on one of its
/// paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// At the path acted on.
    pub at: Option<Showing>,
    /// Everything else shown in its group: for a main path its siblings; for a sibling
    /// the main path and the other siblings.
    pub group: Vec<Showing>,
}

impl Seen {
    /// A path that showed nothing.
    pub fn nothing() -> Self {
        Self::default()
    }

    /// A path that showed exactly `at`, alone.
    pub fn only(at: Showing) -> Self {
        Self {
            at: Some(at),
            group: Vec::new(),
        }
    }

    fn vector(&self) -> VersionVector {
        let mut v = VersionVector::default();
        for s in self.at.iter().chain(&self.group) {
            v.merge(&s.vector);
        }
        v
    }

    /// The main path of the group, as shown, when the change is to a sibling.
    fn main(&self) -> Option<&Showing> {
        self.group.iter().find(|s| s.sibling_of.is_none())
    }
}

/// What a path holds after the owner's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Put { entry: Entry, mtime_ns: i64 },
    Gone,
}

/// How recording a change updates the record of what a plain folder holds (the mount
/// keeps no such record and always says `Keep`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalChange {
    /// The folder holds this at the path, showing the new version.
    Set(LocalFile),
    /// The folder holds nothing at the path.
    Remove,
    /// The folder's record at the path, if any, shows the new version (same bytes).
    Restamp,
    /// The record stays as it is (a later apply writes the path).
    Keep,
}

/// One change of one path.
#[derive(Debug, Clone)]
pub struct Change {
    pub path: String,
    pub seen: Seen,
    pub after: After,
    pub local: LocalChange,
}

/// A version the rules decided on, before the vault stamps it with its counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub path: String,
    pub entry: Entry,
    pub mtime_ns: i64,
    pub base: VersionVector,
    pub local: LocalChange,
}

/// What the rules ask of the index.
pub trait Known {
    /// The merged vectors of every deletion the device knows at `path`.
    fn deletions(&self, path: &str) -> VersionVector;
    /// The live version `path` shows now: its entry and modification time.
    fn shown_now(&self, path: &str) -> Option<(Entry, i64)>;
}

/// The versions and record updates a batch of changes makes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub versions: Vec<Planned>,
    /// Record updates with no version (a sibling removed, a never-recorded path gone).
    pub local_only: Vec<(String, LocalChange)>,
}

/// Applies the rules to `changes`, made at `now_ns`.
pub fn plan(changes: Vec<Change>, known: &dyn Known, now_ns: i64) -> Plan {
    let mut out = Plan::default();
    let main_changed: HashSet<String> = changes
        .iter()
        .filter(|c| c.seen.at.as_ref().is_none_or(|s| s.sibling_of.is_none()))
        .map(|c| c.path.clone())
        .collect();
    // Per main path: what it showed, and the siblings that left its conflict.
    let mut left: BTreeMap<String, (Option<Showing>, VersionVector)> = BTreeMap::new();
    for c in changes {
        let sibling_of = c.seen.at.as_ref().and_then(|s| s.sibling_of.clone());
        if let Some(main) = sibling_of {
            let entry = left
                .entry(main)
                .or_insert_with(|| (c.seen.main().cloned(), VersionVector::default()));
            if let Some(at) = &c.seen.at {
                entry.1.merge(&at.vector);
            }
            match c.after {
                After::Put { entry, mtime_ns } => out.versions.push(Planned {
                    base: known.deletions(&c.path),
                    path: c.path,
                    entry,
                    mtime_ns,
                    local: c.local,
                }),
                After::Gone => out.local_only.push((c.path, c.local)),
            }
            continue;
        }
        let (entry, mtime_ns) = match c.after {
            After::Put { entry, mtime_ns } => (entry, mtime_ns),
            // Nothing shown, nothing to delete: only the record goes.
            After::Gone if c.seen.at.is_none() && c.seen.group.is_empty() => {
                out.local_only.push((c.path, c.local));
                continue;
            }
            After::Gone => (Entry::Deleted, now_ns),
        };
        let mut base = c.seen.vector();
        base.merge(&known.deletions(&c.path));
        out.versions.push(Planned {
            path: c.path,
            entry,
            mtime_ns,
            base,
            local: c.local,
        });
    }
    for (main, (main_seen, siblings)) in left {
        if main_changed.contains(&main) {
            continue;
        }
        let Some((entry, mtime_ns)) = known.shown_now(&main) else {
            continue;
        };
        let mut base = siblings;
        if let Some(m) = &main_seen {
            base.merge(&m.vector);
        }
        base.merge(&known.deletions(&main));
        out.versions.push(Planned {
            path: main,
            entry,
            mtime_ns,
            base,
            local: LocalChange::Restamp,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlobId, ContentHash, ContentRef, DeviceId, ObjectId, Version};
    use std::collections::HashMap;

    #[derive(Default)]
    struct Index {
        deletions: HashMap<String, VersionVector>,
        shown: HashMap<String, (Entry, i64)>,
    }

    impl Known for Index {
        fn deletions(&self, path: &str) -> VersionVector {
            self.deletions.get(path).cloned().unwrap_or_default()
        }
        fn shown_now(&self, path: &str) -> Option<(Entry, i64)> {
            self.shown.get(path).cloned()
        }
    }

    fn file(byte: u8) -> Entry {
        Entry::File {
            content: ContentRef {
                owner: DeviceId::parse(&"a".repeat(32)).unwrap(),
                pack: ObjectId::parse(&"0".repeat(32)).unwrap(),
                offset: 8,
                length: 44,
                blob: BlobId([byte; 16]),
                sha256: ContentHash([byte; 32]),
                size: 1,
                key_epoch: 0,
            },
            mode: 0o644,
        }
    }

    fn showing(dev: &DeviceId, counter: u64, sibling_of: Option<&str>) -> Showing {
        let mut vector = VersionVector::default();
        vector.set(dev, counter);
        let v = Version {
            path: "p".into(),
            device: dev.clone(),
            vector,
            mtime_ns: 0,
            entry: file(0),
        };
        Showing::of(&v, sibling_of.map(str::to_owned))
    }

    fn vv(pairs: &[(&DeviceId, u64)]) -> VersionVector {
        pairs.iter().map(|(d, c)| ((*d).clone(), *c)).collect()
    }

    fn put(path: &str, seen: Seen, byte: u8) -> Change {
        Change {
            path: path.into(),
            seen,
            after: After::Put {
                entry: file(byte),
                mtime_ns: 5,
            },
            local: LocalChange::Keep,
        }
    }

    fn gone(path: &str, seen: Seen) -> Change {
        Change {
            path: path.into(),
            seen,
            after: After::Gone,
            local: LocalChange::Remove,
        }
    }

    struct Conflict {
        a: DeviceId,
        b: DeviceId,
        main: Showing,
        sib: Showing,
    }

    /// x shows b's version, with a's beside it as x.conflict-a.
    fn conflict() -> Conflict {
        let a = DeviceId::random();
        let b = DeviceId::random();
        Conflict {
            main: showing(&b, 1, None),
            sib: showing(&a, 1, Some("x")),
            a,
            b,
        }
    }

    #[test]
    fn writing_the_main_file_supersedes_the_whole_group() {
        let c = conflict();
        let seen = Seen {
            at: Some(c.main.clone()),
            group: vec![c.sib.clone()],
        };
        let p = plan(vec![put("x", seen, 9)], &Index::default(), 0);
        assert_eq!(p.versions.len(), 1);
        assert_eq!(p.versions[0].base, vv(&[(&c.a, 1), (&c.b, 1)]));
        assert_eq!(p.versions[0].entry, file(9));
    }

    #[test]
    fn deleting_the_main_file_deletes_the_group_at_the_time_given() {
        let c = conflict();
        let seen = Seen {
            at: Some(c.main.clone()),
            group: vec![c.sib.clone()],
        };
        let p = plan(vec![gone("x", seen)], &Index::default(), 77);
        assert_eq!(p.versions[0].entry, Entry::Deleted);
        assert_eq!(p.versions[0].mtime_ns, 77);
        assert_eq!(p.versions[0].base, vv(&[(&c.a, 1), (&c.b, 1)]));
    }

    #[test]
    fn removing_a_sibling_keeps_what_the_main_path_shows_now() {
        let c = conflict();
        let mut known = Index::default();
        known.shown.insert("x".into(), (file(3), 42));
        let seen = Seen {
            at: Some(c.sib.clone()),
            group: vec![c.main.clone()],
        };
        let p = plan(vec![gone("x.conflict-a", seen)], &known, 0);
        assert_eq!(
            p.local_only,
            vec![("x.conflict-a".to_owned(), LocalChange::Remove)]
        );
        assert_eq!(p.versions.len(), 1);
        let v = &p.versions[0];
        assert_eq!((v.path.as_str(), &v.entry, v.mtime_ns), ("x", &file(3), 42));
        assert_eq!(v.base, vv(&[(&c.a, 1), (&c.b, 1)]));
        assert_eq!(v.local, LocalChange::Restamp);
    }

    #[test]
    fn a_sibling_left_alone_stays_in_conflict() {
        let c = conflict();
        let other = showing(&DeviceId::random(), 4, Some("x"));
        let mut known = Index::default();
        known.shown.insert("x".into(), (file(3), 42));
        let seen = Seen {
            at: Some(c.sib.clone()),
            group: vec![c.main.clone(), other.clone()],
        };
        let p = plan(vec![gone("x.conflict-a", seen)], &known, 0);
        assert!(!p.versions[0].base.supersedes(&other.vector));
        assert!(p.versions[0].base.get(&c.a) == 1);
    }

    #[test]
    fn an_edited_sibling_is_a_new_file_and_leaves_the_conflict() {
        let c = conflict();
        let mut known = Index::default();
        known.shown.insert("x".into(), (file(3), 42));
        let seen = Seen {
            at: Some(c.sib.clone()),
            group: vec![c.main.clone()],
        };
        let p = plan(vec![put("x.conflict-a", seen, 8)], &known, 0);
        assert_eq!(p.versions.len(), 2);
        let own = p
            .versions
            .iter()
            .find(|v| v.path == "x.conflict-a")
            .unwrap();
        assert_eq!(own.base, VersionVector::default());
        let main = p.versions.iter().find(|v| v.path == "x").unwrap();
        assert_eq!(main.base, vv(&[(&c.a, 1), (&c.b, 1)]));
    }

    #[test]
    fn moving_a_sibling_onto_the_main_file_keeps_its_content_over_everything() {
        let c = conflict();
        let mut known = Index::default();
        known.shown.insert("x".into(), (file(3), 42));
        let sib_seen = Seen {
            at: Some(c.sib.clone()),
            group: vec![c.main.clone()],
        };
        let main_seen = Seen {
            at: Some(c.main.clone()),
            group: vec![c.sib.clone()],
        };
        let p = plan(
            vec![gone("x.conflict-a", sib_seen), put("x", main_seen, 1)],
            &known,
            0,
        );
        assert_eq!(p.versions.len(), 1, "{p:?}");
        assert_eq!(p.versions[0].entry, file(1));
        assert_eq!(p.versions[0].base, vv(&[(&c.a, 1), (&c.b, 1)]));
    }

    #[test]
    fn known_deletions_are_superseded_unseen_live_versions_are_not() {
        let a = DeviceId::random();
        let mut known = Index::default();
        known.deletions.insert("n".into(), vv(&[(&a, 3)]));
        let p = plan(vec![put("n", Seen::nothing(), 1)], &known, 0);
        assert_eq!(p.versions[0].base, vv(&[(&a, 3)]));
        // Nothing shown and nothing known: a new file on top of nothing.
        let p = plan(vec![put("m", Seen::nothing(), 1)], &Index::default(), 0);
        assert_eq!(p.versions[0].base, VersionVector::default());
    }

    #[test]
    fn removing_what_was_never_recorded_records_nothing() {
        let p = plan(vec![gone("tmp", Seen::nothing())], &Index::default(), 0);
        assert!(p.versions.is_empty());
        assert_eq!(p.local_only, vec![("tmp".to_owned(), LocalChange::Remove)]);
    }
}
