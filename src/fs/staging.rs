//! The bytes of a file open for writing. Small files stay in memory (a memory is a
//! few KiB, and a file created, written and closed then costs no disk I/O here);
//! past `SPILL_AT` they move to a private file in `sync/staging/`, removed when the
//! last handle closes. Nothing else holds plaintext outside the mount.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Files larger than this are staged on disk.
const SPILL_AT: u64 = 1024 * 1024;

#[derive(Debug)]
pub(super) enum StagedBytes {
    Memory(Vec<u8>),
    Disk { file: File, path: PathBuf },
}

impl Default for StagedBytes {
    fn default() -> Self {
        StagedBytes::Memory(Vec::new())
    }
}

fn create_private(dir: &Path) -> io::Result<(File, PathBuf)> {
    loop {
        let path = dir.join(format!(
            "{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

impl StagedBytes {
    /// Moves the bytes to disk once they would pass `SPILL_AT`.
    fn spill_if(&mut self, new_len: u64, dir: &Path) -> io::Result<()> {
        if let StagedBytes::Memory(data) = self {
            if new_len > SPILL_AT {
                let (file, path) = create_private(dir)?;
                if let Err(e) = file.write_all_at(data, 0) {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
                *self = StagedBytes::Disk { file, path };
            }
        }
        Ok(())
    }

    pub fn write_at(&mut self, buf: &[u8], offset: u64, dir: &Path) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        self.spill_if(end, dir)?;
        match self {
            StagedBytes::Memory(data) => {
                let (start, end) = (offset as usize, end as usize);
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[start..end].copy_from_slice(buf);
                Ok(())
            }
            StagedBytes::Disk { file, .. } => file.write_all_at(buf, offset),
        }
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            StagedBytes::Memory(data) => {
                let start = (offset as usize).min(data.len());
                let n = buf.len().min(data.len() - start);
                buf[..n].copy_from_slice(&data[start..start + n]);
                Ok(n)
            }
            StagedBytes::Disk { file, .. } => file.read_at(buf, offset),
        }
    }

    pub fn set_len(&mut self, len: u64, dir: &Path) -> io::Result<()> {
        self.spill_if(len, dir)?;
        match self {
            StagedBytes::Memory(data) => {
                data.resize(len as usize, 0);
                Ok(())
            }
            StagedBytes::Disk { file, .. } => file.set_len(len),
        }
    }

    /// The first `len` bytes, to seal.
    pub fn reader(&mut self, len: u64) -> io::Result<Box<dyn Read + '_>> {
        match self {
            StagedBytes::Memory(data) => {
                let n = (len as usize).min(data.len());
                Ok(Box::new(&data[..n]))
            }
            StagedBytes::Disk { file, .. } => {
                file.seek(SeekFrom::Start(0))?;
                Ok(Box::new((&*file).take(len)))
            }
        }
    }
}

impl Drop for StagedBytes {
    fn drop(&mut self) {
        if let StagedBytes::Disk { path, .. } = self {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_to_a_private_file_past_the_limit_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StagedBytes::default();
        s.write_at(b"hello", 0, dir.path()).unwrap();
        s.write_at(b"J", 0, dir.path()).unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(s.read_at(&mut buf, 0).unwrap(), 5);
        assert_eq!(&buf, b"Jello");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "small: memory only"
        );
        s.write_at(b"!", SPILL_AT + 10, dir.path()).unwrap();
        let staged: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(staged.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = staged[0]
            .as_ref()
            .unwrap()
            .metadata()
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut all = Vec::new();
        s.reader(SPILL_AT + 11)
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(&all[..5], b"Jello");
        assert_eq!(all.len() as u64, SPILL_AT + 11);
        drop(s);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "removed on drop"
        );
    }
}
