//! The mount's inode table: what the namespace shows, by inode and by path. Pure data:
//! no I/O, no locks. The kernel knows files by inode number, the vault by path; this
//! keeps the two in step as local operations and remote changes move paths around.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::model::{ContentRef, DeviceId, Entry, ObjectId};
use crate::sync::{Namespace, Shown};

mod links;
use links::Links;

pub type Ino = u64;
pub const ROOT: Ino = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A fifo or a socket: on this device only, never a version (see `special.rs`).
    Fifo,
    Socket,
}

impl Kind {
    /// Fifos and sockets: kept by this device alone.
    pub fn is_local_only(self) -> bool {
        matches!(self, Kind::Fifo | Kind::Socket)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub ino: Ino,
    /// Relative to the mount point; empty for the root.
    pub path: String,
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// The access time: this device's alone, never synced (a read makes no version).
    pub atime_ns: i64,
    /// `atime_ns` was set by a read or a utimens and is kept on this device (see
    /// `sync::MountLocal`); otherwise it is the modification time a version brought.
    pub atime_kept: bool,
    /// Set while an open file's node learnt a newer version its fields do not
    /// show yet (they are taken from it once the file closes).
    pub stale: bool,
    pub target: String,
    /// The version shown here; `None` for the root and for a file created here that
    /// is not recorded yet.
    pub shown: Option<Shown>,
    pub children: BTreeMap<String, Ino>,
    /// Children that are folders (each links back with its `..`).
    pub subdirs: u32,
}

impl Node {
    /// A node with no version yet: a fresh folder or file made here.
    fn empty(ino: Ino, path: &str, kind: Kind, now_ns: i64) -> Self {
        Node {
            ino,
            path: path.to_owned(),
            kind,
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            size: 0,
            mtime_ns: now_ns,
            ctime_ns: now_ns,
            atime_ns: now_ns,
            atime_kept: false,
            stale: false,
            target: String::new(),
            shown: None,
            children: BTreeMap::new(),
            subdirs: 0,
        }
    }

    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
    /// Where the shown version's bytes are (files only).
    pub fn content(&self) -> Option<&ContentRef> {
        match self.shown.as_ref().map(|s| &s.version.entry) {
            Some(Entry::File { content, .. }) => Some(content),
            _ => None,
        }
    }

    pub fn sibling_of(&self) -> Option<&str> {
        self.shown.as_ref().and_then(|s| s.sibling_of.as_deref())
    }
}

/// What the kernel must forget after the tree changed under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The attributes and cached pages of this inode.
    Inode(Ino),
    /// The name `name` in folder `parent` (so a lookup asks again).
    Entry(Ino, String),
}

pub fn parent_path(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

#[derive(Debug)]
pub struct Tree {
    /// Boxed: the table then holds pointers, so growing it past 100,000 nodes moves
    /// (and briefly doubles) a few megabytes, not the nodes themselves.
    nodes: HashMap<Ino, Box<Node>>,
    by_path: HashMap<String, Ino>,
    /// The file nodes whose content lives in each pack: what was sealed beside a file
    /// is fetched with it (see `read.rs`).
    by_pack: HashMap<PackKey, HashSet<Ino>>,
    next: Ino,
    root_mtime_ns: i64,
    /// Hard links made on this device. Each name is a node of its own (its own
    /// path and version, as another device sees it), but the kernel only ever sees
    /// the group's first inode, the canonical one: lookups and listings answer with
    /// it, and its node holds the attributes, the open files and the writes.
    links: Links,
    /// The size a content shows where it is not its own (anonymization restores
    /// values on this device: `Vault::shown_sizes`).
    sizes: ShownSizes,
}

/// Where the size a content shows comes from, when not from the content itself.
#[derive(Clone, Default)]
pub struct ShownSizes(Option<Arc<SizeOf>>);

type SizeOf = dyn Fn(&ContentRef) -> Option<u64> + Send + Sync;

impl ShownSizes {
    pub fn new(f: impl Fn(&ContentRef) -> Option<u64> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }
    fn of(&self, c: &ContentRef) -> u64 {
        self.0.as_ref().and_then(|f| f(c)).unwrap_or(c.size)
    }
}

impl std::fmt::Debug for ShownSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ShownSizes(learned)"
        } else {
            "ShownSizes(own)"
        })
    }
}

