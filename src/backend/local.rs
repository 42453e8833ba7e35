//! The embedded default: a folder standing in for the cloud (a USB stick, a NAS share,
//! a folder another sync tool carries). Keys map to relative paths. Writes go to a
//! hidden temporary file beside the target, are flushed, then renamed into place, so a
//! reader never sees half an object; a create-only write links instead of renaming.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{BackendError, BackendResult, ObjectStore};

/// Makes a rename or link in `path`'s folder durable: without it a power cut can keep
/// a log segment and lose the pack it names.
fn sync_parent(path: &Path) -> BackendResult<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format!("cannot flush {}", parent.display()), e))
}

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

fn io_err(what: String, e: io::Error) -> BackendError {
    let temporary = matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    );
    BackendError::Io {
        message: format!("{what}: {e}"),
        temporary,
        source: e,
    }
}

impl LocalStore {
    /// Opens an existing, writable folder. A missing folder or one that is not a
    /// folder is refused: silently creating a vault on an unmounted USB stick's empty
    /// mount point would split the owner's memories in two.
    pub fn open(root: &Path) -> BackendResult<Self> {
        let meta = fs::metadata(root).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                BackendError::Invalid(format!(
                    "the vault folder {} does not exist",
                    root.display()
                ))
            } else {
                io_err(
                    format!("cannot open the vault folder {}", root.display()),
                    e,
                )
            }
        })?;
        if !meta.is_dir() {
            return Err(BackendError::Invalid(format!(
                "the vault path {} is not a folder",
                root.display()
            )));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// What [`ObjectStore::describe`] says of a folder at `root`.
    pub fn describe_path(root: &Path) -> String {
        format!("local folder {}", root.display())
    }

    /// Fails unless a file can be created in the folder.
    pub fn check_writable(&self) -> BackendResult<()> {
        let probe = self
            .root
            .join(format!(".ghostie-probe-{}", std::process::id()));
        let res = File::create(&probe);
        let _ = fs::remove_file(&probe);
        res.map(|_| ()).map_err(|e| {
            BackendError::Invalid(format!(
                "the vault folder {} is not writable ({e})",
                self.root.display()
            ))
        })
    }

    fn path_of(&self, key: &str) -> BackendResult<PathBuf> {
        let ok = !key.is_empty()
            && !key.starts_with('/')
            && key.split('/').all(|part| {
                !part.is_empty() && part != "." && part != ".." && !part.starts_with('.')
            });
        if !ok {
            return Err(BackendError::Invalid(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(key))
    }

    /// The vault folder vanished (an unmounted disk, a moved folder): the backend is
    /// unreachable, not empty, and must not be recreated by a write.
    fn check_root(&self) -> BackendResult<()> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) | Err(_) => Err(BackendError::Io {
                message: format!("the vault folder {} is not there", self.root.display()),
                temporary: true,
                source: io::Error::from(io::ErrorKind::NotFound),
            }),
        }
    }

    /// A missing object, or a missing vault folder.
    fn not_found(&self, key: &str) -> BackendError {
        match self.check_root() {
            Err(e) => e,
            Ok(()) => BackendError::NotFound {
                key: key.to_owned(),
            },
        }
    }

    fn temp_beside(path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        path.with_file_name(format!(".{name}.tmp-{:016x}", rand::random::<u64>()))
    }

    /// Writes a temporary file beside `path` with `fill`, flushed to disk.
    fn write_temp(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> BackendResult<PathBuf> {
        self.check_root()?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| io_err(format!("cannot create {}", parent.display()), e))?;
        }
        let tmp = Self::temp_beside(path);
        let result = (|| {
            let mut f = File::create(&tmp)?;
            fill(&mut f)?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(format!("cannot write {}", path.display()), e));
        }
        Ok(tmp)
    }

    fn commit(&self, tmp: PathBuf, path: &Path) -> BackendResult<()> {
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(format!("cannot write {}", path.display()), e)
        })?;
        sync_parent(path)
    }

    fn walk(&self, dir: &Path, rel: &str, out: &mut Vec<String>) -> BackendResult<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(format!("cannot list {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry
                .file_type()
                .map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
            if ft.is_dir() {
                self.walk(&entry.path(), &key, out)?;
            } else {
                out.push(key);
            }
        }
        Ok(())
    }
}

