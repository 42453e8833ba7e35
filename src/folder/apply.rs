//! Making a plain folder show the namespace.
//!
//! Each file is written into `sync/staging/`, given its mode and mtime, and renamed into
//! place, so a pull killed half-way leaves whole old files or whole new ones, never
//! half of one. A path whose disk state no longer matches the index (changed since
//! the scan that started this pull) is left alone: the next push records it. Damaged
//! contents are reported and never written.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use sha2::{Digest, Sha256};

use super::scan::{disk_entry, local_record, DiskEntry};
use crate::model::{ContentHash, ContentRef, Entry, Tally};
use crate::sync::progress::Unit;
use crate::sync::{
    LocalFile, LocalKind, Progress, Shown, SyncError, SyncResult, Vault, STREAM_FROM,
};

#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    /// Files, folders and links written, and paths removed.
    pub changed: Tally,
    /// Conflict siblings the folder shows.
    pub conflicts: usize,
    /// One line per content that failed its checks.
    pub damaged: Vec<String>,
    /// One line per version refused by this pull (a link pointing outside the
    /// folder): recorded as refused, so later pulls pass it by.
    pub refused: Vec<String>,
}

fn lstat(path: &Path) -> io::Result<Option<DiskEntry>> {
    let seen = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    match fs::symlink_metadata(path) {
        Ok(m) => disk_entry(&m, path, seen),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The disk still holds what the index says (or nothing where it says nothing). When
/// the stat moved, the content decides.
fn untouched(full: &Path, disk: &Option<DiskEntry>, lf: Option<&LocalFile>) -> bool {
    match (disk, lf) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(d), Some(l)) if d.kind != l.kind => false,
        (Some(d), Some(l)) => match d.kind {
            // (A refusal is never on disk.)
            LocalKind::Dir | LocalKind::Symlink | LocalKind::Refused => true,
            LocalKind::File => {
                d.matches(l)
                    || (d.mode == l.mode
                        && l.sha256.is_some()
                        && fs::read(full)
                            .map(|b| Some(ContentHash(Sha256::digest(&b).into())) == l.sha256)
                            .unwrap_or(false))
            }
        },
    }
}

/// Modes from another device, kept within reason: never more than rwx bits, and
/// always writable and readable by the owner, so a later pull can update what it wrote.
fn file_mode(mode: u32) -> u32 {
    (mode & 0o777) | 0o600
}

fn dir_mode(mode: u32) -> u32 {
    (mode & 0o777) | 0o700
}

/// A damaged content is reported by the pull that meets it, then passed by: where
/// the folder had nothing, the path is recorded as refused (listed by `status`) until
/// a newer version comes. Where it holds an older file, that file stays and the
/// damage is reported again by each pull, as the record must keep describing it.
fn refuse_damaged(w: &Wanted<'_>, updates: &mut Vec<(String, Option<LocalFile>)>) {
    if w.disk_before.is_none() {
        updates.push((w.path.clone(), Some(refusal(w.shown))));
    }
}

/// What the index keeps of a version this device refused to write.
fn refusal(shown: &Shown) -> LocalFile {
    LocalFile {
        kind: LocalKind::Refused,
        size: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        ino: 0,
        mode: 0,
        sha256: None,
        showing: Some(shown.showing()),
    }
}

/// Same entry as when it was looked at (or still absent).
fn same_stat(a: &Option<DiskEntry>, b: &Option<DiskEntry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            x.kind == y.kind
                && x.size == y.size
                && x.mtime_ns == y.mtime_ns
                && x.ctime_ns == y.ctime_ns
                && x.ino == y.ino
        }
        _ => false,
    }
}

fn kind_of(e: &Entry) -> Option<LocalKind> {
    match e {
        Entry::File { .. } => Some(LocalKind::File),
        Entry::Dir { .. } => Some(LocalKind::Dir),
        Entry::Symlink { .. } => Some(LocalKind::Symlink),
        Entry::Deleted => None,
    }
}

fn depth(p: &str) -> usize {
    p.matches('/').count()
}

/// What became of one file to write.
enum Written {
    Done(u64, LocalFile),
    /// Read again to restore originals, and found holding none: the disk already
    /// had it right; only the record may change.
    Unchanged(u64, LocalFile),
    /// Changed by someone else meanwhile, or gone: left alone.
    Skipped(u64),
    Damaged(String),
    Failed(SyncError),
}

