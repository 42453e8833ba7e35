//! Turning a plain folder's changes into versions.
//!
//! The index remembers what the folder held after the last sync (`local_files`). A file
//! whose size, mtime and mode match that record is unchanged and is not read; anything
//! else is hashed. A changed file becomes a version whose vector merges every head of
//! its path (it was written on top of what the folder showed). A file that matches
//! what the namespace wants at its path (a pull killed after writing it and before
//! recording it) is adopted, not re-versioned. Deleting a conflict sibling drops that
//! device's version (DESIGN §6); renaming it onto the main file is a change of the main
//! file and so keeps it.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::model::{ContentHash, Entry, Showing};
use crate::sync::{
    After, Change, LocalChange, LocalFile, LocalKind, Seen, Shown, SyncError, SyncResult, Vault,
    RACY_CTIME,
};

/// Files up to this size are held in memory between hashing and sealing.
const IN_MEMORY_MAX: u64 = 8 * 1024 * 1024;

/// One entry of the folder as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEntry {
    pub kind: LocalKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub target: Option<String>,
    pub ctime_ns: i64,
    pub ino: u64,
    /// The wall-clock time just before the entry was looked at.
    pub seen_ns: i64,
}

/// Longer than any filesystem timestamp tick (coarse clocks tick at 1–10 ms).
const TICK_NS: i64 = 20_000_000;

fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl DiskEntry {
    /// Same stat as recorded: nothing can have changed without moving one of these.
    pub fn matches(&self, l: &LocalFile) -> bool {
        self.kind == l.kind
            && self.size == l.size
            && self.mtime_ns == l.mtime_ns
            && self.ctime_ns == l.ctime_ns
            && self.ino == l.ino
            && self.mode == l.mode
    }
}

pub fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

pub fn disk_entry(meta: &fs::Metadata, path: &Path, seen_ns: i64) -> io::Result<Option<DiskEntry>> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        LocalKind::File
    } else if ft.is_dir() {
        LocalKind::Dir
    } else if ft.is_symlink() {
        LocalKind::Symlink
    } else {
        return Ok(None); // sockets, fifos, devices: not memories
    };
    let target = if kind == LocalKind::Symlink {
        Some(fs::read_link(path)?.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(Some(DiskEntry {
        kind,
        size: if kind == LocalKind::File {
            meta.len()
        } else {
            0
        },
        mtime_ns: mtime_ns(meta),
        mode: meta.permissions().mode() & 0o7777,
        target,
        ctime_ns: meta
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.ctime_nsec()),
        ino: meta.ino(),
        seen_ns,
    }))
}

/// Every entry under `root`, by path relative to it with `/` separators.
pub fn walk(root: &Path) -> SyncResult<BTreeMap<String, DiskEntry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(SyncError::io(&dir))?;
        for entry in entries {
            let entry = entry.map_err(SyncError::io(&dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!("skipping {}: its name is not UTF-8", entry.path().display());
                continue;
            };
            let path = entry.path();
            let seen = wall_ns();
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SyncError::io(&path)(e)),
            };
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Some(d) = disk_entry(&meta, &path, seen).map_err(SyncError::io(&path))? else {
                continue;
            };
            if d.kind == LocalKind::Dir {
                stack.push((path, key.clone()));
            }
            out.insert(key, d);
        }
    }
    Ok(out)
}

/// What one scan found and recorded.
#[derive(Debug, Default, Clone)]
pub struct ScanReport {
    /// Versions recorded (changed, new, deleted paths and resolutions).
    pub versions: usize,
    /// Files whose content was read to hash it.
    pub hashed: usize,
    pub bytes_read: u64,
    /// Contents sealed into new packs (the rest were already in the vault).
    pub sealed: usize,
    /// What was recorded but other devices will not write, one line each.
    pub warnings: Vec<String>,
}

/// The conflict siblings the folder holds, by the path they stand beside.
type Siblings<'a> = HashMap<&'a str, Vec<(&'a str, &'a LocalFile)>>;

