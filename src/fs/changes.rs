//! What a program does to names in the mount (mkdir, symlink, unlink, rmdir, rename,
//! chmod of a closed file), told to the engine as changes to the paths the mount
//! shows. The conflict rules (removing a `.conflict-` sibling drops that device's
//! version, renaming it onto its path keeps it, editing it makes it a file of its own)
//! are the engine's: this file only says what the mount showed and what it shows now.

use std::collections::HashSet;

use super::errno::{Errno, FsResult};
use super::mount_fs::{check_name, precise_now_ns, seen_in, Attr, MountFs, State};
use super::tree::{join, Ino, Kind, Node};
use crate::model::Entry;
use crate::sync::{After, Change, LocalChange};

/// What a node holds, as an entry, with its current mode (nothing for a fifo or a
/// socket: those are never versions).
pub(super) fn entry_of(n: &Node) -> Option<Entry> {
    match (&n.kind, n.shown.as_ref().map(|s| &s.version.entry)) {
        (Kind::Dir, _) => Some(Entry::Dir { mode: n.mode }),
        (Kind::Symlink, _) => Some(Entry::Symlink {
            target: n.target.clone(),
        }),
        (Kind::File, Some(Entry::File { content, .. })) => Some(Entry::File {
            content: content.clone(),
            mode: n.mode,
        }),
        (Kind::File | Kind::Fifo | Kind::Socket, _) => None,
    }
}

pub(super) fn put(st: &State, path: &str, entry: Entry, mtime_ns: i64) -> Change {
    Change {
        path: path.to_owned(),
        seen: seen_in(&st.tree, path),
        after: After::Put { entry, mtime_ns },
        local: LocalChange::Keep,
    }
}

fn gone(st: &State, path: &str) -> Change {
    Change {
        path: path.to_owned(),
        seen: seen_in(&st.tree, path),
        after: After::Gone,
        local: LocalChange::Keep,
    }
}

impl MountFs {
    pub(super) fn child_path(st: &State, parent: Ino, name: &str) -> FsResult<String> {
        let dir = st.tree.get(parent).ok_or(Errno::NOENT)?;
        if dir.kind != Kind::Dir {
            return Err(Errno::NOTDIR);
        }
        Ok(join(&dir.path, name))
    }

    /// Paths whose node shows a file open with changes not recorded yet: refreshes
    /// keep them as they are (their bytes live in staging).
    pub(super) fn staged_paths(st: &State) -> HashSet<String> {
        st.files
            .dirty_inos()
            .filter_map(|i| st.tree.get(i).map(|n| n.path.clone()))
            .collect()
    }

    /// Re-reads what `scope` shows from the index (after recording there).
    pub(super) fn refresh(&self, st: &mut State, scope: &[String]) -> FsResult<()> {
        let ns = self.vault.namespace_of(scope)?;
        let staged = Self::staged_paths(st);
        // Local changes: the kernel already knows, and must not be called back from
        // inside one of its own requests.
        let _ = st.tree.refresh(scope, &ns, &|p| staged.contains(p));
        let _ = st.tree.split_diverged();
        Ok(())
    }

    /// Records `changes`, then shows what `scope` shows now.
    pub(super) fn record(
        &self,
        st: &mut State,
        changes: Vec<Change>,
        scope: &[String],
    ) -> FsResult<()> {
        if !changes.is_empty() {
            self.vault.record(changes, Vec::new())?;
        }
        self.refresh(st, scope)
    }

    pub fn mkdir(&self, parent: Ino, name: &str, mode: u32) -> FsResult<Attr> {
        self.make(
            parent,
            name,
            Entry::Dir {
                mode: mode & 0o7777,
            },
        )
    }

