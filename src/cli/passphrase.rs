//! Where the CLI gets passphrases: `--passphrase-file`, else `GHOSTIE_PASSPHRASE`, else
//! a prompt without echo on the terminal; with none of these, a clear error.

use std::io::IsTerminal;
use std::path::PathBuf;

use zeroize::Zeroizing;

use ghostie_fs::sync::{PassphraseSource, SyncError, SyncResult};

const MIN_NEW_LEN: usize = 8;

#[derive(Debug, Clone)]
pub struct CliPassphrase {
    pub file: Option<PathBuf>,
    /// For `passwd`: where the new passphrase comes from.
    pub new_file: Option<PathBuf>,
    pub changing: bool,
    /// Already read (from the terminal of the command that started the mount).
    pub preset: Option<Zeroizing<String>>,
}

fn read_file(path: &PathBuf) -> SyncResult<Zeroizing<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SyncError::Passphrase(format!(
            "cannot read the passphrase file {}: {e}",
            path.display()
        ))
    })?;
    let text = Zeroizing::new(text);
    // One trailing newline is what `echo secret > file` adds; it is not part of it.
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Zeroizing::new(trimmed.to_owned()))
}

fn from_env(var: &str) -> Option<Zeroizing<String>> {
    std::env::var(var).ok().map(Zeroizing::new)
}

fn prompt(text: &str) -> SyncResult<Zeroizing<String>> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| {
            SyncError::Passphrase(format!("cannot read the passphrase from the terminal: {e}"))
        })
}

fn on_terminal() -> bool {
    std::io::stdin().is_terminal() || std::io::stderr().is_terminal()
}

fn check_new(p: Zeroizing<String>) -> SyncResult<Zeroizing<String>> {
    if p.chars().count() < MIN_NEW_LEN {
        return Err(SyncError::Passphrase(format!(
            "the new passphrase is too short: use at least {MIN_NEW_LEN} characters"
        )));
    }
    Ok(p)
}

fn prompt_twice(first: &str) -> SyncResult<Zeroizing<String>> {
    let a = check_new(prompt(first)?)?;
    let b = prompt("Repeat it: ")?;
    if *a != *b {
        return Err(SyncError::Passphrase(
            "the two passphrases differ; nothing was changed".into(),
        ));
    }
    Ok(a)
}

impl PassphraseSource for CliPassphrase {
    fn is_interactive(&self) -> bool {
        self.preset.is_none()
            && self.file.is_none()
            && std::env::var_os("GHOSTIE_PASSPHRASE").is_none()
    }

    fn existing(&self) -> SyncResult<Zeroizing<String>> {
        if let Some(p) = &self.preset {
            return Ok(p.clone());
        }
        if let Some(f) = &self.file {
            return read_file(f);
        }
        if let Some(p) = from_env("GHOSTIE_PASSPHRASE") {
            return Ok(p);
        }
        if on_terminal() {
            let text = if self.changing {
                "Current passphrase: "
            } else {
                "Passphrase: "
            };
            return prompt(text);
        }
        Err(SyncError::Passphrase(
            "no passphrase given: use --passphrase-file, set GHOSTIE_PASSPHRASE, or run on a terminal".into(),
        ))
    }

    fn new_passphrase(&self) -> SyncResult<Zeroizing<String>> {
        if self.changing {
            if let Some(f) = &self.new_file {
                return check_new(read_file(f)?);
            }
            if let Some(p) = from_env("GHOSTIE_NEW_PASSPHRASE") {
                return check_new(p);
            }
            if on_terminal() {
                return prompt_twice("New passphrase: ");
            }
            return Err(SyncError::Passphrase(
                "no new passphrase given: use --new-passphrase-file, set GHOSTIE_NEW_PASSPHRASE, or run on a terminal".into(),
            ));
        }
        if let Some(f) = &self.file {
            return check_new(read_file(f)?);
        }
        if let Some(p) = from_env("GHOSTIE_PASSPHRASE") {
            return check_new(p);
        }
        if on_terminal() {
            return prompt_twice("Choose a passphrase for the new vault: ");
        }
        Err(SyncError::Passphrase(
            "no passphrase given: use --passphrase-file, set GHOSTIE_PASSPHRASE, or run on a terminal".into(),
        ))
    }
}
