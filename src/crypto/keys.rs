//! The master key and the sub-keys derived from it with HKDF-SHA256, one per purpose,
//! so that no key ever seals two kinds of data.

use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

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

/// The keys one vault uses, each derived once at unlock.
#[derive(Clone)]
pub struct SubKeys {
    content: Key32,
    pub(crate) log: Key32,
    pub(crate) device: Key32,
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

impl SubKeys {
    pub fn derive(master: &MasterKey) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"ghostie-fs v1"), master.as_bytes());
        Self {
            content: expand(&hk, &[b"content"]),
            log: expand(&hk, &[b"log"]),
            device: expand(&hk, &[b"device record"]),
        }
    }

    /// The key that seals this device's stored provider credentials where no OS
    /// keyring exists (`keys/credentials.enc`): whoever cannot unlock the vault cannot
    /// read them, and it seals nothing else.
    pub fn credentials_key(master: &MasterKey) -> Key32 {
        let hk = Hkdf::<Sha256>::new(Some(b"ghostie-fs v1"), master.as_bytes());
        expand(&hk, &[b"credentials"])
    }

    /// The key that seals the chunks of one blob: unique per blob, so a chunk moved
    /// into another blob fails its tag even before the associated data is checked.
    pub fn blob_key(&self, blob: &BlobId) -> Key32 {
        let hk = Hkdf::<Sha256>::from_prk(&self.content.0).unwrap_or_else(|_| {
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
        assert_ne!(k.content.0, k.log.0);
        assert_ne!(k.log.0, k.device.0);
        assert_ne!(
            k.blob_key(&BlobId([1; 16])).0,
            k.blob_key(&BlobId([2; 16])).0
        );
        let again = SubKeys::derive(&MasterKey::from_bytes(*MasterKey::random().as_bytes()));
        assert_ne!(again.log.0, k.log.0);
        let m = MasterKey::random();
        assert_ne!(
            SubKeys::credentials_key(&m).0,
            SubKeys::derive(&m).content.0
        );
    }
}
