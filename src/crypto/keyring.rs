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

/// Format 1: one generation. Format 2 (written by `passwd`) also names,
/// authenticated, the generations it replaced, so that a device that used a newer
/// keyring can tell an older one served again (a rollback) from a newer one.
/// Format 3 (written once a vault is rekeyed, `rekey` or `devices remove`) adds the
/// key epoch of the wrapped key and, sealed under that key, the older keys and the
/// removed devices ([`VaultSecrets`]). Older formats read as before.
pub const KEYRING_FORMAT: u32 = 3;
const FIRST_FORMAT: u32 = 1;
const GENERATIONS_FORMAT: u32 = 2;
/// A doctored record must not be able to make a device allocate without bound.
const MAX_SECRETS_LEN: usize = 4 << 20;
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
    /// The key epoch of the wrapped key (format 3): 0 until the first rekey.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u32,
    /// [`VaultSecrets`] sealed under the wrapped key (format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A device shut out by `devices remove`: its log is read up to `log_cut` and not
/// beyond, whatever it publishes later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemovedDevice {
    /// The device's id, as in the vault's layout.
    pub device: String,
    pub name: String,
    /// The last segment of its log that counts.
    pub log_cut: u64,
    pub removed_ms: u64,
    /// The device that removed it.
    pub by: String,
}

/// What only the current key opens: the keys of older epochs (content sealed
/// before a rekey stays readable through them) and the devices removed.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct VaultSecrets {
    #[serde(default)]
    pub older_keys: Vec<OlderKey>,
    #[serde(default)]
    pub removed: Vec<RemovedDevice>,
    /// Set by `rekey --rewrite`: what is sealed under an epoch below this one is
    /// to be sealed again under the current key, after which the older keys go.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewrite_below: u32,
    /// The device that asked for the rewrite: it alone takes over the files of
    /// removed devices (one new version each, not one per device).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rewrite_by: String,
}

impl std::fmt::Debug for VaultSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSecrets")
            .field("older_epochs", &self.older_epochs())
            .field("removed", &self.removed)
            .field("rewrite_below", &self.rewrite_below)
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct OlderKey {
    pub epoch: u32,
    /// Base64 of the 32-byte master key of that epoch.
    key: String,
}

impl OlderKey {
    pub fn new(epoch: u32, key: &MasterKey) -> Self {
        Self {
            epoch,
            key: B64.encode(key.as_bytes()),
        }
    }
}

impl Drop for OlderKey {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key.zeroize();
    }
}

impl VaultSecrets {
    pub fn is_empty(&self) -> bool {
        self.older_keys.is_empty()
            && self.removed.is_empty()
            && self.rewrite_below == 0
            && self.rewrite_by.is_empty()
    }

    pub fn older_epochs(&self) -> Vec<u32> {
        self.older_keys.iter().map(|k| k.epoch).collect()
    }

    /// The older keys, each with its epoch.
    pub fn older(&self) -> Result<Vec<(u32, MasterKey)>, CryptoError> {
        self.older_keys
            .iter()
            .map(|k| {
                let bytes = Zeroizing::new(B64.decode(&k.key).map_err(|_| {
                    CryptoError::InvalidRecord("an older key is not valid base64".into())
                })?);
                let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    CryptoError::InvalidRecord("an older key has the wrong length".into())
                })?;
                Ok((k.epoch, MasterKey::from_bytes(arr)))
            })
            .collect()
    }

    fn secrets_aad(vault_id: &str, generation: &str, epoch: u32) -> Vec<u8> {
        format!("ghostie keyring secrets v1\0{vault_id}\0{generation}\0{epoch}").into_bytes()
    }

    fn seal(&self, master: &MasterKey, vault_id: &str, generation: &str, epoch: u32) -> String {
        let plain = Zeroizing::new(
            serde_json::to_vec(self)
                .unwrap_or_else(|_| unreachable!("a struct of strings always serialises")),
        );
        let key = super::SubKeys::secrets_key(master);
        B64.encode(
            AeadKey::new(key.as_bytes())
                .seal(&Self::secrets_aad(vault_id, generation, epoch), &plain),
        )
    }
}
fn derive(passphrase: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(passphrase, salt, iterations, k.as_mut());
    k
}

