//! Fetching contents: the blobs wanted are grouped by pack and neighbouring blobs are
//! read with one ranged request, so a new device pulls a vault of small files in a few
//! large reads, while one memory costs one small read. Requests run on a few threads;
//! results stream back to the caller's thread through a bounded channel.

/// What a read says when the pack of the content it wants is not in the backend:
/// its owner reclaimed it (the version was superseded) or it was lost.
pub const PACK_GONE: &str = "its pack is no longer in the vault";

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use super::{Layout, SyncError, SyncResult};
use crate::backend::ObjectStore;
use std::io::Write;

use sha2::{Digest, Sha256};

use crate::crypto::blob::{open_blob, open_chunks};
use crate::crypto::layout::{
    chunk_count, chunk_offset, chunk_plain_len, BLOB_HEADER_LEN, CHUNK_OVERHEAD,
};
use crate::crypto::SubKeys;
use crate::model::{ContentHash, ContentRef, DeviceId, ObjectId};
use crate::store::PackQueue;

/// Blobs closer than this are read together, gap included.
const MAX_GAP: u64 = 256 * 1024;
/// One request reads at most this much (unless one blob alone is larger).
const MAX_RUN: u64 = 16 * 1024 * 1024;

/// Where contents come from and the key that opens them.
pub(crate) struct Source<'a> {
    pub store: &'a dyn ObjectStore,
    pub layout: &'a Layout,
    pub queue: &'a PackQueue,
    pub keys: &'a SubKeys,
}

/// One fetched content, by its position in the caller's list.
#[derive(Debug)]
pub struct FetchedContent {
    pub index: usize,
    pub result: SyncResult<Vec<u8>>,
}

struct Run {
    owner: DeviceId,
    pack: ObjectId,
    start: u64,
    end: u64,
    members: Vec<usize>,
}

fn plan(refs: &[ContentRef]) -> Vec<Run> {
    let mut by_pack: BTreeMap<(DeviceId, ObjectId), Vec<usize>> = BTreeMap::new();
    for (i, r) in refs.iter().enumerate() {
        by_pack
            .entry((r.owner.clone(), r.pack.clone()))
            .or_default()
            .push(i);
    }
    let mut runs = Vec::new();
    for ((owner, pack), mut members) in by_pack {
        members.sort_by_key(|&i| refs[i].offset);
        let mut run: Option<Run> = None;
        for i in members {
            let (s, e) = (refs[i].offset, refs[i].offset + refs[i].length);
            match &mut run {
                Some(r) if s <= r.end + MAX_GAP && e.max(r.end) - r.start <= MAX_RUN => {
                    r.end = r.end.max(e);
                    r.members.push(i);
                }
                _ => {
                    runs.extend(run.take());
                    run = Some(Run {
                        owner: owner.clone(),
                        pack: pack.clone(),
                        start: s,
                        end: e,
                        members: vec![i],
                    });
                }
            }
        }
        runs.extend(run);
    }
    runs
}

fn read_run(
    store: &dyn ObjectStore,
    layout: &Layout,
    queue: &PackQueue,
    run: &Run,
) -> SyncResult<Vec<u8>> {
    read_range(
        store, layout, queue, &run.owner, &run.pack, run.start, run.end,
    )
}

pub(crate) fn read_range(
    store: &dyn ObjectStore,
    layout: &Layout,
    queue: &PackQueue,
    owner: &DeviceId,
    pack: &ObjectId,
    start: u64,
    end: u64,
) -> SyncResult<Vec<u8>> {
    // A pack sealed here and not yet uploaded is read from the queue.
    let queued = queue.path_of(pack);
    match std::fs::File::open(&queued) {
        Ok(mut f) => {
            use std::io::{Read, Seek, SeekFrom};
            f.seek(SeekFrom::Start(start))
                .map_err(SyncError::io(&queued))?;
            let mut buf = Vec::new();
            f.take(end - start)
                .read_to_end(&mut buf)
                .map_err(SyncError::io(&queued))?;
            return Ok(buf);
        }
        // Not sealed here, or uploaded (and removed) a moment ago: the vault has it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SyncError::io(&queued)(e)),
    }
    Ok(store.get_range(&layout.pack(owner, pack), start..end)?)
}

/// Contents larger than this are fetched a window at a time instead of whole, so a
/// large file never has to fit in memory twice.
pub const STREAM_FROM: u64 = 16 * 1024 * 1024;
/// Chunks per ranged read when streaming (4 MiB).
const WINDOW_CHUNKS: u64 = 64;

