//! Sealing and opening blobs: one version's content cut into 64 KiB chunks, each sealed
//! with AES-256-GCM under the blob's own key, with a fresh random nonce, and with
//! `format version || blob id || chunk index || last-chunk flag` as associated data.
//! So any byte range can be checked without the rest, and truncation (the last flag),
//! reordering (the index) and swapping chunks, blobs or objects (the blob id, bound
//! into both key and associated data) all fail the tag check.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::aead::AeadKey;
use super::keys::SubKeys;
use super::layout::{chunk_count, chunk_plain_len, CHUNK_SIZE, NONCE_LEN, TAG_LEN};
use super::CryptoError;
use crate::model::{BlobId, ContentHash};

pub const BLOB_FORMAT: u8 = 1;

/// Every pack object starts with this: magic and format version, then blobs.
pub const PACK_HEADER: [u8; 8] = *b"GHPK\x01\0\0\0";

fn chunk_aad(blob: &BlobId, index: u64, last: bool) -> [u8; 26] {
    let mut aad = [0u8; 26];
    aad[0] = BLOB_FORMAT;
    aad[1..17].copy_from_slice(&blob.0);
    aad[17..25].copy_from_slice(&index.to_le_bytes());
    aad[25] = u8::from(last);
    aad
}

fn cipher_for(keys: &SubKeys, blob: &BlobId) -> AeadKey {
    AeadKey::new(&keys.blob_key(blob).0)
}

/// What sealing one blob produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedBlob {
    pub plain_len: u64,
    pub sealed_len: u64,
    pub sha256: ContentHash,
}

/// Fills `buf` as far as the reader allows; a short count means end of input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Seals blobs, reusing its two chunk buffers from one blob to the next (a pack of
/// thousands of small files would otherwise allocate and zero 128 KiB per file).
pub struct Sealer {
    current: Vec<u8>,
    next: Vec<u8>,
}

impl Default for Sealer {
    fn default() -> Self {
        Self {
            current: vec![0u8; CHUNK_SIZE as usize],
            next: vec![0u8; CHUNK_SIZE as usize],
        }
    }
}

impl Sealer {
    /// Seals everything `input` yields as blob `blob`, writing the blob to `out`.
    /// With `known`, the caller vouches for the plaintext's hash (it hashed the same
    /// bytes in memory) and it is not computed again. A blob of more than one chunk is
    /// hashed on a second thread while this one encrypts.
    pub fn seal(
        &mut self,
        keys: &SubKeys,
        blob: BlobId,
        mut input: impl Read,
        out: &mut impl Write,
        known: Option<ContentHash>,
    ) -> io::Result<SealedBlob> {
        let first_len = read_full(&mut input, &mut self.current)?;
        if let Some(sha256) = known {
            let (plain_len, sealed_len) =
                self.seal_chunks(keys, &blob, first_len, &mut input, out, &mut |_| {})?;
            return Ok(SealedBlob {
                plain_len,
                sealed_len,
                sha256,
            });
        }
        if first_len < CHUNK_SIZE as usize {
            let mut hasher = Sha256::new();
            let (plain_len, sealed_len) =
                self.seal_chunks(keys, &blob, first_len, &mut input, out, &mut |c| {
                    hasher.update(c)
                })?;
            let sha256 = ContentHash(hasher.finalize().into());
            return Ok(SealedBlob {
                plain_len,
                sealed_len,
                sha256,
            });
        }
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
            let worker = scope.spawn(move || {
                let mut hasher = Sha256::new();
                for chunk in rx {
                    hasher.update(&chunk);
                }
                ContentHash(hasher.finalize().into())
            });
            let sealed = {
                let mut send = |c: &[u8]| {
                    // The receiver only goes away if it panicked; join reports that.
                    let _ = tx.send(c.to_vec());
                };
                self.seal_chunks(keys, &blob, first_len, &mut input, out, &mut send)
            };
            drop(tx);
            let sha256 = worker
                .join()
                .map_err(|_| io::Error::other("the hashing thread failed"))?;
            let (plain_len, sealed_len) = sealed?;
            Ok(SealedBlob {
                plain_len,
                sealed_len,
                sha256,
            })
        })
    }

    /// The chunk loop; `self.current` already holds the first `cur_len` bytes.
    fn seal_chunks(
        &mut self,
        keys: &SubKeys,
        blob: &BlobId,
        mut cur_len: usize,
        input: &mut impl Read,
        out: &mut impl Write,
        hash: &mut dyn FnMut(&[u8]),
    ) -> io::Result<(u64, u64)> {
        let cipher = cipher_for(keys, blob);
        out.write_all(&blob.0)?;
        let mut sealed_len = blob.0.len() as u64;
        let mut plain_len = 0u64;
        let mut index = 0u64;
        loop {
            // Reading one chunk ahead is how the last chunk knows it is last.
            let next_len = if cur_len == CHUNK_SIZE as usize {
                read_full(input, &mut self.next)?
            } else {
                0
            };
            let last = next_len == 0;
            let chunk = &mut self.current[..cur_len];
            hash(chunk);
            let aad = chunk_aad(blob, index, last);
            let (nonce, tag) = cipher.seal_in_place(&aad, chunk);
            out.write_all(&nonce)?;
            out.write_all(chunk)?;
            out.write_all(&tag)?;
            sealed_len += NONCE_LEN + cur_len as u64 + TAG_LEN;
            plain_len += cur_len as u64;
            if last {
                break;
            }
            std::mem::swap(&mut self.current, &mut self.next);
            cur_len = next_len;
            index += 1;
        }
        Ok((plain_len, sealed_len))
    }
}

