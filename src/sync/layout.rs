//! Key layout in the backend (DESIGN §4), as pure functions. No name, path or size of
//! a memory ever appears in a key: only random device and object ids and counters.

use crate::model::{DeviceId, ObjectId, Seq};

#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }
    pub fn keyring(&self) -> String {
        format!("{}/global/keyring.json", self.prefix)
    }
    pub fn device_record(&self, d: &DeviceId) -> String {
        format!("{}/{d}/device.enc", self.prefix)
    }
    pub fn pack(&self, owner: &DeviceId, id: &ObjectId) -> String {
        format!("{}/{owner}/memories/{id}.enc", self.prefix)
    }
    pub fn packs_prefix(&self, owner: &DeviceId) -> String {
        format!("{}/{owner}/memories/", self.prefix)
    }
    /// The pack a key under [`Layout::packs_prefix`] names.
    pub fn pack_of(prefix: &str, key: &str) -> Option<ObjectId> {
        ObjectId::parse(key.strip_prefix(prefix)?.strip_suffix(".enc")?)
    }
    pub fn log_prefix(&self, d: &DeviceId) -> String {
        format!("{}/{d}/log/", self.prefix)
    }
    pub fn segment(&self, d: &DeviceId, seq: Seq) -> String {
        format!("{}{:020}.enc", self.log_prefix(d), seq.0)
    }
    pub fn snapshot_prefix(&self, d: &DeviceId) -> String {
        format!("{}/{d}/metadata/snapshot-", self.prefix)
    }
    pub fn snapshot(&self, d: &DeviceId, seq: Seq) -> String {
        format!("{}{:020}.enc", self.snapshot_prefix(d), seq.0)
    }

    /// The device a `list_dirs` entry of the root names, if it names one.
    pub fn device_of_dir(&self, dir: &str) -> Option<DeviceId> {
        let rest = dir.strip_prefix(&self.root())?.strip_suffix('/')?;
        DeviceId::parse(rest)
    }

    /// The sequence number of a segment or snapshot key under `prefix`.
    pub fn seq_of(prefix: &str, key: &str) -> Option<Seq> {
        let digits = key.strip_prefix(prefix)?.strip_suffix(".enc")?;
        (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok().map(Seq))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_roundtrip() {
        let l = Layout::new("ghostie");
        let d = DeviceId::random();
        let seg = l.segment(&d, Seq(7));
        assert_eq!(Layout::seq_of(&l.log_prefix(&d), &seg), Some(Seq(7)));
        assert_eq!(l.device_of_dir(&format!("ghostie/{d}/")), Some(d.clone()));
        assert_eq!(l.device_of_dir("ghostie/global/"), None);
        assert!(seg.ends_with("/log/00000000000000000007.enc"));
        let snap = l.snapshot(&d, Seq(64));
        assert_eq!(Layout::seq_of(&l.snapshot_prefix(&d), &snap), Some(Seq(64)));
        assert_eq!(Layout::seq_of(&l.log_prefix(&d), "x"), None);
    }
}
