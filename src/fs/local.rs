//! What the mount keeps on this device alone, never as a version: access times,
//! fifos and sockets, and which names are hard links of one file. A local folder has
//! all three; the vault has no place for them (a read must not make a version, a fifo
//! has no bytes to sync, and another device has no inodes to share), so they live in
//! the tree and in the index's `mount_local` table through `Vault::set_mount_local`,
//! and a remount shows them again.
//!
//! Rules:
//! - **atime** follows relatime: a read (or a listing, for a folder) moves it to now
//!   only when it is not newer than the modification or change time, or is a day old.
//!   utimens sets it outright. A change of atime alone records nothing in the vault.
//!   Reads the kernel answers from its page cache never reach the mount, so they do
//!   not move atime (as with any FUSE filesystem that keeps pages across opens).
//!   Times moved by reads are written in batches (`flush_atimes`, every poll
//!   interval and at unmount), never one transaction per read; utimens is written
//!   before it returns.
//! - **Fifos and sockets** are made by mknod, can be renamed, chmod-ed, touched and
//!   unlinked, and are never recorded. When another device's file arrives at the same
//!   path, the file wins the name: the fifo or socket is dropped here, with a warning
//!   in the log (another device cannot know it is there, and hiding its file would
//!   lose data).
//! - A row is written only for a path that has (or had) something to keep, so plain
//!   files and folders cost no extra write. Rows whose path is gone at the next mount
//!   (another device removed or replaced it meanwhile) are dropped then.

use std::collections::HashSet;

use super::errno::FsResult;
use super::mount_fs::{precise_now_ns, MountFs, State};
use super::tree::{Ino, Kind, Node, Tree};
use crate::sync::{LocalSpecial, MountLocal, SpecialKind, SyncError};

/// relatime's "a day old" rule.
const RELATIME_MAX_NS: i64 = 24 * 3600 * 1_000_000_000;

/// Whether a read at `now_ns` moves the atime of `n` (relatime).
pub(super) fn relatime_due(n: &Node, now_ns: i64) -> bool {
    n.atime_ns <= n.mtime_ns
        || n.atime_ns <= n.ctime_ns
        || now_ns.saturating_sub(n.atime_ns) >= RELATIME_MAX_NS
}

pub(super) fn special_kind(k: Kind) -> Option<SpecialKind> {
    match k {
        Kind::Fifo => Some(SpecialKind::Fifo),
        Kind::Socket => Some(SpecialKind::Socket),
        _ => None,
    }
}

fn kind_of(k: SpecialKind) -> Kind {
    match k {
        SpecialKind::Fifo => Kind::Fifo,
        SpecialKind::Socket => Kind::Socket,
    }
}

/// The row that keeps what `n` holds of this device's own.
fn row_of(tree: &Tree, n: &Node) -> MountLocal {
    MountLocal {
        atime_ns: n.atime_kept.then_some(n.atime_ns),
        special: special_kind(n.kind).map(|kind| LocalSpecial {
            kind,
            mode: n.mode,
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns,
        }),
        link_group: tree.link_group(n.ino),
    }
}

/// Rows of the paths that have one (so a change to them rewrites it).
#[derive(Debug, Default)]
pub(super) struct LocalRows(HashSet<String>);