/// A pack, by the device whose prefix holds it and its id.
type PackKey = (DeviceId, ObjectId);

fn pack_of(shown: Option<&Shown>) -> Option<PackKey> {
    match shown.map(|s| &s.version.entry) {
        Some(Entry::File { content, .. }) => Some((content.owner.clone(), content.pack.clone())),
        _ => None,
    }
}

fn shape(shown: &Shown, sizes: &ShownSizes) -> (Kind, u32, u64, String) {
    match &shown.version.entry {
        Entry::File { content, mode } => {
            (Kind::File, mode & 0o7777, sizes.of(content), String::new())
        }
        Entry::Dir { mode } => (Kind::Dir, mode & 0o7777, 0, String::new()),
        Entry::Symlink { target } => (Kind::Symlink, 0o777, target.len() as u64, target.clone()),
        // Never shown; treated as an empty file if it ever is.
        Entry::Deleted => (Kind::File, 0o644, 0, String::new()),
    }
}

fn blob_of(shown: Option<&Shown>) -> Option<(&DeviceId, &ObjectId, u64)> {
    match shown.map(|s| &s.version.entry) {
        Some(Entry::File { content, .. }) => Some((&content.owner, &content.pack, content.offset)),
        _ => None,
    }
}

fn same_version(a: Option<&Shown>, b: &Shown) -> bool {
    a.is_some_and(|a| {
        a.id() == b.id() && a.sibling_of == b.sibling_of && a.version.entry == b.version.entry
    })
}

