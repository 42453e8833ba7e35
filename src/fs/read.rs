//! Reading: cold reads travel in packs, whatever the access pattern.
//!
//! - A small file (up to `WHOLE_READ_MAX`) is read whole, checked against its hash and
//!   kept decrypted in memory (`PlainCache`). A miss brings in what was sealed beside
//!   it, in the same pack (bounded by `NEIGHBOURS_BYTES` and half the cache): a program
//!   that opens files by name from its own index, never listing, then finds the next
//!   ones in memory, as `cat *` after a listing does. A folder listed lately also has
//!   its files fetched, rolling forward from the one read, in the background.
//! - Every fetch in flight is registered, so a reader that wants a content already on
//!   its way waits for it instead of asking the backend a second time.
//! - A large file is read by the chunks a read touches. Once a reader has gone
//!   sequentially through `RAMP` bytes, windows of `WINDOW` bytes are fetched ahead of it,
//!   `AHEAD` at a time, each a ranged request of its own: a cold `cat` or `dd` keeps
//!   several requests in flight, while one 4 KiB read in the middle of a file still
//!   costs one chunk.
//!
//! Nothing here holds the mount's state lock: the caller picks what to fetch under it
//! and lets go before calling in.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::errno::{from_io, Errno, FsResult};
use super::mount_fs::{lock, MountFs};
use super::plain_cache::PlainCache;
use super::tree::{parent_path, Ino, ROOT};
use crate::model::{ContentRef, DeviceId, ObjectId};
use crate::sync::{ContentReader, SyncError, SyncResult, PACK_GONE};

/// Files up to this size are read whole, checked against their hash and kept
/// decrypted in memory; larger ones are read a chunk range at a time.
pub(super) const WHOLE_READ_MAX: u64 = 1024 * 1024;
/// A prefetch fetches this much at a time.
const PREFETCH_BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// A miss brings in at most this much of its pack.
const NEIGHBOURS_BYTES: u64 = 8 * 1024 * 1024;
/// Read-ahead windows of a large file (a multiple of the 64 KiB chunk).
const WINDOW: u64 = 8 * 1024 * 1024;
/// Windows fetched ahead of a sequential reader.
const AHEAD: u64 = 3;
/// Bytes read in sequence before read-ahead starts (more than the kernel's own
/// read-ahead asks for after one small read).
const RAMP: u64 = 1024 * 1024;
/// Large files read at once with read-ahead.
const STREAMS_KEPT: usize = 4;

type Key = (DeviceId, ObjectId, u64);

/// What a read returns: bytes of its own, or a range of a buffer it shares with the
/// cache or a read-ahead window (no copy on the way to the kernel).
#[derive(Debug)]
pub enum ReadData {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl ReadData {
    /// `range` of `data`, clamped to what it holds.
    fn shared(data: Arc<Vec<u8>>, start: u64, end: u64) -> Self {
        let end = (end.min(data.len() as u64)) as usize;
        let start = (start as usize).min(end);
        ReadData::Shared(data, start..end)
    }
}

impl std::ops::Deref for ReadData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Shared(d, r) => &d[r.clone()],
        }
    }
}

fn key(c: &ContentRef) -> Key {
    (c.owner.clone(), c.pack.clone(), c.offset)
}

/// A fetch on its way; readers of the same content wait on it.
#[derive(Default)]
struct Pending {
    result: Mutex<Option<Result<Arc<Vec<u8>>, String>>>,
    done: Condvar,
}

