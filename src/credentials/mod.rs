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

pub mod dropbox;
pub mod github;
pub mod google;
mod meta;
pub mod oauth;
mod os_keyring;
mod remembered;
mod sealed;
mod store;

use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use meta::Meta;
pub use meta::{RememberedInfo, StoredInfo};
pub use remembered::{forget, remember, remember_instead, remembered_key, remembers, Remembered};
pub use sealed::unlock_key_dir;
pub use store::Credentials;

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
    /// The provider's token endpoint does not answer now (the network, an outage).
    #[error("{0}")]
    Unreachable(String),
    /// This device remembers its key, but the key cannot be had now.
    #[error("this device remembers its key, but {0}")]
    RememberedUnavailable(String),
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

/// The clock logins are judged by (Unix seconds).
pub(crate) fn unix_now() -> u64 {
    now()
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
    Dropbox,
    Google,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Github, Provider::Dropbox, Provider::Google];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Dropbox => "dropbox",
            Provider::Google => "google",
        }
    }

    /// For sentences ("Logged in to Dropbox").
    pub fn title(self) -> &'static str {
        match self {
            Provider::Github => "GitHub",
            Provider::Dropbox => "Dropbox",
            Provider::Google => "Google",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Environment variables that hold this provider's token for the API at
    /// `api_url`, first wins, as the provider's own tools read them: GitHub's `gh`
    /// takes `GH_TOKEN`/`GITHUB_TOKEN` for github.com only and the
    /// `*_ENTERPRISE_TOKEN` pair for any other server, so a github.com token is
    /// never sent to another host.
    pub fn env_vars(self, api_url: &str) -> &'static [&'static str] {
        match self {
            Provider::Github if github::is_github_com(api_url) => &["GH_TOKEN", "GITHUB_TOKEN"],
            Provider::Github => &["GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"],
            // A refresh token (with the app key in GHOSTIE_DROPBOX_APP_KEY), for a
            // server or CI; Dropbox has no variable of its own tools to follow.
            Provider::Dropbox => &[dropbox::REFRESH_TOKEN_VAR],
            // A refresh token, with the client's id and secret beside it.
            Provider::Google => &[google::REFRESH_TOKEN_VAR],
        }
    }

    /// The provider's API when none is given.
    pub fn default_api_url(self) -> &'static str {
        match self {
            Provider::Github => github::DEFAULT_API_URL,
            Provider::Dropbox => crate::config::DROPBOX_API_URL,
            Provider::Google => crate::config::GDRIVE_API_URL,
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

/// The provider's token from the environment for the API at `api_url`, with the
/// variable's name. It wins over a stored one and is never stored.
pub fn env_secret(provider: Provider, api_url: &str) -> Option<(&'static str, Secret)> {
    provider.env_vars(api_url).iter().find_map(|var| {
        let value = std::env::var(var).ok()?;
        let value = value.trim();
        (!value.is_empty()).then(|| (*var, Secret::new(Zeroizing::new(value.to_owned()))))
    })
}

/// Where a token in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Environment(&'static str),
    Stored,
}

/// The token to use for `provider` at `api_url`: the environment's, else the stored
/// one (the file store needs `key`). The one place that order is decided.
pub fn token(
    provider: Provider,
    api_url: &str,
    store: &Credentials,
    key: Option<&CredentialKey>,
) -> CredentialResult<Option<(Secret, TokenSource)>> {
    if let Some((var, secret)) = env_secret(provider, api_url) {
        return Ok(Some((secret, TokenSource::Environment(var))));
    }
    Ok(store
        .secret(provider, key)?
        .map(|s| (s, TokenSource::Stored)))
}

