//! Writing: files open for writing live in staging until their last close, when
//! their bytes are sealed into the upload queue and their version recorded (close
//! returns after that). A file opened for writing fetches nothing until a byte of it
//! is needed; then its old content is fetched with the state lock released.

use std::io::Read;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::changes::put;
use super::errno::{from_io, Errno, FsResult};
use super::mount_fs::{check_name, lock, precise_now_ns, seen_in, Attr, MountFs, State};
use super::open_files::Staged;
use super::tree::{join, Ino, Kind};
use crate::model::{Entry, Showing};
use crate::sync::{After, Change, LocalChange, Seen};

impl MountFs {
    pub fn open(&self, ino: Ino, flags: i32) -> FsResult<u64> {
        let mut st = self.state();
        let n = st.tree.get(ino).ok_or(Errno::NOENT)?;
        match n.kind {
            Kind::Dir => return Err(Errno::ISDIR),
            Kind::Symlink => return Err(Errno::LOOP),
            // The kernel opens fifos and sockets itself; this is never asked.
            Kind::Fifo | Kind::Socket => return Err(Errno::NXIO),
            Kind::File => {}
        }
        // O_TRUNC never arrives here: the kernel truncates with a setattr after the
        // open (see the adapter's init).
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable {
            stage(&mut st, ino, false, &self.staging_dir)?;
        }
        Ok(st.files.add_handle(ino, writable))
    }

    pub fn create(&self, parent: Ino, name: &str, mode: u32, _flags: i32) -> FsResult<(Attr, u64)> {
        check_name(name)?;
        let mut st = self.state();
        let dir = st.tree.get(parent).ok_or(Errno::NOENT)?;
        if dir.kind != Kind::Dir {
            return Err(Errno::NOTDIR);
        }
        let path = join(&dir.path, name);
        if st.tree.ino_of(&path).is_some() {
            return Err(Errno::EXIST);
        }
        let seen = seen_in(&st.tree, &path);
        let now = precise_now_ns();
        let ino = st.tree.add_local(&path, Kind::File, mode, now);
        st.tree.touch_dir(parent, now);
        // Even an O_RDONLY|O_CREAT open made the file: it is recorded at close.
        let mut staged = Staged::new(seen);
        staged.dirty = true;
        staged.opens = 1;
        st.files.staged.insert(ino, staged);
        let fh = st.files.add_handle(ino, true);
        Ok((self.node_attr(&st, ino)?, fh))
    }

