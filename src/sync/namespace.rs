//! The merge of all devices' versions into what the folder shows (DESIGN §6), as a pure
//! function of the heads (the versions no other supersedes) and the device names.
//! Every device that knows the same heads computes the same namespace.
//!
//! Rules, per path:
//! - only deletions left: no file;
//! - live versions beat deletions (an edit concurrent with a delete survives);
//! - among live versions the newest mtime wins (ties: the larger device id) and is
//!   shown at the path; every other live version whose content differs from the winner
//!   is shown beside it as `<path>.conflict-<device name>`. Concurrent versions with the
//!   same content (the same file copied to two devices before they first synced) are
//!   not a conflict: there is nothing to choose between;
//! - a folder that still has something in it is shown even if it was deleted, and if
//!   a file sits where such a folder must be, the file moves to a conflict sibling.

use std::collections::BTreeMap;

use crate::model::{DeviceId, Entry, Showing, Version};

/// One entry of the namespace: the version shown at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub version: Version,
    /// For a conflict sibling: the path it stands beside.
    pub sibling_of: Option<String>,
}

impl Shown {
    pub fn id(&self) -> (DeviceId, u64) {
        (self.version.device.clone(), self.version.counter())
    }

    /// What a front-end keeps of it, to describe a change made on top of it.
    pub fn showing(&self) -> Showing {
        Showing::of(&self.version, self.sibling_of.clone())
    }
}

/// Path → what is shown there.
pub type Namespace = BTreeMap<String, Shown>;

pub fn sibling_path(path: &str, device_name: &str) -> String {
    format!("{path}.conflict-{device_name}")
}

/// Two entries hold the same thing (ignoring who made them and when).
pub fn same_content(a: &Entry, b: &Entry) -> bool {
    match (a, b) {
        (
            Entry::File {
                content: x,
                mode: m,
            },
            Entry::File {
                content: y,
                mode: n,
            },
        ) => x.sha256 == y.sha256 && m == n,
        (Entry::Dir { .. }, Entry::Dir { .. }) => true,
        (Entry::Symlink { target: x }, Entry::Symlink { target: y }) => x == y,
        (Entry::Deleted, Entry::Deleted) => true,
        _ => false,
    }
}

fn newer(a: &Version, b: &Version) -> bool {
    (a.mtime_ns, &a.device) > (b.mtime_ns, &b.device)
}

/// The winner and the conflict losers of one path's heads; `None` if no file.
pub fn resolve(heads: &[Version]) -> Option<(&Version, Vec<&Version>)> {
    let live: Vec<&Version> = heads.iter().filter(|v| !v.entry.is_deleted()).collect();
    let mut winner = *live.first()?;
    for v in &live[1..] {
        if newer(v, winner) {
            winner = v;
        }
    }
    let mut losers: Vec<&Version> = Vec::new();
    for v in live {
        let differs = !same_content(&v.entry, &winner.entry);
        let not_dir = !matches!(v.entry, Entry::Dir { .. });
        if differs
            && not_dir
            && !losers
                .iter()
                .any(|l| same_content(&l.entry, &v.entry) && l.device == v.device)
        {
            losers.push(v);
        }
    }
    losers.sort_by(|a, b| a.device.cmp(&b.device));
    Some((winner, losers))
}