fn aad(format: u32, vault_id: &str, generation: &str, previous: &[String], epoch: u32) -> Vec<u8> {
    match format {
        FIRST_FORMAT => format!("ghostie keyring v1\0{vault_id}\0{generation}").into_bytes(),
        GENERATIONS_FORMAT => format!(
            "ghostie keyring v2\0{vault_id}\0{generation}\0{}",
            previous.join(",")
        )
        .into_bytes(),
        _ => format!(
            "ghostie keyring v3\0{vault_id}\0{generation}\0{}\0{epoch}",
            previous.join(",")
        )
        .into_bytes(),
    }
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
        Self::wrap_epoch(
            master,
            passphrase,
            iterations,
            vault_id,
            generation,
            previous,
            0,
            &VaultSecrets::default(),
        )
    }

    /// A record of `generation` whose key is that of `epoch`, with `secrets`
    /// sealed under it. A vault never rekeyed is written in the older formats,
    /// which older versions read.
    #[allow(clippy::too_many_arguments)]
    pub fn wrap_epoch(
        master: &MasterKey,
        passphrase: &[u8],
        iterations: u32,
        vault_id: &str,
        generation: &str,
        previous: &[String],
        epoch: u32,
        secrets: &VaultSecrets,
    ) -> Self {
        let previous = &previous[previous.len().saturating_sub(PREVIOUS_KEPT)..];
        let format = if epoch > 0 || !secrets.is_empty() {
            KEYRING_FORMAT
        } else if previous.is_empty() {
            FIRST_FORMAT
        } else {
            GENERATIONS_FORMAT
        };
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let kek = derive(passphrase, &salt, iterations);
        let sealed = AeadKey::new(&kek).seal(
            &aad(format, vault_id, generation, previous, epoch),
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
            epoch,
            secrets: (format == KEYRING_FORMAT)
                .then(|| secrets.seal(master, vault_id, generation, epoch)),
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
        if self.format < KEYRING_FORMAT && (self.epoch != 0 || self.secrets.is_some()) {
            return Err(CryptoError::InvalidRecord(format!(
                "a format-{} record cannot name a key epoch",
                self.format
            )));
        }
        if self.format == KEYRING_FORMAT
            && self
                .secrets
                .as_ref()
                .is_none_or(|s| s.len() > MAX_SECRETS_LEN)
        {
            return Err(CryptoError::InvalidRecord(
                "its sealed key history is missing or too large".into(),
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
                        self.epoch,
                    ),
                    &joined,
                )
                .ok_or(CryptoError::WrongPassphrase)?,
        );
        let mut k = [0u8; 32];
        k.copy_from_slice(&plain);
        Ok(MasterKey::from_bytes(k))
    }

    /// The older keys and removed devices, opened with this record's own key
    /// (from [`Self::unwrap_key`]); empty before format 3.
    pub fn open_secrets(&self, master: &MasterKey) -> Result<VaultSecrets, CryptoError> {
        let Some(sealed) = &self.secrets else {
            return Ok(VaultSecrets::default());
        };
        let bytes = B64.decode(sealed).map_err(|_| {
            CryptoError::InvalidRecord("its key history is not valid base64".into())
        })?;
        let key = super::SubKeys::secrets_key(master);
        let plain = Zeroizing::new(
            AeadKey::new(key.as_bytes())
                .open(
                    &VaultSecrets::secrets_aad(&self.vault_id, &self.generation, self.epoch),
                    &bytes,
                )
                .ok_or_else(|| {
                    CryptoError::Damaged("the keyring's key history failed authentication".into())
                })?,
        );
        serde_json::from_slice(&plain)
            .map_err(|e| CryptoError::InvalidRecord(format!("its key history: {e}")))
    }

    /// The keys of every epoch this record knows, opened with `passphrase`.
    pub fn unwrap_all(&self, passphrase: &[u8]) -> Result<(MasterKey, VaultSecrets), CryptoError> {
        let master = self.unwrap_key(passphrase)?;
        let secrets = self.open_secrets(&master)?;
        Ok((master, secrets))
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
        newer.format = 4;
        assert!(matches!(
            newer.unwrap_key(b"pass"),
            Err(CryptoError::Unsupported(_))
        ));
    }

    #[test]
    fn a_rekeyed_record_carries_its_epoch_and_the_older_keys_sealed() {
        let (old, new) = (MasterKey::random(), MasterKey::random());
        let secrets = VaultSecrets {
            older_keys: vec![OlderKey::new(0, &old)],
            removed: vec![RemovedDevice {
                device: "ab".repeat(8),
                name: "phone".into(),
                log_cut: 7,
                removed_ms: 1,
                by: "cd".repeat(8),
            }],
            rewrite_below: 1,
            rewrite_by: "cd".repeat(8),
        };
        let w = WrappedKey::wrap_epoch(&new, b"pass", 1000, "v", "g2", &[random_id()], 1, &secrets);
        assert_eq!((w.format, w.epoch), (3, 1));
        let text = String::from_utf8(w.to_json()).unwrap();
        assert!(!text.contains("phone") && !text.contains(&B64.encode(old.as_bytes())));
        let back = WrappedKey::from_json(&w.to_json()).unwrap();
        let (master, opened) = back.unwrap_all(b"pass").unwrap();
        assert_eq!(master.as_bytes(), new.as_bytes());
        let older = opened.older().unwrap();
        assert_eq!(older.len(), 1);
        assert_eq!((older[0].0, older[0].1.as_bytes()), (0, old.as_bytes()));
        assert_eq!(opened.removed, secrets.removed);
        assert_eq!(opened.rewrite_below, 1);
        // The epoch is authenticated, and the history opens only under its key.
        let mut relabelled = back.clone();
        relabelled.epoch = 2;
        assert!(relabelled.unwrap_key(b"pass").is_err());
        assert!(back.open_secrets(&old).is_err());
        let mut stripped = back.clone();
        stripped.secrets = None;
        assert!(matches!(
            stripped.unwrap_key(b"pass"),
            Err(CryptoError::InvalidRecord(_))
        ));
        // A record of an older format cannot smuggle an epoch in.
        let mut downgraded = back;
        downgraded.format = 2;
        assert!(downgraded.unwrap_key(b"pass").is_err());
        // Never rekeyed: the older formats, without the new fields.
        let plain =
            WrappedKey::wrap_epoch(&new, b"p", 1000, "v", "g", &[], 0, &VaultSecrets::default());
        assert_eq!(plain.format, 1);
        assert!(!String::from_utf8(plain.to_json())
            .unwrap()
            .contains("epoch"));
    }
}
