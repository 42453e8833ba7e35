//! A remembered master key: in the OS keyring, or sealed in `keys/remembered.enc`
//! under an unlock key kept outside the home (`$XDG_STATE_HOME/ghostie-fs/`), so a
//! copy of the home alone opens nothing.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::meta::{self, Meta};
use super::sealed::{self, Opened};
use super::{
    decide, keyring_user, now, os_keyring, CredentialError, CredentialResult, Place, RememberedInfo,
};
use crate::config::Home;
use crate::crypto::MasterKey;

const PURPOSE: &str = "remembered key";

/// What the keyring entry or the sealed file holds.
#[derive(Serialize, Deserialize)]
struct Record {
    vault_id: String,
    key: String,
    until: Option<u64>,
}

impl Drop for Record {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

fn sealed_file(home: &Home) -> PathBuf {
    home.keys_dir().join("remembered.enc")
}

fn new_unlock_key_path(meta: &Meta) -> CredentialResult<PathBuf> {
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
    let record = Record {
        vault_id: vault_id.to_owned(),
        key: B64.encode(master.as_bytes()),
        until,
    };
    let text = Zeroizing::new(
        serde_json::to_string(&record)
            .map_err(|e| CredentialError::Invalid(format!("cannot write the key: {e}")))?,
    );
    let (_, place) = meta::update(home, |meta| {
        let place = decide(meta)?;
        meta.store = Some(place);
        let mut unlock_key = None;
        match place {
            Place::OsKeyring => os_keyring::set(&keyring_user(meta, "master-key"), text.clone())?,
            Place::File => {
                let path = match meta.remembered.as_ref().and_then(|r| r.unlock_key.clone()) {
                    Some(p) => p,
                    None => new_unlock_key_path(meta)?,
                };
                let key = match read_unlock_key(&path)? {
                    Some(k) => k,
                    None => write_unlock_key(&path)?,
                };
                sealed::write(
                    &sealed_file(home),
                    &key,
                    PURPOSE,
                    &meta.home_id,
                    text.as_bytes(),
                )?;
                unlock_key = Some(path);
            }
        }
        meta.remembered = Some(RememberedInfo {
            vault_id: vault_id.to_owned(),
            since: now(),
            until,
            unlock_key,
        });
        Ok(place)
    })?;
    Ok(place)
}

fn write_unlock_key(path: &Path) -> CredentialResult<Zeroizing<[u8; 32]>> {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::thread_rng().fill_bytes(k.as_mut());
    if let Some(dir) = path.parent() {
        crate::config::create_private_dir(dir)?;
    }
    let text = Zeroizing::new(hex::encode(k.as_ref()));
    crate::config::write_atomic(path, text.as_bytes(), 0o600)?;
    Ok(k)
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

/// What a look for a remembered key found.
pub enum Remembered {
    /// Nothing remembered (or it expired, and was forgotten).
    Nothing,
    Key(MasterKey),
    /// Remembered, but not to be had now; says why, for the user.
    Unavailable(String),
}

/// The remembered master key of the vault `vault_id`, if this device keeps one that
/// has not expired. An expired one is removed.
pub fn remembered_key(home: &Home, vault_id: &str) -> CredentialResult<Remembered> {
    let meta = meta::load(home)?;
    let Some(info) = &meta.remembered else {
        return Ok(Remembered::Nothing);
    };
    if info.until.is_some_and(|u| u <= now()) {
        tracing::info!("the remembered key expired; forgetting it");
        forget(home)?;
        return Ok(Remembered::Nothing);
    }
    if info.vault_id != vault_id {
        return Ok(Remembered::Unavailable(
            "it was remembered for another vault; run 'ghostie-fs remember' again".into(),
        ));
    }
    let text = match meta.store {
        Some(Place::OsKeyring) => match os_keyring::get(&keyring_user(&meta, "master-key")) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Ok(Remembered::Unavailable(
                    "the OS keyring no longer holds it; run 'ghostie-fs remember' again".into(),
                ))
            }
            Err(e) => return Ok(Remembered::Unavailable(e.to_string())),
        },
        Some(Place::File) => {
            let path = match &info.unlock_key {
                Some(p) => p.clone(),
                None => new_unlock_key_path(&meta)?,
            };
            let Some(unlock_key) = read_unlock_key(&path)? else {
                return Ok(Remembered::Unavailable(format!(
                    "its unlock key {} is gone (a copied home, or another user); give the passphrase or run 'ghostie-fs remember' again",
                    path.display()
                )));
            };
            match sealed::read(&sealed_file(home), &unlock_key, PURPOSE, &meta.home_id)? {
                Opened::Plain(p) => match String::from_utf8(p.to_vec()) {
                    Ok(t) => Zeroizing::new(t),
                    Err(_) => return Ok(Remembered::Unavailable("its record is damaged".into())),
                },
                _ => {
                    return Ok(Remembered::Unavailable(format!(
                        "{} does not open with its unlock key; run 'ghostie-fs remember' again",
                        sealed_file(home).display()
                    )))
                }
            }
        }
        None => return Ok(Remembered::Nothing),
    };
    let Ok(record) = serde_json::from_str::<Record>(&text) else {
        return Ok(Remembered::Unavailable("its record is damaged".into()));
    };
    if record.vault_id != vault_id || record.until.is_some_and(|u| u <= now()) {
        return Ok(Remembered::Unavailable(
            "its record does not match this vault; run 'ghostie-fs remember' again".into(),
        ));
    }
    let raw = Zeroizing::new(B64.decode(&record.key).unwrap_or_default());
    let Ok(bytes) = <[u8; 32]>::try_from(raw.as_slice()) else {
        return Ok(Remembered::Unavailable("its record is damaged".into()));
    };
    Ok(Remembered::Key(MasterKey::from_bytes(bytes)))
}

/// Removes the remembered master key; whether there was one.
pub fn forget(home: &Home) -> CredentialResult<bool> {
    let (_, had) = meta::update(home, |meta| {
        let Some(info) = meta.remembered.take() else {
            return Ok(false);
        };
        match meta.store {
            Some(Place::OsKeyring) => {
                os_keyring::delete(&keyring_user(meta, "master-key"))?;
            }
            Some(Place::File) => {
                sealed::remove(&sealed_file(home))?;
                let path = match info.unlock_key {
                    Some(p) => Some(p),
                    None => new_unlock_key_path(meta).ok(),
                };
                if let Some(p) = path {
                    sealed::remove(&p)?;
                }
            }
            None => {}
        }
        Ok(true)
    })?;
    Ok(had)
}

/// Remembers `master` in place of the key remembered here, for as long as that
/// one was (after a rekey; nothing when no key is remembered). Returns whether one was.
pub fn remember_instead(home: &Home, vault_id: &str, master: &MasterKey) -> CredentialResult<bool> {
    if !remembers(home) {
        return Ok(false);
    }
    let until = meta::load(home)?.remembered.and_then(|r| r.until);
    remember(home, vault_id, master, until).map(|_| true)
}

/// Whether this home remembers a key that has not expired, by its record alone
/// (cheap, no keyring call; see [`remembered_key`] for whether it can be had).
pub fn remembers(home: &Home) -> bool {
    meta::load(home).is_ok_and(|m| {
        m.remembered
            .as_ref()
            .is_some_and(|r| r.until.is_none_or(|u| u > now()))
    })
}
