//! The sealed envelope of every encrypted record that is not content: log segments,
//! snapshots and device records. `magic || format || kind || nonce || ciphertext || tag`,
//! with the record's identity (device id, sequence number) as associated data, so a
//! record copied to another key — an old segment under a newer number, one device's
//! segment under another's prefix — fails to open.

use super::aead::AeadKey;
use super::keys::{Key32, SubKeys};
use super::CryptoError;

const MAGIC: &[u8; 4] = b"GHRC";
const FORMAT: u8 = 1;
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
            RecordKind::Segment | RecordKind::Snapshot => &keys.log,
            RecordKind::Device => &keys.device,
        }
    }
}

fn aad(kind: RecordKind, context: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(6 + context.len());
    a.extend_from_slice(MAGIC);
    a.push(FORMAT);
    a.push(kind as u8);
    a.extend_from_slice(context);
    a
}

pub fn seal_record(keys: &SubKeys, kind: RecordKind, context: &[u8], plain: &[u8]) -> Vec<u8> {
    let sealed = AeadKey::new(&kind.key(keys).0).seal(&aad(kind, context), plain);
    let mut out = Vec::with_capacity(6 + sealed.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(kind as u8);
    out.extend_from_slice(&sealed);
    out
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
    if sealed[4] != FORMAT {
        return Err(CryptoError::Unsupported(format!(
            "record format {} (this version reads {FORMAT})",
            sealed[4]
        )));
    }
    if sealed[5] != kind as u8 {
        return Err(CryptoError::Damaged("record of the wrong kind".into()));
    }
    AeadKey::new(&kind.key(keys).0)
        .open(&aad(kind, context), &sealed[6..])
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
    }
}
