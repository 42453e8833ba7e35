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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::model::{ContentHash, ContentRef, Entry, VersionVector};
use crate::store::{LocalFile, LocalKind};
use crate::sync::{LocalChange, NewVersion, Shown, SyncError, SyncResult, Vault};

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
}

/// What the folder showed at `path` (the file and the conflict siblings beside it),
/// as one vector: a local change to `path` was made on top of exactly that, so it
/// supersedes what the owner saw and stays concurrent with what they did not (a
/// remote edit polled but not yet written, say).
fn seen_base(
    path: &str,
    local: &HashMap<String, LocalFile>,
    siblings: &HashMap<&str, Vec<&LocalFile>>,
    include_siblings: &dyn Fn(&LocalFile) -> bool,
) -> VersionVector {
    let mut v = VersionVector::default();
    if let Some(vec) = local.get(path).and_then(|l| l.vector.as_ref()) {
        v.merge(vec);
    }
    for sib in siblings.get(path).into_iter().flatten() {
        if include_siblings(sib) {
            if let Some(vec) = &sib.vector {
                v.merge(vec);
            }
        }
    }
    v
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

struct PendingContent {
    path: String,
    disk: DiskEntry,
    sha: ContentHash,
    data: Option<Vec<u8>>,
    /// An edited conflict sibling: a new file, on top of nothing at its own path.
    from_sibling: bool,
}

/// Records every local change of the folder at `root` as a version. With `dry_run`
/// nothing is sealed or recorded; the report still counts what would be.
pub fn scan_and_record(vault: &mut Vault, root: &Path, dry_run: bool) -> SyncResult<ScanReport> {
    let mut report = ScanReport::default();
    let local = vault.index().local_files()?;
    let disk = walk(root)?;
    // The common case, nothing touched since the last sync, needs neither the
    // namespace nor the heads: every stat matches its record, and nothing is gone.
    let all_recorded = disk.len() == local.len()
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
    let mut siblings: HashMap<&str, Vec<&LocalFile>> = HashMap::new();
    for l in local.values() {
        if let Some(main) = &l.sibling_of {
            siblings.entry(main.as_str()).or_default().push(l);
        }
    }
    let all = |_: &LocalFile| true;

    let mut versions: Vec<NewVersion> = Vec::new();
    let mut updates: Vec<(String, Option<LocalFile>)> = Vec::new();
    let mut contents: Vec<PendingContent> = Vec::new();
    let mut changed_main: HashSet<String> = HashSet::new();

    let mut siblings_removed: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (path, d) in &disk {
        let lf = local.get(path);
        if let Some(l) = lf.filter(|l| l.sibling_of.is_some()) {
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
                same.ctime_ns = local_record(d, None, None, None, None).ctime_ns;
                same.ino = d.ino;
                same.mode = d.mode;
                updates.push((path.clone(), Some(same)));
                continue;
            }
            if let (Some(main), Some((dev, c))) = (&l.sibling_of, &l.shows) {
                siblings_removed
                    .entry(main.clone())
                    .or_default()
                    .push((dev.as_str().to_owned(), *c));
            }
            contents.push(PendingContent {
                path: path.clone(),
                disk: d.clone(),
                sha,
                data,
                from_sibling: true,
            });
            continue;
        }
        let shown = ns.get(path);
        match d.kind {
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
                tracing::debug!(
                    path,
                    same_as_record,
                    adopt = shows_same_file(shown, &sha, d.mode),
                    "hashed"
                );
                if same_as_record || shows_same_file(shown, &sha, d.mode) {
                    // Only the stat moved, or a pull wrote it and died before saying so.
                    let shows = if same_as_record {
                        lf.and_then(|l| l.shows.clone())
                    } else {
                        shown.map(|s| s.id())
                    };
                    let (sibling_of, vector) = if same_as_record {
                        (None, lf.and_then(|l| l.vector.clone()))
                    } else {
                        (
                            shown.and_then(|s| s.sibling_of.clone()),
                            shown.map(|s| s.version.vector.clone()),
                        )
                    };
                    updates.push((
                        path.clone(),
                        Some(local_record(d, Some(sha), shows, sibling_of, vector)),
                    ));
                    continue;
                }
                if shown.is_some_and(|s| s.sibling_of.is_some()) {
                    continue; // a sibling being rewritten by a half-done pull; the next apply fixes it
                }
                changed_main.insert(path.clone());
                contents.push(PendingContent {
                    path: path.clone(),
                    disk: d.clone(),
                    sha,
                    data,
                    from_sibling: false,
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
                    updates.push((
                        path.clone(),
                        Some(local_record(
                            d,
                            None,
                            shown.map(|s| s.id()),
                            None,
                            shown.map(|s| s.version.vector.clone()),
                        )),
                    ));
                    continue;
                }
                changed_main.insert(path.clone());
                versions.push(NewVersion {
                    path: path.clone(),
                    entry,
                    mtime_ns: d.mtime_ns,
                    base: seen_base(path, &local, &siblings, &all),
                    local: LocalChange::Set(local_record(d, None, None, None, None)),
                });
            }
        }
    }

    // Removed paths: deletions of main paths, or resolutions when a sibling went.
    for (path, lf) in &local {
        if disk.contains_key(path) {
            continue;
        }
        if let Some(main) = &lf.sibling_of {
            updates.push((path.clone(), None));
            if let Some((d, c)) = &lf.shows {
                siblings_removed
                    .entry(main.clone())
                    .or_default()
                    .push((d.as_str().to_owned(), *c));
            }
            continue;
        }
        if lf.vector.is_none() {
            updates.push((path.clone(), None));
            continue;
        }
        changed_main.insert(path.clone());
        versions.push(NewVersion {
            path: path.clone(),
            entry: Entry::Deleted,
            mtime_ns: crate::now_ms() * 1_000_000,
            base: seen_base(path, &local, &siblings, &all),
            local: LocalChange::Remove,
        });
    }

    // A removed sibling with an untouched main file: keep the main content, drop the
    // sibling's version, leave the siblings still present in conflict.
    for (main, removed_ids) in siblings_removed {
        if changed_main.contains(&main) {
            continue;
        }
        let Some(shown) = ns.get(&main) else { continue };
        let removed: HashSet<(String, u64)> = removed_ids.into_iter().collect();
        let was_removed = |l: &LocalFile| {
            l.shows
                .as_ref()
                .is_some_and(|(d, c)| removed.contains(&(d.as_str().to_owned(), *c)))
        };
        let main_local = match local.get(&main) {
            Some(l) => LocalChange::Set(l.clone()),
            None => LocalChange::Keep,
        };
        versions.push(NewVersion {
            path: main.clone(),
            entry: shown.version.entry.clone(),
            mtime_ns: shown.version.mtime_ns,
            base: seen_base(&main, &local, &siblings, &was_removed),
            local: main_local,
        });
    }

    if dry_run {
        report.versions = versions.len() + contents.len();
        return Ok(report);
    }

    // Contents already in the vault (a rename, a copy) are not sealed again.
    let hashes: Vec<ContentHash> = contents.iter().map(|c| c.sha).collect();
    let known = vault.contents_by_hash(&hashes)?;
    let mut refs: HashMap<usize, ContentRef> = HashMap::new();
    for (i, c) in contents.iter().enumerate() {
        if let Some(r) = known.get(&c.sha) {
            if r.size == c.disk.size {
                refs.insert(i, r.clone());
            }
        }
    }
    let mut packs = Vec::new();
    if refs.len() < contents.len() {
        let mut writer = vault.pack_writer()?;
        for (i, c) in contents.iter_mut().enumerate() {
            if refs.contains_key(&i) {
                continue;
            }
            let full = root.join(&c.path);
            let sealed = match c.data.take() {
                Some(data) => writer.add_hashed(data.as_slice(), data.len() as u64, Some(c.sha)),
                None => fs::File::open(&full).and_then(|f| writer.add(f, c.disk.size)),
            };
            let r = match sealed {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SyncError::io(full)(e)),
            };
            c.sha = r.sha256;
            refs.insert(i, r);
            report.sealed += 1;
        }
        let (done, _) = writer
            .finish()
            .map_err(SyncError::io(vault.pack_cache().dir().to_path_buf()))?;
        packs = done;
    }
    crate::failpoint("push-after-seal");
    for (i, c) in contents.iter().enumerate() {
        let Some(r) = refs.remove(&i) else { continue };
        let mut disk = c.disk.clone();
        disk.size = r.size;
        versions.push(NewVersion {
            path: c.path.clone(),
            entry: Entry::File {
                content: r,
                mode: c.disk.mode,
            },
            mtime_ns: c.disk.mtime_ns,
            base: if c.from_sibling {
                VersionVector::default()
            } else {
                seen_base(&c.path, &local, &siblings, &all)
            },
            local: LocalChange::Set(local_record(&disk, Some(c.sha), None, None, None)),
        });
    }
    report.versions = versions.len();
    if !versions.is_empty() || !updates.is_empty() {
        vault.record(versions, &packs, updates)?;
    }
    Ok(report)
}

pub fn local_record(
    d: &DiskEntry,
    sha: Option<ContentHash>,
    shows: Option<(crate::model::DeviceId, u64)>,
    sibling_of: Option<String>,
    vector: Option<VersionVector>,
) -> LocalFile {
    let racy = d.ctime_ns >= d.seen_ns - TICK_NS;
    LocalFile {
        kind: d.kind,
        size: d.size,
        mtime_ns: d.mtime_ns,
        ctime_ns: if racy {
            crate::store::RACY_CTIME
        } else {
            d.ctime_ns
        },
        ino: d.ino,
        mode: d.mode,
        sha256: sha,
        shows,
        sibling_of,
        vector,
    }
}