impl Tree {
    pub fn new(now_ns: i64) -> Self {
        let root = Node::empty(ROOT, "", Kind::Dir, now_ns);
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Box::new(root));
        let mut by_path = HashMap::new();
        by_path.insert(String::new(), ROOT);
        Self {
            nodes,
            by_path,
            by_pack: HashMap::new(),
            next: ROOT + 1,
            root_mtime_ns: now_ns,
            links: Links::default(),
            sizes: ShownSizes::default(),
        }
    }

    pub fn from_namespace(ns: Namespace, now_ns: i64) -> Self {
        Self::from_namespace_sized(ns, now_ns, ShownSizes::default())
    }

    /// As [`Tree::from_namespace`], each file showing the size `sizes` gives it.
    pub fn from_namespace_sized(ns: Namespace, now_ns: i64, sizes: ShownSizes) -> Self {
        let mut t = Self::new(now_ns);
        t.sizes = sizes;
        for (path, shown) in ns {
            t.set_owned(&path, shown);
        }
        t
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino).map(|n| &**n)
    }
    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino).map(|n| &mut **n)
    }
    pub fn ino_of(&self, path: &str) -> Option<Ino> {
        self.by_path.get(path).copied()
    }
    pub fn lookup(&self, parent: Ino, name: &str) -> Option<&Node> {
        let p = self.nodes.get(&parent)?;
        let ino = p.children.get(name)?;
        self.get(*ino)
    }

    /// Every node at or under `path`, parents before children.
    pub fn subtree(&self, path: &str) -> Vec<Ino> {
        let mut out = Vec::new();
        let Some(start) = self.ino_of(path) else {
            return out;
        };
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            out.push(i);
            if let Some(n) = self.nodes.get(&i) {
                stack.extend(n.children.values().rev());
            }
        }
        out
    }

    /// The conflict siblings standing beside `main`.
    pub fn siblings_of(&self, main: &str) -> Vec<Ino> {
        let parent = parent_path(main);
        let Some(p) = self.ino_of(parent).and_then(|i| self.nodes.get(&i)) else {
            return Vec::new();
        };
        // Siblings are named `<name>.conflict-…`: a range of the sorted names.
        let prefix = format!("{}.conflict-", main.rsplit('/').next().unwrap_or(main));
        p.children
            .range(prefix.clone()..)
            .take_while(|(name, _)| name.starts_with(&prefix))
            .map(|(_, i)| *i)
            .filter(|i| {
                self.nodes
                    .get(i)
                    .is_some_and(|n| n.sibling_of() == Some(main))
            })
            .collect()
    }

    fn ensure_dir(&mut self, path: &str, now_ns: i64) -> Ino {
        if let Some(i) = self.ino_of(path) {
            return i;
        }
        let parent = self.ensure_dir(parent_path(path), now_ns);
        self.attach(parent, path, Kind::Dir, now_ns)
    }

    fn attach(&mut self, parent: Ino, path: &str, kind: Kind, now_ns: i64) -> Ino {
        let ino = self.next;
        self.next += 1;
        let node = Node::empty(ino, path, kind, now_ns);
        let name = node.name().to_owned();
        self.nodes.insert(ino, Box::new(node));
        self.by_path.insert(path.to_owned(), ino);
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.insert(name, ino);
            p.mtime_ns = p.mtime_ns.max(now_ns);
            if kind == Kind::Dir {
                p.subdirs += 1;
            }
        }
        ino
    }

    /// A node for something made here, before it is recorded (an open new file).
    pub fn add_local(&mut self, path: &str, kind: Kind, mode: u32, now_ns: i64) -> Ino {
        if let Some(old) = self.ino_of(path) {
            self.remove_subtree(old);
        }
        let parent = self.ensure_dir(parent_path(path), now_ns);
        let ino = self.attach(parent, path, kind, now_ns);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mode = mode & 0o7777;
        }
        ino
    }

    /// Shows `shown` at `path`, creating the node (and its folders) if needed.
    /// Returns the inode and whether its content changed.
    pub fn set(&mut self, path: &str, shown: &Shown) -> (Ino, bool) {
        self.set_owned(path, shown.clone())
    }

    /// As [`Tree::set`], taking the version (no copy: a mount of 100,000 files
    /// builds its tree this way).
    pub fn set_owned(&mut self, path: &str, shown: Shown) -> (Ino, bool) {
        let (kind, mode, size, target) = shape(&shown, &self.sizes);
        let existing = self.ino_of(path);
        let ino = match existing {
            Some(i) if self.nodes.get(&i).is_some_and(|n| n.kind == kind) => i,
            Some(i) => {
                self.remove_subtree(i);
                let parent = self.ensure_dir(parent_path(path), shown.version.mtime_ns);
                self.attach(parent, path, kind, shown.version.mtime_ns)
            }
            None => {
                let parent = self.ensure_dir(parent_path(path), shown.version.mtime_ns);
                self.attach(parent, path, kind, shown.version.mtime_ns)
            }
        };
        let node = self
            .nodes
            .get_mut(&ino)
            .unwrap_or_else(|| unreachable!("attached above"));
        // A size learned for the same content (anonymization) changes what a
        // reader gets as much as new bytes do.
        let content_changed = blob_of(node.shown.as_ref()) != blob_of(Some(&shown))
            || node.target != target
            || (kind == Kind::File && node.size != size);
        let packs = (pack_of(node.shown.as_ref()), pack_of(Some(&shown)));
        node.mode = mode;
        node.size = size;
        node.mtime_ns = shown.version.mtime_ns;
        node.ctime_ns = node.ctime_ns.max(shown.version.mtime_ns);
        node.target = target;
        node.stale = false;
        node.shown = Some(shown);
        self.repack(ino, packs);
        (ino, content_changed)
    }

    /// Keeps `by_pack` in step with a node whose content moved from one pack to another.
    fn repack(&mut self, ino: Ino, (old, new): (Option<PackKey>, Option<PackKey>)) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            if let Some(set) = self.by_pack.get_mut(&old) {
                set.remove(&ino);
                if set.is_empty() {
                    self.by_pack.remove(&old);
                }
            }
        }
        if let Some(new) = new {
            self.by_pack.entry(new).or_default().insert(ino);
        }
    }

    /// The contents shown here that live in pack `pack` of `owner`.
    pub fn in_pack<'a>(
        &'a self,
        owner: &DeviceId,
        pack: &ObjectId,
    ) -> impl Iterator<Item = &'a ContentRef> + 'a {
        self.by_pack
            .get(&(owner.clone(), pack.clone()))
            .into_iter()
            .flatten()
            .filter_map(|i| self.nodes.get(i)?.content())
    }

    /// Removes the node at `ino` and everything under it; returns the removed inodes.
    pub fn remove_subtree(&mut self, ino: Ino) -> Vec<Node> {
        if ino == ROOT {
            return Vec::new();
        }
        let mut removed = Vec::new();
        let Some((path, is_dir)) = self
            .nodes
            .get(&ino)
            .map(|n| (n.path.clone(), n.kind == Kind::Dir))
        else {
            return removed;
        };
        let parent = parent_path(&path).to_owned();
        if let Some(p) = self.ino_of(&parent).and_then(|p| self.nodes.get_mut(&p)) {
            p.children.remove(path.rsplit('/').next().unwrap_or(""));
            if is_dir {
                p.subdirs = p.subdirs.saturating_sub(1);
            }
        }
        let doomed = self.subtree_from(ino);
        for i in &doomed {
            self.unalias(*i);
        }
        for i in doomed {
            if self.links.names.contains_key(&i) {
                // Its other names live on: the inode moves to one of them.
                if let Some(n) = self.promote(i) {
                    removed.push(n);
                }
                continue;
            }
            if let Some(n) = self.nodes.remove(&i) {
                self.by_path.remove(&n.path);
                self.repack(i, (pack_of(n.shown.as_ref()), None));
                removed.push(*n);
            }
        }
        removed
    }

    fn subtree_from(&self, ino: Ino) -> Vec<Ino> {
        let mut out = Vec::new();
        let mut stack = vec![ino];
        while let Some(i) = stack.pop() {
            out.push(i);
            if let Some(n) = self.nodes.get(&i) {
                stack.extend(n.children.values());
            }
        }
        out
    }

    /// Moves the node at `from` (and everything under it) to `to`, replacing what is
    /// there. Inode numbers stay, so open files follow the move.
    pub fn rename(&mut self, from: &str, to: &str, now_ns: i64) -> Option<Ino> {
        let ino = self.ino_of(from)?;
        if let Some(old) = self.ino_of(to) {
            if old != ino {
                self.remove_subtree(old);
            }
        }
        let is_dir = self.nodes.get(&ino).is_some_and(|n| n.kind == Kind::Dir);
        let old_parent = parent_path(from).to_owned();
        if let Some(p) = self
            .ino_of(&old_parent)
            .and_then(|p| self.nodes.get_mut(&p))
        {
            p.children.remove(from.rsplit('/').next().unwrap_or(""));
            p.mtime_ns = now_ns;
            if is_dir {
                p.subdirs = p.subdirs.saturating_sub(1);
            }
        }
        let new_parent = self.ensure_dir(parent_path(to), now_ns);
        for i in self.subtree_from(ino) {
            let Some(n) = self.nodes.get_mut(&i) else {
                continue;
            };
            let old_path = std::mem::take(&mut n.path);
            let new_path = format!("{to}{}", &old_path[from.len()..]);
            n.path = new_path.clone();
            self.by_path.remove(&old_path);
            self.by_path.insert(new_path, i);
        }
        if let Some(p) = self.nodes.get_mut(&new_parent) {
            p.children
                .insert(to.rsplit('/').next().unwrap_or("").to_owned(), ino);
            p.mtime_ns = now_ns;
            if is_dir {
                p.subdirs += 1;
            }
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.ctime_ns = now_ns;
        }
        Some(ino)
    }

    /// Brings the paths in `scope` (and only those) in step with `ns`, which holds what
    /// they show now. `keep` names paths whose node must stay as it is (a file open for
    /// writing, whose content lives in staging).
    pub fn refresh(
        &mut self,
        scope: &[String],
        ns: &Namespace,
        keep: &dyn Fn(&str) -> bool,
    ) -> Vec<Invalidation> {
        let mut inval = Vec::new();
        for path in scope {
            // Siblings of this path that the new namespace no longer shows.
            let mut stale: Vec<String> = self
                .siblings_of(path)
                .into_iter()
                .filter_map(|i| self.nodes.get(&i).map(|n| n.path.clone()))
                .filter(|p| !ns.contains_key(p))
                .collect();
            if !ns.contains_key(path) && !keep(path) && !self.is_local_only(path) {
                stale.push(path.clone());
            }
            for p in stale {
                self.remove_path(&p, &mut inval);
            }
            let touched: Vec<(&String, &Shown)> = ns
                .iter()
                .filter(|(p, s)| *p == path || s.sibling_of.as_deref() == Some(path.as_str()))
                .collect();
            for (p, s) in touched {
                self.show(p, s, keep(p), &mut inval);
            }
        }
        inval
    }

    fn remove_path(&mut self, path: &str, inval: &mut Vec<Invalidation>) {
        let Some(ino) = self.ino_of(path) else { return };
        let parent = self.ino_of(parent_path(path)).unwrap_or(ROOT);
        let name = path.rsplit('/').next().unwrap_or("").to_owned();
        for n in self.remove_subtree(ino) {
            inval.push(Invalidation::Inode(n.ino));
        }
        inval.push(Invalidation::Entry(parent, name));
    }

    /// Shows `shown` at `path`; a kept node (open with unrecorded changes) only
    /// learns which version it now stands on.
    fn show(&mut self, path: &str, shown: &Shown, kept: bool, inval: &mut Vec<Invalidation>) {
        if !kept {
            return self.set_path(path, shown, inval);
        }
        let Some(ino) = self.ino_of(path) else { return };
        if let Some(n) = self.nodes.get_mut(&ino) {
            let packs = (pack_of(n.shown.as_ref()), pack_of(Some(shown)));
            n.shown = Some(shown.clone());
            n.stale = true;
            self.repack(ino, packs);
        }
    }

    fn set_path(&mut self, path: &str, shown: &Shown, inval: &mut Vec<Invalidation>) {
        let current = self.ino_of(path).and_then(|i| self.nodes.get(&i));
        // A size learned since (anonymization) changes the file as new bytes would.
        let size_now = match &shown.version.entry {
            Entry::File { content, .. } => Some(self.sizes.of(content)),
            _ => None,
        };
        // A node whose version was noted while its file was open still has to take
        // that version's content.
        let up_to_date = current.is_some_and(|n| {
            same_version(n.shown.as_ref(), shown)
                && !n.stale
                && size_now.is_none_or(|size| size == n.size)
        });
        if up_to_date {
            return;
        }
        let existed = self.ino_of(path);
        let (ino, _) = self.set(path, shown);
        match existed {
            Some(old) if old == ino => inval.push(Invalidation::Inode(ino)),
            _ => {
                let parent = self.ino_of(parent_path(path)).unwrap_or(ROOT);
                inval.push(Invalidation::Entry(
                    parent,
                    path.rsplit('/').next().unwrap_or("").to_owned(),
                ));
                if let Some(old) = existed {
                    inval.push(Invalidation::Inode(old));
                }
            }
        }
    }

    /// Brings the whole tree in step with `ns` (after a poll).
    pub fn apply(&mut self, ns: &Namespace, keep: &dyn Fn(&str) -> bool) -> Vec<Invalidation> {
        let mut inval = Vec::new();
        // Folders that hold something shown stay, listed or not.
        let mut needed: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for p in ns.keys() {
            let mut cur = p.as_str();
            while let Some((parent, _)) = cur.rsplit_once('/') {
                if !needed.insert(parent) {
                    break;
                }
                cur = parent;
            }
        }
        let mut gone: Vec<String> = self
            .by_path
            .keys()
            .filter(|p| {
                !p.is_empty()
                    && !ns.contains_key(*p)
                    && !needed.contains(p.as_str())
                    && !keep(p)
                    && !self.is_local_only(p)
            })
            .cloned()
            .collect();
        // Deepest first, so a folder goes after what it held.
        gone.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        for p in gone {
            // A folder still holding something kept (an open file) stays.
            let holds_kept = self
                .subtree(&p)
                .iter()
                .filter_map(|i| self.nodes.get(i))
                .any(|n| keep(&n.path) || n.kind.is_local_only());
            if !holds_kept {
                self.remove_path(&p, &mut inval);
            }
        }
        for (p, s) in ns {
            self.show(p, s, keep(p), &mut inval);
        }
        inval
    }

    /// Whether `path` is a fifo or socket of this device's (no version stands for it).
    pub fn is_local_only(&self, path: &str) -> bool {
        self.ino_of(path)
            .and_then(|i| self.nodes.get(&i))
            .is_some_and(|n| n.kind.is_local_only())
    }

    /// Every fifo and socket, by path.
    pub fn local_only_paths(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.kind.is_local_only())
            .map(|n| n.path.clone())
            .collect();
        out.sort();
        out
    }

    pub fn root_mtime_ns(&self) -> i64 {
        self.root_mtime_ns
    }

    /// Links to a folder: its own entry, its `.`, and each subfolder's `..`.
    pub fn dir_links(&self, n: &Node) -> u32 {
        2 + n.subdirs
    }

    /// A folder's entries changed here: its times move, as on any local filesystem.
    /// (Folder times are not synced; only what they hold is.)
    pub fn touch_dir(&mut self, ino: Ino, now_ns: i64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtime_ns = now_ns;
            n.ctime_ns = now_ns;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlobId, ContentHash, DeviceId, ObjectId, Version, VersionVector};

    fn file(
        path: &str,
        dev: &DeviceId,
        counter: u64,
        size: u64,
        sibling_of: Option<&str>,
    ) -> Shown {
        let mut vector = VersionVector::default();
        vector.set(dev, counter);
        Shown {
            version: Version {
                path: path.to_owned(),
                device: dev.clone(),
                vector,
                mtime_ns: counter as i64,
                entry: Entry::File {
                    content: ContentRef {
                        owner: dev.clone(),
                        pack: ObjectId::new(counter),
                        offset: 8,
                        length: size + 44,
                        blob: BlobId([0; 16]),
                        sha256: ContentHash([counter as u8; 32]),
                        size,
                        key_epoch: 0,
                    },
                    mode: 0o644,
                },
            },
            sibling_of: sibling_of.map(str::to_owned),
        }
    }

    #[test]
    fn apply_adds_changes_and_removes_with_invalidations() {
        let d = DeviceId::random();
        let mut ns = Namespace::new();
        ns.insert("a/x.json".into(), file("a/x.json", &d, 1, 10, None));
        ns.insert("b.json".into(), file("b.json", &d, 2, 20, None));
        let mut t = Tree::from_namespace(ns.clone(), 0);
        let a = t.ino_of("a").unwrap();
        let x = t.ino_of("a/x.json").unwrap();
        assert_eq!(t.get(x).unwrap().size, 10);
        assert_eq!(t.lookup(a, "x.json").unwrap().ino, x);

        let mut next = Namespace::new();
        next.insert("a/x.json".into(), file("a/x.json", &d, 3, 30, None));
        next.insert("c.json".into(), file("c.json", &d, 4, 5, None));
        let inval = t.apply(&next, &|_| false);
        assert_eq!(t.ino_of("a/x.json"), Some(x), "an edit keeps the inode");
        assert_eq!(t.get(x).unwrap().size, 30);
        assert!(inval.contains(&Invalidation::Inode(x)));
        assert!(t.ino_of("b.json").is_none());
        assert!(inval.contains(&Invalidation::Entry(ROOT, "b.json".into())));
        assert!(inval.contains(&Invalidation::Entry(ROOT, "c.json".into())));
        // The implied folder "a" survives: it still holds x.json.
        assert!(t.ino_of("a").is_some());
        // Applying the same namespace again changes nothing.
        assert!(t.apply(&next, &|_| false).is_empty());
    }

    #[test]
    fn kept_paths_survive_a_poll_that_does_not_know_them() {
        let mut t = Tree::new(0);
        let ino = t.add_local("new/open.json", Kind::File, 0o644, 5);
        t.apply(&Namespace::new(), &|p| p == "new/open.json");
        assert_eq!(t.ino_of("new/open.json"), Some(ino));
        assert!(t.ino_of("new").is_some());
    }

    #[test]
    fn a_file_recorded_while_open_takes_its_content_once_closed() {
        let d = DeviceId::random();
        let mut t = Tree::new(0);
        let ino = t.add_local("n.json", Kind::File, 0o644, 1);
        let mut ns = Namespace::new();
        ns.insert("n.json".into(), file("n.json", &d, 1, 6, None));
        let scope = ["n.json".to_owned()];
        t.refresh(&scope, &ns, &|_| true);
        assert_eq!(t.get(ino).unwrap().size, 0, "open: staging holds the bytes");
        t.refresh(&scope, &ns, &|_| false);
        assert_eq!(t.get(ino).unwrap().size, 6);
        assert!(t.get(ino).unwrap().content().is_some());
    }

    #[test]
    fn folder_link_counts_follow_subfolders() {
        let mut t = Tree::new(0);
        t.add_local("a/b/f.json", Kind::File, 0o644, 1);
        t.add_local("a/c", Kind::Dir, 0o755, 1);
        let a = t.ino_of("a").unwrap();
        assert_eq!(t.dir_links(t.get(a).unwrap()), 4);
        t.rename("a/c", "c2", 2);
        assert_eq!(t.dir_links(t.get(a).unwrap()), 3);
        assert_eq!(t.dir_links(t.get(ROOT).unwrap()), 4);
        t.remove_subtree(t.ino_of("a/b").unwrap());
        assert_eq!(t.dir_links(t.get(a).unwrap()), 2);
    }

    #[test]
    fn rename_moves_a_folder_and_keeps_inodes() {
        let d = DeviceId::random();
        let mut ns = Namespace::new();
        ns.insert("a/b/x.json".into(), file("a/b/x.json", &d, 1, 10, None));
        let mut t = Tree::from_namespace(ns.clone(), 0);
        let x = t.ino_of("a/b/x.json").unwrap();
        t.rename("a", "z/a2", 9);
        assert_eq!(t.ino_of("z/a2/b/x.json"), Some(x));
        assert_eq!(t.get(x).unwrap().path, "z/a2/b/x.json");
        assert!(t.ino_of("a").is_none());
        assert!(t.ino_of("a/b/x.json").is_none());
        let z = t.ino_of("z").unwrap();
        assert!(t.lookup(z, "a2").is_some());
    }

    #[test]
    fn refresh_replaces_a_path_and_its_siblings_only() {
        let d = DeviceId::random();
        let e = DeviceId::random();
        let mut ns = Namespace::new();
        ns.insert("x".into(), file("x", &d, 1, 1, None));
        ns.insert("x.conflict-e".into(), file("x", &e, 1, 2, Some("x")));
        ns.insert("y".into(), file("y", &d, 2, 3, None));
        let mut t = Tree::from_namespace(ns.clone(), 0);
        assert_eq!(t.siblings_of("x").len(), 1);
        let mut only_x = Namespace::new();
        only_x.insert("x".into(), file("x", &d, 5, 7, None));
        let inval = t.refresh(&["x".to_owned()], &only_x, &|_| false);
        assert!(t.ino_of("x.conflict-e").is_none(), "resolved sibling goes");
        assert!(t.ino_of("y").is_some(), "other paths untouched");
        assert_eq!(t.get(t.ino_of("x").unwrap()).unwrap().size, 7);
        assert!(!inval.is_empty());
    }
}