/// Seals one blob with fresh buffers (see [`Sealer`] for many).
pub fn seal_blob(
    keys: &SubKeys,
    blob: BlobId,
    input: impl Read,
    out: &mut impl Write,
) -> io::Result<SealedBlob> {
    Sealer::default().seal(keys, blob, input, out, None)
}

/// Opens consecutive chunks starting at `first_chunk` from `sealed` (which begins at
/// that chunk's nonce) and returns their plaintext. `plain_len` is the blob's full
/// plaintext size, which fixes every chunk's length and which one is last.
pub fn open_chunks(
    keys: &SubKeys,
    blob: &BlobId,
    plain_len: u64,
    first_chunk: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = cipher_for(keys, blob);
    let total_chunks = chunk_count(plain_len);
    let mut out = Vec::with_capacity(sealed.len());
    let mut pos = 0usize;
    let mut index = first_chunk;
    while pos < sealed.len() {
        if index >= total_chunks {
            return Err(CryptoError::Damaged("blob is longer than recorded".into()));
        }
        let len = chunk_plain_len(plain_len, index) as usize;
        let need = NONCE_LEN as usize + len + TAG_LEN as usize;
        if sealed.len() - pos < need {
            return Err(CryptoError::Damaged(format!(
                "chunk {index} is truncated ({} of {need} bytes)",
                sealed.len() - pos
            )));
        }
        let nonce = &sealed[pos..pos + NONCE_LEN as usize];
        let body_start = pos + NONCE_LEN as usize;
        let start = out.len();
        // Ciphertext and tag are adjacent, as the cipher wants them.
        out.extend_from_slice(&sealed[body_start..body_start + len + TAG_LEN as usize]);
        let aad = chunk_aad(blob, index, index + 1 == total_chunks);
        let opened = cipher
            .open_in_place(nonce, &aad, &mut out[start..])
            .map(|p| p.len())
            .ok_or_else(|| CryptoError::Damaged(format!("chunk {index} failed authentication")))?;
        out.truncate(start + opened);
        pos += need;
        index += 1;
    }
    Ok(out)
}

