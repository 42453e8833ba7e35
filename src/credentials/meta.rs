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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedInfo {
    pub vault_id: String,
    pub since: u64,
    /// Unix seconds after which the key is no longer used; `None`: until `forget`.
    pub until: Option<u64>,
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

pub fn save(home: &Home, meta: &Meta) -> Result<(), CredentialError> {
    crate::config::create_private_dir(&home.keys_dir())?;
    let mut bytes = serde_json::to_vec_pretty(meta)
        .map_err(|e| CredentialError::Invalid(format!("cannot write the record: {e}")))?;
    bytes.push(b'\n');
    crate::config::write_atomic(&path(home), &bytes, 0o600)?;
    Ok(())
}