impl Pending {
    fn finish(&self, r: Result<Arc<Vec<u8>>, String>) {
        *lock(&self.result) = Some(r);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<Arc<Vec<u8>>, String> {
        let mut r = lock(&self.result);
        loop {
            if let Some(r) = r.as_ref() {
                return r.clone();
            }
            r = self.done.wait(r).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Where a large file is being read, and the windows fetched for it.
struct Stream {
    /// Where the last read ended, and how many bytes were read in sequence up to it.
    last_end: u64,
    run: u64,
    windows: BTreeMap<u64, Arc<Pending>>,
    touched: Instant,
}

pub(super) struct Reading {
    reader: ContentReader,
    plain: Mutex<PlainCache>,
    inflight: Mutex<HashMap<Key, Arc<Pending>>>,
    /// One listing prefetch at a time.
    prefetching: Arc<AtomicBool>,
    limit: u64,
    streams: Mutex<HashMap<Key, Stream>>,
}

impl Reading {
    pub fn new(reader: ContentReader, limit: u64) -> Self {
        Self {
            reader,
            plain: Mutex::new(PlainCache::new(limit)),
            inflight: Mutex::new(HashMap::new()),
            prefetching: Arc::new(AtomicBool::new(false)),
            limit,
            streams: Mutex::new(HashMap::new()),
        }
    }

    pub fn cache_used(&self) -> u64 {
        lock(&self.plain).used()
    }

    pub fn is_cached(&self, c: &ContentRef) -> bool {
        lock(&self.plain).contains(c)
    }

    /// Keeps `wanted` within half the memory cache (so a batch never evicts itself),
    /// without what is cached or on its way already; registers the rest as on its way.
    fn claim(&self, mut wanted: Vec<ContentRef>) -> Vec<(ContentRef, Arc<Pending>)> {
        {
            let plain = lock(&self.plain);
            wanted.retain(|c| !plain.contains(c));
        }
        let mut budget = self.limit / 2;
        let mut inflight = lock(&self.inflight);
        let mut out = Vec::new();
        for c in wanted {
            let k = key(&c);
            if c.size > budget || inflight.contains_key(&k) {
                continue;
            }
            budget -= c.size;
            let p = Arc::new(Pending::default());
            inflight.insert(k, p.clone());
            out.push((c, p));
        }
        out
    }

    /// Fetches claimed contents in few requests, caches them and wakes their readers.
    fn fetch_claimed(
        reader: &ContentReader,
        plain: &Mutex<PlainCache>,
        inflight: &Mutex<HashMap<Key, Arc<Pending>>>,
        batch: &[(ContentRef, Arc<Pending>)],
    ) -> SyncResult<()> {
        let refs: Vec<ContentRef> = batch.iter().map(|(c, _)| c.clone()).collect();
        let mut finished = vec![false; batch.len()];
        let fetched = reader.read_many(&refs, |i, r| {
            let (c, pending) = &batch[i];
            let r = r.map(Arc::new).map_err(|e| e.to_string());
            if let Ok(data) = &r {
                lock(plain).insert(c, data.clone());
            }
            lock(inflight).remove(&key(c));
            pending.finish(r);
            finished[i] = true;
        });
        // Whatever did not come (the backend went away mid-batch) fails its readers.
        let why = match &fetched {
            Err(e) => e.to_string(),
            Ok(()) => "nothing was fetched".to_owned(),
        };
        for (i, (c, pending)) in batch.iter().enumerate() {
            if !finished[i] {
                lock(inflight).remove(&key(c));
                pending.finish(Err(why.clone()));
            }
        }
        fetched
    }

    /// One small file, whole: from memory, from a fetch on its way, or fetched now
    /// together with `along` (what was sealed beside it).
    pub fn small(&self, c: &ContentRef, along: Vec<ContentRef>) -> SyncResult<Arc<Vec<u8>>> {
        if let Some(d) = lock(&self.plain).get(c) {
            return Ok(d);
        }
        let waiting = lock(&self.inflight).get(&key(c)).cloned();
        if let Some(p) = waiting {
            if let Ok(d) = p.wait() {
                return Ok(d);
            }
        }
        let mut wanted = vec![c.clone()];
        wanted.extend(along.into_iter().filter(|n| key(n) != key(c)));
        let batch = self.claim(wanted);
        let mine = batch
            .iter()
            .find(|(b, _)| key(b) == key(c))
            .map(|(_, p)| p.clone());
        Self::fetch_claimed(&self.reader, &self.plain, &self.inflight, &batch)?;
        match mine {
            Some(p) => p.wait().map_err(SyncError::Damaged),
            // Too large for the cache, or claimed by another reader a moment ago.
            None => match lock(&self.inflight).get(&key(c)).cloned() {
                Some(p) => p.wait().map_err(SyncError::Damaged),
                None => self.reader.read_all(c).map(Arc::new),
            },
        }
    }

    /// Starts fetching `wanted` in the background, a batch at a time; one prefetch at a
    /// time, ignored while another runs. What it takes on is registered before this
    /// returns, so a read that follows waits for it rather than fetching again.
    pub fn prefetch(self: &Arc<Self>, wanted: Vec<ContentRef>) {
        if wanted.is_empty() || self.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let batch = self.claim(wanted);
        if batch.is_empty() {
            self.prefetching.store(false, Ordering::Release);
            return;
        }
        let batch = Arc::new(batch);
        let (me, mine) = (self.clone(), batch.clone());
        let spawned = std::thread::Builder::new()
            .name("ghostie-prefetch".into())
            .spawn(move || {
                let mut start = 0;
                while start < mine.len() {
                    let mut end = start;
                    let mut bytes = 0;
                    while end < mine.len() && bytes < PREFETCH_BATCH_BYTES {
                        bytes += mine[end].0.size;
                        end += 1;
                    }
                    // A failure leaves the rest to be fetched when read.
                    let _ =
                        Self::fetch_claimed(&me.reader, &me.plain, &me.inflight, &mine[start..end]);
                    start = end;
                }
                me.prefetching.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            for (c, p) in batch.iter() {
                lock(&self.inflight).remove(&key(c));
                p.finish(Err(e.to_string()));
            }
            self.prefetching.store(false, Ordering::Release);
        }
    }

    /// Bytes `[offset, offset + len)` of a large file: the chunks they touch, or the
    /// read-ahead windows of a sequential reader.
    pub fn large(&self, c: &ContentRef, offset: u64, len: u64) -> SyncResult<ReadData> {
        let end = offset.saturating_add(len).min(c.size);
        if offset >= end {
            return Ok(ReadData::Owned(Vec::new()));
        }
        let windows = {
            let mut streams = lock(&self.streams);
            if !streams.contains_key(&key(c)) && streams.len() >= STREAMS_KEPT {
                if let Some(oldest) = streams
                    .iter()
                    .min_by_key(|(_, s)| s.touched)
                    .map(|(k, _)| k.clone())
                {
                    streams.remove(&oldest);
                }
            }
            let s = streams.entry(key(c)).or_insert_with(|| Stream {
                last_end: u64::MAX,
                run: 0,
                windows: BTreeMap::new(),
                touched: Instant::now(),
            });
            s.touched = Instant::now();
            let first = offset / WINDOW;
            let last = (end - 1) / WINDOW;
            // The kernel sends a sequential reader's reads a few at a time, not
            // always in order: near where the last one ended counts as in sequence.
            let in_sequence = s.last_end != u64::MAX
                && offset <= s.last_end.saturating_add(RAMP)
                && offset.saturating_add(WINDOW) >= s.last_end;
            if in_sequence || s.windows.contains_key(&first) {
                s.run += end - offset;
                s.last_end = s.last_end.max(end);
            } else {
                s.run = end - offset;
                s.last_end = end;
            }
            if s.run < RAMP && !s.windows.contains_key(&first) {
                None
            } else {
                // Windows behind the reader are done with.
                s.windows = s.windows.split_off(&first.saturating_sub(1));
                let count = c.size.div_ceil(WINDOW);
                let mut wanted = Vec::new();
                for w in first..=(last + AHEAD).min(count - 1) {
                    if let std::collections::btree_map::Entry::Vacant(slot) = s.windows.entry(w) {
                        let p = Arc::new(Pending::default());
                        slot.insert(p.clone());
                        wanted.push((w, p));
                    }
                }
                for (w, p) in wanted {
                    let reader = self.reader.clone();
                    let c = c.clone();
                    let spawned = std::thread::Builder::new()
                        .name("ghostie-readahead".into())
                        .spawn({
                            let p = p.clone();
                            move || {
                                let r = reader.read_at(&c, w * WINDOW, WINDOW);
                                p.finish(r.map(Arc::new).map_err(|e| e.to_string()));
                            }
                        });
                    if let Err(e) = spawned {
                        p.finish(Err(e.to_string()));
                    }
                }
                Some(
                    (first..=last)
                        .filter_map(|w| s.windows.get(&w).map(|p| (w, p.clone())))
                        .collect::<Vec<_>>(),
                )
            }
        };
        let Some(windows) = windows else {
            return self
                .reader
                .read_at(c, offset, end - offset)
                .map(ReadData::Owned);
        };
        let mut out = Vec::with_capacity((end - offset) as usize);
        let single = windows.len() == 1;
        for (w, p) in windows {
            let data = match p.wait() {
                Ok(d) => d,
                Err(why) => {
                    // The next read fetches it again.
                    if let Some(s) = lock(&self.streams).get_mut(&key(c)) {
                        s.windows.remove(&w);
                    }
                    return Err(SyncError::Damaged(why));
                }
            };
            let base = w * WINDOW;
            let from = (offset.max(base) - base) as usize;
            let to = ((end.min(base + WINDOW)) - base) as usize;
            if to > data.len() {
                return Err(SyncError::Damaged("its pack is truncated".into()));
            }
            if single {
                return Ok(ReadData::Shared(data, from..to));
            }
            out.extend_from_slice(&data[from..to]);
        }
        Ok(ReadData::Owned(out))
    }

    /// Forgets the read-ahead of a content no one reads any more.
    pub fn forget_stream(&self, c: &ContentRef) {
        lock(&self.streams).remove(&key(c));
    }
}

impl MountFs {
    /// A whole content as a file of `shown_size` bytes shows it (its values
    /// restored where the mount learned that size for it).
    pub(super) fn read_content(&self, c: &ContentRef, shown_size: u64) -> SyncResult<Vec<u8>> {
        if self.vault.shown_bytes_due(c, Some(shown_size)) {
            return self.restored_whole(c, shown_size, Vec::new());
        }
        if c.size <= WHOLE_READ_MAX {
            return Ok(self.reading.small(c, Vec::new())?.to_vec());
        }
        self.reading_reader().read_all(c)
    }

    /// All of `c`, fetched whole (with `along`), its values restored as a file of
    /// `shown_size` bytes shows them.
    fn restored_whole(
        &self,
        c: &ContentRef,
        shown_size: u64,
        along: Vec<ContentRef>,
    ) -> SyncResult<Vec<u8>> {
        let view = self.reading.small(c, along)?;
        Ok(self
            .vault
            .shown_bytes(c, Some(shown_size), &view)
            .unwrap_or_else(|| view.to_vec()))
    }

    fn reading_reader(&self) -> &ContentReader {
        &self.reading.reader
    }

    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> FsResult<ReadData> {
        let mut st = self.state();
        self.accessed(&mut st, ino);
        if st.files.staged.contains_key(&ino) {
            drop(st);
            st = self.filled(ino)?;
        }
        if let Some(s) = st.files.staged.get(&ino) {
            let len = (size as u64).min(s.size.saturating_sub(offset)) as usize;
            let mut buf = vec![0u8; len];
            let n = s.bytes.read_at(&mut buf, offset).map_err(from_io)?;
            buf.truncate(n);
            return Ok(ReadData::Owned(buf));
        }
        let n = st
            .tree
            .get(ino)
            .or_else(|| st.files.orphans.get(&ino))
            .ok_or(Errno::NOENT)?;
        let Some(c) = n.content().cloned() else {
            return Ok(ReadData::Owned(Vec::new()));
        };
        let path = n.path.clone();
        // Shown with values restored (anonymization): read whole, then restored.
        let shown_size = n.size;
        let restoring = self.vault.shown_bytes_due(&c, Some(shown_size));
        let fetch = |e: SyncError| {
            // A reader of a version whose pack its owner reclaimed: the file holds
            // newer contents now, which opening it again shows.
            let gone = matches!(&e, SyncError::Damaged(why) if why == PACK_GONE);
            if gone
                && self
                    .vault
                    .content_is_current(&c)
                    .is_ok_and(|current| !current)
            {
                tracing::warn!(
                    "cannot read {path} as it was when opened: a newer version replaced it \
                     and its old contents were reclaimed; open it again (answered ESTALE)"
                );
                return Errno::STALE;
            }
            tracing::error!("cannot read {path}: {e}");
            Errno::IO
        };
        let read_from = |from: &ContentRef, along: Vec<ContentRef>| -> SyncResult<ReadData> {
            if restoring {
                let shown = self.restored_whole(from, shown_size, along)?;
                let start = (offset as usize).min(shown.len());
                let end = (offset.saturating_add(size as u64) as usize).min(shown.len());
                return Ok(ReadData::Owned(shown[start..end].to_vec()));
            }
            if from.size > WHOLE_READ_MAX {
                return self.reading.large(from, offset, size as u64);
            }
            let data = self.reading.small(from, along)?;
            Ok(ReadData::shared(
                data,
                offset,
                offset.saturating_add(size as u64),
            ))
        };
        // The same version, its blob moved by its owner (a repack) and the old pack
        // reclaimed before this view caught up: read it where it is now.
        let or_moved = |result: SyncResult<ReadData>| -> FsResult<ReadData> {
            match result {
                // Gone, or sealed under a key the vault dropped after its owner
                // sealed it again (`rekey --rewrite`): where it is now.
                Err(e) if e.may_have_moved() => match self.vault.moved_to(&c) {
                    Ok(Some(now)) => read_from(&now, Vec::new()).map_err(fetch),
                    _ => Err(fetch(e)),
                },
                other => other.map_err(fetch),
            }
        };
        if c.size > WHOLE_READ_MAX || restoring || self.reading.is_cached(&c) {
            drop(st);
            return or_moved(read_from(&c, Vec::new()));
        }
        // A miss. A folder listed lately: fetch its files from this one on, in the
        // background. And whatever the reader does next, bring in what was sealed
        // beside this file.
        let dir = st.tree.ino_of(parent_path(&n.path)).unwrap_or(ROOT);
        let listed = if self.was_listed(dir) {
            self.listed_from(&st, dir, n.name())
        } else {
            Vec::new()
        };
        let along = self.sealed_beside(&st, &c);
        drop(st);
        self.reading.prefetch(listed);
        or_moved(read_from(&c, along))
    }

    /// The small files of folder `dir` from `name` on (readers of a whole folder go
    /// in name order).
    fn listed_from(&self, st: &super::mount_fs::State, dir: Ino, name: &str) -> Vec<ContentRef> {
        let Some(d) = st.tree.get(dir) else {
            return Vec::new();
        };
        d.children
            .range::<str, _>((std::ops::Bound::Included(name), std::ops::Bound::Unbounded))
            .map(|(_, i)| i)
            .filter(|i| !st.files.staged.contains_key(i))
            .filter_map(|i| st.tree.get(*i)?.content())
            .filter(|c| c.size <= WHOLE_READ_MAX)
            .cloned()
            .collect()
    }

    /// What was sealed beside `c` in its pack and is shown here, nearest first by
    /// offset from `c` onwards, then before it, within `NEIGHBOURS_BYTES`.
    fn sealed_beside(&self, st: &super::mount_fs::State, c: &ContentRef) -> Vec<ContentRef> {
        let mut beside: Vec<ContentRef> = st
            .tree
            .in_pack(&c.owner, &c.pack)
            .filter(|n| n.size <= WHOLE_READ_MAX && n.offset != c.offset)
            .cloned()
            .collect();
        beside.sort_by_key(|n| (n.offset < c.offset, n.offset.abs_diff(c.offset)));
        let mut budget = NEIGHBOURS_BYTES.saturating_sub(c.length);
        beside.retain(|n| {
            let fits = n.length <= budget;
            if fits {
                budget -= n.length;
            }
            fits
        });
        beside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_fetch_hands_its_result_to_every_waiter() {
        let p = Arc::new(Pending::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || p.wait())
            })
            .collect();
        p.finish(Ok(Arc::new(b"x".to_vec())));
        for w in waiters {
            assert_eq!(w.join().unwrap().unwrap().as_slice(), b"x");
        }
    }
}
