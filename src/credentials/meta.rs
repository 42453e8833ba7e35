//! `keys/credentials.json`: what is stored and where, never a secret. `login --status`
//! and `status` read it without touching the keyring or needing the passphrase.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{CredentialError, Place};
use crate::config::Home;

pub const META_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// Names this home's entries in the OS keyring, so two homes of one user (a
    /// second vault, a test) never share one.
    pub home_id: String,
    /// Where this home's secrets live: decided at the first one, then kept.
    #[serde(default)]
    pub store: Option<Place>,
    #[serde(default)]
    pub credentials: BTreeMap<String, StoredInfo>,
    #[serde(default)]
    pub remembered: Option<RememberedInfo>,
}

/// What `login` learned about a credential when it stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInfo {
    pub account: String,
    /// A classic token's scopes; absent where the provider does not list them.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The provider's expiry, as it sent it, and in Unix seconds.
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub expires_at: Option<u64>,
    pub api_url: String,
    pub stored_at: u64,
    /// The OAuth client the login belongs to (Dropbox: the app key), for refreshing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Where the provider's OAuth endpoints are, when not on the API's host
    /// (Google), for renewing and revoking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedInfo {
    pub vault_id: String,
    pub since: u64,
    /// Unix seconds after which the key is no longer used; `None`: until `forget`.
    pub until: Option<u64>,
    /// Where the unlock key of a sealed remembered key was put, so a command run
    /// with other environment variables (cron, sudo) still finds it.
    #[serde(default)]
    pub unlock_key: Option<PathBuf>,
}

pub fn path(home: &Home) -> PathBuf {
    home.keys_dir().join("credentials.json")
}

/// The home's record, or a fresh one (not yet written) when it has none.
pub fn load(home: &Home) -> Result<Meta, CredentialError> {
    let p = path(home);
    match std::fs::read(&p) {
        Ok(bytes) => {
            let meta: Meta =
                serde_json::from_slice(&bytes).map_err(|e| CredentialError::Corrupt {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
            if meta.format != META_FORMAT {
                return Err(CredentialError::Corrupt {
                    path: p,
                    reason: format!("format {} (this version reads {META_FORMAT})", meta.format),
                });
            }
            Ok(meta)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Meta {
            format: META_FORMAT,
            home_id: super::random_hex(8),
            store: None,
            credentials: BTreeMap::new(),
            remembered: None,
        }),
        Err(e) => Err(CredentialError::io(&p)(e)),
    }
}

/// Loads the record, lets `change` modify it, and saves it, with every other
/// process's change of the same home's secrets held off meanwhile: a `login`, a
/// `remember` and a cron sync forgetting an expired key must not undo each other.
/// The store choice is undone once nothing is stored, so a new one can be made.
pub fn update<T>(
    home: &Home,
    change: impl FnOnce(&mut Meta) -> Result<T, CredentialError>,
) -> Result<(Meta, T), CredentialError> {
    let _lock = Lock::take(home)?;
    let mut meta = load(home)?;
    let out = change(&mut meta)?;
    if meta.credentials.is_empty() && meta.remembered.is_none() {
        meta.store = None;
    }
    save(home, &meta)?;
    Ok((meta, out))
}

/// An exclusive `flock` on `keys/credentials.lock`, released when dropped.
struct Lock {
    _held: std::fs::File,
}

impl Lock {
    fn take(home: &Home) -> Result<Self, CredentialError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        crate::config::create_private_dir(&home.keys_dir())?;
        let path = home.keys_dir().join("credentials.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(CredentialError::io(&path))?;
        loop {
            // SAFETY: flock on a descriptor this function owns for the call.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(Self { _held: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(CredentialError::io(&path)(e));
            }
        }
    }
}

fn save(home: &Home, meta: &Meta) -> Result<(), CredentialError> {
    let mut bytes = serde_json::to_vec_pretty(meta)
        .map_err(|e| CredentialError::Invalid(format!("cannot write the record: {e}")))?;
    bytes.push(b'\n');
    crate::config::write_atomic(&path(home), &bytes, 0o600)?;
    Ok(())
}
