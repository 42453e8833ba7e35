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

use crate::model::{DeviceId, Entry};
use crate::sync::{namespace, LocalChange, NewVersion, Progress, SyncError, SyncResult, Vault};

pub use apply::ApplyReport;
pub use scan::ScanReport;

#[derive(Debug, Default, Clone)]
pub struct PushReport {
    pub scan: ScanReport,
    /// Versions published (changed, new and deleted memories).
    pub uploaded: usize,
    pub bytes: u64,
    pub packs: usize,
}

#[derive(Debug, Default, Clone)]
pub struct PullReport {
    pub recorded: usize,
    /// Files written or removed in the folder.
    pub downloaded: usize,
    pub conflicts: usize,
    /// One line per damaged content or log.
    pub damaged: Vec<String>,
}

/// The plain folder of a home. A file in its place is refused. A missing folder is
/// created, and the record of what it held is forgotten first: a folder that is gone
/// (moved, on an unmounted disk) means "no local copy", never "delete everything".
pub fn folder_of(vault: &mut Vault) -> SyncResult<PathBuf> {
    let root = vault.home().memories();
    match fs::metadata(&root) {
        Ok(m) if m.is_dir() => Ok(root),
        Ok(_) => Err(SyncError::Invalid(format!(
            "{} is a file, but it must be the memories folder",
            root.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let recorded: Vec<(String, Option<crate::store::LocalFile>)> = vault
                .index()
                .local_files()?
                .into_keys()
                .map(|p| (p, None))
                .collect();
            if !recorded.is_empty() {
                tracing::warn!(
                    "the memories folder {} was missing; it is recreated and filled from the vault",
                    root.display()
                );
                vault.update_local(&recorded)?;
            }
            fs::create_dir_all(&root).map_err(SyncError::io(&root))?;
            Ok(root)
        }
        Err(e) => Err(SyncError::io(root)(e)),
    }
}

pub fn push(vault: &mut Vault, progress: &dyn Progress) -> SyncResult<PushReport> {
    let root = folder_of(vault)?;
    let scan = scan::scan_and_record(vault, &root, false)?;
    let published = vault.publish(progress)?;
    if published.versions > 0 || scan.versions > 0 {
        vault.touch_last_sync()?;
    }
    Ok(PushReport {
        scan,
        uploaded: published.versions,
        bytes: published.bytes,
        packs: published.packs,
    })
}

pub fn pull(vault: &mut Vault, progress: &dyn Progress) -> SyncResult<PullReport> {
    vault.begin_unlock();
    let root = folder_of(vault)?;
    let scan = scan::scan_and_record(vault, &root, false)?;
    let polled = vault.poll(progress)?;
    let applied = apply::apply(vault, &root, progress)?;
    vault.touch_last_sync()?;
    record_conflicts(vault, applied.conflicts)?;
    let mut damaged = polled.problems;
    damaged.extend(applied.damaged);
    Ok(PullReport {
        recorded: scan.versions,
        downloaded: applied.written + applied.removed,
        conflicts: applied.conflicts,
        damaged,
    })
}

/// One path in conflict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Conflict {
    pub path: String,
    /// The device whose version is shown at the path.
    pub shown_device: String,
    pub siblings: Vec<ConflictSibling>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConflictSibling {
    pub path: String,
    pub device: String,
}

pub fn conflicts(vault: &Vault) -> SyncResult<Vec<Conflict>> {
    let ns = vault.namespace()?;
    let names = vault.device_names()?;
    let name = |d: &DeviceId| {
        names
            .get(d)
            .cloned()
            .unwrap_or_else(|| d.as_str()[..8].to_owned())
    };
    let mut out: Vec<Conflict> = Vec::new();
    for (path, shown) in &ns {
        let Some(main) = &shown.sibling_of else {
            continue;
        };
        let sib = ConflictSibling {
            path: path.clone(),
            device: name(&shown.version.device),
        };
        match out.iter_mut().find(|c| &c.path == main) {
            Some(c) => c.siblings.push(sib),
            None => out.push(Conflict {
                path: main.clone(),
                shown_device: ns
                    .get(main)
                    .map(|s| name(&s.version.device))
                    .unwrap_or_default(),
                siblings: vec![sib],
            }),
        }
    }
    Ok(out)
}

/// Keeps `sync/conflicts/current.json` in step with the folder: the conflicts seen at
/// the last sync, for tools that do not want to scan for `.conflict-` files.
fn record_conflicts(vault: &Vault, count: usize) -> SyncResult<()> {
    let path = vault.home().conflicts_dir().join("current.json");
    if count == 0 && !path.exists() {
        return Ok(());
    }
    let list = conflicts(vault)?;
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

/// Which side of a conflict to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    Device(String),
    /// Keep every version: the shown one at the path, each other as its own file.
    All,
}

/// `name.json` kept from device `d` becomes `name.d.json`, still a `.json` file.
pub fn kept_name(path: &str, device: &str) -> String {
    let (dir, file) = match path.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, path),
    };
    let renamed = match file.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{device}.{ext}"),
        _ => format!("{file}.{device}"),
    };
    match dir {
        Some(d) => format!("{d}/{renamed}"),
        None => renamed,
    }
}