/// As [`open_chunks`], taking the fetched bytes and opening them where they lie:
/// each chunk's plaintext moves down over the nonces and tags before it as it is
/// decrypted, so a window of megabytes is not copied once more.
pub fn open_chunks_owned(
    keys: &SubKeys,
    blob: &BlobId,
    plain_len: u64,
    first_chunk: u64,
    mut sealed: Vec<u8>,
) -> Result<Vec<u8>, CryptoError> {
    let cipher = cipher_for(keys, blob);
    let total_chunks = chunk_count(plain_len);
    let mut pos = 0usize;
    let mut written = 0usize;
    let mut index = first_chunk;
    while pos < sealed.len() {
        if index >= total_chunks {
            return Err(CryptoError::Damaged("blob is longer than recorded".into()));
        }
        let len = chunk_plain_len(plain_len, index) as usize;
        let need = NONCE_LEN as usize + len + TAG_LEN as usize;
        if sealed.len() - pos < need {
            return Err(CryptoError::Damaged(format!(
                "chunk {index} is truncated ({} of {need} bytes)",
                sealed.len() - pos
            )));
        }
        let mut nonce = [0u8; NONCE_LEN as usize];
        nonce.copy_from_slice(&sealed[pos..pos + NONCE_LEN as usize]);
        let aad = chunk_aad(blob, index, index + 1 == total_chunks);
        let opened = cipher
            .open_within(
                &nonce,
                &aad,
                &mut sealed[written..pos + need],
                pos + NONCE_LEN as usize - written,
            )
            .ok_or_else(|| CryptoError::Damaged(format!("chunk {index} failed authentication")))?;
        written += opened;
        pos += need;
        index += 1;
    }
    sealed.truncate(written);
    Ok(sealed)
}

/// Opens a whole blob (header included) and checks its plaintext hash.
pub fn open_blob(
    keys: &SubKeys,
    blob: &BlobId,
    plain_len: u64,
    expected: &ContentHash,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < 16 || sealed[..16] != blob.0 {
        return Err(CryptoError::Damaged(
            "blob id does not match the log".into(),
        ));
    }
    let body = &sealed[16..];
    let plain = open_chunks(keys, blob, plain_len, 0, body)?;
    if plain.len() as u64 != plain_len {
        return Err(CryptoError::Damaged(format!(
            "blob holds {} bytes, the log says {plain_len}",
            plain.len()
        )));
    }
    let got = ContentHash(Sha256::digest(&plain).into());
    if &got != expected {
        return Err(CryptoError::Damaged(
            "content hash does not match the log".into(),
        ));
    }
    Ok(plain)
}

/// Checks a whole sealed blob read from `sealed` (header included) without holding
/// its plaintext: every chunk must open and the plaintext must hash to `expected`. A
/// blob cut short, altered or swapped fails.
pub fn check_blob(
    keys: &SubKeys,
    blob: &BlobId,
    plain_len: u64,
    expected: &ContentHash,
    mut sealed: impl Read,
) -> Result<(), CryptoError> {
    let damaged = |what: &str| CryptoError::Damaged(what.to_owned());
    let mut header = [0u8; 16];
    if read_full(&mut sealed, &mut header).map_err(|e| damaged(&e.to_string()))? < 16
        || header != blob.0
    {
        return Err(damaged("blob id does not match the log"));
    }
    // A window of chunks at a time: a large file is checked in bounded memory.
    const WINDOW: u64 = 64;
    let total = chunk_count(plain_len);
    let mut hasher = Sha256::new();
    let mut buf = Vec::new();
    let mut index = 0;
    while index < total {
        let last = (index + WINDOW).min(total);
        let want: u64 = (index..last)
            .map(|i| NONCE_LEN + chunk_plain_len(plain_len, i) + TAG_LEN)
            .sum();
        buf.resize(want as usize, 0);
        let got = read_full(&mut sealed, &mut buf).map_err(|e| damaged(&e.to_string()))?;
        if got < buf.len() {
            return Err(damaged(&format!("chunk {index} is truncated")));
        }
        hasher.update(open_chunks(keys, blob, plain_len, index, &buf)?);
        index = last;
    }
    if ContentHash(hasher.finalize().into()) != *expected {
        return Err(damaged("content hash does not match the log"));
    }
    Ok(())
}