    pub fn symlink(&self, parent: Ino, name: &str, target: &str) -> FsResult<Attr> {
        let path = self.state().tree.get(parent).map(|p| join(&p.path, name));
        if path.is_some_and(|p| !crate::model::link_stays_inside(&p, target)) {
            // Kept, as any filesystem keeps it; folder-sync devices will not write it.
            tracing::warn!(
                "the link {name} points outside the folder ({target}): devices that sync a \
                 plain folder will not create it"
            );
        }
        self.make(
            parent,
            name,
            Entry::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// A new folder or link, recorded before the call returns.
    fn make(&self, parent: Ino, name: &str, entry: Entry) -> FsResult<Attr> {
        check_name(name)?;
        let mut st = self.state();
        let path = Self::child_path(&st, parent, name)?;
        if st.tree.ino_of(&path).is_some() {
            return Err(Errno::EXIST);
        }
        let now = precise_now_ns();
        let change = put(&st, &path, entry, now);
        self.record(&mut st, vec![change], std::slice::from_ref(&path))?;
        st.tree.touch_dir(parent, now);
        self.note_change();
        let ino = st.tree.ino_of(&path).ok_or(Errno::IO)?;
        self.node_attr(&st, ino)
    }

    pub fn unlink(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.remove(parent, name, |n| match n.kind {
            Kind::Dir => Err(Errno::ISDIR),
            _ => Ok(()),
        })
    }

    pub fn rmdir(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.remove(parent, name, |n| match n.kind {
            Kind::Dir if !n.children.is_empty() => Err(Errno::NOTEMPTY),
            Kind::Dir => Ok(()),
            _ => Err(Errno::NOTDIR),
        })
    }

    /// unlink and rmdir: `allowed` says whether this call may remove that node.
    fn remove(
        &self,
        parent: Ino,
        name: &str,
        allowed: impl FnOnce(&Node) -> FsResult<()>,
    ) -> FsResult<()> {
        let mut st = self.state();
        let node = st.tree.lookup(parent, name).cloned().ok_or(Errno::NOENT)?;
        allowed(&node)?;
        let now = precise_now_ns();
        let canonical = st.tree.canonical(node.ino);
        let other_names = st.tree.other_names(node.ino);
        let rows = Self::paths_under(&st, &node.path);
        if node.kind.is_local_only() {
            // Never recorded: it only leaves the tree and the local rows.
            st.tree.remove_subtree(node.ino);
            self.after_removal(&mut st, parent, canonical, &rows, &other_names, now)?;
            return Ok(());
        }
        if other_names.is_empty() {
            st.files.unlink(&node);
        }
        let change = gone(&st, &node.path);
        let mut scope = vec![node.path.clone()];
        scope.extend(node.sibling_of().map(str::to_owned));
        if node.shown.is_none() || node.sibling_of().is_some() {
            // Made here and never recorded, or a sibling whose device's version now
            // leaves the conflict: the name goes whatever the namespace says.
            st.tree.remove_subtree(node.ino);
        }
        self.record(&mut st, vec![change], &scope)?;
        // A folder implied by others' files, say, may still be shown: it is gone here.
        if st.tree.ino_of(&node.path) == Some(node.ino) && node.kind != Kind::Dir {
            st.tree.remove_subtree(node.ino);
        }
        self.after_removal(&mut st, parent, canonical, &rows, &other_names, now)?;
        self.note_change();
        Ok(())
    }

    /// A name went: its folder's times move, and so does the ctime of the file if
    /// other names still stand for it; local rows follow.
    fn after_removal(
        &self,
        st: &mut State,
        parent: Ino,
        canonical: Ino,
        rows: &[String],
        other_names: &[String],
        now: i64,
    ) -> FsResult<()> {
        st.tree.touch_dir(parent, now);
        if !other_names.is_empty() {
            if let Some(n) = st.tree.get_mut(canonical) {
                n.ctime_ns = now;
            }
            // A file open for writing may now stand at another of its names: its
            // close writes on top of what that name shows.
            let at = st.tree.get(canonical).map(|n| n.path.clone());
            if let Some(path) = at.filter(|_| st.files.staged.contains_key(&canonical)) {
                let seen = seen_in(&st.tree, &path);
                if let Some(s) = st.files.staged.get_mut(&canonical) {
                    s.seen = seen;
                }
            }
        }
        let mut paths = rows.to_vec();
        paths.extend(other_names.iter().cloned());
        self.keep_local(st, &paths)
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        check_name(new_name)?;
        let mut st = self.state();
        let node = st.tree.lookup(parent, name).cloned().ok_or(Errno::NOENT)?;
        let to = Self::child_path(&st, new_parent, new_name)?;
        if to == node.path {
            return Ok(());
        }
        if node.kind == Kind::Dir && to.starts_with(&format!("{}/", node.path)) {
            return Err(Errno::INVAL);
        }
        if let Some(target) = st.tree.ino_of(&to).and_then(|i| st.tree.get(i)) {
            if no_replace {
                return Err(Errno::EXIST);
            }
            if st.tree.canonical(target.ino) == st.tree.canonical(node.ino) {
                // Two names of one file: rename(2) does nothing and succeeds.
                return Ok(());
            }
            match (node.kind == Kind::Dir, target.kind == Kind::Dir) {
                (true, false) => return Err(Errno::NOTDIR),
                (false, true) => return Err(Errno::ISDIR),
                (true, true) if !target.children.is_empty() => return Err(Errno::NOTEMPTY),
                _ => {}
            }
        }
        self.move_subtree(&mut st, &node, &to)?;
        let now = precise_now_ns();
        st.tree.touch_dir(parent, now);
        st.tree.touch_dir(new_parent, now);
        self.note_change();
        Ok(())
    }

    /// Moves `node` (and all under it) to `to`: every old path gone, the same entry at
    /// every new one, in one transaction. Files open with unrecorded changes move
    /// without a version; their close records them at the new path.
    fn move_subtree(&self, st: &mut State, node: &Node, to: &str) -> FsResult<()> {
        let from = node.path.clone();
        let moved: Vec<Node> = st
            .tree
            .subtree(&from)
            .into_iter()
            .filter_map(|i| st.tree.get(i).cloned())
            .collect();
        let mut changes = Vec::new();
        let mut scope = Vec::new();
        let mut restaged = Vec::new();
        let mut rows = Self::paths_under(st, to);
        let mut relinked = Vec::new();
        let replaces_a_version = st
            .tree
            .ino_of(to)
            .and_then(|i| st.tree.get(i))
            .is_some_and(|t| t.ino != node.ino && t.shown.is_some());
        if node.kind.is_local_only() && replaces_a_version {
            // A fifo or socket takes the name of a file: the file is gone everywhere
            // (nothing of the fifo is recorded).
            changes.push(gone(st, to));
            scope.push(to.to_owned());
        }
        for n in &moved {
            let new_path = format!("{to}{}", &n.path[from.len()..]);
            rows.push(n.path.clone());
            rows.push(new_path.clone());
            relinked.extend(st.tree.other_names(n.ino));
            if n.kind.is_local_only() {
                continue;
            }
            changes.push(gone(st, &n.path));
            if let Some(main) = n.sibling_of() {
                scope.push(main.to_owned());
            }
            if st.files.staged.contains_key(&n.ino) {
                restaged.push((n.ino, new_path.clone()));
            }
            if !st.files.is_dirty(n.ino) {
                if let Some(entry) = entry_of(n) {
                    changes.push(put(st, &new_path, entry, n.mtime_ns));
                }
            }
            scope.push(n.path.clone());
            scope.push(new_path);
        }
        // What `to` held before is replaced: its subtree leaves with it.
        let mut replaced_canonical = None;
        if let Some(old) = st.tree.ino_of(to) {
            if old != node.ino {
                for gone_ino in st.tree.subtree(to) {
                    relinked.extend(st.tree.other_names(gone_ino));
                    if st.tree.link_count(gone_ino) > 1 {
                        // Its other names keep the file.
                        replaced_canonical = Some(st.tree.canonical(gone_ino));
                        continue;
                    }
                    if let Some(g) = st.tree.get(gone_ino).cloned() {
                        st.files.unlink(&g);
                    }
                }
            }
        }
        let now = precise_now_ns();
        st.tree.rename(&from, to, now);
        if let Some(n) = replaced_canonical.and_then(|c| st.tree.get_mut(c)) {
            n.ctime_ns = now;
        }
        if let Err(e) = self.vault.record(changes, Vec::new()) {
            // Refused (contents replaced elsewhere a moment ago, say) after the
            // tree moved: the poller rebuilds the view from the index at once.
            let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            a.view_stale = true;
            a.change_heard = true;
            drop(a);
            self.wake.notify_all();
            return Err(e.into());
        }
        // An open file now writes on top of whatever its new path shows.
        for (ino, path) in restaged {
            let seen = seen_in(&st.tree, &path);
            if let Some(s) = st.files.staged.get_mut(&ino) {
                s.seen = seen;
            }
        }
        scope.sort();
        scope.dedup();
        self.refresh(st, &scope)?;
        rows.extend(relinked);
        rows.sort();
        rows.dedup();
        self.keep_local(st, &rows)
    }

    /// chmod or utimens of a closed node: the same entry, new metadata.
    pub(super) fn record_meta(&self, st: &mut State, ino: Ino) -> FsResult<()> {
        let Some(n) = st.tree.get(ino).cloned() else {
            return Ok(());
        };
        let others = st.tree.other_names(ino);
        let Some(entry) = entry_of(&n) else {
            // A fifo or socket: kept on this device only.
            let mut paths = vec![n.path.clone()];
            paths.extend(others);
            return self.keep_local(st, &paths);
        };
        // Every name of a hard-linked file shows the same mode and times.
        let mut changes = vec![put(st, &n.path, entry.clone(), n.mtime_ns)];
        let mut scope = vec![n.path.clone()];
        scope.extend(n.sibling_of().map(str::to_owned));
        for p in others {
            changes.push(put(st, &p, entry.clone(), n.mtime_ns));
            scope.push(p);
        }
        self.record(st, changes, &scope)
    }
}
