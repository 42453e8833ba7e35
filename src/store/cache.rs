//! `sync/cache/`: ciphertext objects exactly as they will be stored in the backend.
//! In folder sync a pack lives here only from sealing until its upload; the mount will
//! also keep fetched objects here, bounded.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::model::ObjectId;

#[derive(Debug, Clone)]
pub struct PackCache {
    dir: PathBuf,
}

impl PackCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, pack: &ObjectId) -> PathBuf {
        self.dir.join(format!("{pack}.enc"))
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
