//! Provider secrets: in the OS keyring, or sealed in `keys/credentials.enc` under
//! a sub-key of the master key, bound to this vault and this home.

use zeroize::Zeroizing;

use super::meta::{self, Meta};
use super::sealed::{self, Opened};
use super::{
    credentials_file, decide, keyring_user, os_keyring, CredentialError, CredentialKey,
    CredentialResult, Place, Provider, RememberedInfo, Secret, StoredInfo,
};
use crate::config::Home;

const PURPOSE: &str = "credentials";

type SecretMap = serde_json::Map<String, serde_json::Value>;

/// Wipes the map's copies of secrets before it is dropped.
fn wipe(map: &mut SecretMap) {
    for (_, v) in map.iter_mut() {
        if let serde_json::Value::String(s) = v {
            zeroize::Zeroize::zeroize(s);
        }
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
    /// Nothing is recorded until something is stored.
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

    /// The remembered key's record, expired or not (see [`RememberedInfo::until`]).
    pub fn remembered(&self) -> Option<&RememberedInfo> {
        self.meta.remembered.as_ref()
    }

    /// The vault and home a sealed file belongs to: another device's or another
    /// vault's file cannot stand in for this one's.
    fn owner(meta: &Meta, key: &CredentialKey) -> String {
        format!("{}/{}", key.vault_id, meta.home_id)
    }

    fn read_map(&self, meta: &Meta, key: &CredentialKey) -> CredentialResult<SecretMap> {
        let path = credentials_file(&self.home);
        let owner = Self::owner(meta, key);
        let mut opened = sealed::read(&path, key.key.as_bytes(), PURPOSE, &owner)?;
        // Sealed before this vault's key was rotated: an older key opens it, and the
        // next write seals it under the current one.
        for older in &key.older {
            if !matches!(opened, Opened::WrongKey) {
                break;
            }
            opened = sealed::read(&path, older.as_bytes(), PURPOSE, &owner)?;
        }
        let plain = match opened {
            Opened::Missing => Zeroizing::new(b"{}".to_vec()),
            Opened::Plain(p) => p,
            Opened::Foreign(owner) => {
                return Err(CredentialError::Invalid(format!(
                    "{} belongs to another vault or home ({owner}); remove it and log in again",
                    path.display()
                )))
            }
            Opened::WrongKey => {
                return Err(CredentialError::Corrupt {
                    path,
                    reason: "it does not open with this vault's key".into(),
                })
            }
        };
        serde_json::from_slice(&plain).map_err(|_| CredentialError::Corrupt {
            path,
            reason: "its contents are not what this version writes".into(),
        })
    }

    fn write_map(&self, meta: &Meta, key: &CredentialKey, map: &SecretMap) -> CredentialResult<()> {
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
            PURPOSE,
            &Self::owner(meta, key),
            &plain,
        )
    }

    fn need_key(key: Option<&CredentialKey>) -> CredentialResult<&CredentialKey> {
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
        let (meta, place) = meta::update(&self.home, |meta| {
            let place = decide(meta)?;
            meta.store = Some(place);
            match place {
                Place::OsKeyring => os_keyring::set(
                    &keyring_user(meta, provider.name()),
                    Zeroizing::new(secret.expose().to_owned()),
                )?,
                Place::File => {
                    let key = Self::need_key(key)?;
                    let mut map = self.read_map(meta, key)?;
                    map.insert(
                        provider.name().to_owned(),
                        serde_json::Value::String(secret.expose().to_owned()),
                    );
                    let written = self.write_map(meta, key, &map);
                    wipe(&mut map);
                    written?;
                }
            }
            meta.credentials.insert(provider.name().to_owned(), info);
            Ok(place)
        })?;
        self.meta = meta;
        Ok(place)
    }

    /// The stored secret of `provider` (not the environment's: see [`super::token`]).
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
                let key = Self::need_key(key)?;
                let mut map = self.read_map(&self.meta, key)?;
                let found = match map.get_mut(provider.name()) {
                    Some(serde_json::Value::String(s)) => {
                        Some(Secret::new(Zeroizing::new(std::mem::take(s))))
                    }
                    _ => None,
                };
                wipe(&mut map);
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
        let (meta, had) = meta::update(&self.home, |meta| {
            if !meta.credentials.contains_key(provider.name()) {
                return Ok(false);
            }
            match meta.store {
                None => {}
                Some(Place::OsKeyring) => {
                    os_keyring::delete(&keyring_user(meta, provider.name()))?;
                }
                Some(Place::File) => {
                    let key = Self::need_key(key)?;
                    let mut map = self.read_map(meta, key)?;
                    map.remove(provider.name());
                    let written = self.write_map(meta, key, &map);
                    wipe(&mut map);
                    written?;
                }
            }
            meta.credentials.remove(provider.name());
            Ok(true)
        })?;
        self.meta = meta;
        Ok(had)
    }
}
