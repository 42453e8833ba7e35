//! Hard links in the inode table. Each name of a hard-linked file stays a node of its
//! own, with its own path and version: that is what other devices see (separate
//! files with the same content). The kernel only ever sees the group's first inode,
//! the canonical one: lookups and listings answer with it, and its node holds the
//! attributes, the open files and the writes. When the canonical name goes, another
//! name takes over its inode number; a name whose version stops showing the file's
//! content (another device changed it) leaves the group.

use std::collections::HashMap;

use super::{blob_of, pack_of, parent_path, Ino, Invalidation, Node, Tree, ROOT};

#[derive(Debug, Default)]
pub(super) struct Links {
    /// Extra name → the canonical inode.
    pub(super) canonical: HashMap<Ino, Ino>,
    /// Canonical inode → its extra names, oldest first.
    pub(super) names: HashMap<Ino, Vec<Ino>>,
    /// Canonical inode → the group's id in the index (`sync::MountLocal`).
    pub(super) group: HashMap<Ino, i64>,
}

impl Tree {
    /// The inode the kernel knows the node `ino` by (itself unless it is an extra
    /// name of a hard-linked file).
    pub fn canonical(&self, ino: Ino) -> Ino {
        self.links.canonical.get(&ino).copied().unwrap_or(ino)
    }

    /// How many names the file of `ino` has.
    pub fn link_count(&self, ino: Ino) -> u32 {
        let c = self.canonical(ino);
        1 + self.links.names.get(&c).map_or(0, |v| v.len() as u32)
    }

    /// Every node of the file of `ino`, the canonical one first.
    pub fn link_nodes(&self, ino: Ino) -> Vec<Ino> {
        let c = self.canonical(ino);
        let mut out = vec![c];
        out.extend(self.links.names.get(&c).into_iter().flatten());
        out
    }

    /// The paths of the file of `ino` other than the one of node `ino`.
    pub fn other_names(&self, ino: Ino) -> Vec<String> {
        self.link_nodes(ino)
            .into_iter()
            .filter(|i| *i != ino)
            .filter_map(|i| self.nodes.get(&i).map(|n| n.path.clone()))
            .collect()
    }

    /// The group id of the file of `ino`, if it has several names.
    pub fn link_group(&self, ino: Ino) -> Option<i64> {
        let c = self.canonical(ino);
        self.links
            .names
            .contains_key(&c)
            .then(|| self.links.group.get(&c).copied())
            .flatten()
    }

    /// Makes node `extra` one more name of the file of `ino`.
    pub fn add_link(&mut self, ino: Ino, extra: Ino, group: i64) {
        let c = self.canonical(ino);
        if c == extra {
            return;
        }
        self.links.canonical.insert(extra, c);
        self.links.names.entry(c).or_default().push(extra);
        self.links.group.entry(c).or_insert(group);
    }

    /// Regroups `paths` (kept by an earlier mount as one file's names): only those
    /// still showing the same content as the first one are linked again.
    pub fn restore_links(&mut self, group: i64, paths: &[String]) {
        let inos: Vec<Ino> = paths.iter().filter_map(|p| self.ino_of(p)).collect();
        let Some((&first, rest)) = inos.split_first() else {
            return;
        };
        let same = |t: &Self, i: Ino| {
            let (a, b) = (t.nodes.get(&first), t.nodes.get(&i));
            a.zip(b).is_some_and(|(a, b)| {
                a.kind == b.kind && blob_of(a.shown.as_ref()) == blob_of(b.shown.as_ref())
            })
        };
        for &i in rest {
            if same(self, i) {
                self.add_link(first, i, group);
            }
        }
    }

    /// Takes node `ino` out of its file's names (it becomes a file of its own).
    pub(super) fn unalias(&mut self, ino: Ino) {
        let Some(c) = self.links.canonical.remove(&ino) else {
            return;
        };
        if let Some(v) = self.links.names.get_mut(&c) {
            v.retain(|i| *i != ino);
            if v.is_empty() {
                self.links.names.remove(&c);
                self.links.group.remove(&c);
            }
        }
    }

    /// The name of canonical node `c` goes while it has others: its first other
    /// name takes its inode number (the one the kernel knows). Returns the node as
    /// it was at the name that went.
    pub(super) fn promote(&mut self, c: Ino) -> Option<Node> {
        let mut names = self.links.names.remove(&c)?;
        let group = self.links.group.remove(&c);
        let first = names.remove(0);
        self.links.canonical.remove(&first);
        let mut moved = self.nodes.remove(&first)?;
        self.repack(first, (pack_of(moved.shown.as_ref()), None));
        moved.ino = c;
        let new_path = moved.path.clone();
        let packs = pack_of(moved.shown.as_ref());
        let old = self.nodes.insert(c, moved)?;
        self.repack(c, (pack_of(old.shown.as_ref()), packs));
        self.by_path.remove(&old.path);
        self.by_path.insert(new_path.clone(), c);
        if let Some(p) = self
            .ino_of(parent_path(&new_path))
            .and_then(|p| self.nodes.get_mut(&p))
        {
            p.children
                .insert(new_path.rsplit('/').next().unwrap_or("").to_owned(), c);
        }
        if !names.is_empty() {
            for i in &names {
                self.links.canonical.insert(*i, c);
            }
            self.links.names.insert(c, names);
            if let Some(g) = group {
                self.links.group.insert(c, g);
            }
        }
        Some(*old)
    }

    /// Names whose version no longer shows the file's content (another device
    /// changed one of them: there they were always separate files) leave the file
    /// and become files of their own. Returns what the kernel must forget.
    pub fn split_diverged(&mut self) -> Vec<Invalidation> {
        let mut gone = Vec::new();
        for (c, names) in &self.links.names {
            let Some(cn) = self.nodes.get(c) else {
                continue;
            };
            for i in names {
                let diverged = self.nodes.get(i).is_none_or(|n| {
                    n.kind != cn.kind || blob_of(n.shown.as_ref()) != blob_of(cn.shown.as_ref())
                });
                if diverged {
                    gone.push(*i);
                }
            }
        }
        let mut inval = Vec::new();
        for i in gone {
            let c = self.canonical(i);
            self.unalias(i);
            inval.push(Invalidation::Inode(c));
            if let Some(n) = self.nodes.get(&i) {
                let parent = self.ino_of(parent_path(&n.path)).unwrap_or(ROOT);
                inval.push(Invalidation::Entry(parent, n.name().to_owned()));
            }
        }
        inval
    }
}
