//! Turning what a program did in the mount (remove, rename, chmod, …) into versions,
//! with the conflict rules of DESIGN §6: removing a `.conflict-` sibling drops that
//! device's version, renaming it onto its path keeps it, editing it makes it a file of
//! its own.

use std::collections::HashSet;

use super::core::{Errno, FsResult, State};
use super::tree::{join, Kind, Node};
use crate::model::{Entry, VersionVector};
use crate::sync::{LocalChange, NewVersion, Vault};

/// Everything this device knows of `path`: a change made now supersedes all of it
/// (the mount shows what the index holds, conflict siblings included).
pub(super) fn heads_vector(vault: &Vault, path: &str) -> FsResult<VersionVector> {
    let mut v = VersionVector::default();
    for h in vault
        .index()
        .heads_of(path)
        .map_err(crate::sync::SyncError::from)?
    {
        v.merge(&h.vector);
    }
    Ok(v)
}

/// The version that drops `sibling` from the conflict at `main`, keeping what `main`
/// shows.
pub(super) fn drop_sibling(st: &State, sibling: &Node, main: &str) -> Option<NewVersion> {
    let shown = st
        .tree
        .ino_of(main)
        .and_then(|i| st.tree.get(i))
        .and_then(|m| m.shown.clone())?;
    let mut base = shown.version.vector.clone();
    if let Some(s) = &sibling.shown {
        base.merge(&s.version.vector);
    }
    Some(NewVersion {
        path: main.to_owned(),
        entry: shown.version.entry.clone(),
        mtime_ns: shown.version.mtime_ns,
        base,
        local: LocalChange::Keep,
    })
}

/// What a node holds, as an entry, with its current mode.
fn entry_of(n: &Node) -> Option<Entry> {
    match (&n.kind, n.shown.as_ref().map(|s| &s.version.entry)) {
        (Kind::Dir, _) => Some(Entry::Dir { mode: n.mode }),
        (Kind::Symlink, _) => Some(Entry::Symlink {
            target: n.target.clone(),
        }),
        (Kind::File, Some(Entry::File { content, .. })) => Some(Entry::File {
            content: content.clone(),
            mode: n.mode,
        }),
        (Kind::File, _) => None,
    }
}

pub(super) fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes only into `s`, which we own; the path is a C string.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    Some((s.f_blocks as u64 * frsize, s.f_bavail as u64 * frsize))
}

impl State {
    pub(super) fn add_handle(&mut self, ino: u64, writable: bool) -> u64 {
        self.add_handle_raw(ino, writable)
    }

    pub(super) fn child_path(&self, parent: u64, name: &str) -> FsResult<String> {
        let dir = self.tree.get(parent).ok_or(Errno(libc::ENOENT))?;
        if dir.kind != Kind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        Ok(join(&dir.path, name))
    }

    /// Paths whose node shows a file open with changes not recorded yet: refreshes
    /// keep them as they are (their bytes live in staging).
    pub(super) fn staged_paths(&self) -> HashSet<String> {
        self.dirty_inos()
            .into_iter()
            .filter_map(|i| self.tree.get(i).map(|n| n.path.clone()))
            .collect()
    }

    /// Re-reads what `scope` shows from the index (after recording there).
    pub(super) fn refresh(&mut self, scope: &[String]) -> FsResult<()> {
        let ns = self.vault.namespace_of(scope)?;
        let staged = self.staged_paths();
        // Local changes: the kernel already knows, and must not be called back from
        // inside one of its own requests.
        let _ = self.tree.refresh(scope, &ns, &|p| staged.contains(p));
        Ok(())
    }

    pub(super) fn record(&mut self, versions: Vec<NewVersion>, scope: &[String]) -> FsResult<()> {
        if !versions.is_empty() {
            self.vault.record(versions, &[], Vec::new())?;
        }
        self.refresh(scope)
    }

    pub(super) fn record_one(
        &mut self,
        path: &str,
        entry: Entry,
        mtime_ns: i64,
        base: VersionVector,
    ) -> FsResult<()> {
        let v = NewVersion {
            path: path.to_owned(),
            entry,
            mtime_ns,
            base,
            local: LocalChange::Keep,
        };
        self.record(vec![v], &[path.to_owned()])
    }