impl ObjectStore for LocalStore {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        let path = self.path_of(key)?;
        let tmp = self.write_temp(&path, |f| f.write_all(data))?;
        self.commit(tmp, &path)
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        let path = self.path_of(key)?;
        let tmp = self.write_temp(&path, |f| f.write_all(data))?;
        // link(2) fails if the target exists, which makes this create-only and atomic.
        let linked = fs::hard_link(&tmp, &path);
        if let Err(e) = &linked {
            if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EOPNOTSUPP)) {
                // FAT and exFAT have no hard links. One writer per key makes a check
                // before the rename enough there.
                if path.exists() {
                    let _ = fs::remove_file(&tmp);
                    return Err(BackendError::AlreadyExists {
                        key: key.to_owned(),
                    });
                }
                return self.commit(tmp, &path);
            }
        }
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_parent(&path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(BackendError::AlreadyExists {
                    key: key.to_owned(),
                })
            }
            Err(e) => Err(io_err(format!("cannot write {}", path.display()), e)),
        }
    }

    fn put_file(&self, key: &str, source: &Path) -> BackendResult<()> {
        let path = self.path_of(key)?;
        // On the same filesystem, the durable local file becomes the object without a
        // copy: link it beside the target, then rename into place as any write.
        self.check_root()?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| io_err(format!("cannot create {}", parent.display()), e))?;
        }
        let tmp = Self::temp_beside(&path);
        if fs::hard_link(source, &tmp).is_ok() {
            return self.commit(tmp, &path);
        }
        let tmp = self.write_temp(&path, |f| {
            let mut src = File::open(source)?;
            io::copy(&mut src, f).map(|_| ())
        })?;
        self.commit(tmp, &path)
    }

    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        let path = self.path_of(key)?;
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                self.not_found(key)
            } else {
                io_err(format!("cannot read {}", path.display()), e)
            }
        })
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        let path = self.path_of(key)?;
        let read = || -> io::Result<Vec<u8>> {
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(range.start))?;
            let mut buf = Vec::with_capacity(range.end.saturating_sub(range.start) as usize);
            f.take(range.end.saturating_sub(range.start))
                .read_to_end(&mut buf)?;
            Ok(buf)
        };
        read().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                self.not_found(key)
            } else {
                io_err(format!("cannot read {}", path.display()), e)
            }
        })
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        // Walk the deepest folder the prefix names, then filter by the rest of it.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let dir = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path_of(dir_part)?
        };
        self.check_root()?;
        let mut keys = Vec::new();
        self.walk(&dir, dir_part, &mut keys)?;
        keys.retain(|k| k.starts_with(prefix) && start_after.is_none_or(|s| k.as_str() > s));
        keys.sort();
        Ok(keys)
    }

    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        let keys = self.list(prefix, None)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            // A key deleted since the walk is simply not there any more.
            match fs::metadata(self.path_of(&key)?) {
                Ok(m) => out.push((key, Some(m.len()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("cannot read the size of {key}"), e)),
            }
        }
        Ok(out)
    }

    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        let dir_part = prefix.trim_end_matches('/');
        let dir = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path_of(dir_part)?
        };
        self.check_root()?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("cannot list {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
                if !name.starts_with('.') {
                    out.push(format!("{prefix}{name}/"));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> BackendResult<()> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("cannot delete {}", path.display()), e)),
        }
    }

    fn describe(&self) -> String {
        Self::describe_path(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tests as conformance;

    #[test]
    fn conforms() {
        let dir = tempfile::tempdir().unwrap();
        conformance::check(
            &LocalStore::open(dir.path()).unwrap(),
            conformance::Sizes::Told,
        );
    }

    #[test]
    fn refuses_missing_and_non_folders() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LocalStore::open(&dir.path().join("nope")).is_err());
        let f = dir.path().join("file");
        fs::write(&f, b"x").unwrap();
        assert!(LocalStore::open(&f).is_err());
        let store = LocalStore::open(dir.path()).unwrap();
        assert!(store.get("../etc/passwd").is_err());
    }
}
