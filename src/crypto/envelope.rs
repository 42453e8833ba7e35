//! The sealed envelope of every encrypted record that is not content: log segments,
//! snapshots and device records. `magic || format || kind || nonce || ciphertext || tag`,
//! with the record's identity (device id, sequence number) as associated data, so a
//! record copied to another key — an old segment under a newer number, one device's
//! segment under another's prefix — fails to open.
//!
//! Format 2 (written only once a vault was rekeyed) adds the key epoch after the
//! kind, `magic || 2 || kind || epoch (u32 LE) || nonce || ciphertext || tag`, also
//! bound into the associated data; format 1 is epoch 0, so an older vault's records
//! read as before and a never-rekeyed vault writes exactly what older versions read.

use super::aead::AeadKey;
use super::keys::{Key32, SubKeys};
use super::CryptoError;

const MAGIC: &[u8; 4] = b"GHRC";
const FIRST_FORMAT: u8 = 1;
const EPOCH_FORMAT: u8 = 2;
const HEADER_LEN: usize = 4 + 1 + 1 + 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Segment = 1,
    Snapshot = 2,
    Device = 3,
}

impl RecordKind {
    fn key(self, keys: &SubKeys) -> &Key32 {
        match self {
            RecordKind::Segment | RecordKind::Snapshot => keys.log_key(),
            RecordKind::Device => keys.device_key(),
        }
    }
}

/// The header: magic, format, kind and, from format 2, the key epoch.
fn header(kind: RecordKind, epoch: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(10);
    h.extend_from_slice(MAGIC);
    if epoch == 0 {
        h.push(FIRST_FORMAT);
        h.push(kind as u8);
    } else {
        h.push(EPOCH_FORMAT);
        h.push(kind as u8);
        h.extend_from_slice(&epoch.to_le_bytes());
    }
    h
}

fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    [header, context].concat()
}

pub fn seal_record(keys: &SubKeys, kind: RecordKind, context: &[u8], plain: &[u8]) -> Vec<u8> {
    let head = header(kind, keys.epoch());
    let sealed = AeadKey::new(&kind.key(keys).0).seal(&aad(&head, context), plain);
    [head, sealed].concat()
}

/// The key epoch a sealed record names (0 for format 1), without opening it.
pub fn record_epoch(sealed: &[u8]) -> Option<u32> {
    match sealed.get(4) {
        Some(&FIRST_FORMAT) => Some(0),
        Some(&EPOCH_FORMAT) => sealed
            .get(6..10)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => None,
    }
}

pub fn open_record(
    keys: &SubKeys,
    kind: RecordKind,
    context: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < HEADER_LEN + 16 || &sealed[..4] != MAGIC {
        return Err(CryptoError::Damaged("not a ghostie record".into()));
    }
    let epoch = match sealed[4] {
        FIRST_FORMAT => 0,
        EPOCH_FORMAT if sealed.len() >= HEADER_LEN + 4 + 16 => {
            record_epoch(sealed).unwrap_or_default()
        }
        EPOCH_FORMAT => return Err(CryptoError::Damaged("not a ghostie record".into())),
        other => {
            return Err(CryptoError::Unsupported(format!(
                "record format {other} (this version reads up to {EPOCH_FORMAT})"
            )))
        }
    };
    if sealed[5] != kind as u8 {
        return Err(CryptoError::Damaged("record of the wrong kind".into()));
    }
    let keys = keys.at_epoch(epoch)?;
    let head = header(kind, epoch);
    AeadKey::new(&kind.key(&keys).0)
        .open(&aad(&head, context), &sealed[head.len()..])
        .ok_or_else(|| CryptoError::Damaged("record failed authentication".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::MasterKey;

    #[test]
    fn context_is_bound() {
        let keys = SubKeys::derive(&MasterKey::random());
        let s = seal_record(&keys, RecordKind::Segment, b"dev/5", b"hello");
        assert_eq!(
            open_record(&keys, RecordKind::Segment, b"dev/5", &s).unwrap(),
            b"hello"
        );
        assert!(open_record(&keys, RecordKind::Segment, b"dev/6", &s).is_err());
        assert!(open_record(&keys, RecordKind::Snapshot, b"dev/5", &s).is_err());
        let mut t = s.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(open_record(&keys, RecordKind::Segment, b"dev/5", &t).is_err());
        assert!(open_record(&keys, RecordKind::Segment, b"dev/5", &s[..20]).is_err());
        // A vault never rekeyed writes the first format, byte for byte as before.
        assert_eq!(s[4], 1);
        assert_eq!(s.len(), 6 + 12 + 5 + 16);
    }

    #[test]
    fn records_name_their_key_epoch_and_open_under_the_history() {
        let (old, new) = (MasterKey::random(), MasterKey::random());
        let before = SubKeys::derive(&old);
        let after = SubKeys::derive_all(1, &new, &[(0, old.clone())]);
        let early = seal_record(&before, RecordKind::Segment, b"d/1", b"early");
        let late = seal_record(&after, RecordKind::Segment, b"d/2", b"late");
        assert_eq!(
            (record_epoch(&early), record_epoch(&late)),
            (Some(0), Some(1))
        );
        assert_eq!(late[4], 2);
        assert_eq!(
            open_record(&after, RecordKind::Segment, b"d/1", &early).unwrap(),
            b"early"
        );
        assert_eq!(
            open_record(&after, RecordKind::Segment, b"d/2", &late).unwrap(),
            b"late"
        );
        // A device holding only the old key cannot read what came after.
        assert!(matches!(
            open_record(&before, RecordKind::Segment, b"d/2", &late),
            Err(CryptoError::NewerKey(1))
        ));
        // The epoch is authenticated: relabelled, the record fails.
        let mut relabelled = late.clone();
        relabelled[6] = 0;
        relabelled[4] = 2;
        assert!(open_record(&after, RecordKind::Segment, b"d/2", &relabelled).is_err());
    }
}