/// The key that opens a home's sealed provider secrets (the file store only).
pub struct CredentialKey {
    key: Key32,
    /// The keys of the vault's older key epochs, which opened what was sealed
    /// before a rekey.
    older: Vec<Key32>,
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
            older: Vec::new(),
            vault_id: vault_id.to_owned(),
        }
    }

    /// Also opening what older key epochs' masters sealed.
    pub fn with_older(mut self, older: &[(u32, MasterKey)]) -> Self {
        self.older = older
            .iter()
            .rev()
            .map(|(_, m)| SubKeys::credentials_key(m))
            .collect();
        self
    }

    /// See [`unlock_master`].
    pub fn unlock(
        home: &Home,
        given: Option<Zeroizing<String>>,
        ask: &dyn Fn() -> CredentialResult<Zeroizing<String>>,
    ) -> CredentialResult<Self> {
        let (master, vault_id) = unlock_master(home, given, ask)?;
        let older = older_keys(home, &master);
        Ok(Self::from_master(&master, &vault_id).with_older(&older))
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
        match remembered_key(home, &vault_id) {
            Ok(Remembered::Key(master)) => return Ok((master, vault_id)),
            Ok(Remembered::Nothing) => {}
            // The passphrase may still be asked; without one, say why the
            // remembered key did not serve.
            Ok(Remembered::Unavailable(why)) => {
                return ask()
                    .map_err(|_| CredentialError::RememberedUnavailable(why))
                    .and_then(|p| open_local(home, &vault_id, &p))
                    .map(|m| (m, vault_id.clone()))
            }
            Err(e) => tracing::warn!("the remembered key cannot be read ({e})"),
        }
    }
    let pass = match given {
        Some(p) => p,
        None => ask()?,
    };
    Ok((open_local(home, &vault_id, &pass)?, vault_id))
}

/// The older epochs' keys this device's copy of the key keeps (none if it cannot
/// be read: then only the current key opens the sealed secrets).
fn older_keys(home: &Home, master: &MasterKey) -> Vec<(u32, MasterKey)> {
    std::fs::read(home.master_key_path())
        .ok()
        .and_then(|b| WrappedKey::from_json(&b).ok())
        .and_then(|w| w.open_secrets(master).ok())
        .and_then(|s| s.older().ok())
        .unwrap_or_default()
}

/// This device's copy of the master key, opened with `pass`.
fn open_local(home: &Home, vault_id: &str, pass: &str) -> CredentialResult<MasterKey> {
    let path = home.master_key_path();
    let bytes = std::fs::read(&path).map_err(CredentialError::io(&path))?;
    let corrupt = |reason: String| CredentialError::Corrupt {
        path: path.clone(),
        reason,
    };
    let wrapped = WrappedKey::from_json(&bytes).map_err(|e| corrupt(e.to_string()))?;
    wrapped.validate().map_err(|e| corrupt(e.to_string()))?;
    if wrapped.vault_id != vault_id {
        return Err(corrupt("it belongs to another vault".into()));
    }
    match wrapped.unwrap_key(pass.as_bytes()) {
        Ok(master) => Ok(master),
        Err(CryptoError::WrongPassphrase) => Err(CredentialError::WrongPassphrase),
        Err(e) => Err(corrupt(e.to_string())),
    }
}

fn credentials_file(home: &Home) -> PathBuf {
    home.keys_dir().join("credentials.enc")
}

fn keyring_user(meta: &Meta, what: &str) -> String {
    format!("{what}@{}", meta.home_id)
}

/// Decides where this home's secrets go: `GHOSTIE_CREDENTIAL_STORE=file|keyring`
/// when set, else the OS keyring if one answers, else the file. A keyring that is
/// there but does not answer in time (locked, waiting on a prompt) is an error, not
/// a reason to settle on the file for good.
fn decide(meta: &Meta) -> CredentialResult<Place> {
    if let Some(p) = meta.store {
        return Ok(p);
    }
    let probe_user = keyring_user(meta, "probe");
    match std::env::var("GHOSTIE_CREDENTIAL_STORE").as_deref() {
        Ok("file") => Ok(Place::File),
        Ok("keyring") => os_keyring::probe(&probe_user).map(|()| Place::OsKeyring),
        Ok(other) => Err(CredentialError::Invalid(format!(
            "GHOSTIE_CREDENTIAL_STORE={other} is neither 'file' nor 'keyring'"
        ))),
        Err(_) => match os_keyring::probe(&probe_user) {
            Ok(()) => Ok(Place::OsKeyring),
            Err(e @ CredentialError::KeyringUnavailable(_)) => Err(e),
            Err(reason) => {
                tracing::info!("no OS keyring answers ({reason}); secrets go to encrypted files");
                Ok(Place::File)
            }
        },
    }
}

#[cfg(test)]
mod tests;
