//! `ContentReader`: reads contents without holding the `Vault`, so a front-end that
//! serves many readers at once (the mount) can fetch and decrypt on several threads
//! while the vault records and publishes on another.

use super::fetch::PACK_GONE;
use super::fetch::{fetch_contents, read_range, stream_blob, Source};
use super::{Layout, SyncError, SyncResult, STREAM_FROM};
use crate::backend::SharedStore;
use crate::crypto::blob::open_chunks_owned;
use crate::crypto::layout::chunk_span;
use crate::crypto::SubKeys;
use crate::model::ContentRef;
use crate::store::PackQueue;

/// Fetches in flight at once for a batch.
const PARALLEL_FETCH: usize = 4;

#[derive(Clone)]
pub struct ContentReader {
    store: SharedStore,
    layout: Layout,
    queue: PackQueue,
    keys: SubKeys,
}

impl std::fmt::Debug for ContentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentReader")
    }
}

impl ContentReader {
    pub(crate) fn new(store: SharedStore, layout: Layout, queue: PackQueue, keys: SubKeys) -> Self {
        Self {
            store,
            layout,
            queue,
            keys,
        }
    }

    fn source(&self) -> Source<'_> {
        Source {
            store: self.store.as_ref(),
            layout: &self.layout,
            queue: &self.queue,
            keys: &self.keys,
        }
    }

    /// The whole plaintext, checked against its hash.
    pub fn read_all(&self, r: &ContentRef) -> SyncResult<Vec<u8>> {
        if r.size > STREAM_FROM {
            let mut out = Vec::with_capacity(r.size as usize);
            stream_blob(&self.source(), r, &mut out)?;
            return Ok(out);
        }
        let mut result = None;
        self.read_many(std::slice::from_ref(r), |_, res| result = Some(res))?;
        result.unwrap_or_else(|| Err(SyncError::Damaged("nothing was fetched".into())))
    }

    /// Plaintext bytes `[offset, offset + len)`, fetching only the chunks that hold
    /// them. Each chunk is authenticated; the whole-file hash is not checked here
    /// (it needs every byte), which is why small files are read whole instead.
    pub fn read_at(&self, r: &ContentRef, offset: u64, len: u64) -> SyncResult<Vec<u8>> {
        let Some(span) = chunk_span(r.size, offset, offset.saturating_add(len)) else {
            return Ok(Vec::new());
        };
        let start = r.offset + span.blob_range.start;
        let end = r.offset + span.blob_range.end;
        let sealed = match read_range(
            self.store.as_ref(),
            &self.layout,
            &self.queue,
            &r.owner,
            &r.pack,
            start,
            end,
        ) {
            Err(SyncError::Backend(e)) if e.is_not_found() => {
                return Err(SyncError::Damaged(PACK_GONE.into()))
            }
            other => other?,
        };
        if (sealed.len() as u64) < end - start {
            return Err(SyncError::Damaged("its pack is truncated".into()));
        }
        let mut plain = open_chunks_owned(
            &self.keys.at_epoch(r.key_epoch)?,
            &r.blob,
            r.size,
            span.first,
            sealed,
        )?;
        let skip = (offset - span.first * crate::crypto::layout::CHUNK_SIZE) as usize;
        let take = (len as usize).min(plain.len().saturating_sub(skip));
        // In place: a read-ahead window is megabytes, and copying it again showed.
        plain.truncate(skip + take);
        plain.drain(..skip);
        Ok(plain)
    }

    /// Fetches many small contents with few requests (neighbours in a pack are read
    /// together), handing each result to `consume` as it arrives.
    pub fn read_many(
        &self,
        refs: &[ContentRef],
        mut consume: impl FnMut(usize, SyncResult<Vec<u8>>),
    ) -> SyncResult<()> {
        fetch_contents(&self.source(), refs, PARALLEL_FETCH, &|_, r| r, |i, r| {
            consume(i, r);
            Ok(())
        })
    }
}
