//! Plain types every layer shares: ids, sequence numbers, version vectors and the
//! version record that the log carries. No I/O and no crypto here.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Writes `bytes` as lowercase hex; the on-disk and in-key spelling of every random id.
fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// One shared copy of each id string. A vault names a handful of devices and a few
/// packs per thousand files, yet every version carries two or three such ids: a
/// mount of 100,000 files would otherwise hold hundreds of thousands of copies.
fn interned(s: &str) -> Arc<str> {
    static IDS: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    let mut ids = IDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(id) = ids.get(s) {
        return id.clone();
    }
    let id: Arc<str> = Arc::from(s);
    ids.insert(id.clone());
    id
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A device's stable random id: 16 random bytes as 32 lowercase hex characters.
/// It names the device's prefix in the backend, so it must never carry a human name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    pub fn random() -> Self {
        Self(interned(&random_hex(16)))
    }
    pub fn parse(s: &str) -> Option<Self> {
        is_lower_hex(s, 32).then(|| Self(interned(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("not a device id: {s:?}"))
    }
}
impl From<DeviceId> for String {
    fn from(d: DeviceId) -> String {
        d.0.to_string()
    }
}
impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", &self.0[..8.min(self.0.len())])
    }
}

/// The id of one pack object: a millisecond timestamp followed by random bytes, so ids
/// sort by creation time (handy when reclaiming space) yet say nothing about content.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectId(Arc<str>);

impl ObjectId {
    pub fn new(now_ms: u64) -> Self {
        Self(interned(&format!("{now_ms:012x}{}", random_hex(10))))
    }
    pub fn parse(s: &str) -> Option<Self> {
        is_lower_hex(s, 32).then(|| Self(interned(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for ObjectId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("not an object id: {s:?}"))
    }
}
impl From<ObjectId> for String {
    fn from(d: ObjectId) -> String {
        d.0.to_string()
    }
}
impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.0)
    }
}

/// The 16-byte random id of one blob inside a pack; bound into every chunk's key and
/// associated data so blobs cannot be swapped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 16]);

impl BlobId {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        Self(b)
    }
}
impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", hex::encode(self.0))
    }
}
impl Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}
impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        let arr: [u8; 16] = v
            .try_into()
            .map_err(|_| serde::de::Error::custom("blob id must be 16 bytes"))?;
        Ok(Self(arr))
    }
}

/// A SHA-256 digest of a file's plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}
impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl ContentHash {
    pub fn parse(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(Self(v.try_into().ok()?))
    }
}
impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}
impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("bad sha256"))
    }
}

/// A log sequence number of one device; segments count up from 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

/// Device id → counter. A version made by device D carries D's newest counter, so the
/// pair (D, vector[D]) names the version uniquely.
///
/// Kept as pairs sorted by device (a vault has a handful of devices; a map would cost
/// hundreds of bytes per version), written as the JSON object `{device: counter}` in
/// device order, exactly as the map it replaced.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct VersionVector(Vec<(DeviceId, u64)>);

impl VersionVector {
    pub fn get(&self, device: &DeviceId) -> u64 {
        self.position(device).map(|i| self.0[i].1).unwrap_or(0)
    }

    fn position(&self, device: &DeviceId) -> Result<usize, usize> {
        self.0.binary_search_by(|(d, _)| d.cmp(device))
    }

    pub fn merge(&mut self, other: &VersionVector) {
        for (d, c) in &other.0 {
            match self.position(d) {
                Ok(i) => self.0[i].1 = self.0[i].1.max(*c),
                Err(i) => self.0.insert(i, (d.clone(), *c)),
            }
        }
    }

    pub fn set(&mut self, device: &DeviceId, counter: u64) {
        match self.position(device) {
            Ok(i) => self.0[i].1 = counter,
            Err(i) => self.0.insert(i, (device.clone(), counter)),
        }
    }

    /// The devices this vector names, in order, with their counters.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, u64)> {
        self.0.iter().map(|(d, c)| (d, *c))
    }

    /// The causal order of two vectors; `None` when they are concurrent.
    pub fn partial_cmp_causal(&self, other: &VersionVector) -> Option<Ordering> {
        let mut less = false;
        let mut greater = false;
        for d in self.0.iter().chain(other.0.iter()).map(|(d, _)| d) {
            match self.get(d).cmp(&other.get(d)) {
                Ordering::Less => less = true,
                Ordering::Greater => greater = true,
                Ordering::Equal => {}
            }
        }
        match (less, greater) {
            (false, false) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (true, true) => None,
        }
    }

    /// `self` supersedes `other`: at least as new everywhere, newer somewhere.
    pub fn supersedes(&self, other: &VersionVector) -> bool {
        self.partial_cmp_causal(other) == Some(Ordering::Greater)
    }
}

impl FromIterator<(DeviceId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (DeviceId, u64)>>(pairs: I) -> Self {
        let mut v = VersionVector::default();
        for (d, c) in pairs {
            v.set(&d, c);
        }
        v
    }
}

impl Serialize for VersionVector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(d, c)| (d, c)))
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of device ids to counters")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut v = VersionVector(Vec::with_capacity(map.size_hint().unwrap_or(1).min(64)));
                // A repeated device keeps its last counter, as a map would.
                while let Some((d, c)) = map.next_entry::<DeviceId, u64>()? {
                    v.set(&d, c);
                }
                v.0.shrink_to_fit();
                Ok(v)
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// Where one version's content lives: a blob inside a pack object.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ContentRef {
    /// The device whose prefix holds the pack (packs are never shared between devices'
    /// prefixes, but a version may point at another device's pack when it keeps that
    /// device's content, e.g. a conflict resolved in its favour).
    pub owner: DeviceId,
    pub pack: ObjectId,
    pub offset: u64,
    pub length: u64,
    pub blob: BlobId,
    pub sha256: ContentHash,
    pub size: u64,
    /// The key epoch the blob is sealed under (0 until the vault is first rekeyed,
    /// and then not written, so older records read and write as before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub key_epoch: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a version says the path is.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    File { content: ContentRef, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
    Deleted,
}

