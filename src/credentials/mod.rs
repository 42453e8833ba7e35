//! Credentials: provider tokens and this device's remembered master key, kept where
//! they are safe (DESIGN §11). Where a home's secrets live is decided once, at the
//! first one, and then kept: the OS keyring when a real one answers (Secret Service,
//! Keychain, Credential Manager), otherwise sealed files under `keys/`:
//!
//! - provider secrets in `keys/credentials.enc`, under a sub-key of the master key:
//!   whoever cannot unlock the vault cannot read them;
//! - a remembered master key in `keys/remembered.enc`, under an unlock key kept
//!   outside the home (`$XDG_STATE_HOME/ghostie-fs`): a copy of the home alone
//!   opens nothing.
//!
//! `keys/credentials.json` says what is stored where, never a secret. A token in the
//! environment (`GH_TOKEN`, then `GITHUB_TOKEN`) wins over the store and is never
//! written to it. No secret reaches a message, a log or a `Debug` print.

pub mod github;
mod meta;
pub mod oauth;
mod os_keyring;
mod sealed;

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use meta::Meta;
pub use meta::{RememberedInfo, StoredInfo};
pub use sealed::unlock_key_dir;
use sealed::Opened;

use crate::config::{ConfigError, Home};
use crate::crypto::keys::Key32;
use crate::crypto::{CryptoError, MasterKey, SubKeys, WrappedKey};

/// What `remember` warns about this many seconds ahead, and `status` shows.
pub const EXPIRY_WARNING_SECS: u64 = 7 * 86_400;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged ({reason})")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the OS keyring does not answer ({0})")]
    KeyringUnavailable(String),
    #[error("the OS keyring refused ({0})")]
    Keyring(String),
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("{0}")]
    Passphrase(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(String),
    /// The provider no longer takes the stored refresh token.
    #[error("the {0} login expired or was revoked: run 'ghostie-fs login {0}' again")]
    LoginExpired(&'static str),
    #[error("{0}")]
    Provider(String),
}

impl CredentialError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CredentialError + '_ {
        move |source| CredentialError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type CredentialResult<T> = Result<T, CredentialError>;

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where a home's secrets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    OsKeyring,
    File,
}

impl Place {
    /// Short, for `--json` and tables.
    pub fn name(self) -> &'static str {
        match self {
            Place::OsKeyring => "os-keyring",
            Place::File => "file",
        }
    }

    /// For people.
    pub fn describe(self) -> String {
        match self {
            Place::OsKeyring => format!("the OS keyring ({})", os_keyring::platform_name()),
            Place::File => "an encrypted file in keys/".into(),
        }
    }
}

/// The providers a credential can be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Github,
}

impl Provider {
    pub const ALL: [Provider; 1] = [Provider::Github];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Github => "github",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Environment variables that hold this provider's token, first wins (as the
    /// provider's own tools read them).
    pub fn env_vars(self) -> &'static [&'static str] {
        match self {
            Provider::Github => &["GH_TOKEN", "GITHUB_TOKEN"],
        }
    }
}

/// A token or other secret: never printed, wiped when dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(text: Zeroizing<String>) -> Self {
        Self(text)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// The provider's token from the environment, with the variable's name. It wins over
/// a stored one and is never stored.
pub fn env_secret(provider: Provider) -> Option<(&'static str, Secret)> {
    provider.env_vars().iter().find_map(|var| {
        let value = std::env::var(var).ok()?;
        let value = value.trim();
        (!value.is_empty()).then(|| (*var, Secret::new(Zeroizing::new(value.to_owned()))))
    })
}

/// The key that opens a home's sealed provider secrets (the file store only).
pub struct CredentialKey {
    key: Key32,
    vault_id: String,
}

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey(..)")
    }
}

impl CredentialKey {
    pub fn from_master(master: &MasterKey, vault_id: &str) -> Self {
        Self {
            key: SubKeys::credentials_key(master),
            vault_id: vault_id.to_owned(),
        }
    }

