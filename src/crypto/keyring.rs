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

/// Format 1: one generation. Format 2 (written by `passwd` from this version on)
/// also names, authenticated, the generations it replaced, so that a device that
/// used a newer keyring can tell an older one served again (a rollback) from a
/// newer one. A format-1 record reads as before.
pub const KEYRING_FORMAT: u32 = 2;
const FIRST_FORMAT: u32 = 1;
/// Generations remembered as replaced: far more than any vault changes its
/// passphrase, while a doctored record stays small.
const PREVIOUS_KEPT: usize = 256;
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
    /// The generations this one replaced, oldest first (format 2; part of what the
    /// wrapping authenticates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<String>,
    pub kdf: KdfParams,
    pub nonce: String,
    pub wrapped_key: String,
}

fn derive(passphrase: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(passphrase, salt, iterations, k.as_mut());
    k
}

fn aad(format: u32, vault_id: &str, generation: &str, previous: &[String]) -> Vec<u8> {
    if format == FIRST_FORMAT {
        return format!("ghostie keyring v1\0{vault_id}\0{generation}").into_bytes();
    }
    format!(
        "ghostie keyring v2\0{vault_id}\0{generation}\0{}",
        previous.join(",")
    )
    .into_bytes()
}

pub fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl WrappedKey {
    /// A record of a vault's first generation (nothing replaced yet).
    pub fn wrap(
        master: &MasterKey,
        passphrase: &[u8],
        iterations: u32,
        vault_id: &str,
        generation: &str,
    ) -> Self {
        Self::wrap_after(master, passphrase, iterations, vault_id, generation, &[])
    }

    /// A record of `generation`, which replaced `previous` (oldest first). Without
    /// any, it is written in the first format, which every version reads.
    pub fn wrap_after(
        master: &MasterKey,
        passphrase: &[u8],
        iterations: u32,
        vault_id: &str,
        generation: &str,
        previous: &[String],
    ) -> Self {
        let previous = &previous[previous.len().saturating_sub(PREVIOUS_KEPT)..];
        let format = if previous.is_empty() {
            FIRST_FORMAT
        } else {
            KEYRING_FORMAT
        };
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let kek = derive(passphrase, &salt, iterations);
        let sealed = AeadKey::new(&kek).seal(
            &aad(format, vault_id, generation, previous),
            master.as_bytes(),
        );
        let (nonce, wrapped) = sealed.split_at(NONCE_LEN);
        Self {
            format,
            vault_id: vault_id.to_owned(),
            generation: generation.to_owned(),
            previous: previous.to_vec(),
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
        if !(FIRST_FORMAT..=KEYRING_FORMAT).contains(&self.format) {
            return Err(CryptoError::Unsupported(format!(
                "key record format {} (this version reads up to {KEYRING_FORMAT})",
                self.format
            )));
        }
        // Generations are random 32-hex-digit ids: anything else (a comma that
        // would join two in what the wrapping authenticates) is refused.
        let is_generation = |g: &String| g.len() == 32 && g.bytes().all(|b| b.is_ascii_hexdigit());
        if self.previous.len() > PREVIOUS_KEPT
            || (self.format == FIRST_FORMAT && !self.previous.is_empty())
            || !self.previous.iter().all(is_generation)
        {
            return Err(CryptoError::InvalidRecord(
                "its list of replaced generations is not valid".into(),
            ));
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
                .open(
                    &aad(
                        self.format,
                        &self.vault_id,
                        &self.generation,
                        &self.previous,
                    ),
                    &joined,
                )
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
        let mut weird = w.clone();
        weird.kdf.name = "md5".into();
        assert!(matches!(
            weird.unwrap_key(b"x"),
            Err(CryptoError::Unsupported(_))
        ));
        // A first-generation record is written, and read, in the first format.
        assert_eq!(w.format, 1);
        assert!(!String::from_utf8(w.to_json()).unwrap().contains("previous"));
    }

    #[test]
    fn the_generations_a_keyring_replaced_are_authenticated() {
        let mk = MasterKey::random();
        let previous = vec![random_id(), random_id()];
        let w = WrappedKey::wrap_after(&mk, b"pass", 1000, "v", "g3", &previous);
        assert_eq!(w.format, 2);
        let back = WrappedKey::from_json(&w.to_json()).unwrap();
        assert_eq!(back.unwrap_key(b"pass").unwrap().as_bytes(), mk.as_bytes());
        // A provider that strips or edits the list breaks the record.
        let mut stripped = back.clone();
        stripped.previous.pop();
        assert!(stripped.unwrap_key(b"pass").is_err());
        // Two generations made one by a comma would authenticate the same: refused.
        let mut joined = back.clone();
        joined.previous = vec![previous.join(",")];
        assert!(matches!(
            joined.unwrap_key(b"pass"),
            Err(CryptoError::InvalidRecord(_))
        ));
        let mut older = back.clone();
        older.format = 1;
        assert!(older.unwrap_key(b"pass").is_err());
        let mut newer = back;
        newer.format = 3;
        assert!(matches!(
            newer.unwrap_key(b"pass"),
            Err(CryptoError::Unsupported(_))
        ));
    }
}