/// Resolves the conflict at `path`, updates the folder and publishes the resolution.
pub fn resolve(
    vault: &mut Vault,
    path: &str,
    keep: &Keep,
    progress: &dyn Progress,
) -> SyncResult<PushReport> {
    let root = folder_of(vault)?;
    scan::scan_and_record(vault, &root, false)?;
    let heads = vault.heads()?;
    let names = vault.device_names()?;
    let path_heads = heads.get(path).cloned().unwrap_or_default();
    let Some((winner, losers)) = namespace::resolve(&path_heads) else {
        return Err(SyncError::Invalid(format!("{path} is not in conflict")));
    };
    if losers.is_empty() {
        return Err(SyncError::Invalid(format!("{path} is not in conflict")));
    }
    let mut base = crate::model::VersionVector::default();
    for h in &path_heads {
        base.merge(&h.vector);
    }
    let name_of = |d: &DeviceId| {
        names
            .get(d)
            .cloned()
            .unwrap_or_else(|| d.as_str()[..8].to_owned())
    };
    let mut versions = Vec::new();
    match keep {
        Keep::Device(wanted) => {
            let chosen = path_heads
                .iter()
                .find(|v| &name_of(&v.device) == wanted && !v.entry.is_deleted())
                .ok_or_else(|| {
                    let devices: Vec<String> = std::iter::once(winner).chain(losers.iter().copied()).map(|v| name_of(&v.device)).collect();
                    SyncError::Invalid(format!(
                        "no version of {path} from a device called '{wanted}' is in conflict (choose one of: {})",
                        devices.join(", ")
                    ))
                })?;
            versions.push(NewVersion {
                path: path.to_owned(),
                entry: chosen.entry.clone(),
                mtime_ns: chosen.mtime_ns,
                base,
                local: LocalChange::Keep,
            });
        }
        Keep::All => {
            let ns = vault.namespace()?;
            let root_for_names = root.clone();
            let taken = |p: &str| {
                heads
                    .get(p)
                    .is_some_and(|h| h.iter().any(|v| !v.entry.is_deleted()))
                    || ns.contains_key(p)
                    || root_for_names.join(p).exists()
            };
            for l in &losers {
                // Never over an earlier kept copy: x.pixel9.json, x.pixel9-2.json, …
                let mut target = kept_name(path, &name_of(&l.device));
                let mut n = 2;
                while taken(&target) {
                    target = kept_name(path, &format!("{}-{n}", name_of(&l.device)));
                    n += 1;
                }
                let mut tbase = crate::model::VersionVector::default();
                for h in heads.get(&target).into_iter().flatten() {
                    tbase.merge(&h.vector);
                }
                versions.push(NewVersion {
                    path: target,
                    entry: l.entry.clone(),
                    mtime_ns: l.mtime_ns,
                    base: tbase,
                    local: LocalChange::Keep,
                });
            }
            versions.push(NewVersion {
                path: path.to_owned(),
                entry: winner.entry.clone(),
                mtime_ns: winner.mtime_ns,
                base,
                local: LocalChange::Keep,
            });
        }
    }
    if versions.iter().any(|v| matches!(v.entry, Entry::Deleted)) {
        return Err(SyncError::Invalid(format!("{path} has no version to keep")));
    }
    vault.record(versions, &[], Vec::new())?;
    let applied = apply::apply(vault, &root, progress)?;
    record_conflicts(vault, applied.conflicts)?;
    let published = vault.publish(progress)?;
    vault.touch_last_sync()?;
    Ok(PushReport {
        scan: ScanReport::default(),
        uploaded: published.versions,
        bytes: published.bytes,
        packs: published.packs,
    })
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
}

pub fn status(vault: &mut Vault) -> SyncResult<Status> {
    let root = folder_of(vault)?;
    let disk = scan::walk(&root)?;
    let local = vault.index().local_files()?;
    let local_count = disk
        .iter()
        .filter(|(p, d)| {
            d.kind != crate::store::LocalKind::Dir
                && local.get(*p).is_none_or(|l| l.sibling_of.is_none())
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
    let backend_problem = vault.check_backend().err().map(|e| e.to_string());
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
    })
}

fn describe_backend(vault: &Vault) -> String {
    vault.store().describe()
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
    fn kept_names_stay_json() {
        assert_eq!(
            kept_name("2025-06-28.json", "pixel9"),
            "2025-06-28.pixel9.json"
        );
        assert_eq!(
            kept_name("notes/a.b.json", "laptop"),
            "notes/a.b.laptop.json"
        );
        assert_eq!(kept_name("README", "x"), "README.x");
        assert_eq!(kept_name(".hidden", "x"), ".hidden.x");
    }

    #[test]
    fn times_format() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_751_121_000_000), "2025-06-28T14:30:00Z");
    }
}