    /// See [`unlock_master`].
    pub fn unlock(
        home: &Home,
        given: Option<Zeroizing<String>>,
        ask: &dyn Fn() -> CredentialResult<Zeroizing<String>>,
    ) -> CredentialResult<Self> {
        let (master, vault_id) = unlock_master(home, given, ask)?;
        Ok(Self::from_master(&master, &vault_id))
    }
}

/// Unlocks this device's copy of the master key, without the backend and without the
/// home's lock (so it works offline and beside a running mount): with `given` when a
/// passphrase came without asking, else the remembered key, else `ask`. Returns the
/// key and the vault's id.
pub fn unlock_master(
    home: &Home,
    given: Option<Zeroizing<String>>,
    ask: &dyn Fn() -> CredentialResult<Zeroizing<String>>,
) -> CredentialResult<(MasterKey, String)> {
    let config = home.load_config()?;
    let vault_id = config.vault_id;
    if given.is_none() {
        if let Some(master) = remembered_key(home, &vault_id)? {
            return Ok((master, vault_id));
        }
    }
    let pass = match given {
        Some(p) => p,
        None => ask()?,
    };
    let path = home.master_key_path();
    let bytes = std::fs::read(&path).map_err(CredentialError::io(&path))?;
    let wrapped = WrappedKey::from_json(&bytes).map_err(|e| CredentialError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    match wrapped.unwrap_key(pass.as_bytes()) {
        Ok(master) => Ok((master, vault_id)),
        Err(CryptoError::WrongPassphrase) => Err(CredentialError::WrongPassphrase),
        Err(e) => Err(CredentialError::Corrupt {
            path,
            reason: e.to_string(),
        }),
    }
}

const CREDENTIALS_PURPOSE: &str = "credentials";
const REMEMBERED_PURPOSE: &str = "remembered key";

fn credentials_file(home: &Home) -> PathBuf {
    home.keys_dir().join("credentials.enc")
}

fn remembered_file(home: &Home) -> PathBuf {
    home.keys_dir().join("remembered.enc")
}

fn keyring_user(meta: &Meta, what: &str) -> String {
    format!("{what}@{}", meta.home_id)
}

/// Decides where this home's secrets go: `GHOSTIE_CREDENTIAL_STORE=file|keyring`
/// when set, else the OS keyring if one answers, else the file.
fn decide(meta: &Meta) -> CredentialResult<Place> {
    if let Some(p) = meta.store {
        return Ok(p);
    }
    let probe_user = keyring_user(meta, "probe");
    match std::env::var("GHOSTIE_CREDENTIAL_STORE").as_deref() {
        Ok("file") => Ok(Place::File),
        Ok("keyring") => os_keyring::probe(&probe_user)
            .map(|()| Place::OsKeyring)
            .map_err(CredentialError::KeyringUnavailable),
        Ok(other) => Err(CredentialError::Invalid(format!(
            "GHOSTIE_CREDENTIAL_STORE={other} is neither 'file' nor 'keyring'"
        ))),
        Err(_) => match os_keyring::probe(&probe_user) {
            Ok(()) => Ok(Place::OsKeyring),
            Err(reason) => {
                tracing::info!("no OS keyring answers ({reason}); secrets go to encrypted files");
                Ok(Place::File)
            }
        },
    }
}

/// The provider secrets of one home.
pub struct Credentials {
    home: Home,
    meta: Meta,
}

impl Credentials {
    pub fn open(home: &Home) -> CredentialResult<Self> {
        Ok(Self {
            home: home.clone(),
            meta: meta::load(home)?,
        })
    }

    /// Where secrets live, once decided.
    pub fn place(&self) -> Option<Place> {
        self.meta.store
    }

    /// Where secrets will live: decided now (looking for an OS keyring) when not yet.
    pub fn decide(&mut self) -> CredentialResult<Place> {
        let p = decide(&self.meta)?;
        self.meta.store = Some(p);
        Ok(p)
    }

    pub fn list(&self) -> impl Iterator<Item = (&str, &StoredInfo)> {
        self.meta
            .credentials
            .iter()
            .map(|(name, info)| (name.as_str(), info))
    }

    pub fn info(&self, provider: Provider) -> Option<&StoredInfo> {
        self.meta.credentials.get(provider.name())
    }

    pub fn remembered(&self) -> Option<&RememberedInfo> {
        self.meta.remembered.as_ref()
    }

    fn sealed_map(&self, key: &CredentialKey) -> CredentialResult<Zeroizing<Vec<u8>>> {
        let path = credentials_file(&self.home);
        match sealed::read(
            &path,
            key.key.as_bytes(),
            CREDENTIALS_PURPOSE,
            &key.vault_id,
        )? {
            Opened::Missing => Ok(Zeroizing::new(b"{}".to_vec())),
            Opened::Plain(p) => Ok(p),
            Opened::Foreign(owner) => Err(CredentialError::Invalid(format!(
                "{} belongs to another vault ({owner}); remove it and log in again",
                path.display()
            ))),
            Opened::WrongKey => Err(CredentialError::Corrupt {
                path,
                reason: "it does not open with this vault's key".into(),
            }),
        }
    }

    fn write_map(
        &self,
        key: &CredentialKey,
        map: &serde_json::Map<String, serde_json::Value>,
    ) -> CredentialResult<()> {
        let path = credentials_file(&self.home);
        if map.is_empty() {
            sealed::remove(&path)?;
            return Ok(());
        }
        let plain = Zeroizing::new(
            serde_json::to_vec(map)
                .map_err(|e| CredentialError::Invalid(format!("cannot write secrets: {e}")))?,
        );
        sealed::write(
            &path,
            key.key.as_bytes(),
            CREDENTIALS_PURPOSE,
            &key.vault_id,
            &plain,
        )
    }

    fn read_map(
        &self,
        key: &CredentialKey,
    ) -> CredentialResult<serde_json::Map<String, serde_json::Value>> {
        let plain = self.sealed_map(key)?;
        serde_json::from_slice(&plain).map_err(|_| CredentialError::Corrupt {
            path: credentials_file(&self.home),
            reason: "its contents are not what this version writes".into(),
        })
    }

    fn need_key<'k>(&self, key: Option<&'k CredentialKey>) -> CredentialResult<&'k CredentialKey> {
        key.ok_or_else(|| {
            CredentialError::Invalid(
                "this home keeps secrets in an encrypted file, which needs the vault's key".into(),
            )
        })
    }

    /// Stores (or replaces) a provider's secret and what is known of it. The old
    /// secret stays until the new one is written: a failure leaves the old in place.
    pub fn store(
        &mut self,
        provider: Provider,
        info: StoredInfo,
        secret: &Secret,
        key: Option<&CredentialKey>,
    ) -> CredentialResult<Place> {
        let place = self.decide()?;
        match place {
            Place::OsKeyring => os_keyring::set(
                &keyring_user(&self.meta, provider.name()),
                Zeroizing::new(secret.expose().to_owned()),
            )?,
            Place::File => {
                let key = self.need_key(key)?;
                let mut map = self.read_map(key)?;
                map.insert(
                    provider.name().to_owned(),
                    serde_json::Value::String(secret.expose().to_owned()),
                );
                let written = self.write_map(key, &map);
                // The map's copy of every secret is wiped before anything else.
                for (_, v) in map.iter_mut() {
                    if let serde_json::Value::String(s) = v {
                        zeroize::Zeroize::zeroize(s);
                    }
                }
                written?;
            }
        }
        self.meta
            .credentials
            .insert(provider.name().to_owned(), info);
        meta::save(&self.home, &self.meta)?;
        Ok(place)
    }

    /// The stored secret of `provider` (not the environment's: see [`env_secret`]).
    pub fn secret(
        &self,
        provider: Provider,
        key: Option<&CredentialKey>,
    ) -> CredentialResult<Option<Secret>> {
        if !self.meta.credentials.contains_key(provider.name()) {
            return Ok(None);
        }
        match self.meta.store {
            None => Ok(None),
            Some(Place::OsKeyring) => {
                Ok(os_keyring::get(&keyring_user(&self.meta, provider.name()))?.map(Secret::new))
            }
            Some(Place::File) => {
                let key = self.need_key(key)?;
                let mut map = self.read_map(key)?;
                let found = match map.get_mut(provider.name()) {
                    Some(serde_json::Value::String(s)) => {
                        Some(Secret::new(Zeroizing::new(std::mem::take(s))))
                    }
                    _ => None,
                };
                for (_, v) in map.iter_mut() {
                    if let serde_json::Value::String(s) = v {
                        zeroize::Zeroize::zeroize(s);
                    }
                }
                Ok(found)
            }
        }
    }

    /// Removes a provider's secret; whether there was one.
    pub fn remove(
        &mut self,
        provider: Provider,
        key: Option<&CredentialKey>,
    ) -> CredentialResult<bool> {
        if !self.meta.credentials.contains_key(provider.name()) {
            return Ok(false);
        }
        match self.meta.store {
            None => {}
            Some(Place::OsKeyring) => {
                os_keyring::delete(&keyring_user(&self.meta, provider.name()))?;
            }
            Some(Place::File) => {
                let key = self.need_key(key)?;
                let mut map = self.read_map(key)?;
                map.remove(provider.name());
                let written = self.write_map(key, &map);
                for (_, v) in map.iter_mut() {
                    if let serde_json::Value::String(s) = v {
                        zeroize::Zeroize::zeroize(s);
                    }
                }
                written?;
            }
        }
        self.meta.credentials.remove(provider.name());
        meta::save(&self.home, &self.meta)?;
        Ok(true)
    }
}