impl MountFs {
    /// Shows what the index keeps of this device's own on a freshly built tree.
    pub(super) fn restore_local(&self, st: &mut State) -> Result<(), SyncError> {
        let rows = self.vault.mount_local()?;
        let mut drop_rows = Vec::new();
        let mut groups: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
        let mut sorted: Vec<_> = rows.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, row) in sorted {
            let at = st.tree.ino_of(&path);
            if let Some(sp) = row.special {
                if at.is_some() {
                    tracing::warn!(
                        "{path}: another device's file took the name of this device's {}; \
                         the {} is gone",
                        kind_name(sp.kind),
                        kind_name(sp.kind)
                    );
                    drop_rows.push(path);
                    continue;
                }
                let ino = st
                    .tree
                    .add_local(&path, kind_of(sp.kind), sp.mode, sp.mtime_ns);
                if let Some(n) = st.tree.get_mut(ino) {
                    n.mtime_ns = sp.mtime_ns;
                    n.ctime_ns = sp.ctime_ns;
                    n.atime_ns = row.atime_ns.unwrap_or(sp.mtime_ns);
                    n.atime_kept = row.atime_ns.is_some();
                }
                st.local.0.insert(path);
                continue;
            }
            let Some(ino) = at else {
                drop_rows.push(path);
                continue;
            };
            if let (Some(t), Some(n)) = (row.atime_ns, st.tree.get_mut(ino)) {
                n.atime_ns = t;
                n.atime_kept = true;
            }
            if let Some(g) = row.link_group {
                groups.entry(g).or_default().push(path.clone());
            }
            st.local.0.insert(path);
        }
        for (group, paths) in groups {
            st.tree.restore_links(group, &paths);
        }
        let stale: Vec<(String, MountLocal)> = drop_rows
            .into_iter()
            .map(|p| (p, MountLocal::default()))
            .collect();
        self.vault.set_mount_local(&stale)?;
        // Groups that did not survive (a name changed elsewhere meanwhile) lose
        // their rows too.
        let all: Vec<String> = st.local.0.iter().cloned().collect();
        self.write_rows(st, &all)
    }

    /// Writes what `paths` keep of this device's own now (nothing for paths with no
    /// row before and nothing to keep now).
    pub(super) fn keep_local(&self, st: &mut State, paths: &[String]) -> FsResult<()> {
        Ok(self.write_rows(st, paths)?)
    }

    fn write_rows(&self, st: &mut State, paths: &[String]) -> Result<(), SyncError> {
        let mut rows = Vec::new();
        for p in paths {
            let row = st
                .tree
                .ino_of(p)
                .and_then(|i| st.tree.get(i))
                .map(|n| row_of(&st.tree, n))
                .unwrap_or_default();
            let had = st.local.0.contains(p);
            if row.is_empty() && !had {
                continue;
            }
            rows.push((p.clone(), row));
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.vault.set_mount_local(&rows)?;
        for (p, row) in rows {
            if row.is_empty() {
                st.local.0.remove(&p);
            } else {
                st.local.0.insert(p);
            }
        }
        Ok(())
    }

    /// Every path at or under `path` (for a rename or removal that moves rows).
    pub(super) fn paths_under(st: &State, path: &str) -> Vec<String> {
        st.tree
            .subtree(path)
            .into_iter()
            .filter_map(|i| st.tree.get(i).map(|n| n.path.clone()))
            .collect()
    }

    /// A read or listing of `ino`: its atime moves as relatime says.
    pub(super) fn accessed(&self, st: &mut State, ino: Ino) {
        if self.noatime.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let now = precise_now_ns();
        let Some(n) = st.tree.get_mut(ino) else {
            return;
        };
        if !relatime_due(n, now) {
            return;
        }
        n.atime_ns = now;
        n.atime_kept = true;
        // Written later, in a batch: a `cat *` of a fresh mount must not cost a
        // transaction per file (see `flush_atimes`).
        st.atimes_due.insert(st.tree.canonical(ino));
    }

    /// Keeps the access times reads moved since the last time, in one transaction.
    /// The worker calls it every poll interval and at unmount; a crash loses only
    /// the access times of that last interval.
    pub fn flush_atimes(&self) {
        let mut st = self.state();
        if st.atimes_due.is_empty() {
            return;
        }
        let due: Vec<Ino> = st.atimes_due.drain().collect();
        let mut paths = Vec::new();
        for ino in due {
            for i in st.tree.link_nodes(ino) {
                paths.extend(st.tree.get(i).map(|n| n.path.clone()));
            }
        }
        if let Err(e) = self.write_rows(&mut st, &paths) {
            // Only access times are lost; every read itself was fine.
            tracing::warn!("cannot keep the access times of {} files: {e}", paths.len());
        }
    }

    /// After other devices' changes reached the tree: names of hard-linked files that
    /// another device changed become files of their own, and a fifo or socket whose
    /// name another device's file took is gone (the file wins, see the module's
    /// comment). Their rows follow.
    pub(super) fn after_remote(
        &self,
        st: &mut State,
        specials_before: &[String],
    ) -> Vec<super::tree::Invalidation> {
        let mut paths: Vec<String> = Vec::new();
        let linked: Vec<String> = st
            .local
            .0
            .iter()
            .filter(|p| st.tree.ino_of(p).is_some_and(|i| st.tree.link_count(i) > 1))
            .cloned()
            .collect();
        let inval = st.tree.split_diverged();
        if !inval.is_empty() {
            paths.extend(linked);
        }
        for p in specials_before {
            if !st.tree.is_local_only(p) {
                tracing::warn!(
                    "{p}: another device's file took the name of this device's fifo or socket; \
                     the fifo or socket is gone"
                );
                paths.push(p.clone());
            }
        }
        if let Err(e) = self.write_rows(st, &paths) {
            tracing::warn!("cannot update what this device keeps of its own: {e}");
        }
        inval
    }

    /// The fifos and sockets of this device, for `status`.
    pub fn local_only(&self) -> Vec<String> {
        self.state().tree.local_only_paths()
    }
}

fn kind_name(k: SpecialKind) -> &'static str {
    match k {
        SpecialKind::Fifo => "fifo",
        SpecialKind::Socket => "socket",
    }
}
