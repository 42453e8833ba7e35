//! The one sentence a user reads when a command fails, and the exit code scripts read.
//!
//! Exit codes (documented in the README):
//! 0 success (a pull that found conflicts included), 1 failure, 2 bad usage,
//! 3 damaged data found (pull and verify), 4 not set up, 5 wrong passphrase,
//! 6 a provider refused the credential (a wrong, revoked or too weak token).

use ghostie_fs::config::ConfigError;
use ghostie_fs::credentials::CredentialError;
use ghostie_fs::sync::{BackendError, IndexError, SyncError};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_DAMAGED: u8 = 3;
pub const EXIT_NOT_SET_UP: u8 = 4;
pub const EXIT_WRONG_PASSPHRASE: u8 = 5;
pub const EXIT_REFUSED: u8 = 6;

/// A failure on its way to the user.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub sentence: String,
}

impl CliError {
    pub fn new(code: u8, sentence: impl Into<String>) -> Self {
        Self {
            code,
            sentence: sentence.into(),
        }
    }
}

/// The sentence with its first letter in capitals, when it starts with a word of
/// ours: a sentence that starts with something the user named (a file name, a
/// path, a quoted name) keeps it exactly as written.
pub(super) fn capitalise(s: &str) -> String {
    let first_word = s.split_whitespace().next().unwrap_or_default();
    let ours = first_word
        .trim_end_matches([',', ':', ';'])
        .chars()
        .all(|c| c.is_ascii_lowercase());
    if !ours {
        return s.to_owned();
    }
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn end(s: String) -> String {
    let s = capitalise(s.trim());
    if s.ends_with('.') || s.ends_with('?') || s.ends_with('!') {
        s
    } else {
        s + "."
    }
}

impl From<SyncError> for CliError {
    fn from(e: SyncError) -> Self {
        let e = match e {
            SyncError::Credentials(c) => return c.into(),
            other => other,
        };
        let (code, text) = match &e {
            SyncError::Config(ConfigError::NotSetUp) => {
                return CliError::new(EXIT_NOT_SET_UP, "Run 'ghostie-fs setup' first");
            }
            SyncError::Config(ConfigError::Corrupt { path, reason }) => (
                EXIT_FAILURE,
                format!("the settings file {} is damaged ({reason}); fix it or run 'ghostie-fs setup --force'", path.display()),
            ),
            SyncError::Index(IndexError::Missing { path }) => (
                EXIT_FAILURE,
                format!("the local index {} is missing; run 'ghostie-fs setup --force' to rebuild this device", path.display()),
            ),
            SyncError::Index(IndexError::Corrupt { path, reason }) => (
                EXIT_FAILURE,
                format!(
                    "the local index {} is damaged ({reason}); run 'ghostie-fs setup --force' to rebuild this device",
                    path.display()
                ),
            ),
            SyncError::WrongPassphrase => (EXIT_WRONG_PASSPHRASE, "wrong passphrase; nothing was changed".to_owned()),
            SyncError::Backend(BackendError::Invalid(m) | BackendError::Refused(m)) => {
                (EXIT_FAILURE, m.clone())
            }
            SyncError::Backend(BackendError::LoginRefused(m)) => (EXIT_REFUSED, m.clone()),
            SyncError::Backend(b) => (EXIT_FAILURE, format!("the backend failed: {b}")),
            SyncError::Damaged(m) => (EXIT_DAMAGED, format!("damaged data in the vault: {m}")),
            other => (EXIT_FAILURE, other.to_string()),
        };
        CliError::new(code, end(text))
    }
}

impl From<CredentialError> for CliError {
    fn from(e: CredentialError) -> Self {
        let (code, text) = match &e {
            CredentialError::WrongPassphrase => (
                EXIT_WRONG_PASSPHRASE,
                "wrong passphrase (if it was changed on another device, run 'ghostie-fs sync' here with the new one first); nothing was changed".to_owned(),
            ),
            CredentialError::Config(c) => return SyncError::Config(clone_config(c)).into(),
            CredentialError::LoginExpired(_) => (EXIT_REFUSED, e.to_string()),
            CredentialError::KeyringUnavailable(_) => (
                EXIT_FAILURE,
                format!("{e}: unlock your desktop's keyring, or set GHOSTIE_CREDENTIAL_STORE=file for a new home"),
            ),
            _ => (EXIT_FAILURE, e.to_string()),
        };
        CliError::new(code, end(text))
    }
}

/// The config errors the credentials layer passes on, told as the engine's are.
fn clone_config(c: &ConfigError) -> ConfigError {
    match c {
        ConfigError::NotSetUp => ConfigError::NotSetUp,
        other => ConfigError::Invalid(other.to_string()),
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        SyncError::Config(e).into()
    }
}

impl From<BackendError> for CliError {
    fn from(e: BackendError) -> Self {
        SyncError::Backend(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences() {
        let e: CliError = SyncError::Config(ConfigError::NotSetUp).into();
        assert_eq!(
            (e.code, e.sentence.as_str()),
            (EXIT_NOT_SET_UP, "Run 'ghostie-fs setup' first")
        );
        let e: CliError = SyncError::WrongPassphrase.into();
        assert_eq!(e.sentence, "Wrong passphrase; nothing was changed.");
        assert_eq!(e.code, EXIT_WRONG_PASSPHRASE);
    }

    #[test]
    fn a_name_the_user_wrote_keeps_its_case() {
        for (said, shown) in [
            (
                "nothere.json is not in conflict",
                "nothere.json is not in conflict.",
            ),
            ("'notes' is not in conflict", "'notes' is not in conflict."),
            ("/home/me/x is damaged", "/home/me/x is damaged."),
            ("iPhone.json was refused", "iPhone.json was refused."),
            ("the backend failed: no", "The backend failed: no."),
            (
                "wrong passphrase; nothing was changed",
                "Wrong passphrase; nothing was changed.",
            ),
        ] {
            let e: CliError = SyncError::Invalid(said.into()).into();
            assert_eq!(e.sentence, shown);
        }
    }
}
