//! Offset maths of the blob format, kept pure so it can be tested on its own.
//!
//! A blob is `blob_id (16) || chunk_0 || chunk_1 || …`, each chunk being
//! `nonce (12) || ciphertext (≤ CHUNK_SIZE) || tag (16)`. Every chunk but the last is
//! full; an empty file is one empty last chunk, so every blob has at least one chunk.

pub const CHUNK_SIZE: u64 = 64 * 1024;
pub const NONCE_LEN: u64 = 12;
pub const TAG_LEN: u64 = 16;
pub const CHUNK_OVERHEAD: u64 = NONCE_LEN + TAG_LEN;
pub const BLOB_HEADER_LEN: u64 = 16;

pub fn chunk_count(plain_len: u64) -> u64 {
    plain_len.div_ceil(CHUNK_SIZE).max(1)
}

pub fn sealed_len(plain_len: u64) -> u64 {
    BLOB_HEADER_LEN + plain_len + chunk_count(plain_len) * CHUNK_OVERHEAD
}

/// Plaintext length of chunk `index` of a blob holding `plain_len` bytes.
pub fn chunk_plain_len(plain_len: u64, index: u64) -> u64 {
    let start = index * CHUNK_SIZE;
    plain_len.saturating_sub(start).min(CHUNK_SIZE)
}

/// Offset of chunk `index` from the start of the blob.
pub fn chunk_offset(index: u64) -> u64 {
    BLOB_HEADER_LEN + index * (CHUNK_SIZE + CHUNK_OVERHEAD)
}

/// The chunks and the byte range of the blob that hold plaintext `[start, end)`.
/// `end` is clamped to the file; an empty or out-of-range request yields `None`.
pub fn chunk_span(plain_len: u64, start: u64, end: u64) -> Option<ChunkSpan> {
    let end = end.min(plain_len);
    if start >= end {
        return None;
    }
    let first = start / CHUNK_SIZE;
    let last = (end - 1) / CHUNK_SIZE;
    let from = chunk_offset(first);
    let to = chunk_offset(last) + CHUNK_OVERHEAD + chunk_plain_len(plain_len, last);
    Some(ChunkSpan {
        first,
        last,
        blob_range: from..to,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpan {
    pub first: u64,
    pub last: u64,
    pub blob_range: std::ops::Range<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(chunk_count(0), 1);
        assert_eq!(sealed_len(0), 16 + 28);
        assert_eq!(chunk_count(CHUNK_SIZE), 1);
        assert_eq!(chunk_count(CHUNK_SIZE + 1), 2);
        assert_eq!(sealed_len(CHUNK_SIZE + 1), 16 + CHUNK_SIZE + 1 + 2 * 28);
        assert_eq!(chunk_plain_len(CHUNK_SIZE + 1, 1), 1);
        assert_eq!(chunk_plain_len(CHUNK_SIZE + 1, 2), 0);
    }

    #[test]
    fn span_covers_request() {
        let size = 50 * 1024 * 1024;
        let s = chunk_span(size, 40 * 1024 * 1024, 40 * 1024 * 1024 + 4096).unwrap();
        assert_eq!(s.first, s.last);
        assert_eq!(
            s.blob_range.end - s.blob_range.start,
            CHUNK_SIZE + CHUNK_OVERHEAD
        );
        let whole = chunk_span(size, 0, u64::MAX).unwrap();
        assert_eq!(whole.blob_range, BLOB_HEADER_LEN..sealed_len(size));
        assert!(chunk_span(10, 10, 20).is_none());
        let tail = chunk_span(CHUNK_SIZE + 5, CHUNK_SIZE, CHUNK_SIZE + 5).unwrap();
        assert_eq!(tail.blob_range.end, sealed_len(CHUNK_SIZE + 5));
    }
}
