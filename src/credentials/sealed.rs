//! The two sealed files of a home without an OS keyring: `keys/credentials.enc`
//! (provider secrets, under a sub-key of the master key: only a device that can
//! unlock the vault reads them) and `keys/remembered.enc` (the master key itself,
//! under an unlock key kept outside the home: a copy of the home alone opens
//! neither). AES-256-GCM, with what the file is for and whose it is as associated
//! data, so one file cannot stand in for another.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::CredentialError;
use crate::crypto::aead::AeadKey;

pub const SEALED_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SealedFile {
    format: u32,
    /// Whose key seals it (the vault's id, or the home's): shown so a user can tell
    /// which vault a stray file belongs to; it is also bound in as associated data.
    owner: String,
    sealed: String,
}

fn aad(purpose: &str, owner: &str) -> Vec<u8> {
    format!("ghostie {purpose} v1\0{owner}").into_bytes()
}

/// Seals `plain` into `path` (0600, written atomically).
pub fn write(
    path: &Path,
    key: &[u8; 32],
    purpose: &str,
    owner: &str,
    plain: &[u8],
) -> Result<(), CredentialError> {
    let sealed = AeadKey::new(key).seal(&aad(purpose, owner), plain);
    let file = SealedFile {
        format: SEALED_FORMAT,
        owner: owner.to_owned(),
        sealed: B64.encode(sealed),
    };
    let mut bytes = serde_json::to_vec_pretty(&file)
        .map_err(|e| CredentialError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    bytes.push(b'\n');
    if let Some(dir) = path.parent() {
        crate::config::create_private_dir(dir)?;
    }
    crate::config::write_atomic(path, &bytes, 0o600)?;
    Ok(())
}

pub enum Opened {
    Missing,
    /// Sealed for another owner (another vault, another home).
    Foreign(String),
    /// The key does not open it: the wrong key, or the file was changed.
    WrongKey,
    Plain(Zeroizing<Vec<u8>>),
}

pub fn read(
    path: &Path,
    key: &[u8; 32],
    purpose: &str,
    owner: &str,
) -> Result<Opened, CredentialError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(e) => return Err(CredentialError::io(path)(e)),
    };
    let corrupt = |reason: String| CredentialError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file: SealedFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.format != SEALED_FORMAT {
        return Err(corrupt(format!(
            "format {} (this version reads {SEALED_FORMAT})",
            file.format
        )));
    }
    if file.owner != owner {
        return Ok(Opened::Foreign(file.owner));
    }
    let sealed = B64
        .decode(&file.sealed)
        .map_err(|_| corrupt("not base64".into()))?;
    match AeadKey::new(key).open(&aad(purpose, owner), &sealed) {
        Some(plain) => Ok(Opened::Plain(Zeroizing::new(plain))),
        None => Ok(Opened::WrongKey),
    }
}

pub fn remove(path: &Path) -> Result<bool, CredentialError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CredentialError::io(path)(e)),
    }
}

/// Where the unlock key of a remembered master key lives: outside the home, in the
/// user's state folder, so that a copy or backup of the home alone opens nothing.
pub fn unlock_key_dir() -> Result<PathBuf, CredentialError> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("ghostie-fs"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/state/ghostie-fs")),
        None => Err(CredentialError::Invalid(
            "there is no place outside the home for the unlock key: set HOME or XDG_STATE_HOME"
                .into(),
        )),
    }
}
