//! The OS keyring through the `keyring` crate, each platform's store named
//! explicitly (Secret Service, Keychain, Credential Manager): the crate's default
//! builder falls back to an in-memory mock when no store is compiled in, and a secret
//! "stored" there is gone when the process ends. Every call runs on a thread of its
//! own with a deadline: a locked Secret Service can wait on a prompt nobody sees.

use std::sync::mpsc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::CredentialError;

/// The service name every entry of ghostie-fs carries.
pub const SERVICE: &str = "ghostie-fs";
/// How long a first look may take: a desktop keyring may ask to be unlocked.
const PROBE_PATIENCE: Duration = Duration::from_secs(10);
/// How long any later call may take before the keyring counts as not answering.
const CALL_PATIENCE: Duration = Duration::from_secs(60);

/// Which platform store this build reaches, for messages.
pub fn platform_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "macOS Keychain"
    } else if cfg!(target_os = "windows") {
        "Windows Credential Manager"
    } else {
        "Secret Service"
    }
}

#[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
mod native {
    use keyring::Entry;

    pub fn entry(service: &str, user: &str) -> keyring::Result<Entry> {
        #[cfg(target_os = "linux")]
        let credential =
            keyring::secret_service::SsCredential::new_with_target(None, service, user)?;
        #[cfg(target_os = "macos")]
        let credential = keyring::macos::MacCredential::new_with_target(None, service, user)?;
        #[cfg(target_os = "windows")]
        let credential = keyring::windows::WinCredential::new_with_target(None, service, user)?;
        Ok(Entry::new_with_credential(Box::new(credential)))
    }

    /// The crate's error, told without its payload: `BadEncoding` carries the
    /// stored bytes, which may be a secret.
    pub fn describe(e: &keyring::Error) -> String {
        match e {
            keyring::Error::PlatformFailure(inner) => inner.to_string(),
            keyring::Error::NoStorageAccess(inner) => format!("no access to the store: {inner}"),
            keyring::Error::NoEntry => "no such entry".into(),
            keyring::Error::BadEncoding(_) => "an entry is not text".into(),
            keyring::Error::TooLong(what, max) => format!("the {what} is longer than {max}"),
            keyring::Error::Invalid(what, why) => format!("the {what} is invalid: {why}"),
            keyring::Error::Ambiguous(_) => "several entries match".into(),
            _ => "an unknown keyring error".into(),
        }
    }

    pub fn set(user: &str, secret: &str) -> Result<(), String> {
        entry(super::SERVICE, user)
            .and_then(|e| e.set_password(secret))
            .map_err(|e| describe(&e))
    }

    pub fn get(user: &str) -> Result<Option<zeroize::Zeroizing<String>>, String> {
        match entry(super::SERVICE, user).and_then(|e| e.get_password()) {
            Ok(p) => Ok(Some(zeroize::Zeroizing::new(p))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(describe(&e)),
        }
    }

    pub fn delete(user: &str) -> Result<bool, String> {
        match entry(super::SERVICE, user).and_then(|e| e.delete_credential()) {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(describe(&e)),
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
mod native {
    const NONE: &str = "this platform has no OS keyring ghostie-fs can use";
    pub fn set(_: &str, _: &str) -> Result<(), String> {
        Err(NONE.into())
    }
    pub fn get(_: &str) -> Result<Option<zeroize::Zeroizing<String>>, String> {
        Err(NONE.into())
    }
    pub fn delete(_: &str) -> Result<bool, String> {
        Err(NONE.into())
    }
}

/// Runs `op` on its own thread and gives up waiting after `patience` (the thread is
/// left to finish or hang on its own; the process does not wait for it).
fn within<T: Send + 'static>(
    patience: Duration,
    op: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, CredentialError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("os-keyring".into())
        .spawn(move || {
            let _ = tx.send(op());
        })
        .map_err(|e| CredentialError::KeyringUnavailable(format!("cannot start a thread: {e}")))?;
    match rx.recv_timeout(patience) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(reason)) => Err(CredentialError::Keyring(reason)),
        Err(_) => Err(CredentialError::KeyringUnavailable(format!(
            "no answer in {} s; is it locked?",
            patience.as_secs()
        ))),
    }
}

pub fn set(user: &str, secret: Zeroizing<String>) -> Result<(), CredentialError> {
    let user = user.to_owned();
    within(CALL_PATIENCE, move || native::set(&user, &secret))
}

pub fn get(user: &str) -> Result<Option<Zeroizing<String>>, CredentialError> {
    let user = user.to_owned();
    within(CALL_PATIENCE, move || native::get(&user))
}

pub fn delete(user: &str) -> Result<bool, CredentialError> {
    let user = user.to_owned();
    within(CALL_PATIENCE, move || native::delete(&user))
}

/// Whether a real keyring answers here: an entry written, read back equal and
/// removed. A refusal (no D-Bus session, no Secret Service on it, a headless
/// server, Termux) is `Keyring`, saying why none is used; no answer in time is
/// `KeyringUnavailable`.
pub fn probe(user: &str) -> Result<(), CredentialError> {
    let user = user.to_owned();
    let token = super::random_hex(16);
    within(PROBE_PATIENCE, move || {
        native::set(&user, &token)?;
        let back = native::get(&user)?;
        let _ = native::delete(&user);
        match back {
            Some(b) if *b == token => Ok(()),
            _ => Err("what was written did not read back".into()),
        }
    })
}
