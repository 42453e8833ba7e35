//! Front-end 1, folder sync: the sync protocol over a plain folder, for places with no
//! FUSE (Android/Termux, containers) and for cron jobs. `push` records local changes
//! and publishes them; `pull` records local changes first (so a concurrent remote edit
//! becomes a conflict, never an overwrite), applies what other devices published, and
//! makes the folder show the namespace; `sync` is pull then push.

pub mod apply;
pub mod scan;

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::model::{Entry, Tally};
use crate::sync::{Keep, LocalKind, Progress, SyncError, SyncResult, Vault};

pub use apply::ApplyReport;
pub use scan::ScanReport;

#[derive(Debug, Default, Clone)]
pub struct PushReport {
    pub scan: ScanReport,
    /// Versions published (changed, new and deleted memories).
    pub uploaded: usize,
    /// The same, by kind.
    pub changed: Tally,
    pub bytes: u64,
    pub packs: usize,
    /// Paths whose last change was lost before upload (see `sync::Retake`).
    pub lost: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct PullReport {
    pub recorded: usize,
    /// Files written or removed in the folder.
    pub downloaded: usize,
    /// The same, by kind.
    pub changed: Tally,
    pub conflicts: usize,
    /// One line per damaged content or log.
    pub damaged: Vec<String>,
    /// One line per version this pull refused to write (see [`refused`]).
    pub refused: Vec<String>,
    /// Damage an earlier pull already reported and that is still there.
    pub known_damage: Vec<String>,
    /// Why this device could not tell the others how far it has read (the pull
    /// itself succeeded; the others wait to reclaim space until it can).
    pub unacknowledged: Option<String>,
}

/// The plain folder of a home. A file in its place is refused. A missing folder is
/// created, and the record of what it held is forgotten first: a folder that is gone
/// (moved, on an unmounted disk) means "no local copy", never "delete everything".
pub fn folder_of(vault: &Vault) -> SyncResult<PathBuf> {
    let root = vault.home().memories();
    match fs::metadata(&root) {
        Ok(m) if m.is_dir() => Ok(root),
        Ok(_) => Err(SyncError::Invalid(format!(
            "{} is a file, but it must be the memories folder",
            root.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if vault.forget_local_files()? > 0 {
                tracing::warn!(
                    "the memories folder {} was missing; it is recreated and filled from the vault",
                    root.display()
                );
            }
            fs::create_dir_all(&root).map_err(SyncError::io(&root))?;
            Ok(root)
        }
        Err(e) => Err(SyncError::io(root)(e)),
    }
}

/// The folder is where a file's bytes can be read again when their queued copy was
/// damaged by a crash (`sync::Retake`).
struct FolderRetake {
    root: PathBuf,
}

impl crate::sync::Retake for FolderRetake {
    fn retake(&self, path: &str) -> Option<Box<dyn io::Read + '_>> {
        let full = self.root.join(path);
        let meta = fs::symlink_metadata(&full).ok()?;
        if !meta.is_file() {
            return None;
        }
        Some(Box::new(fs::File::open(full).ok()?))
    }
}

fn folder_with_retake(vault: &Vault) -> SyncResult<PathBuf> {
    let root = folder_of(vault)?;
    vault.retake_from(std::sync::Arc::new(FolderRetake { root: root.clone() }));
    Ok(root)
}

pub fn push(vault: &Vault, progress: &dyn Progress) -> SyncResult<PushReport> {
    let root = folder_with_retake(vault)?;
    let scan = scan::scan_and_record(vault, &root, false)?;
    let published = vault.publish(progress)?;
    if published.versions > 0 || scan.versions > 0 {
        vault.touch_last_sync()?;
    }
    Ok(PushReport {
        scan,
        uploaded: published.versions,
        changed: published.changed,
        bytes: published.bytes,
        packs: published.packs,
        lost: published.lost,
    })
}

pub fn pull(vault: &Vault, progress: &dyn Progress) -> SyncResult<PullReport> {
    pull_and(vault, progress, true)
}

/// A pull that leaves telling the others how far this device read to what comes
/// next (a `sync` pushes next, and its segment says so).
pub fn pull_before_push(vault: &Vault, progress: &dyn Progress) -> SyncResult<PullReport> {
    pull_and(vault, progress, false)
}

fn pull_and(vault: &Vault, progress: &dyn Progress, acknowledge: bool) -> SyncResult<PullReport> {
    vault.begin_unlock();
    let root = folder_of(vault)?;
    let scan = scan::scan_and_record(vault, &root, false)?;
    let polled = vault.poll(progress)?;
    let applied = apply::apply(vault, &root, progress)?;
    vault.touch_last_sync()?;
    // A device that only reads must still say how far it read, or the others can
    // never reclaim space; one that has changes says so when it pushes them.
    let unacknowledged = if acknowledge {
        vault.acknowledge().err().map(|e| e.to_string())
    } else {
        None
    };
    record_conflicts(vault, applied.conflicts)?;
    let mut damaged = polled.problems;
    damaged.extend(applied.damaged);
    Ok(PullReport {
        recorded: scan.versions,
        downloaded: applied.changed.total(),
        changed: applied.changed,
        conflicts: applied.conflicts,
        damaged,
        refused: applied.refused,
        known_damage: polled.known_problems,
        unacknowledged,
    })
}

/// What this device refuses to write, by path, with why: versions other devices
/// published that stay out of this folder until a newer one replaces them.
pub fn refused(vault: &Vault) -> SyncResult<Vec<String>> {
    let local = vault.local_files()?;
    let mut paths: Vec<&String> = local
        .iter()
        .filter(|(_, l)| l.kind == LocalKind::Refused)
        .map(|(p, _)| p)
        .collect();
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    paths.sort();
    let ns = vault.namespace()?;
    Ok(paths
        .into_iter()
        .map(|p| match ns.get(p).map(|s| &s.version.entry) {
            Some(Entry::Symlink { target }) => {
                format!("{p}: a link pointing outside the folder ({target})")
            }
            Some(Entry::File { .. }) => format!("{p}: its content in the vault is damaged"),
            _ => format!("{p}: refused"),
        })
        .collect())
}

/// Keeps `sync/conflicts/current.json` in step with the folder: the conflicts seen at
/// the last sync, for tools that do not want to scan for `.conflict-` files.
fn record_conflicts(vault: &Vault, count: usize) -> SyncResult<()> {
    let path = vault.home().conflicts_dir().join("current.json");
    if count == 0 && !path.exists() {
        return Ok(());
    }
    let list = vault.conflicts()?;
    let mut bytes = serde_json::to_vec_pretty(&serde_json::json!({
        "recorded_at": format_time(crate::now_ms()),
        "conflicts": list,
    }))
    .map_err(|e| SyncError::Invalid(e.to_string()))?;
    bytes.push(b'\n');
    crate::config::create_private_dir(&vault.home().conflicts_dir())?;
    crate::config::write_atomic(&path, &bytes, 0o600)?;
    Ok(())
}

/// Resolves the conflict at `path`, updates the folder and publishes the resolution.
pub fn resolve(
    vault: &Vault,
    path: &str,
    keep: &Keep,
    progress: &dyn Progress,
) -> SyncResult<PushReport> {
    let root = folder_with_retake(vault)?;
    scan::scan_and_record(vault, &root, false)?;
    vault.resolve_conflict(path, keep, &|p| root.join(p).exists())?;
    let applied = apply::apply(vault, &root, progress)?;
    record_conflicts(vault, applied.conflicts)?;
    let published = vault.publish(progress)?;
    vault.touch_last_sync()?;
    Ok(PushReport {
        scan: ScanReport::default(),
        uploaded: published.versions,
        changed: published.changed,
        bytes: published.bytes,
        packs: published.packs,
        lost: published.lost,
    })
}

/// Mounting over a folder that holds files imports them first: every file becomes a
/// version (sealed and queued), then leaves the folder, so the mount hides nothing.
/// The record of the plain folder is forgotten either way: from now on the folder is
/// a mount point. Returns the number of files moved into the vault.
pub fn import_for_mount(vault: &Vault, root: &std::path::Path) -> SyncResult<usize> {
    let before = scan::walk(root)?;
    if before.is_empty() {
        vault.forget_local_files()?;
        return Ok(0);
    }
    scan::scan_and_record(vault, root, false)?;
    let mut removed = 0;
    let mut dirs: Vec<&String> = Vec::new();
    for (path, d) in &before {
        let full = root.join(path);
        let Ok(now) = fs::symlink_metadata(&full) else {
            continue;
        };
        if d.kind == LocalKind::Dir {
            dirs.push(path);
            continue;
        }
        use std::os::unix::fs::MetadataExt;
        if now.len() != d.size || now.ino() != d.ino || scan::mtime_ns(&now) != d.mtime_ns {
            return Err(SyncError::Invalid(format!(
                "{} changed while it was being imported; mount again",
                full.display()
            )));
        }
        fs::remove_file(&full).map_err(|e| {
            SyncError::Invalid(format!(
                "cannot move {} into the mount: {e}",
                full.display()
            ))
        })?;
        removed += 1;
    }
    dirs.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for d in dirs {
        let _ = fs::remove_dir(root.join(d));
    }
    vault.forget_local_files()?;
    Ok(removed)
}

/// What `status` shows. Read from the index and the folder alone: no passphrase, no
/// network.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub backend: String,
    pub device_id: String,
    pub device_name: String,
    pub last_sync: Option<String>,
    pub local_count: usize,
    pub cloud_count: usize,
    pub conflict_count: usize,
    pub pending: usize,
    pub known_devices: Vec<String>,
    /// Whether the backend answered a listing just now.
    pub backend_reachable: bool,
    /// Why it did not, in a sentence.
    pub backend_problem: Option<String>,
    /// What this device refused to write (see [`refused`]).
    pub refused: Vec<String>,
    /// Files whose last change was lost before upload (a crash damaged its queued
    /// copy and the folder no longer held the same bytes).
    pub lost: Vec<String>,
    /// One sentence per device whose log the last pull could not take whole (damaged,
    /// rolled back, or its newest segments hidden), naming the device.
    pub damaged_logs: Vec<String>,
    /// Why the vault's keyring cannot be trusted now (served older than this
    /// device's copy), in a sentence.
    pub keyring_problem: Option<String>,
}

pub fn status(vault: &Vault) -> SyncResult<Status> {
    let root = folder_of(vault)?;
    let disk = scan::walk(&root)?;
    let local = vault.local_files()?;
    let local_count = disk
        .iter()
        .filter(|(p, d)| {
            d.kind != LocalKind::Dir && local.get(*p).is_none_or(|l| l.sibling_of().is_none())
        })
        .count();
    let ns = vault.namespace()?;
    let cloud_count = ns
        .values()
        .filter(|s| s.sibling_of.is_none() && !matches!(s.version.entry, Entry::Dir { .. }))
        .count();
    let conflict_count = ns.values().filter(|s| s.sibling_of.is_some()).count();
    let dry = scan::scan_and_record(vault, &root, true)?;
    let pending = dry.versions + vault.unpublished_count()? as usize;
    let mut known: Vec<String> = vault.device_names()?.into_values().collect();
    known.sort();
    let config = vault.config();
    let (backend_problem, keyring_problem) = vault.backend_and_keyring_problems();
    Ok(Status {
        backend: format!("{} ({})", config.backend.kind(), describe_backend(vault)),
        device_id: vault.device().to_string(),
        device_name: config.device_name.clone(),
        last_sync: vault.last_sync_ms()?.map(format_time),
        local_count,
        cloud_count,
        conflict_count,
        pending,
        known_devices: known,
        backend_reachable: backend_problem.is_none(),
        backend_problem,
        refused: refused(vault)?,
        lost: vault.lost_files()?,
        damaged_logs: vault
            .devices()?
            .into_iter()
            .filter_map(|d| d.problem)
            .collect(),
        keyring_problem,
    })
}

fn describe_backend(vault: &Vault) -> String {
    vault.describe_backend()
}

/// An RFC 3339 UTC time, without pulling in a date crate for one format.
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_751_121_000_000), "2025-06-28T14:30:00Z");
    }
}
