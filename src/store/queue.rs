//! `sync/queue/`: sealed packs waiting for upload, exactly as they will be stored in
//! the backend. What is here is acknowledged data, never a cache: a pack leaves the
//! queue only once the backend holds it.
//!
//! Homes made before 0.2 kept the queue in `sync/cache/`, a name that invited users
//! and disk cleaners to delete it; [`PackQueue::adopt_old`] moves what it holds here.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::model::ObjectId;

#[derive(Debug, Clone)]
pub struct PackQueue {
    dir: PathBuf,
}

impl PackQueue {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, pack: &ObjectId) -> PathBuf {
        self.dir.join(format!("{pack}.enc"))
    }

    /// Makes the queue folder (private) if it is missing: removed by hand or by a
    /// cleaner, it comes back at the next seal instead of failing every write.
    pub fn ensure_dir(&self) -> io::Result<()> {
        if self.dir.is_dir() {
            return Ok(());
        }
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    /// Moves the packs of an older home's queue folder (`sync/cache/`) into this one,
    /// then removes the old folder if nothing else is in it. A crash half-way leaves
    /// each pack in one place or the other, and the next open finishes the move.
    pub fn adopt_old(&self, old: &Path) -> io::Result<usize> {
        let entries = match fs::read_dir(old) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        self.ensure_dir()?;
        let mut moved = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".enc") {
                fs::rename(entry.path(), self.dir.join(&name))?;
                moved += 1;
            }
        }
        // Only leftovers of interrupted writes (`.tmp`) may remain: they are nobody's.
        let _ = fs::remove_dir_all(old);
        Ok(moved)
    }

    pub fn remove(&self, pack: &ObjectId) -> io::Result<()> {
        match fs::remove_file(self.path_of(pack)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes packs that no pending upload names: what a push killed between sealing
    /// and recording left behind. Their content is still in the folder and is sealed
    /// again by the next scan.
    pub fn remove_orphans(&self, keep: &[ObjectId]) -> io::Result<usize> {
        let mut removed = 0;
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let id = name.strip_suffix(".enc").and_then(ObjectId::parse);
            let orphan = match id {
                Some(id) => !keep.contains(&id),
                None => name.contains(".tmp"),
            };
            if orphan && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