    /// unlink or rmdir of `node`.
    pub(super) fn remove_node(&mut self, node: &Node) -> FsResult<()> {
        if let Some(main) = node.sibling_of() {
            let main = main.to_owned();
            let versions: Vec<NewVersion> = drop_sibling(self, node, &main).into_iter().collect();
            self.tree.remove_subtree(node.ino);
            return self.record(versions, &[main]);
        }
        if self.mark_unlinked(node) {
            self.keep_orphan(node.clone());
        }
        if node.shown.is_none() {
            // Made here and never recorded: nothing to tell other devices.
            self.tree.remove_subtree(node.ino);
            return Ok(());
        }
        let base = heads_vector(&self.vault, &node.path)?;
        let now = crate::now_ms() * 1_000_000;
        self.record_one(&node.path, Entry::Deleted, now, base)?;
        // A folder implied by others' files, say, may still be shown: it is gone here.
        if self.tree.ino_of(&node.path) == Some(node.ino) && node.kind != Kind::Dir {
            self.tree.remove_subtree(node.ino);
        }
        Ok(())
    }

    /// Moves `node` (and all under it) to `to`: a deletion at every old path and the
    /// same entry at every new one, in one transaction.
    pub(super) fn rename(&mut self, node: &Node, to: &str) -> FsResult<()> {
        let from = node.path.clone();
        let moved: Vec<Node> = self
            .tree
            .subtree(&from)
            .into_iter()
            .filter_map(|i| self.tree.get(i).cloned())
            .collect();
        let moved_paths: HashSet<&str> = moved.iter().map(|n| n.path.as_str()).collect();
        let mut versions = Vec::new();
        let mut scope = Vec::new();
        let mut restaged = Vec::new();
        for n in &moved {
            let new_path = format!("{to}{}", &n.path[from.len()..]);
            let dirty = self.is_dirty(n.ino);
            match n.sibling_of() {
                Some(main) if !moved_paths.contains(main) => {
                    versions.extend(drop_sibling(self, n, main));
                    scope.push(main.to_owned());
                }
                Some(_) => {}
                None if n.shown.is_some() => {
                    versions.push(NewVersion {
                        path: n.path.clone(),
                        entry: Entry::Deleted,
                        mtime_ns: crate::now_ms() * 1_000_000,
                        base: heads_vector(&self.vault, &n.path)?,
                        local: LocalChange::Keep,
                    });
                }
                None => {}
            }
            if self.is_staged(n.ino) {
                restaged.push((n.ino, new_path.clone()));
            }
            if !dirty {
                if let Some(entry) = entry_of(n) {
                    versions.push(NewVersion {
                        path: new_path.clone(),
                        entry,
                        mtime_ns: n.mtime_ns,
                        base: heads_vector(&self.vault, &new_path)?,
                        local: LocalChange::Keep,
                    });
                }
            }
            scope.push(n.path.clone());
            scope.push(new_path);
        }
        // What `to` held before is replaced: its subtree leaves with it.
        if let Some(old) = self.tree.ino_of(to) {
            if old != node.ino {
                for gone in self.tree.subtree(to) {
                    if let Some(g) = self.tree.get(gone).cloned() {
                        if self.mark_unlinked(&g) {
                            self.keep_orphan(g);
                        }
                    }
                }
            }
        }
        self.tree.rename(&from, to, crate::now_ms() * 1_000_000);
        if !versions.is_empty() {
            self.vault.record(versions, &[], Vec::new())?;
        }
        for (ino, path) in restaged {
            let base = heads_vector(&self.vault, &path)?;
            self.set_staged_base(ino, base);
        }
        scope.sort();
        scope.dedup();
        self.refresh(&scope)
    }

    /// chmod or utimens of a closed node: the same entry, new metadata.
    pub(super) fn record_meta(&mut self, ino: u64) -> FsResult<()> {
        let Some(n) = self.tree.get(ino).cloned() else {
            return Ok(());
        };
        let Some(entry) = entry_of(&n) else {
            return Ok(());
        };
        let mut versions = Vec::new();
        let mut scope = vec![n.path.clone()];
        let base = match n.sibling_of() {
            Some(main) => {
                versions.extend(drop_sibling(self, &n, main));
                scope.push(main.to_owned());
                VersionVector::default()
            }
            None => heads_vector(&self.vault, &n.path)?,
        };
        versions.push(NewVersion {
            path: n.path.clone(),
            entry,
            mtime_ns: n.mtime_ns,
            base,
            local: LocalChange::Keep,
        });
        self.record(versions, &scope)
    }
}