/// Fetches one content window by window, checking every chunk and the whole hash,
/// and writes the plaintext to `out`. On any failure `out` holds unchecked-free but
/// incomplete data; the caller must discard it.
pub(crate) fn stream_blob(
    from: &Source<'_>,
    r: &ContentRef,
    out: &mut dyn Write,
) -> SyncResult<()> {
    let read = |start: u64, end: u64| -> SyncResult<Vec<u8>> {
        match read_range(
            from.store,
            from.layout,
            from.queue,
            &r.owner,
            &r.pack,
            start,
            end,
        ) {
            Err(SyncError::Backend(e)) if e.is_not_found() => {
                Err(SyncError::Damaged(PACK_GONE.into()))
            }
            other => other,
        }
    };
    let head = read(r.offset, r.offset + BLOB_HEADER_LEN)?;
    if head.len() as u64 != BLOB_HEADER_LEN || head[..] != r.blob.0 {
        return Err(SyncError::Damaged("blob id does not match the log".into()));
    }
    let keys = from.keys.at_epoch(r.key_epoch)?;
    let mut hasher = Sha256::new();
    let total = chunk_count(r.size);
    let mut first = 0;
    while first < total {
        let last = (first + WINDOW_CHUNKS).min(total) - 1;
        let start = chunk_offset(first);
        let end = chunk_offset(last) + CHUNK_OVERHEAD + chunk_plain_len(r.size, last);
        let bytes = read(r.offset + start, r.offset + end)?;
        if (bytes.len() as u64) < end - start {
            return Err(SyncError::Damaged("its pack is truncated".into()));
        }
        let plain = open_chunks(&keys, &r.blob, r.size, first, &bytes)?;
        hasher.update(&plain);
        out.write_all(&plain)
            .map_err(|e| SyncError::Invalid(format!("cannot write the fetched content: {e}")))?;
        first = last + 1;
    }
    if ContentHash(hasher.finalize().into()) != r.sha256 {
        return Err(SyncError::Damaged(
            "content hash does not match the log".into(),
        ));
    }
    Ok(())
}

/// Fetches and checks every content in `refs`. Each result goes through `process` on
/// the fetching thread (so writing files, say, runs on every core), then to `consume`
/// on the caller's thread. A damaged or missing content is an `Err` for that content
/// alone; a backend that fails otherwise (unreachable, say) is an `Err` too, with a
/// `SyncError::Backend` the caller can tell apart from damage.
pub(crate) fn fetch_contents<T: Send>(
    from: &Source<'_>,
    refs: &[ContentRef],
    parallel: usize,
    process: &(dyn Fn(usize, SyncResult<Vec<u8>>) -> T + Sync),
    mut consume: impl FnMut(usize, T) -> SyncResult<()>,
) -> SyncResult<()> {
    let queue = Mutex::new(plan(refs));
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<(usize, T)>(64);
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            let tx = tx.clone();
            let queue = &queue;
            let stop = &stop;
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(run) = next else { break };
                let data = read_run(from.store, from.layout, from.queue, &run);
                for &i in &run.members {
                    let r = &refs[i];
                    let result = match &data {
                        Err(SyncError::Backend(e)) if e.is_not_found() => {
                            Err(SyncError::Damaged(PACK_GONE.into()))
                        }
                        Err(SyncError::Backend(e)) => Err(SyncError::Backend(
                            crate::backend::BackendError::Invalid(e.to_string()),
                        )),
                        Err(e) => Err(SyncError::Damaged(format!("cannot read its pack: {e}"))),
                        Ok(bytes) => {
                            let start = (r.offset - run.start) as usize;
                            let to = ((r.offset + r.length - run.start) as usize).min(bytes.len());
                            if to - start.min(to) < r.length as usize {
                                Err(SyncError::Damaged("its pack is truncated".into()))
                            } else {
                                from.keys
                                    .at_epoch(r.key_epoch)
                                    .and_then(|keys| {
                                        open_blob(
                                            &keys,
                                            &r.blob,
                                            r.size,
                                            &r.sha256,
                                            &bytes[start..to],
                                        )
                                    })
                                    .map_err(SyncError::from)
                            }
                        }
                    };
                    if tx.send((i, process(i, result))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        for (i, item) in rx {
            if let Err(e) = consume(i, item) {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlobId, ContentHash};

    fn r(owner: &DeviceId, pack: &ObjectId, offset: u64, length: u64) -> ContentRef {
        ContentRef {
            owner: owner.clone(),
            pack: pack.clone(),
            offset,
            length,
            blob: BlobId([0; 16]),
            sha256: ContentHash([0; 32]),
            size: 0,
            key_epoch: 0,
        }
    }

    #[test]
    fn neighbours_share_a_request() {
        let d = DeviceId::random();
        let p = ObjectId::new(1);
        let q = ObjectId::new(2);
        let refs = vec![
            r(&d, &p, 8, 100),
            r(&d, &p, 108, 100),
            r(&d, &q, 8, 10),
            r(&d, &p, 50_000_000, 10),
        ];
        let runs = plan(&refs);
        assert_eq!(runs.len(), 3);
        let first = runs.iter().find(|x| x.pack == p && x.start == 8).unwrap();
        assert_eq!((first.end, first.members.len()), (208, 2));
    }
}