pub fn hash_bytes(data: &[u8]) -> ContentHash {
    ContentHash(Sha256::digest(data).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::MasterKey;
    use crate::crypto::layout::{chunk_span, sealed_len};

    fn seal(keys: &SubKeys, blob: BlobId, data: &[u8]) -> (SealedBlob, Vec<u8>) {
        let mut out = Vec::new();
        let s = seal_blob(keys, blob, data, &mut out).unwrap();
        (s, out)
    }

    #[test]
    fn roundtrip_sizes() {
        let keys = SubKeys::derive(&MasterKey::random());
        for size in [0usize, 1, 4096, 65536, 65537, 200_000] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let blob = BlobId::random();
            let (s, sealed) = seal(&keys, blob, &data);
            assert_eq!(s.sealed_len, sealed.len() as u64);
            assert_eq!(s.sealed_len, sealed_len(size as u64));
            let back = open_blob(&keys, &blob, size as u64, &s.sha256, &sealed).unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn range_reads_need_only_their_chunks() {
        let keys = SubKeys::derive(&MasterKey::random());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let blob = BlobId::random();
        let (_, sealed) = seal(&keys, blob, &data);
        let span = chunk_span(data.len() as u64, 150_000, 150_100).unwrap();
        let r = span.blob_range.start as usize..span.blob_range.end as usize;
        let plain = open_chunks(
            &keys,
            &blob,
            data.len() as u64,
            span.first,
            &sealed[r.clone()],
        )
        .unwrap();
        let off = (150_000 - span.first * CHUNK_SIZE) as usize;
        assert_eq!(&plain[off..off + 100], &data[150_000..150_100]);
        // Opened where they lie: the same plaintext, and the same refusals.
        let owned = open_chunks_owned(
            &keys,
            &blob,
            data.len() as u64,
            span.first,
            sealed[r.clone()].to_vec(),
        )
        .unwrap();
        assert_eq!(owned, plain);
        let whole = sealed[16..].to_vec();
        assert_eq!(
            open_chunks_owned(&keys, &blob, data.len() as u64, 0, whole).unwrap(),
            data
        );
        let mut flipped = sealed[r].to_vec();
        flipped[40] ^= 1;
        assert!(open_chunks_owned(&keys, &blob, data.len() as u64, span.first, flipped).is_err());
    }

    #[test]
    fn a_whole_blob_is_checked_chunk_by_chunk_and_any_damage_fails() {
        let keys = SubKeys::derive(&MasterKey::random());
        let blob = BlobId::random();
        for size in [0usize, 10, 65_536, 65_537, 5 * 65_536 + 3, 70 * 65_536 + 1] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let (s, sealed) = seal(&keys, blob, &data);
            check_blob(&keys, &blob, size as u64, &s.sha256, &sealed[..]).unwrap();
            // Cut short, as a power cut leaves a tail never written back.
            let cut = &sealed[..sealed.len() - 1];
            assert!(check_blob(&keys, &blob, size as u64, &s.sha256, cut).is_err());
            // One byte flipped anywhere.
            let mut bad = sealed.clone();
            let at = bad.len() / 2;
            bad[at] ^= 1;
            assert!(check_blob(&keys, &blob, size as u64, &s.sha256, &bad[..]).is_err());
            // Zeros where the bytes should be.
            let zeros = vec![0u8; sealed.len()];
            assert!(check_blob(&keys, &blob, size as u64, &s.sha256, &zeros[..]).is_err());
            // Another content's hash.
            let other = hash_bytes(b"something else");
            assert!(check_blob(&keys, &blob, size as u64, &other, &sealed[..]).is_err());
        }
    }

    #[test]
    fn tampering_is_detected() {
        let keys = SubKeys::derive(&MasterKey::random());
        let data = vec![42u8; 140_000];
        let blob = BlobId::random();
        let (s, sealed) = seal(&keys, blob, &data);
        let mut flipped = sealed.clone();
        flipped[100] ^= 1;
        assert!(open_blob(&keys, &blob, 140_000, &s.sha256, &flipped).is_err());
        // Dropping the last chunk: the one before it was not sealed as last.
        let cut = (sealed_len(2 * CHUNK_SIZE) - 28) as usize;
        assert!(open_chunks(&keys, &blob, 2 * CHUNK_SIZE, 0, &sealed[16..cut]).is_err());
        // Another blob's bytes under this blob's id.
        let other = BlobId::random();
        let (_, sealed2) = seal(&keys, other, &data);
        assert!(open_blob(&keys, &blob, 140_000, &s.sha256, &sealed2).is_err());
        let mut relabelled = sealed2.clone();
        relabelled[..16].copy_from_slice(&blob.0);
        assert!(open_blob(&keys, &blob, 140_000, &s.sha256, &relabelled).is_err());
        // Another vault's key.
        let stranger = SubKeys::derive(&MasterKey::random());
        assert!(open_blob(&stranger, &blob, 140_000, &s.sha256, &sealed).is_err());
    }
}
