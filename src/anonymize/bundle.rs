//! Several originals objects in one (what a mount uploads): every close that
//! pseudonymized a new value queued an object of its own, and a provider that
//! counts requests should not see one upload per close.
//!
//! A running mount appends each close's object to a journal of such entries (one
//! file, no file per close), which its next upload sends as one bundle.
//!
//! Layout: `GOB1`, then for each object its id (32 lower-case hex digits), its
//! length (u32, big-endian) and its bytes, unchanged: each stays sealed under the
//! context that names its own id, so it opens exactly as it would alone. A single
//! originals object starts with its key epoch (u32, big-endian), which never
//! reaches the magic's value (over a billion key rotations).

use crate::model::ObjectId;

const MAGIC: &[u8; 4] = b"GOB1";
const ID_LEN: usize = 32;

/// The objects of a bundle, each with its id.
pub type Bundled<'a> = Vec<(ObjectId, &'a [u8])>;

/// The objects `(id, bytes)` as one.
pub fn bundle(objects: &[(ObjectId, Vec<u8>)]) -> Vec<u8> {
    let total: usize = objects.iter().map(|(_, b)| ID_LEN + 4 + b.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + total);
    out.extend_from_slice(MAGIC);
    for (id, bytes) in objects {
        out.extend_from_slice(&entry(id, bytes));
    }
    out
}

/// One object as a bundle holds it: what a mount appends to its journal of
/// originals at each close (a bundle is the magic and such entries).
pub fn entry(id: &ObjectId, bytes: &[u8]) -> Vec<u8> {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(ID_LEN + 4 + len as usize);
    out.extend_from_slice(id.as_str().as_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
    out
}

/// The bytes `object` takes in a bundle or a journal.
pub fn entry_len(object: &[u8]) -> usize {
    ID_LEN + 4 + object.len()
}

/// The whole entries of a journal: an entry cut short by a crash as it was
/// appended ends it (it was never acknowledged).
pub fn journal_entries(bytes: &[u8]) -> Bundled<'_> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(Ok((id, object, after))) = next_entry(rest) {
        out.push((id, object));
        rest = after;
    }
    out
}

/// An entry's id, its object, and what follows it.
type Entry<'a> = (ObjectId, &'a [u8], &'a [u8]);

/// The entry at the start of `rest`: `None` at its end, an error where it is cut
/// short or damaged.
fn next_entry(rest: &[u8]) -> Option<Result<Entry<'_>, String>> {
    if rest.is_empty() {
        return None;
    }
    let Some((id, after)) = rest.split_at_checked(ID_LEN) else {
        return Some(Err("an originals bundle cut short".into()));
    };
    let Some(id) = std::str::from_utf8(id).ok().and_then(ObjectId::parse) else {
        return Some(Err("an originals bundle names a bad id".into()));
    };
    let Some((len, after)) = after.split_first_chunk::<4>() else {
        return Some(Err("an originals bundle cut short".into()));
    };
    let Some((object, after)) = after.split_at_checked(u32::from_be_bytes(*len) as usize) else {
        return Some(Err("an originals bundle cut short".into()));
    };
    Some(Ok((id, object, after)))
}

/// The objects inside `bytes` if it is a bundle (`None`: a single object).
/// A bundle cut short or holding a bad id is damaged: `Some(Err)`.
pub fn unbundle(bytes: &[u8]) -> Option<Result<Bundled<'_>, String>> {
    let mut rest = bytes.strip_prefix(MAGIC)?;
    let mut out = Vec::new();
    while let Some(next) = next_entry(rest) {
        match next {
            Ok((id, object, after)) => {
                out.push((id, object));
                rest = after;
            }
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_come_out_of_a_bundle_as_they_went_in() {
        let a = (ObjectId::new(1), vec![0, 0, 0, 1, 9, 9]);
        let b = (ObjectId::new(2), Vec::new());
        let c = (ObjectId::new(3), vec![7; 300]);
        let all = vec![a.clone(), b.clone(), c.clone()];
        let bytes = bundle(&all);
        let out = unbundle(&bytes).unwrap().unwrap();
        let back: Vec<(ObjectId, Vec<u8>)> =
            out.into_iter().map(|(id, o)| (id, o.to_vec())).collect();
        assert_eq!(back, all);
    }

    #[test]
    fn a_single_object_is_not_a_bundle_and_a_cut_bundle_is_damaged() {
        // A single originals object starts with its epoch.
        assert!(unbundle(&[0, 0, 0, 2, b'G', b'B', b'X', b'1']).is_none());
        let bytes = bundle(&[(ObjectId::new(1), vec![1, 2, 3, 4])]);
        for cut in 5..bytes.len() {
            assert!(
                matches!(unbundle(&bytes[..cut]), Some(Err(_))),
                "cut at {cut} read as whole"
            );
        }
        let mut bad = bytes.clone();
        bad[4] = b'Z';
        assert!(matches!(unbundle(&bad), Some(Err(_))));
    }

    #[test]
    fn a_journal_cut_by_a_crash_keeps_its_whole_entries() {
        let a = (ObjectId::new(1), vec![1; 40]);
        let b = (ObjectId::new(2), vec![2; 40]);
        let journal = [entry(&a.0, &a.1), entry(&b.0, &b.1)].concat();
        let whole = journal_entries(&journal);
        assert_eq!(whole.len(), 2);
        assert_eq!((whole[1].0.clone(), whole[1].1.to_vec()), b);
        for cut in entry(&a.0, &a.1).len()..journal.len() {
            let kept = journal_entries(&journal[..cut]);
            assert_eq!(kept.len(), 1, "cut at {cut}");
            assert_eq!((kept[0].0.clone(), kept[0].1.to_vec()), a);
        }
    }
}