fn parent_of(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

/// Builds the namespace from the heads of every path.
pub fn build<P: AsRef<str>, V: AsRef<[Version]>>(
    heads: impl IntoIterator<Item = (P, V)>,
    name_of: &dyn Fn(&DeviceId) -> String,
) -> Namespace {
    let mut ns = Namespace::new();
    let mut dir_stand_ins: BTreeMap<String, Version> = BTreeMap::new();
    let mut all_losers: Vec<(String, Version)> = Vec::new();
    for (path, versions) in heads {
        let (path, versions) = (path.as_ref(), versions.as_ref());
        let Some((winner, losers)) = resolve(versions) else {
            // Deleted, but a deleted folder may still be needed by its contents.
            if let Some(v) = versions
                .iter()
                .max_by(|a, b| (a.mtime_ns, &a.device).cmp(&(b.mtime_ns, &b.device)))
            {
                dir_stand_ins.insert(path.to_owned(), v.clone());
            }
            continue;
        };
        ns.insert(
            path.to_owned(),
            Shown {
                version: winner.clone(),
                sibling_of: None,
            },
        );
        all_losers.extend(losers.into_iter().map(|l| (path.to_owned(), l.clone())));
    }
    // Siblings after every real path, so a sibling name never hides a file that
    // happens to be called the same (nor another sibling: two devices that share a
    // name, say); a taken name gets the device id as a suffix.
    for (path, l) in all_losers {
        let mut name = sibling_path(path.as_str(), &name_of(&l.device));
        if ns.contains_key(&name) {
            name = format!("{name}-{}", &l.device.as_str()[..8]);
        }
        ns.insert(
            name,
            Shown {
                version: l,
                sibling_of: Some(path),
            },
        );
    }
    // Every shown path needs its parent folders.
    let paths: Vec<String> = ns.keys().cloned().collect();
    for path in paths {
        let mut cur = parent_of(&path);
        while let Some(dir) = cur {
            match ns.get(dir) {
                Some(s) if matches!(s.version.entry, Entry::Dir { .. }) => break,
                Some(s) => {
                    // A file where a folder must be: the file steps aside.
                    let file = s.clone();
                    let name = sibling_path(dir, &name_of(&file.version.device));
                    ns.insert(
                        name,
                        Shown {
                            version: file.version.clone(),
                            sibling_of: Some(dir.to_owned()),
                        },
                    );
                    ns.insert(
                        dir.to_owned(),
                        implied_dir(dir, dir_stand_ins.get(dir), &file.version),
                    );
                }
                None => {
                    let basis = dir_stand_ins
                        .get(dir)
                        .cloned()
                        .unwrap_or_else(|| ns[&path].version.clone());
                    ns.insert(dir.to_owned(), implied_dir(dir, Some(&basis), &basis));
                }
            }
            cur = parent_of(dir);
        }
    }
    ns
}

fn implied_dir(path: &str, basis: Option<&Version>, fallback: &Version) -> Shown {
    let v = basis.unwrap_or(fallback);
    Shown {
        version: Version {
            path: path.to_owned(),
            device: v.device.clone(),
            vector: v.vector.clone(),
            mtime_ns: v.mtime_ns,
            entry: Entry::Dir { mode: 0o755 },
        },
        sibling_of: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlobId, ContentHash, ContentRef, ObjectId, VersionVector};

    fn file(path: &str, dev: &DeviceId, counter: u64, mtime: i64, byte: u8) -> Version {
        let mut vector = VersionVector::default();
        vector.set(dev, counter);
        Version {
            path: path.into(),
            device: dev.clone(),
            vector,
            mtime_ns: mtime,
            entry: Entry::File {
                content: ContentRef {
                    owner: dev.clone(),
                    pack: ObjectId::new(0),
                    offset: 8,
                    length: 44,
                    blob: BlobId([byte; 16]),
                    sha256: ContentHash([byte; 32]),
                    size: 1,
                    key_epoch: 0,
                },
                mode: 0o644,
            },
        }
    }

    fn deleted(path: &str, dev: &DeviceId, counter: u64) -> Version {
        let mut v = file(path, dev, counter, 0, 0);
        v.entry = Entry::Deleted;
        v
    }

    fn names(d: &DeviceId) -> String {
        format!("dev{}", &d.as_str()[..4])
    }

    #[test]
    fn newest_wins_and_loser_is_a_sibling() {
        let a = DeviceId::random();
        let b = DeviceId::random();
        let heads = vec![file("x.json", &a, 1, 10, 1), file("x.json", &b, 1, 20, 2)];
        let ns = build([("x.json", heads.as_slice())], &names);
        assert_eq!(ns["x.json"].version.device, b);
        let sib = sibling_path("x.json", &names(&a));
        assert_eq!(ns[&sib].sibling_of.as_deref(), Some("x.json"));
        assert_eq!(ns.len(), 2);
    }

    #[test]
    fn edit_beats_concurrent_delete_and_same_content_is_no_conflict() {
        let a = DeviceId::random();
        let b = DeviceId::random();
        let heads = vec![deleted("x", &a, 3), file("x", &b, 1, 5, 9)];
        let ns = build([("x", heads.as_slice())], &names);
        assert_eq!(ns.len(), 1);
        assert_eq!(ns["x"].version.device, b);
        let same = vec![file("y", &a, 1, 10, 4), file("y", &b, 1, 20, 4)];
        assert_eq!(build([("y", same.as_slice())], &names).len(), 1);
        let gone = vec![deleted("z", &a, 1)];
        assert!(build([("z", gone.as_slice())], &names).is_empty());
    }

    #[test]
    fn order_of_heads_does_not_matter() {
        let a = DeviceId::random();
        let b = DeviceId::random();
        let h1 = vec![file("x", &a, 1, 10, 1), file("x", &b, 1, 10, 2)];
        let h2 = vec![h1[1].clone(), h1[0].clone()];
        assert_eq!(
            build([("x", h1.as_slice())], &names),
            build([("x", h2.as_slice())], &names)
        );
    }

    #[test]
    fn contents_keep_their_folder() {
        let a = DeviceId::random();
        let f = vec![file("d/f", &a, 2, 1, 1)];
        let d = vec![deleted("d", &a, 1)];
        let ns = build([("d", d.as_slice()), ("d/f", f.as_slice())], &names);
        assert!(matches!(ns["d"].version.entry, Entry::Dir { .. }));
        let clash = vec![file("d", &a, 3, 1, 5)];
        let ns = build([("d", clash.as_slice()), ("d/f", f.as_slice())], &names);
        assert!(matches!(ns["d"].version.entry, Entry::Dir { .. }));
        assert!(ns.contains_key(&sibling_path("d", &names(&a))));
    }
}
