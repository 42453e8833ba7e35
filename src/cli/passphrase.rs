//! Where the CLI gets passphrases: `--passphrase-file` (its first line) or
//! `--passphrase-command` (the first line the command prints), else
//! `GHOSTIE_PASSPHRASE`, else a prompt without echo on the terminal; with none of
//! these, a clear error.
//!
//! A file or a command is read once, as the command starts: a file that cannot be
//! read, or a command that fails, is an error even for a command that turns out to
//! need no key. A passphrase that came without asking (a file, a command, the
//! environment) is "given", and each command checks a given passphrase before it
//! reports success. No passphrase ever goes into a message, a log, the arguments or
//! environment of another process, or a file of the home.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use ghostie_fs::sync::{PassphraseSource, SyncError, SyncResult};

const MIN_NEW_LEN: usize = 8;

#[derive(Clone, Default)]
pub struct CliPassphrase {
    /// Already read: from `--passphrase-file` or `--passphrase-command`, or handed
    /// over by the command that started a mount.
    pub preset: Option<Zeroizing<String>>,
    /// For `passwd`: where the new passphrase comes from.
    pub new_file: Option<PathBuf>,
    pub changing: bool,
}

/// Never shows the passphrase, should anything print one.
impl std::fmt::Debug for CliPassphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliPassphrase")
            .field("preset", &self.preset.as_ref().map(|_| "<hidden>"))
            .field("new_file", &self.new_file)
            .field("changing", &self.changing)
            .finish()
    }
}

impl CliPassphrase {
    /// The passphrase the global options name, read now: the first line of `file`,
    /// or the first line `command` prints.
    pub fn from_options(file: Option<&Path>, command: Option<&str>) -> SyncResult<Self> {
        let preset = match (file, command) {
            (Some(f), _) => Some(read_file(f)?),
            (None, Some(c)) => Some(run_command(c)?),
            (None, None) => None,
        };
        Ok(Self {
            preset,
            ..Self::default()
        })
    }

    /// Whether the passphrase comes without asking anyone: such a passphrase is
    /// checked before a command reports success, even one that needs no key.
    pub fn given(&self) -> bool {
        !self.is_interactive()
    }
}

/// The first line of `text`, without its line ending.
fn first_line(text: &str) -> &str {
    let line = text.split('\n').next().unwrap_or_default();
    line.strip_suffix('\r').unwrap_or(line)
}

fn read_file(path: &Path) -> SyncResult<Zeroizing<String>> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        SyncError::Passphrase(format!(
            "cannot read the passphrase file {}: {e}",
            path.display()
        ))
    })?);
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Err(SyncError::Passphrase(format!(
            "the passphrase file {} is not text (UTF-8)",
            path.display()
        )));
    };
    let line = first_line(text);
    if line.is_empty() {
        return Err(SyncError::Passphrase(format!(
            "the passphrase file {} has nothing on its first line",
            path.display()
        )));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// Runs `command` through `sh -c`, as restic's `--password-command` and gocryptfs's
/// `-extpass` do: it may ask on the terminal (its stdin and stderr are ours), and
/// what it prints is read, never shown. The command line itself is not repeated in
/// an error: it may hold a secret of its own.
fn run_command(command: &str) -> SyncResult<Zeroizing<String>> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| SyncError::Passphrase(format!("cannot run the passphrase command: {e}")))?;
    let printed = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(SyncError::Passphrase(format!(
            "the passphrase command failed ({})",
            out.status
        )));
    }
    let Ok(text) = std::str::from_utf8(&printed) else {
        return Err(SyncError::Passphrase(
            "the passphrase command printed something that is not text (UTF-8)".into(),
        ));
    };
    let line = first_line(text);
    if line.is_empty() {
        return Err(SyncError::Passphrase(
            "the passphrase command printed nothing on its first line".into(),
        ));
    }
    Ok(Zeroizing::new(line.to_owned()))
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

const NONE_GIVEN: &str = "no passphrase given: use --passphrase-file or --passphrase-command, set GHOSTIE_PASSPHRASE, run on a terminal, or run 'ghostie-fs remember' once on this device";

impl PassphraseSource for CliPassphrase {
    fn is_interactive(&self) -> bool {
        self.preset.is_none() && std::env::var_os("GHOSTIE_PASSPHRASE").is_none()
    }

    fn existing(&self) -> SyncResult<Zeroizing<String>> {
        if let Some(p) = &self.preset {
            return Ok(p.clone());
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
        Err(SyncError::Passphrase(NONE_GIVEN.into()))
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
        if let Some(p) = &self.preset {
            return check_new(p.clone());
        }
        if let Some(p) = from_env("GHOSTIE_PASSPHRASE") {
            return check_new(p);
        }
        if on_terminal() {
            return prompt_twice("Choose a passphrase for the new vault: ");
        }
        Err(SyncError::Passphrase(NONE_GIVEN.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines() {
        assert_eq!(first_line("secret"), "secret");
        assert_eq!(first_line("secret\n"), "secret");
        assert_eq!(first_line("secret\r\njunk\n"), "secret");
        assert_eq!(first_line(" spaced out \nsecond"), " spaced out ");
        assert_eq!(first_line("\nsecond"), "");
        assert_eq!(first_line(""), "");
    }

    #[test]
    fn debug_hides_the_passphrase() {
        let p = CliPassphrase {
            preset: Some(Zeroizing::new("hunter2 hunter2".into())),
            ..CliPassphrase::default()
        };
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
