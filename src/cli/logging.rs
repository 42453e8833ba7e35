//! The log: which lines (`-v`, `-vv`, `--quiet`, `GHOSTIE_LOG`, `RUST_LOG`), with
//! timestamps, to standard error; for a mount in the background, to
//! `<home>/sync/mount.log`, rotated by size so that a mount running for months does
//! not fill the disk. (tracing-appender rotates by time only; a quiet mount would keep
//! a file a day for nothing, a busy one could still fill the disk in a day.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A log file grows to this size, then becomes `<name>.1` (and `.1` becomes `.2`, …).
pub const LOG_FILE_CAP: u64 = 10 * 1024 * 1024;
/// Older files kept beside the current one.
pub const LOG_FILES_KEPT: usize = 3;

/// What to log: the first of `GHOSTIE_LOG` and `RUST_LOG` that is set (a filter such as
/// `ghostie_fs=debug`), else what `-v` and `--quiet` say.
fn filter(verbose: u8, quiet: bool) -> tracing_subscriber::EnvFilter {
    for var in ["GHOSTIE_LOG", "RUST_LOG"] {
        if let Ok(f) = tracing_subscriber::EnvFilter::try_from_env(var) {
            return f;
        }
    }
    // Other crates' warnings (the AWS SDK's, say) are not the user's business.
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "error,ghostie_fs=warn",
        (false, 1) => "warn,ghostie_fs=info",
        (false, 2) => "warn,ghostie_fs=debug",
        (false, _) => "info,ghostie_fs=trace",
    };
    tracing_subscriber::EnvFilter::new(level)
}

/// Starts the log. With `file`, standard error is that file (the process that started
/// this one opened it so) and is rotated when it passes the cap.
pub fn init(verbose: u8, quiet: bool, file: Option<&Path>) {
    if let Some(path) = file {
        let cap = std::env::var("GHOSTIE_LOG_FILE_CAP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(LOG_FILE_CAP);
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let _ = ROTATION.set(Mutex::new(Rotation {
            path: path.to_path_buf(),
            size,
            cap,
        }));
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose, quiet))
        .with_writer(|| LogWriter)
        .with_ansi(file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

static ROTATION: OnceLock<Mutex<Rotation>> = OnceLock::new();

struct Rotation {
    path: PathBuf,
    size: u64,
    cap: u64,
}

impl Rotation {
    /// `mount.log` → `mount.log.1` → … → `mount.log.N` (dropped), then a new
    /// `mount.log` becomes standard error, so that whatever else writes there (a
    /// panic's message) lands in the current file too.
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        for n in (1..LOG_FILES_KEPT).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))?;
        let fresh = open_log(&self.path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto standard error of a descriptor this function owns.
        if unsafe { libc::dup2(fresh.as_raw_fd(), 2) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.size = 0;
        Ok(())
    }
}

/// Opens (or creates, readable by its owner alone: it names memories) a log file
/// for appending.
pub fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Standard error for the log, where a failed write is dropped: the mount's log sits
/// on the home's disk, and a full disk must cost log lines, not the mount (the
/// logging crate reports a failed write by printing to standard error, which then
/// panics).
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match ROTATION.get() {
            None => {
                let _ = std::io::stderr().write_all(buf);
            }
            Some(rotation) => {
                let mut r = rotation.lock().unwrap_or_else(|p| p.into_inner());
                let _ = std::io::stderr().write_all(buf);
                r.size += buf.len() as u64;
                if r.size >= r.cap {
                    if let Err(e) = r.rotate() {
                        // Keep writing where we are; try again after another cap.
                        r.size = 0;
                        let _ = writeln!(
                            std::io::stderr(),
                            "cannot rotate the log {}: {e}",
                            r.path.display()
                        );
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter's directives, in any order.
    fn directives(verbose: u8, quiet: bool) -> std::collections::BTreeSet<String> {
        filter(verbose, quiet)
            .to_string()
            .split(',')
            .map(str::to_owned)
            .collect()
    }

    fn set(text: &str) -> std::collections::BTreeSet<String> {
        text.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn flags_choose_the_level_and_the_environment_wins() {
        // The environment is the process's: only this test touches these variables.
        std::env::remove_var("GHOSTIE_LOG");
        std::env::remove_var("RUST_LOG");
        assert_eq!(directives(0, false), set("error,ghostie_fs=warn"));
        assert_eq!(directives(1, false), set("warn,ghostie_fs=info"));
        assert_eq!(directives(2, false), set("warn,ghostie_fs=debug"));
        assert_eq!(directives(3, false), set("info,ghostie_fs=trace"));
        assert_eq!(directives(0, true), set("error"));
        std::env::set_var("RUST_LOG", "ghostie_fs=trace");
        assert_eq!(directives(0, false), set("ghostie_fs=trace"));
        std::env::set_var("GHOSTIE_LOG", "ghostie_fs=debug");
        assert_eq!(directives(0, false), set("ghostie_fs=debug"));
        std::env::remove_var("GHOSTIE_LOG");
        std::env::remove_var("RUST_LOG");
    }
}