/// A file to fetch and write.
struct Wanted<'n> {
    path: String,
    shown: &'n Shown,
    content: ContentRef,
    mode: u32,
    /// What was at the path when the write was planned.
    disk_before: Option<DiskEntry>,
    /// Wanted only to restore originals into the view the disk already holds.
    view_on_disk: bool,
}

/// Removes what a killed pull left in the staging folder (plaintext, so it must go).
fn clean_staging(staging: &Path) {
    if let Ok(entries) = fs::read_dir(staging) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("pull-") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Writes `data` at `dest` through a staging file and a rename.
fn write_whole(
    staging: &Path,
    dest: &Path,
    data: &[u8],
    mode: u32,
    mtime_ns: i64,
) -> io::Result<()> {
    write_with(staging, dest, mode, mtime_ns, |f| f.write_all(data))
}

/// Writes what `fill` puts in a staging file at `dest`, with a rename.
fn write_with(
    staging: &Path,
    dest: &Path,
    mode: u32,
    mtime_ns: i64,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = staging.join(format!("pull-{:016x}", rand::random::<u64>()));
    let t = FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.set_permissions(fs::Permissions::from_mode(file_mode(mode)))?;
        filetime::set_file_handle_times(&f, None, Some(t))?;
        drop(f);
        let renamed = match fs::rename(&tmp, dest) {
            // The folder is created on demand: most files land in one that exists.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && dest.parent().is_some_and(|p| !p.exists()) =>
            {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::rename(&tmp, dest)
            }
            other => other,
        };
        match renamed {
            // The folder may live on another filesystem than the home.
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let beside =
                    dest.with_file_name(format!(".ghostie-pull-{:016x}", rand::random::<u64>()));
                fs::copy(&tmp, &beside)?;
                filetime::set_file_mtime(&beside, t)?;
                fs::remove_file(&tmp)?;
                fs::rename(&beside, dest)
            }
            other => other,
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn set_mtime(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let t = FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, t, t)
}

/// Brings the folder at `root` to the namespace.
pub fn apply(vault: &Vault, root: &Path, progress: &dyn Progress) -> SyncResult<ApplyReport> {
    let ns = vault.namespace()?;
    let mut report = ApplyReport {
        conflicts: ns.values().filter(|s| s.sibling_of.is_some()).count(),
        ..ApplyReport::default()
    };
    let local = vault.local_files()?;
    let staging = vault.home().staging_dir();
    crate::config::create_private_dir(&staging)?;
    clean_staging(&staging);
    let mut updates: Vec<(String, Option<LocalFile>)> = Vec::new();

    // Removals, deepest first so folders are empty when their turn comes.
    let mut removals: Vec<&String> = local
        .iter()
        .filter(|(p, l)| match ns.get(*p) {
            None => true,
            // A refusal stands until a newer version replaces it (below).
            Some(_) if l.kind == LocalKind::Refused => false,
            Some(s) => kind_of(&s.version.entry) != Some(l.kind),
        })
        .map(|(p, _)| p)
        .collect();
    removals.sort_by(|a, b| depth(b).cmp(&depth(a)).then(b.cmp(a)));
    for path in removals {
        let full = root.join(path);
        let disk = lstat(&full).map_err(SyncError::io(&full))?;
        if !untouched(&full, &disk, local.get(path)) {
            continue;
        }
        let res = match &disk {
            None => Ok(()),
            Some(d) if d.kind == LocalKind::Dir => fs::remove_dir(&full),
            Some(_) => fs::remove_file(&full),
        };
        match res {
            Ok(()) => {
                report.changed.removed += usize::from(disk.is_some());
                updates.push((path.clone(), None));
            }
            // A folder that still holds files nobody recorded stays.
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {}
            Err(e) => return Err(SyncError::io(full)(e)),
        }
    }

    // Removals are recorded before the slow part: a pull killed during the download
    // must not leave a removed conflict sibling looking like the owner deleted it.
    vault.update_local(&updates)?;
    updates.clear();

    // A device that just received the sensitive key shows the originals of files
    // it had written as their views (their bytes on disk are the vault's).
    let recheck = vault.restore_recheck_due()?;
    let holds_view = |lf: Option<&LocalFile>, entry: &Entry| match (lf, entry) {
        (Some(l), Entry::File { content, .. }) => {
            recheck && l.kind == LocalKind::File && l.sha256 == Some(content.sha256)
        }
        _ => false,
    };

    // Writes: folders and links now, file contents after fetching.
    let mut wanted: Vec<Wanted<'_>> = Vec::new();
    for (path, shown) in &ns {
        let lf = local.get(path);
        let same_version = lf.is_some_and(|l| {
            l.showing.as_ref().is_some_and(|s| {
                s.id() == (&shown.version.device, shown.version.counter())
                    && s.sibling_of() == shown.sibling_of.as_deref()
            })
        });
        if same_version && !holds_view(lf, &shown.version.entry) {
            continue;
        }
        let full = root.join(path);
        let disk = lstat(&full).map_err(SyncError::io(&full))?;
        match &shown.version.entry {
            Entry::Dir { mode } => {
                if disk.as_ref().is_some_and(|d| d.kind != LocalKind::Dir)
                    && !untouched(&full, &disk, lf)
                {
                    continue;
                }
                if disk.as_ref().is_some_and(|d| d.kind != LocalKind::Dir) {
                    fs::remove_file(&full).map_err(SyncError::io(&full))?;
                }
                fs::create_dir_all(&full).map_err(SyncError::io(&full))?;
                fs::set_permissions(&full, fs::Permissions::from_mode(dir_mode(*mode)))
                    .map_err(SyncError::io(&full))?;
                let d = lstat(&full).map_err(SyncError::io(&full))?;
                if let Some(d) = d {
                    updates.push((
                        path.clone(),
                        Some(local_record(&d, None, Some(shown.showing().standing(None)))),
                    ));
                }
                report.changed.folders += 1;
            }
            Entry::Symlink { target } => {
                if !untouched(&full, &disk, lf) {
                    continue;
                }
                if !crate::model::link_stays_inside(path, target) {
                    tracing::warn!("not writing the link {path}: it points outside the folder");
                    report.refused.push(format!(
                        "{path}: a link pointing outside the folder ({target})"
                    ));
                    updates.push((path.clone(), Some(refusal(shown))));
                    continue;
                }
                if let Some(parent) = full.parent() {
                    fs::create_dir_all(parent).map_err(SyncError::io(parent))?;
                }
                if disk.is_some() {
                    fs::remove_file(&full).map_err(SyncError::io(&full))?;
                }
                std::os::unix::fs::symlink(target, &full).map_err(SyncError::io(&full))?;
                let _ = set_mtime(&full, shown.version.mtime_ns);
                if let Some(d) = lstat(&full).map_err(SyncError::io(&full))? {
                    updates.push((
                        path.clone(),
                        Some(local_record(&d, None, Some(shown.showing()))),
                    ));
                }
                report.changed.links += 1;
            }
            Entry::File { content, mode } => {
                if !untouched(&full, &disk, lf) {
                    continue;
                }
                // Same bytes already there (e.g. both devices made the same edit):
                // only the record changes.
                if let (Some(d), Some(l)) = (&disk, lf) {
                    if l.kind == LocalKind::File
                        && l.sha256 == Some(content.sha256)
                        && l.mode == *mode
                        && !holds_view(lf, &shown.version.entry)
                    {
                        updates.push((
                            path.clone(),
                            Some(local_record(d, l.sha256, Some(shown.showing()))),
                        ));
                        continue;
                    }
                }
                let view_on_disk = holds_view(lf, &shown.version.entry);
                wanted.push(Wanted {
                    path: path.clone(),
                    shown,
                    content: content.clone(),
                    mode: *mode,
                    disk_before: disk,
                    view_on_disk,
                });
            }
            Entry::Deleted => {}
        }
    }

    // Small files in batches of ranged reads; large ones a window at a time after.
    let (batch, large): (Vec<usize>, Vec<usize>) =
        (0..wanted.len()).partition(|&i| wanted[i].content.size <= STREAM_FROM);
    let refs: Vec<ContentRef> = batch.iter().map(|&i| wanted[i].content.clone()).collect();
    let total: u64 = wanted.iter().map(|w| w.content.size).sum();
    progress.start("Downloading", total, Unit::Bytes);
    let mut failures: HashMap<usize, String> = HashMap::new();
    let mut written_updates = Vec::new();
    let mut updates_unchanged = Vec::new();
    let mut refusals = Vec::new();
    let mut first_error: Option<SyncError> = None;
    // Writing runs on the fetching threads, so both cores write files.
    let write = |i: usize, fetched: SyncResult<Vec<u8>>| -> Written {
        let w = &wanted[batch[i]];
        let view = match fetched {
            Ok(d) => d,
            Err(e @ SyncError::Backend(_)) => return Written::Failed(e),
            Err(e) => return Written::Damaged(e.to_string()),
        };
        // A trusted device writes the originals back where the view has tokens.
        let (data, restored) = match vault.restored_if(view) {
            Ok(d) => d,
            Err(e @ SyncError::Backend(_)) => return Written::Failed(e),
            Err(e) => return Written::Damaged(e.to_string()),
        };
        if w.view_on_disk && !restored {
            if let Some(d) = &w.disk_before {
                return Written::Unchanged(
                    data.len() as u64,
                    local_record(d, Some(w.content.sha256), Some(w.shown.showing())),
                );
            }
        }
        let written_sha = if restored {
            ContentHash(Sha256::digest(&data).into())
        } else {
            w.content.sha256
        };
        let full: PathBuf = root.join(&w.path);
        let bytes = data.len() as u64;
        // Written to while this pull was downloading: the owner's edit stays, and
        // the next push records it.
        match lstat(&full) {
            Ok(now) if same_stat(&w.disk_before, &now) => {}
            Ok(_) => return Written::Skipped(bytes),
            Err(e) => return Written::Failed(SyncError::io(full)(e)),
        }
        if let Err(e) = write_whole(&staging, &full, &data, w.mode, w.shown.version.mtime_ns) {
            return Written::Failed(SyncError::io(full)(e));
        }
        match lstat(&full) {
            Ok(Some(d)) => Written::Done(
                bytes,
                local_record(&d, Some(written_sha), Some(w.shown.showing())),
            ),
            Ok(None) => Written::Skipped(bytes),
            Err(e) => Written::Failed(SyncError::io(full)(e)),
        }
    };
    vault.fetch_and_process(&refs, &write, |i, outcome| {
        let i = batch[i];
        match outcome {
            Written::Done(bytes, record) => {
                written_updates.push((wanted[i].path.clone(), Some(record)));
                progress.advance(bytes);
                crate::failpoint("pull-mid-apply");
            }
            Written::Skipped(bytes) => progress.advance(bytes),
            Written::Unchanged(bytes, record) => {
                updates_unchanged.push((wanted[i].path.clone(), Some(record)));
                progress.advance(bytes);
            }
            Written::Damaged(why) => {
                tracing::error!("not writing {}: {why}", wanted[i].path);
                refuse_damaged(&wanted[i], &mut refusals);
                failures.insert(i, why);
            }
            Written::Failed(e) => {
                first_error.get_or_insert(e);
            }
        }
        Ok(())
    })?;
    for i in large {
        let w = &wanted[i];
        let full = root.join(&w.path);
        match lstat(&full) {
            Ok(now) if same_stat(&w.disk_before, &now) => {}
            Ok(_) => continue,
            Err(e) => return Err(SyncError::io(full)(e)),
        }
        let mut fetch_error = None;
        let written = write_with(&staging, &full, w.mode, w.shown.version.mtime_ns, |f| {
            let mut out = io::BufWriter::with_capacity(1 << 20, f);
            match vault.stream_content(&w.content, &mut out) {
                Ok(()) => out.flush(),
                Err(e) => {
                    fetch_error = Some(e);
                    Err(io::Error::other("the fetch failed"))
                }
            }
        });
        match (fetch_error, written) {
            (Some(e @ SyncError::Backend(_)), _) => return Err(e),
            (Some(e), _) => {
                tracing::error!("not writing {}: {e}", w.path);
                refuse_damaged(w, &mut refusals);
                failures.insert(i, e.to_string());
            }
            (None, Err(e)) => return Err(SyncError::io(full)(e)),
            (None, Ok(())) => {
                if let Some(d) = lstat(&full).map_err(SyncError::io(&full))? {
                    written_updates.push((
                        w.path.clone(),
                        Some(local_record(
                            &d,
                            Some(w.content.sha256),
                            Some(w.shown.showing()),
                        )),
                    ));
                }
                progress.advance(w.content.size);
            }
        }
    }
    progress.finish();
    if recheck && first_error.is_none() {
        vault.note_restore_checked()?;
    }
    report.changed.files += written_updates.len();
    updates.extend(written_updates);
    updates.extend(updates_unchanged);
    updates.extend(refusals);
    vault.update_local(&updates)?;
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut damaged: Vec<String> = std::mem::take(&mut report.damaged);
    damaged.extend(
        failures
            .into_iter()
            .map(|(i, why)| format!("{}: {why}", wanted[i].path)),
    );
    damaged.sort();
    report.damaged = damaged;
    Ok(report)
}
