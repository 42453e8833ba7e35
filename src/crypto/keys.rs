//! The master key and the sub-keys derived from it with HKDF-SHA256, one per purpose,
//! so that no key ever seals two kinds of data.

use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use std::sync::Arc;

use super::CryptoError;
use crate::model::BlobId;

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        Self(k)
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key32(pub(crate) [u8; 32]);

impl Key32 {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Key32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key32(..)")
    }
}

/// The keys one key epoch uses, each derived once at unlock.
#[derive(Clone)]
struct EpochKeys {
    epoch: u32,
    content: Key32,
    log: Key32,
    device: Key32,
}

/// The keys one vault uses: those of the current key epoch, which seal everything
/// written from now on, and those of older epochs (`rekey` keeps them in the
/// keyring's history), which only open what was sealed before. A clone is cheap.
#[derive(Clone)]
pub struct SubKeys {
    /// Sorted by epoch; the last is the current one.
    epochs: Arc<[EpochKeys]>,
    /// The epoch this view seals with (the newest, or the one a reader asked for).
    sealing: usize,
}

impl std::fmt::Debug for SubKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubKeys(..)")
    }
}

fn expand(hk: &Hkdf<Sha256>, info: &[&[u8]]) -> Key32 {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    let joined: Vec<u8> = info.concat();
    if hk.expand(&joined, &mut out).is_err() {
        unreachable!("HKDF output length is fixed at 32 bytes");
    }
    Key32(out)
}

fn root(master: &MasterKey) -> Hkdf<Sha256> {
    Hkdf::<Sha256>::new(Some(b"ghostie-fs v1"), master.as_bytes())
}

impl EpochKeys {
    fn derive(epoch: u32, master: &MasterKey) -> Self {
        let hk = root(master);
        Self {
            epoch,
            content: expand(&hk, &[b"content"]),
            log: expand(&hk, &[b"log"]),
            device: expand(&hk, &[b"device record"]),
        }
    }
}

impl SubKeys {
    /// The keys of a vault that was never rekeyed (epoch 0).
    pub fn derive(master: &MasterKey) -> Self {
        Self::derive_all(0, master, &[])
    }

    /// The keys of epoch `current` under `master`, and of every older epoch in
    /// `older` (any order; an entry for `current` itself is ignored).
    pub fn derive_all(current: u32, master: &MasterKey, older: &[(u32, MasterKey)]) -> Self {
        let mut epochs: Vec<EpochKeys> = older
            .iter()
            .filter(|(e, _)| *e < current)
            .map(|(e, k)| EpochKeys::derive(*e, k))
            .collect();
        epochs.sort_by_key(|k| k.epoch);
        epochs.dedup_by_key(|k| k.epoch);
        epochs.push(EpochKeys::derive(current, master));
        let sealing = epochs.len() - 1;
        Self {
            epochs: epochs.into(),
            sealing,
        }
    }

    /// The epoch everything sealed through these keys is sealed under.
    pub fn epoch(&self) -> u32 {
        self.epochs[self.sealing].epoch
    }

    /// The newest epoch these keys know.
    pub fn newest_epoch(&self) -> u32 {
        self.epochs[self.epochs.len() - 1].epoch
    }

    /// The epochs these keys open, oldest first.
    pub fn epochs(&self) -> Vec<u32> {
        self.epochs.iter().map(|k| k.epoch).collect()
    }

    /// The same keys, sealing and opening as of `epoch`: what a reader of
    /// something sealed under an older key uses.
    pub fn at_epoch(&self, epoch: u32) -> Result<SubKeys, CryptoError> {
        match self.epochs.binary_search_by_key(&epoch, |k| k.epoch) {
            Ok(sealing) => Ok(Self {
                epochs: Arc::clone(&self.epochs),
                sealing,
            }),
            Err(_) if epoch > self.newest_epoch() => Err(CryptoError::NewerKey(epoch)),
            Err(_) => Err(CryptoError::DroppedKey(epoch)),
        }
    }

    fn current(&self) -> &EpochKeys {
        &self.epochs[self.sealing]
    }

    pub(crate) fn log_key(&self) -> &Key32 {
        &self.current().log
    }

    pub(crate) fn device_key(&self) -> &Key32 {
        &self.current().device
    }

    /// The key that seals this device's stored provider credentials where no OS
    /// keyring exists (`keys/credentials.enc`): whoever cannot unlock the vault cannot
    /// read them, and it seals nothing else.
    pub fn credentials_key(master: &MasterKey) -> Key32 {
        expand(&root(master), &[b"credentials"])
    }

    /// The key that seals a keyring's history of older keys and removed devices
    /// (DESIGN §5): only the current master key opens it.
    pub fn secrets_key(master: &MasterKey) -> Key32 {
        expand(&root(master), &[b"keyring secrets"])
    }

    /// The key that seals the chunks of one blob: unique per blob, so a chunk moved
    /// into another blob fails its tag even before the associated data is checked.
    pub fn blob_key(&self, blob: &BlobId) -> Key32 {
        let hk = Hkdf::<Sha256>::from_prk(&self.current().content.0).unwrap_or_else(|_| {
            unreachable!("a 32-byte key is a valid HKDF-SHA256 pseudo-random key")
        });
        expand(&hk, &[b"blob", &blob.0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_get_distinct_keys() {
        let k = SubKeys::derive(&MasterKey::random());
        assert_ne!(k.current().content.0, k.log_key().0);
        assert_ne!(k.log_key().0, k.device_key().0);
        assert_ne!(
            k.blob_key(&BlobId([1; 16])).0,
            k.blob_key(&BlobId([2; 16])).0
        );
        let again = SubKeys::derive(&MasterKey::from_bytes(*MasterKey::random().as_bytes()));
        assert_ne!(again.log_key().0, k.log_key().0);
        let m = MasterKey::random();
        assert_ne!(
            SubKeys::credentials_key(&m).0,
            SubKeys::derive(&m).current().content.0
        );
    }

    #[test]
    fn older_epochs_open_and_unknown_ones_are_named() {
        let (old, new) = (MasterKey::random(), MasterKey::random());
        let k = SubKeys::derive_all(1, &new, &[(0, old.clone())]);
        assert_eq!(k.epoch(), 1);
        assert_eq!(k.epochs(), vec![0, 1]);
        let at0 = k.at_epoch(0).unwrap();
        assert_eq!(at0.epoch(), 0);
        assert_eq!(at0.log_key().0, SubKeys::derive(&old).log_key().0);
        assert_ne!(k.log_key().0, at0.log_key().0);
        assert!(matches!(k.at_epoch(2), Err(CryptoError::NewerKey(2))));
        let dropped = SubKeys::derive_all(2, &new, &[]);
        assert!(matches!(
            dropped.at_epoch(1),
            Err(CryptoError::DroppedKey(1))
        ));
    }
}