/// What the keyring entry or the sealed file of a remembered key holds.
#[derive(Serialize, Deserialize)]
struct RememberedRecord {
    vault_id: String,
    key: String,
    until: Option<u64>,
}

fn unlock_key_path(meta: &Meta) -> CredentialResult<PathBuf> {
    Ok(sealed::unlock_key_dir()?.join(format!("{}.unlock-key", meta.home_id)))
}

/// Keeps this device's master key so that commands need no passphrase, until
/// `until` (Unix seconds) or until [`forget`].
pub fn remember(
    home: &Home,
    vault_id: &str,
    master: &MasterKey,
    until: Option<u64>,
) -> CredentialResult<Place> {
    let mut meta = meta::load(home)?;
    let place = decide(&meta)?;
    meta.store = Some(place);
    let record = Zeroizing::new(
        serde_json::to_string(&RememberedRecord {
            vault_id: vault_id.to_owned(),
            key: B64.encode(master.as_bytes()),
            until,
        })
        .map_err(|e| CredentialError::Invalid(format!("cannot write the key: {e}")))?,
    );
    match place {
        Place::OsKeyring => os_keyring::set(&keyring_user(&meta, "master-key"), record)?,
        Place::File => {
            let key_path = unlock_key_path(&meta)?;
            let unlock_key = match read_unlock_key(&key_path)? {
                Some(k) => k,
                None => {
                    let mut k = Zeroizing::new([0u8; 32]);
                    rand::thread_rng().fill_bytes(k.as_mut());
                    if let Some(dir) = key_path.parent() {
                        crate::config::create_private_dir(dir)?;
                    }
                    let text = Zeroizing::new(hex::encode(k.as_ref()));
                    crate::config::write_atomic(&key_path, text.as_bytes(), 0o600)?;
                    k
                }
            };
            sealed::write(
                &remembered_file(home),
                &unlock_key,
                REMEMBERED_PURPOSE,
                &meta.home_id,
                record.as_bytes(),
            )?;
        }
    }
    meta.remembered = Some(RememberedInfo {
        vault_id: vault_id.to_owned(),
        since: now(),
        until,
    });
    meta::save(home, &meta)?;
    Ok(place)
}