    /// The state, with `ino`'s staging file holding its old content: fetched (once,
    /// without the state lock) if it is not there yet.
    pub(super) fn filled(&self, ino: Ino) -> FsResult<MutexGuard<'_, State>> {
        loop {
            let st = self.state();
            let Some((c, shown_size)) = st.files.fill_of(ino) else {
                return Ok(st);
            };
            drop(st);
            let data = self.read_content(&c, shown_size).map_err(|e| {
                tracing::error!("cannot fetch the content of a file open for writing: {e}");
                Errno::IO
            })?;
            let mut st = self.state();
            if st.files.fill_of(ino).map(|(f, _)| f).as_ref() != Some(&c) {
                // Truncated, closed or refilled meanwhile: look again.
                continue;
            }
            let dir = self.staging_dir.clone();
            if let Some(s) = st.files.staged.get_mut(&ino) {
                s.bytes.write_at(&data, 0, &dir).map_err(from_io)?;
                s.fill = None;
            }
            return Ok(st);
        }
    }

    pub fn write(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let mut st = self.filled(ino)?;
        let handle = st.files.handle(fh).ok_or(Errno::BADF)?;
        if !handle.writable {
            return Err(Errno::BADF);
        }
        let st = &mut *st;
        let s = st.files.staged.get_mut(&ino).ok_or(Errno::BADF)?;
        s.bytes
            .write_at(data, offset, &self.staging_dir)
            .map_err(from_io)?;
        s.size = s.size.max(offset + data.len() as u64);
        s.dirty = true;
        let now = precise_now_ns();
        if let Some(n) = st.tree.get_mut(ino) {
            n.mtime_ns = now;
            n.ctime_ns = now;
            // A write drops set-user-id and set-group-id, as on any filesystem
            // (the kernel leaves that to us: FUSE_HANDLE_KILLPRIV_V2).
            n.mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        Ok(data.len() as u32)
    }

    /// Records `ino`'s staged bytes if it has changes nobody recorded yet.
    pub(super) fn commit_if_dirty(&self, ino: Ino) -> FsResult<()> {
        if !self.state().files.is_dirty(ino) {
            return Ok(());
        }
        let mut st = self.filled(ino)?;
        self.commit(&mut st, ino)
    }

    /// close(): what was written becomes a queued version before close returns.
    pub fn flush(&self, ino: Ino, fh: u64) -> FsResult<()> {
        let writable = self.state().files.handle(fh).is_some_and(|h| h.writable);
        if writable {
            self.commit_if_dirty(ino)?;
        }
        Ok(())
    }

    pub fn fsync(&self, ino: Ino, fh: u64) -> FsResult<()> {
        let writable = self.state().files.handle(fh).is_some_and(|h| h.writable);
        if writable {
            self.commit_if_dirty(ino)?;
        }
        self.vault.sync_queue()?;
        if self.opts.fsync_remote {
            self.wait_published(Duration::from_secs(60))?;
        }
        Ok(())
    }

    /// Waits until a publish that started after this call has finished.
    pub fn wait_published(&self, limit: Duration) -> FsResult<()> {
        let deadline = Instant::now() + limit;
        let mut a = lock(&self.activity);
        a.first_unsent.get_or_insert_with(Instant::now);
        a.last_change = Some(Instant::now() - Duration::from_secs(1));
        let target = a.publishes_started + 1;
        self.wake.notify_all();
        while a.publishes_done < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::error!("fsync: the backend did not take the file within {limit:?}");
                return Err(Errno::IO);
            }
            a = self
                .wake
                .wait_timeout(a, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        Ok(())
    }

    pub fn release(&self, ino: Ino, fh: u64) -> FsResult<()> {
        let mut st = self.state();
        let Some(h) = st.files.remove_handle(fh) else {
            return Ok(());
        };
        if !st.files.is_open(ino) {
            // Its read-ahead windows are of no use to anyone now.
            if let Some(c) = st.tree.get(ino).and_then(|n| n.content()) {
                self.reading.forget_stream(c);
            }
        }
        if !h.writable {
            return Ok(());
        }
        let Some(s) = st.files.staged.get_mut(&ino) else {
            return Ok(());
        };
        s.opens = s.opens.saturating_sub(1);
        if s.opens > 0 {
            return Ok(());
        }
        // Pages an mmap dirtied reach us after the flush of close().
        let commit = s.dirty && !s.unlinked;
        drop(st);
        let mut st = if commit {
            self.filled(ino)?
        } else {
            self.state()
        };
        if st.files.staged.get(&ino).is_some_and(|s| s.opens > 0) {
            // Opened again meanwhile: its last close records it.
            return Ok(());
        }
        let result = if commit {
            self.commit(&mut st, ino)
        } else {
            Ok(())
        };
        // Not kept (a full disk, say): the program is told, and the bytes stay
        // staged, shown by the file, for `save_unsaved` to record once it can.
        result?;
        st.files.staged.remove(&ino);
        st.files.orphans.remove(&ino);
        Ok(())
    }

    /// Whether a file closed with changes that could not be recorded yet.
    pub fn has_unsaved(&self) -> bool {
        self.state()
            .files
            .staged
            .values()
            .any(|s| s.opens == 0 && s.dirty && !s.unlinked)
    }

    /// Records the files whose last close could not be recorded (their bytes stayed
    /// staged), now that it may work; those that still fail wait for the next try.
    pub fn save_unsaved(&self) {
        let unsaved: Vec<Ino> = self
            .state()
            .files
            .staged
            .iter()
            .filter(|(_, s)| s.opens == 0 && s.dirty && !s.unlinked)
            .map(|(ino, _)| *ino)
            .collect();
        for ino in unsaved {
            let Ok(mut st) = self.filled(ino) else {
                continue;
            };
            if st.files.staged.get(&ino).is_some_and(|s| s.opens > 0) {
                continue;
            }
            if self.commit(&mut st, ino).is_ok() {
                st.files.staged.remove(&ino);
                st.files.orphans.remove(&ino);
            }
        }
    }

    /// Seals the staged bytes of `ino` into the queue and records the version. The
    /// caller filled the staging file (see [`MountFs::filled`]).
    pub(super) fn commit(&self, st: &mut State, ino: Ino) -> FsResult<()> {
        let Some(node) = st.tree.get(ino).cloned() else {
            return Ok(());
        };
        let Some(s) = st.files.staged.get_mut(&ino) else {
            return Ok(());
        };
        if s.unlinked {
            s.dirty = false;
            return Ok(());
        }
        if s.fill.is_some() {
            tracing::error!("{}: its old content was never fetched", node.path);
            return Err(Errno::IO);
        }
        let size = s.size;
        let mut input = s.bytes.reader(size).map_err(from_io)?;
        let anonymizes = self
            .vault
            .anonymizes_writes()
            .map_err(|e| self.not_saved(&node.path, e))?;
        let view = if anonymizes && size <= crate::sync::ANONYMIZE_MAX {
            let mut bytes = Vec::with_capacity(size as usize);
            input.read_to_end(&mut bytes).map_err(from_io)?;
            let view = self
                .vault
                .mount_view(&bytes)
                .map_err(|e| self.not_saved(&node.path, e))?;
            Some(view.unwrap_or(bytes))
        } else {
            None
        };
        let content = match &view {
            // The vault gets the view; this device shows what was written.
            Some(view) => self.vault.seal(view.as_slice(), view.len() as u64, None),
            None => self.vault.seal(&mut input, size, None),
        }
        .map_err(|e| self.not_saved(&node.path, e))?;
        drop(input);
        let seen = s.seen.clone();
        let entry = Entry::File {
            content,
            mode: node.mode,
        };
        let mut changes = vec![Change {
            path: node.path.clone(),
            seen,
            after: After::Put {
                entry: entry.clone(),
                mtime_ns: node.mtime_ns,
            },
            local: LocalChange::Keep,
        }];
        // The other names of a hard-linked file hold the same bytes: each is a file
        // of its own in the vault, with the same content (sealed once).
        let others = st.tree.other_names(ino);
        for p in &others {
            changes.push(put(st, p, entry.clone(), node.mtime_ns));
        }
        let recorded = self
            .vault
            .record(changes, Vec::new())
            .map_err(|e| self.not_saved(&node.path, e))?;
        lock(&self.activity).last_write_error = None;
        if let (Some(v), Some(s)) = (
            recorded.iter().find(|v| v.path == node.path),
            st.files.staged.get_mut(&ino),
        ) {
            s.dirty = false;
            // A second close of the same handle writes on top of this version alone.
            s.seen = Seen::only(Showing::of(v, None));
        }
        let mut scope = vec![node.path.clone()];
        scope.extend(node.sibling_of().map(str::to_owned));
        scope.extend(others);
        self.refresh(st, &scope)?;
        self.note_change();
        Ok(())
    }

    /// A file's new content could not be kept: the program is told (the errno), and
    /// `status` shows why until a later save succeeds.
    fn not_saved(&self, path: &str, e: crate::sync::SyncError) -> Errno {
        lock(&self.activity).last_write_error = Some(format!("cannot save {path}: {e}"));
        Errno::from(e)
    }

    /// chmod, truncate, utimens of the modification time (chown to anyone else is
    /// refused: one owner).
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: Ino,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime_ns: Option<i64>,
        fh: Option<u64>,
    ) -> FsResult<Attr> {
        let times = Times {
            atime_ns: None,
            mtime_ns,
        };
        self.setattr_times(ino, mode, uid, gid, size, times, fh)
    }

    /// As [`MountFs::setattr`], with both times of utimens.
    #[allow(clippy::too_many_arguments)]
    pub fn setattr_times(
        &self,
        ino: Ino,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        times: Times,
        _fh: Option<u64>,
    ) -> FsResult<Attr> {
        let Times { atime_ns, mtime_ns } = times;
        let (my_uid, my_gid) = self.owner();
        if uid.is_some_and(|u| u != my_uid) || gid.is_some_and(|g| g != my_gid) {
            return Err(Errno::PERM);
        }
        let mut st = self.state();
        let ino = st.tree.canonical(ino);
        let node = st.tree.get(ino).cloned().ok_or(Errno::NOENT)?;
        if let Some(size) = size {
            if node.kind == Kind::Dir {
                return Err(Errno::ISDIR);
            }
            if node.kind != Kind::File {
                return Err(Errno::INVAL);
            }
            let was_staged = st.files.staged.contains_key(&ino);
            if !was_staged {
                stage(&mut st, ino, size == 0, &self.staging_dir)?;
            }
            if size > 0 {
                drop(st);
                st = self.filled(ino)?;
            } else if let Some(s) = st.files.staged.get_mut(&ino) {
                s.fill = None;
            }
            if let Some(s) = st.files.staged.get_mut(&ino) {
                s.bytes.set_len(size, &self.staging_dir).map_err(from_io)?;
                if s.size != size {
                    s.dirty = true;
                }
                s.size = size;
            }
            let now = precise_now_ns();
            if let Some(n) = st.tree.get_mut(ino) {
                n.mtime_ns = now;
                n.ctime_ns = now;
            }
            if !was_staged {
                // truncate(2) on a closed file: recorded now, like a close.
                if let Some(s) = st.files.staged.get_mut(&ino) {
                    s.dirty = true;
                    s.opens = s.opens.saturating_sub(1);
                }
                let committed = self.commit(&mut st, ino);
                if st.files.staged.get(&ino).is_some_and(|s| s.opens == 0) {
                    st.files.staged.remove(&ino);
                    let path = node.path.clone();
                    self.refresh(&mut st, &[path])?;
                }
                committed?;
            }
        }
        let mut changed = false;
        if let Some(m) = mode {
            if let Some(n) = st.tree.get_mut(ino) {
                changed |= n.mode != m & 0o7777;
                n.mode = m & 0o7777;
                n.ctime_ns = precise_now_ns();
            }
        }
        if let Some(t) = mtime_ns {
            if let Some(n) = st.tree.get_mut(ino) {
                changed |= n.mtime_ns != t;
                n.mtime_ns = t;
                n.ctime_ns = precise_now_ns();
            }
        }
        let mut atime_set = false;
        if let Some(t) = atime_ns {
            if let Some(n) = st.tree.get_mut(ino) {
                // This device's alone: kept locally, never a version.
                n.atime_ns = t;
                n.atime_kept = true;
                n.ctime_ns = precise_now_ns();
                atime_set = true;
            }
        }
        if changed && node.kind.is_local_only() {
            changed = false;
            atime_set = true;
        }
        if atime_set {
            let mut paths = vec![node.path.clone()];
            paths.extend(st.tree.other_names(ino));
            self.keep_local(&mut st, &paths)?;
        }
        if changed {
            if let Some(s) = st.files.staged.get_mut(&ino) {
                // Goes with the content when the file closes.
                s.dirty = true;
            } else {
                self.record_meta(&mut st, ino)?;
                self.note_change();
            }
        }
        self.node_attr(&st, ino)
    }
}

