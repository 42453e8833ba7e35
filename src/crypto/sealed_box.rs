//! Sealing to a public key: X25519 with a fresh key per message, HKDF-SHA256, then
//! AES-256-GCM. For what anyone in the vault may write but only the holders of one
//! secret may read: the originals of sensitive values (every device seals them,
//! trusted devices open them) and a sensitive key handed to one device.
//!
//! ring has X25519 only for one-use private keys, and a receiver's key must be kept:
//! x25519-dalek does the curve, the cipher stays ring's (`aead`).
//!
//! Format: `GBX1`, the sender's one-use public key (32 bytes), then nonce,
//! ciphertext and tag as [`AeadKey::seal`] writes them. The key is bound to both
//! public keys and to a context naming what the box is for, so a box made for one
//! purpose or one receiver opens nowhere else.

use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::aead::AeadKey;
use super::CryptoError;

const MAGIC: &[u8; 4] = b"GBX1";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// A receiver's secret: kept where only its holder reads it.
#[derive(Clone)]
pub struct BoxSecret(StaticSecret);

/// A receiver's public key: anyone may seal to it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BoxPublic(pub [u8; 32]);

impl BoxSecret {
    pub fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(bytes.as_mut());
        Self(StaticSecret::from(*bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> BoxPublic {
        BoxPublic(PublicKey::from(&self.0).to_bytes())
    }
}

impl BoxPublic {
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        Some(Self(hex::decode(s).ok()?.try_into().ok()?))
    }
}

fn box_key(shared: &[u8; 32], sender: &[u8; 32], receiver: &[u8; 32], context: &[u8]) -> AeadKey {
    let salt: Vec<u8> = [sender.as_slice(), receiver.as_slice()].concat();
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    let info: Vec<u8> = [b"ghostie sealed box\0".as_slice(), context].concat();
    if hk.expand(&info, key.as_mut()).is_err() {
        unreachable!("HKDF output length is fixed at 32 bytes");
    }
    AeadKey::new(&key)
}

/// `plain` sealed so that only the holder of `to`'s secret opens it, for `context`.
/// A receiver key of small order (a damaged or forged record) is refused: the box
/// would open for anyone.
pub fn seal(to: &BoxPublic, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let once = BoxSecret::random();
    let sender = once.public();
    let shared = once.0.diffie_hellman(&PublicKey::from(to.0));
    if !shared.was_contributory() {
        return Err(CryptoError::InvalidRecord(
            "a public key of small order".into(),
        ));
    }
    let shared = Zeroizing::new(shared.to_bytes());
    let key = box_key(&shared, &sender.0, &to.0, context);
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + 28);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sender.0);
    out.extend_from_slice(&key.seal(context, plain));
    Ok(out)
}

/// Opens a box sealed to `secret`'s public key for `context`.
pub fn open(secret: &BoxSecret, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < HEADER_LEN || &sealed[..MAGIC.len()] != MAGIC {
        return Err(CryptoError::Damaged("not a sealed box".into()));
    }
    let sender: [u8; 32] = sealed[MAGIC.len()..HEADER_LEN]
        .try_into()
        .unwrap_or_else(|_| unreachable!("the header holds 32 bytes of key"));
    let shared = secret.0.diffie_hellman(&PublicKey::from(sender));
    // A sender key of small order makes a shared secret anyone can guess.
    if !shared.was_contributory() {
        return Err(CryptoError::Damaged(
            "a sealed box with a degenerate key".into(),
        ));
    }
    let shared = Zeroizing::new(shared.to_bytes());
    let key = box_key(&shared, &sender, &secret.public().0, context);
    key.open(context, &sealed[HEADER_LEN..])
        .ok_or_else(|| CryptoError::Damaged("a sealed box that does not open with this key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_opens_only_for_its_receiver_and_its_context() {
        let alice = BoxSecret::random();
        let eve = BoxSecret::random();
        let sealed = seal(&alice.public(), b"originals", b"anna@example.org").unwrap();
        assert_eq!(
            open(&alice, b"originals", &sealed).unwrap(),
            b"anna@example.org"
        );
        assert!(open(&eve, b"originals", &sealed).is_err());
        assert!(open(&alice, b"grant", &sealed).is_err());
        // Every byte is checked.
        for i in [0, 5, HEADER_LEN + 3, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&alice, b"originals", &bad).is_err(), "byte {i}");
        }
        assert!(open(&alice, b"originals", &sealed[..HEADER_LEN + 10]).is_err());
        // A sender key of small order (here zero) is refused.
        let mut degenerate = sealed.clone();
        degenerate[MAGIC.len()..HEADER_LEN].fill(0);
        assert!(open(&alice, b"originals", &degenerate).is_err());
        // Two boxes of the same text differ.
        assert_ne!(
            seal(&alice.public(), b"c", b"x").unwrap(),
            seal(&alice.public(), b"c", b"x").unwrap()
        );
        // A receiver key of small order is refused.
        assert!(seal(&BoxPublic([0; 32]), b"c", b"x").is_err());
    }

    #[test]
    fn keys_round_trip_through_bytes_and_hex() {
        let s = BoxSecret::random();
        let again = BoxSecret::from_bytes(*s.to_bytes());
        assert_eq!(again.public(), s.public());
        assert_eq!(BoxPublic::from_hex(&s.public().to_hex()), Some(s.public()));
        assert_eq!(BoxPublic::from_hex("abcd"), None);
    }
}
