//! The passphrase-wrapped master key. The same record is stored twice: in the vault as
//! `global/keyring.json` (how a new device joins with the passphrase alone) and on each
//! device as `keys/master.key` with that device's own salt. The KDF parameters live in
//! the record so they can be raised later without a format change.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::aead::{AeadKey, NONCE_LEN};
use super::keys::MasterKey;
use super::CryptoError;

pub const KEYRING_FORMAT: u32 = 1;
pub const KDF_NAME: &str = "pbkdf2-hmac-sha256";
/// OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256.
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Records asking for more than this are refused: a doctored keyring must not be able
/// to make every unlock hang.
const MAX_ITERATIONS: u32 = 100_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub name: String,
    pub iterations: u32,
    pub salt: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WrappedKey {
    pub format: u32,
    /// Random id of the vault, the same in every copy of the key.
    pub vault_id: String,
    /// Random id that `passwd` renews; a device whose local copy names an older
    /// generation than the vault's keyring must unlock through the keyring again.
    pub generation: String,
    pub kdf: KdfParams,
    pub nonce: String,
    pub wrapped_key: String,
}

fn derive(passphrase: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(passphrase, salt, iterations, k.as_mut());
    k
}

fn aad(vault_id: &str, generation: &str) -> Vec<u8> {
    format!("ghostie keyring v1\0{vault_id}\0{generation}").into_bytes()
}

pub fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl WrappedKey {
    pub fn wrap(
        master: &MasterKey,
        passphrase: &[u8],
        iterations: u32,
        vault_id: &str,
        generation: &str,
    ) -> Self {
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let kek = derive(passphrase, &salt, iterations);
        let sealed = AeadKey::new(&kek).seal(&aad(vault_id, generation), master.as_bytes());
        let (nonce, wrapped) = sealed.split_at(NONCE_LEN);
        Self {
            format: KEYRING_FORMAT,
            vault_id: vault_id.to_owned(),
            generation: generation.to_owned(),
            kdf: KdfParams {
                name: KDF_NAME.to_owned(),
                iterations,
                salt: B64.encode(salt),
            },
            nonce: B64.encode(nonce),
            wrapped_key: B64.encode(wrapped),
        }
    }

    /// Checks the record's shape before any expensive work.
    pub fn validate(&self) -> Result<(), CryptoError> {
        if self.format != KEYRING_FORMAT {
            return Err(CryptoError::Unsupported(format!(
                "key record format {} (this version reads {KEYRING_FORMAT})",
                self.format
            )));
        }
        if self.kdf.name != KDF_NAME {
            return Err(CryptoError::Unsupported(format!(
                "key derivation {:?}",
                self.kdf.name
            )));
        }
        if self.kdf.iterations == 0 || self.kdf.iterations > MAX_ITERATIONS {
            return Err(CryptoError::InvalidRecord(format!(
                "{} iterations is out of range",
                self.kdf.iterations
            )));
        }
        Ok(())
    }

    pub fn unwrap_key(&self, passphrase: &[u8]) -> Result<MasterKey, CryptoError> {
        self.validate()?;
        let bad = |what: &str| CryptoError::InvalidRecord(format!("{what} is not valid base64"));
        let salt = B64.decode(&self.kdf.salt).map_err(|_| bad("salt"))?;
        let nonce = B64.decode(&self.nonce).map_err(|_| bad("nonce"))?;
        let sealed = B64
            .decode(&self.wrapped_key)
            .map_err(|_| bad("wrapped key"))?;
        if nonce.len() != 12 || sealed.len() != 48 || salt.len() < 16 {
            return Err(CryptoError::InvalidRecord("field lengths are wrong".into()));
        }
        let kek = derive(passphrase, &salt, self.kdf.iterations);
        let mut joined = nonce;
        joined.extend_from_slice(&sealed);
        let plain = Zeroizing::new(
            AeadKey::new(&kek)
                .open(&aad(&self.vault_id, &self.generation), &joined)
                .ok_or(CryptoError::WrongPassphrase)?,
        );
        let mut k = [0u8; 32];
        k.copy_from_slice(&plain);
        Ok(MasterKey::from_bytes(k))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self)
            .unwrap_or_else(|_| unreachable!("a struct of strings always serialises"));
        v.push(b'\n');
        v
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, CryptoError> {
        serde_json::from_slice(bytes).map_err(|e| CryptoError::InvalidRecord(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_passphrase() {
        let mk = MasterKey::random();
        // Few iterations keep the unit test fast; the CLI always uses the default.
        let w = WrappedKey::wrap(&mk, b"correct horse", 1000, "v", "g");
        assert_eq!(
            w.unwrap_key(b"correct horse").unwrap().as_bytes(),
            mk.as_bytes()
        );
        assert!(matches!(
            w.unwrap_key(b"wrong"),
            Err(CryptoError::WrongPassphrase)
        ));
        let back = WrappedKey::from_json(&w.to_json()).unwrap();
        assert_eq!(back, w);
        let mut moved = w.clone();
        moved.generation = "other".into();
        assert!(moved.unwrap_key(b"correct horse").is_err());
        let mut weird = w;
        weird.kdf.name = "md5".into();
        assert!(matches!(
            weird.unwrap_key(b"x"),
            Err(CryptoError::Unsupported(_))
        ));
    }
}