/// The times a setattr sets (utimens), each in ns since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    pub atime_ns: Option<i64>,
    pub mtime_ns: Option<i64>,
}

/// Makes `ino` writable: a staging file standing for its current bytes (copied in
/// when first needed).
fn stage(st: &mut State, ino: Ino, truncate: bool, dir: &std::path::Path) -> FsResult<()> {
    if let Some(s) = st.files.staged.get_mut(&ino) {
        s.opens += 1;
        if truncate && s.size > 0 {
            s.bytes.set_len(0, dir).map_err(from_io)?;
            s.size = 0;
            s.fill = None;
            s.dirty = true;
        }
        return Ok(());
    }
    let n = st.tree.get(ino).ok_or(Errno::NOENT)?;
    let content = n.content().cloned();
    // The size the file shows (its values restored, with anonymization).
    let shown_size = n.size;
    let mut staged = Staged::new(seen_in(&st.tree, &n.path));
    staged.opens = 1;
    if truncate {
        staged.dirty = content.as_ref().is_some_and(|c| c.size > 0);
    } else if let Some(c) = content {
        staged.size = shown_size;
        staged.fill = (shown_size > 0).then_some(c);
        staged.fill_size = shown_size;
    }
    st.files.staged.insert(ino, staged);
    Ok(())
}