/// What the folder showed of `path`'s conflict group: a local change to `path` was
/// made on top of exactly that, so it supersedes what the owner saw and stays
/// concurrent with what they did not (a remote edit polled but not yet written, say).
fn seen(path: &str, local: &HashMap<String, LocalFile>, siblings: &Siblings<'_>) -> Seen {
    let at = local.get(path).and_then(|l| l.showing.clone());
    let main = at.as_ref().and_then(|s| s.sibling_of()).unwrap_or(path);
    let mut group: Vec<Showing> = Vec::new();
    if main != path {
        group.extend(local.get(main).and_then(|l| l.showing.clone()));
    }
    for (p, l) in siblings.get(main).into_iter().flatten() {
        if *p != path {
            group.extend(l.showing.clone());
        }
    }
    Seen { at, group }
}

fn hash_file(path: &Path, size: u64) -> io::Result<(ContentHash, Option<Vec<u8>>, u64)> {
    if size <= IN_MEMORY_MAX {
        let data = fs::read(path)?;
        let n = data.len() as u64;
        return Ok((ContentHash(Sha256::digest(&data).into()), Some(data), n));
    }
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((ContentHash(h.finalize().into()), None, n))
}

/// Hashes one file of the folder, counting what was read; `None` if it vanished.
fn hash_counted(
    root: &Path,
    path: &str,
    d: &DiskEntry,
    report: &mut ScanReport,
) -> SyncResult<Option<(ContentHash, Option<Vec<u8>>)>> {
    let full = root.join(path);
    match hash_file(&full, d.size) {
        Ok((sha, data, n)) => {
            report.hashed += 1;
            report.bytes_read += n;
            Ok(Some((sha, data)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SyncError::io(full)(e)),
    }
}

/// The namespace wants exactly this file here. A pull writes modes owner-writable,
/// so either the version's mode or that is a match.
fn shows_same_file(shown: Option<&Shown>, sha: &ContentHash, mode: u32) -> bool {
    matches!(shown.map(|s| &s.version.entry),
        Some(Entry::File { content, mode: m })
            if &content.sha256 == sha && (*m == mode || ((*m & 0o777) | 0o600) == mode))
}

fn is_file(shown: &Shown) -> bool {
    matches!(shown.version.entry, Entry::File { .. })
}

/// A file whose content must be sealed (or found in the vault) before its change can
/// be recorded.
struct PendingContent {
    path: String,
    disk: DiskEntry,
    sha: ContentHash,
    data: Option<Vec<u8>>,
    seen: Seen,
    /// The hash of what the folder holds, where the vault gets a pseudonymized
    /// view of it (then `sha` and `data` are the view's).
    disk_sha: Option<ContentHash>,
}

/// Records every local change of the folder at `root` as a version. With `dry_run`
/// nothing is sealed or recorded; the report still counts what would be.
pub fn scan_and_record(vault: &Vault, root: &Path, dry_run: bool) -> SyncResult<ScanReport> {
    let mut report = ScanReport::default();
    let local = vault.local_files()?;
    let disk = walk(root)?;
    // The common case, nothing touched since the last sync, needs neither the
    // namespace nor the heads: every stat matches its record, and nothing is gone.
    let refused = local
        .values()
        .filter(|l| l.kind == LocalKind::Refused)
        .count();
    let all_recorded = disk.len() + refused == local.len()
        && disk.iter().all(|(p, d)| {
            local.get(p).is_some_and(|l| {
                l.kind == d.kind && l.mode == d.mode && (d.kind == LocalKind::Dir || d.matches(l))
            })
        });
    if all_recorded {
        return Ok(report);
    }
    if !dry_run {
        // Something moved: the key will likely be needed to seal it.
        vault.begin_unlock();
    }
    let ns = vault.namespace()?;
    let mut siblings: Siblings<'_> = HashMap::new();
    for (p, l) in &local {
        if let Some(main) = l.sibling_of() {
            siblings.entry(main).or_default().push((p.as_str(), l));
        }
    }

    let mut changes: Vec<Change> = Vec::new();
    let mut updates: Vec<(String, Option<LocalFile>)> = Vec::new();
    let mut contents: Vec<PendingContent> = Vec::new();

    for (path, d) in &disk {
        let lf = local.get(path);
        if let Some(l) = lf.filter(|l| l.sibling_of().is_some()) {
            // A conflict sibling the owner edited becomes a file of its own (its
            // device's version leaves the conflict); untouched, it stays as it is.
            if d.kind != LocalKind::File || d.matches(l) {
                continue;
            }
            let Some((sha, data)) = hash_counted(root, path, d, &mut report)? else {
                continue;
            };
            if l.sha256 == Some(sha) {
                let mut same = l.clone();
                same.size = d.size;
                same.mtime_ns = d.mtime_ns;
                same.ctime_ns = local_record(d, None, None).ctime_ns;
                same.ino = d.ino;
                same.mode = d.mode;
                updates.push((path.clone(), Some(same)));
                continue;
            }
            contents.push(PendingContent {
                path: path.clone(),
                disk: d.clone(),
                sha,
                data,
                seen: seen(path, &local, &siblings),
                disk_sha: None,
            });
            continue;
        }
        let shown = ns.get(path);
        match d.kind {
            // What `lstat` finds is never a refusal.
            LocalKind::Refused => {}
            LocalKind::File => {
                let unchanged = lf.is_some_and(|l| d.matches(l));
                if unchanged {
                    continue;
                }
                let Some((sha, data)) = hash_counted(root, path, d, &mut report)? else {
                    continue;
                };
                let same_as_record = lf.is_some_and(|l| {
                    l.kind == LocalKind::File && l.sha256 == Some(sha) && l.mode == d.mode
                });
                // With anonymization, what a pull wrote on a trusted device is the
                // version's view with its originals back: its view is the match.
                let adopt = shows_same_file(shown, &sha, d.mode)
                    || (!dry_run
                        && !same_as_record
                        && match (shown, &data) {
                            (Some(s), Some(bytes)) if is_file(s) => {
                                let view = vault.view_hash(bytes)?;
                                view.is_some_and(|v| shows_same_file(shown, &v, d.mode))
                            }
                            _ => false,
                        });
                tracing::debug!(path, same_as_record, adopt, "hashed");
                if same_as_record || adopt {
                    // Only the stat moved, or a pull wrote it and died before saying so.
                    let showing = if same_as_record {
                        lf.and_then(|l| l.showing.clone())
                    } else {
                        shown.map(Shown::showing)
                    };
                    updates.push((path.clone(), Some(local_record(d, Some(sha), showing))));
                    continue;
                }
                if shown.is_some_and(|s| s.sibling_of.is_some()) {
                    continue; // a sibling being rewritten by a half-done pull; the next apply fixes it
                }
                contents.push(PendingContent {
                    path: path.clone(),
                    disk: d.clone(),
                    sha,
                    data,
                    seen: seen(path, &local, &siblings),
                    disk_sha: None,
                });
            }
            LocalKind::Dir | LocalKind::Symlink => {
                let entry = if d.kind == LocalKind::Dir {
                    Entry::Dir { mode: d.mode }
                } else {
                    Entry::Symlink {
                        target: d.target.clone().unwrap_or_default(),
                    }
                };
                let unchanged = lf.is_some_and(|l| {
                    l.kind == d.kind
                        && l.mode == d.mode
                        && (d.kind == LocalKind::Dir || d.matches(l))
                });
                if unchanged {
                    continue;
                }
                let matches_ns = shown.is_some_and(|s| match (&s.version.entry, &entry) {
                    (Entry::Dir { mode: a }, Entry::Dir { mode: b }) => a == b,
                    (a, b) => a == b,
                });
                if matches_ns {
                    let showing = shown.map(|s| s.showing().standing(None));
                    updates.push((path.clone(), Some(local_record(d, None, showing))));
                    continue;
                }
                if let Entry::Symlink { target } = &entry {
                    if !crate::model::link_stays_inside(path, target) {
                        tracing::warn!("{path} is a link pointing outside the folder");
                        report.warnings.push(format!(
                            "{path} points outside the folder ({target}): other devices \
                             keep their folders closed to it and will not create it"
                        ));
                    }
                }
                changes.push(Change {
                    path: path.clone(),
                    seen: seen(path, &local, &siblings),
                    after: After::Put {
                        entry,
                        mtime_ns: d.mtime_ns,
                    },
                    local: LocalChange::Set(local_record(d, None, None)),
                });
            }
        }
    }

    // Removed paths: deletions of main paths, or resolutions when a sibling went.
    for (path, l) in &local {
        // Nothing is on disk there on purpose: the folder never showed it.
        if l.kind == LocalKind::Refused {
            continue;
        }
        if !disk.contains_key(path) {
            changes.push(Change {
                path: path.clone(),
                seen: seen(path, &local, &siblings),
                after: After::Gone,
                local: LocalChange::Remove,
            });
        }
    }

    if dry_run {
        for c in &contents {
            changes.push(Change {
                path: c.path.clone(),
                seen: c.seen.clone(),
                after: After::Put {
                    entry: Entry::Deleted,
                    mtime_ns: 0,
                },
                local: LocalChange::Keep,
            });
        }
        report.versions = vault.versions_for(changes)?;
        return Ok(report);
    }

    // With anonymization on, the vault gets each content as its pseudonymized view
    // (files held in memory: larger ones are not memories, and are sealed as they
    // are).
    for c in &mut contents {
        let Some(data) = &c.data else { continue };
        if let Some(view) = vault.pseudonymized(data)? {
            c.disk_sha = Some(c.sha);
            c.sha = ContentHash(Sha256::digest(&view).into());
            c.data = Some(view);
        }
    }
    vault.queue_originals()?;
    // Contents already in the vault (a rename, a copy) are not sealed again.
    let hashes: Vec<ContentHash> = contents.iter().map(|c| c.sha).collect();
    let known = vault.contents_by_hash(&hashes)?;
    for mut c in contents {
        let full = root.join(&c.path);
        let size = c.data.as_ref().map_or(c.disk.size, |d| d.len() as u64);
        let content = match known.get(&c.sha).filter(|r| r.size == size) {
            Some(r) => r.clone(),
            None => {
                let sealed = match c.data.take() {
                    Some(data) => vault.seal(data.as_slice(), data.len() as u64, Some(c.sha)),
                    None => match fs::File::open(&full) {
                        Ok(f) => vault.seal(f, c.disk.size, None),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(SyncError::io(full)(e)),
                    },
                };
                report.sealed += 1;
                sealed?
            }
        };
        let mut disk = c.disk.clone();
        let disk_sha = match c.disk_sha {
            Some(sha) => sha,
            None => {
                disk.size = content.size;
                content.sha256
            }
        };
        changes.push(Change {
            path: c.path,
            seen: c.seen,
            local: LocalChange::Set(local_record(&disk, Some(disk_sha), None)),
            after: After::Put {
                entry: Entry::File {
                    content,
                    mode: c.disk.mode,
                },
                mtime_ns: c.disk.mtime_ns,
            },
        });
    }
    crate::failpoint("push-after-seal");
    if !changes.is_empty() || !updates.is_empty() {
        report.versions = vault.record(changes, updates)?.len();
    }
    Ok(report)
}

pub fn local_record(
    d: &DiskEntry,
    sha: Option<ContentHash>,
    showing: Option<Showing>,
) -> LocalFile {
    let racy = d.ctime_ns >= d.seen_ns - TICK_NS;
    LocalFile {
        kind: d.kind,
        size: d.size,
        mtime_ns: d.mtime_ns,
        ctime_ns: if racy { RACY_CTIME } else { d.ctime_ns },
        ino: d.ino,
        mode: d.mode,
        sha256: sha,
        showing,
    }
}