impl Entry {
    pub fn is_deleted(&self) -> bool {
        matches!(self, Entry::Deleted)
    }
}

/// How many files, folders and links a push or a pull changed, and how many paths it
/// removed: the counts a user reads ("2 files and 1 folder").
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub files: usize,
    pub folders: usize,
    pub links: usize,
    pub removed: usize,
}

impl Tally {
    pub fn count(&mut self, entry: &Entry) {
        match entry {
            Entry::File { .. } => self.files += 1,
            Entry::Dir { .. } => self.folders += 1,
            Entry::Symlink { .. } => self.links += 1,
            Entry::Deleted => self.removed += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.files + self.folders + self.links + self.removed
    }
}

/// One state of one path, made by one device.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Version {
    pub path: String,
    pub device: DeviceId,
    pub vector: VersionVector,
    /// Modification time in nanoseconds since the epoch, as the writing device saw it.
    pub mtime_ns: i64,
    pub entry: Entry,
}

impl Version {
    /// The counter this version carries for its own device: with the device, its name.
    pub fn counter(&self) -> u64 {
        self.vector.get(&self.device)
    }
}

/// What a front-end shows at one path: which version, the vector a change made on top
/// of it starts from, and, for a conflict sibling, the path it stands beside. The
/// engine hands these out with what it shows and takes them back with each change
/// (DESIGN §6: a change supersedes exactly what its device showed); a front-end keeps
/// them and never looks inside.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Showing {
    pub(crate) device: DeviceId,
    pub(crate) counter: u64,
    pub(crate) vector: VersionVector,
    pub(crate) sibling_of: Option<String>,
}

impl Showing {
    /// `version` as shown at its own path (`sibling_of: None`) or beside another.
    pub fn of(version: &Version, sibling_of: Option<String>) -> Self {
        Self {
            device: version.device.clone(),
            counter: version.counter(),
            vector: version.vector.clone(),
            sibling_of,
        }
    }

    /// The version's name: its device and that device's counter.
    pub fn id(&self) -> (&DeviceId, u64) {
        (&self.device, self.counter)
    }

    /// For a conflict sibling, the path it stands beside.
    pub fn sibling_of(&self) -> Option<&str> {
        self.sibling_of.as_deref()
    }

    /// The same version, now shown beside `main` (or at its own path with `None`).
    pub fn standing(mut self, sibling_of: Option<String>) -> Self {
        self.sibling_of = sibling_of;
        self
    }
}

/// A link from another device may point anywhere inside the folder, never outside
/// it: Ghost writing through `x.json -> ~/.bashrc` would be an escape.
pub fn link_stays_inside(path: &str, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let mut depth = path.matches('/').count() as i64;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(&DeviceId, u64)]) -> VersionVector {
        let mut v = VersionVector::default();
        for (d, c) in pairs {
            v.set(d, *c);
        }
        v
    }

    #[test]
    fn vector_order() {
        let a = DeviceId::random();
        let b = DeviceId::random();
        assert!(vv(&[(&a, 2)]).supersedes(&vv(&[(&a, 1)])));
        assert!(vv(&[(&a, 1), (&b, 1)]).supersedes(&vv(&[(&a, 1)])));
        assert!(!vv(&[(&a, 1)]).supersedes(&vv(&[(&a, 1)])));
        assert_eq!(vv(&[(&a, 2)]).partial_cmp_causal(&vv(&[(&b, 1)])), None);
        let mut m = vv(&[(&a, 2)]);
        m.merge(&vv(&[(&a, 1), (&b, 3)]));
        assert_eq!(m, vv(&[(&a, 2), (&b, 3)]));
    }

    #[test]
    fn vector_json_is_the_device_ordered_map_older_vaults_hold() {
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        // As a map wrote it, in any key order.
        let written = format!(r#"{{"{b}":3,"{a}":7}}"#);
        let v: VersionVector = serde_json::from_str(&written).unwrap();
        assert_eq!(v.get(&DeviceId::parse(&a).unwrap()), 7);
        assert_eq!(v.get(&DeviceId::parse(&b).unwrap()), 3);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            format!(r#"{{"{a}":7,"{b}":3}}"#)
        );
        // A repeated key keeps the last counter, as a map would.
        let twice: VersionVector =
            serde_json::from_str(&format!(r#"{{"{a}":1,"{a}":2}}"#)).unwrap();
        assert_eq!(
            serde_json::to_string(&twice).unwrap(),
            format!(r#"{{"{a}":2}}"#)
        );
        assert!(serde_json::from_str::<VersionVector>(r#"{"laptop":1}"#).is_err());
        assert_eq!(
            serde_json::to_string(&VersionVector::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn ids_roundtrip_and_reject_garbage() {
        let d = DeviceId::random();
        assert_eq!(DeviceId::parse(d.as_str()), Some(d.clone()));
        assert!(DeviceId::parse("laptop").is_none());
        let o = ObjectId::new(1_700_000_000_000);
        assert_eq!(ObjectId::parse(o.as_str()), Some(o));
        let json = serde_json::to_string(&BlobId([7; 16])).unwrap();
        let back: BlobId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, BlobId([7; 16]));
    }
}