fn read_unlock_key(path: &Path) -> CredentialResult<Option<Zeroizing<[u8; 32]>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CredentialError::io(path)(e)),
    };
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| CredentialError::Corrupt {
        path: path.to_path_buf(),
        reason: "not a key".into(),
    })?;
    Ok(Some(key))
}

/// The remembered master key of the vault `vault_id`, if this device keeps one that
/// has not expired. An expired one is removed. A remembered key that can no longer
/// be read (the unlock key is gone, the keyring lost it) counts as none, with a
/// warning: the passphrase still works.
pub fn remembered_key(home: &Home, vault_id: &str) -> CredentialResult<Option<MasterKey>> {
    let meta = meta::load(home)?;
    let Some(info) = &meta.remembered else {
        return Ok(None);
    };
    if info.until.is_some_and(|u| u <= now()) {
        tracing::info!("the remembered key expired; forgetting it");
        forget(home)?;
        return Ok(None);
    }
    let record = match meta.store {
        Some(Place::OsKeyring) => os_keyring::get(&keyring_user(&meta, "master-key"))?,
        Some(Place::File) => {
            let Some(unlock_key) = read_unlock_key(&unlock_key_path(&meta)?)? else {
                // Said at info level only: the command's own error (no passphrase
                // given, run 'ghostie-fs remember') is the one sentence a user needs.
                tracing::info!(
                    "the remembered key cannot be opened here (its unlock key is gone); the passphrase is needed"
                );
                return Ok(None);
            };
            match sealed::read(
                &remembered_file(home),
                &unlock_key,
                REMEMBERED_PURPOSE,
                &meta.home_id,
            )? {
                Opened::Plain(p) => String::from_utf8(p.to_vec()).ok().map(Zeroizing::new),
                _ => None,
            }
        }
        None => None,
    };
    let Some(record) = record else {
        tracing::warn!("the remembered key is gone from its store; the passphrase is needed");
        return Ok(None);
    };
    let Ok(parsed) = serde_json::from_str::<RememberedRecord>(&record) else {
        return Ok(None);
    };
    if parsed.vault_id != vault_id || parsed.until.is_some_and(|u| u <= now()) {
        return Ok(None);
    }
    let raw = Zeroizing::new(B64.decode(&parsed.key).unwrap_or_default());
    let Ok(bytes) = <[u8; 32]>::try_from(raw.as_slice()) else {
        return Ok(None);
    };
    Ok(Some(MasterKey::from_bytes(bytes)))
}

/// Removes the remembered master key; whether there was one.
pub fn forget(home: &Home) -> CredentialResult<bool> {
    let mut meta = meta::load(home)?;
    let had = meta.remembered.take().is_some();
    match meta.store {
        Some(Place::OsKeyring) => {
            os_keyring::delete(&keyring_user(&meta, "master-key"))?;
        }
        Some(Place::File) => {
            sealed::remove(&remembered_file(home))?;
            if let Ok(p) = unlock_key_path(&meta) {
                sealed::remove(&p)?;
            }
        }
        None => {}
    }
    if had {
        meta::save(home, &meta)?;
    }
    Ok(had)
}

/// Whether this home remembers a key (by its record alone: cheap, no keyring call).
pub fn remembers(home: &Home) -> bool {
    meta::load(home).is_ok_and(|m| {
        m.remembered
            .as_ref()
            .is_some_and(|r| r.until.is_none_or(|u| u > now()))
    })
}

#[cfg(test)]
mod tests;
