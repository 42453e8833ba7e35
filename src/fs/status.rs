//! Files the running mount keeps in `sync/` so other commands can see it without
//! opening the vault (which the mount holds): `mount.json` marks a mount home (DESIGN
//! §7), `mount-status.json` is the running mount's state, rewritten as it changes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{write_atomic, Home};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountHome {
    pub format: u32,
    /// Where this home was last mounted.
    pub mountpoint: PathBuf,
}

impl MountHome {
    fn path(home: &Home) -> PathBuf {
        home.sync_dir().join("mount.json")
    }

    pub fn read(home: &Home) -> Option<Self> {
        let bytes = std::fs::read(Self::path(home)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn mark(home: &Home, mountpoint: &Path) -> std::io::Result<()> {
        let me = Self {
            format: 1,
            mountpoint: mountpoint.to_path_buf(),
        };
        let bytes = serde_json::to_vec_pretty(&me).map_err(std::io::Error::other)?;
        write_atomic(&Self::path(home), &bytes, 0o600).map_err(std::io::Error::other)
    }

    pub fn clear(home: &Home) -> std::io::Result<()> {
        match std::fs::remove_file(Self::path(home)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountStatus {
    pub pid: u32,
    pub mountpoint: PathBuf,
    pub started_ms: i64,
    pub updated_ms: i64,
    /// Versions recorded here and not yet published.
    pub pending_uploads: u64,
    /// Bytes of sealed packs waiting for upload.
    pub pending_bytes: u64,
    /// Files open for writing with changes not recorded yet.
    pub open_dirty: u64,
    pub cache_used: u64,
    pub cache_limit: u64,
    pub last_poll_ms: Option<i64>,
    /// How often the mount looks for other devices' changes.
    #[serde(default)]
    pub poll_ms: u64,
    /// Polls that reached the backend since the mount started.
    #[serde(default)]
    pub polls: u64,
    pub last_publish_ms: Option<i64>,
    pub last_error: Option<String>,
    pub backend_reachable: bool,
    /// Files whose last change was lost before upload (a crash damaged its queued
    /// copy): named until the home is set up again.
    #[serde(default)]
    pub lost: Vec<String>,
    /// One sentence per device whose log the last poll could not take whole
    /// (damaged, rolled back, or its newest segments hidden).
    #[serde(default)]
    pub damaged_logs: Vec<String>,
    /// Fifos and sockets in the mount: they exist on this device only and are
    /// never uploaded.
    #[serde(default)]
    pub local_only: Vec<String>,
    /// A provider's request budget as the mount last saw it (Gist), and until when
    /// its rate limit holds the mount back.
    #[serde(default)]
    pub provider: Option<crate::sync::ProviderStatus>,
}

impl MountStatus {
    pub fn path(home: &Home) -> PathBuf {
        home.sync_dir().join("mount-status.json")
    }

    /// The status of the mount running on this home, if one runs.
    pub fn running(home: &Home) -> Option<Self> {
        let bytes = std::fs::read(Self::path(home)).ok()?;
        let s: Self = serde_json::from_slice(&bytes).ok()?;
        s.is_alive().then_some(s)
    }

    pub fn is_alive(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        let exists = unsafe { libc::kill(self.pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        exists
            && std::fs::read(format!("/proc/{}/cmdline", self.pid))
                .map(|c| String::from_utf8_lossy(&c).contains("ghostie"))
                .unwrap_or(true)
    }

    /// Rewritten often and only informative: replaced atomically, never synced.
    pub fn write(&self, home: &Home) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let path = Self::path(home);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn remove(home: &Home) {
        let _ = std::fs::remove_file(Self::path(home));
    }
}

/// Is `path` a mount point right now (in this process's view)?
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path).or_else(|_| Ok::<_, ()>(path.to_path_buf())) else {
        return false;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    mounts.lines().any(|l| {
        l.split(' ')
            .nth(1)
            .map(unescape_mount_path)
            .is_some_and(|mp| Path::new(&mp) == canon || Path::new(&mp) == path)
    })
}

/// Whether /proc/self/mounts lists `mountpoint` as a ghostie-fs mount.
pub fn is_ghostie_mount(mountpoint: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    // /proc lists the real path; the dead mount point itself cannot be resolved
    // (it answers nothing), its parent can.
    let real = match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| mountpoint.to_path_buf()),
        _ => mountpoint.to_path_buf(),
    };
    // A live one resolves whole (its last part may be a symbolic link).
    let resolved = std::fs::canonicalize(mountpoint).ok();
    mounts.lines().any(|l| {
        let mut fields = l.split(' ');
        let (Some(source), Some(at), Some(kind)) = (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        // Mounted through fusermount the type is fuse.ghostie-fs; mounted by root
        // directly it is plain fuse, with our name as the source.
        let ours = kind == "fuse.ghostie-fs" || (kind == "fuse" && source == "ghostie-fs");
        let listed = PathBuf::from(unescape_mount_path(at));
        ours && (listed == real || listed == mountpoint || Some(&listed) == resolved.as_ref())
    })
}

/// /proc/self/mounts writes a space, tab, newline and backslash in a path as octal
/// escapes (`\040`, `\011`, `\012`, `\134`).
fn unescape_mount_path(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
