//! The mount's table of open files: handles, the staged bytes of files open for
//! writing, and files unlinked while open. Plain data, kept under the state lock.

use std::collections::HashMap;

use super::staging::StagedBytes;
use super::tree::{Ino, Node};
use crate::model::ContentRef;
use crate::sync::Seen;

/// A file open for writing: its bytes live in staging until the last handle closes.
#[derive(Debug)]
pub(super) struct Staged {
    pub bytes: StagedBytes,
    pub size: u64,
    pub dirty: bool,
    pub opens: u32,
    /// What the mount showed of the path when it was opened: a commit supersedes
    /// exactly that, and stays concurrent with what arrived since.
    pub seen: Seen,
    /// Unlinked while open: reads and writes go on, nothing is recorded.
    pub unlinked: bool,
    /// The content to copy in before the staging file is first used: opening a file
    /// for writing fetches nothing until a byte of it is needed.
    pub fill: Option<ContentRef>,
    /// The size the file showed when it was opened (its values restored, with
    /// anonymization): what the fill copies in.
    pub fill_size: u64,
}

impl Staged {
    pub fn new(seen: Seen) -> Self {
        Self {
            bytes: StagedBytes::default(),
            size: 0,
            dirty: false,
            opens: 0,
            seen,
            unlinked: false,
            fill: None,
            fill_size: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Handle {
    pub ino: Ino,
    pub writable: bool,
}

#[derive(Debug, Default)]
pub(super) struct OpenFiles {
    pub staged: HashMap<Ino, Staged>,
    /// Unlinked files still open, by inode.
    pub orphans: HashMap<Ino, Node>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
}

impl OpenFiles {
    pub fn add_handle(&mut self, ino: Ino, writable: bool) -> u64 {
        self.next_fh += 1;
        self.handles.insert(self.next_fh, Handle { ino, writable });
        self.next_fh
    }

    pub fn handle(&self, fh: u64) -> Option<Handle> {
        self.handles.get(&fh).copied()
    }

    pub fn remove_handle(&mut self, fh: u64) -> Option<Handle> {
        self.handles.remove(&fh)
    }

    pub fn is_open(&self, ino: Ino) -> bool {
        self.staged.contains_key(&ino) || self.handles.values().any(|h| h.ino == ino)
    }

    pub fn is_dirty(&self, ino: Ino) -> bool {
        self.staged.get(&ino).is_some_and(|s| s.dirty)
    }

    /// The content still to copy into `ino`'s staging file, if any.
    pub fn fill_of(&self, ino: Ino) -> Option<(ContentRef, u64)> {
        self.staged
            .get(&ino)
            .and_then(|s| s.fill.clone().map(|c| (c, s.fill_size)))
    }

    /// Files open for writing with changes not recorded yet.
    pub fn dirty_inos(&self) -> impl Iterator<Item = Ino> + '_ {
        self.staged
            .iter()
            .filter(|(_, s)| s.dirty && !s.unlinked)
            .map(|(i, _)| *i)
    }

    /// Marks an open file as unlinked, keeping its node for the handles still open;
    /// true if it was open.
    pub fn unlink(&mut self, n: &Node) -> bool {
        let handles = self.handles.values().any(|h| h.ino == n.ino);
        let open = match self.staged.get_mut(&n.ino) {
            // Closed, with bytes its close could not record: they go with the name.
            Some(s) if s.opens == 0 && !handles => {
                self.staged.remove(&n.ino);
                false
            }
            Some(s) => {
                s.unlinked = true;
                true
            }
            None => handles,
        };
        if open {
            self.orphans.insert(n.ino, n.clone());
        }
        open
    }
}
