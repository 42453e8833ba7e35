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

/// What to log. `--quiet` and `-v` as given win; else the first of `GHOSTIE_LOG` and
/// `RUST_LOG` that is set (a filter such as `ghostie_fs=debug`; directives it cannot
/// read are left out); else warnings of ours only.
fn filter(
    verbose: u8,
    quiet: bool,
    ghostie_log: Option<&str>,
    rust_log: Option<&str>,
) -> tracing_subscriber::EnvFilter {
    let from_flags = |level: &str| tracing_subscriber::EnvFilter::new(level);
    // Other crates' warnings (the AWS SDK's, say) are not the user's business; and
    // the FUSE library warns at every unmount done from outside it (the mount says
    // itself whether the mount point is left mounted).
    let quieted = |levels: &str| match ghostie_fs::fs::QUIET_LOG {
        "" => from_flags(levels),
        quiet => from_flags(&format!("{levels},{quiet}")),
    };
    match (quiet, verbose) {
        (true, _) => return from_flags("error"),
        (false, 1) => return quieted("warn,ghostie_fs=info"),
        (false, 2) => return quieted("warn,ghostie_fs=debug"),
        (false, 3..) => return from_flags("info,ghostie_fs=trace"),
        (false, 0) => {}
    }
    match [ghostie_log, rust_log]
        .into_iter()
        .flatten()
        .find(|v| !v.trim().is_empty())
    {
        Some(directives) => tracing_subscriber::EnvFilter::builder().parse_lossy(directives),
        None => from_flags("error,ghostie_fs=warn"),
    }
}

/// Whether the environment names a log filter (a mount started in the background
/// then leaves the choice to it).
pub fn filter_in_environment() -> bool {
    ["GHOSTIE_LOG", "RUST_LOG"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|f| !f.trim().is_empty()))
}

/// Starts the log. With `file`, standard error becomes that file (appended to), and
/// it is rotated when it passes the cap.
pub fn init(verbose: u8, quiet: bool, file: Option<&Path>) {
    let mut to_file = false;
    if let Some(path) = file {
        let cap = std::env::var("GHOSTIE_LOG_FILE_CAP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(LOG_FILE_CAP);
        // The file becomes standard error here, whoever opened what before: a panic's
        // message lands in it too, and counts towards its cap.
        if let Ok(log) = open_log(path) {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 onto standard error of a descriptor we own for the call.
            if unsafe { libc::dup2(log.as_raw_fd(), 2) } >= 0 {
                to_file = true;
                let _ = ROTATION.set(Mutex::new(Rotation {
                    path: path.to_path_buf(),
                    cap,
                }));
            }
        }
    }
    let ghostie_log = std::env::var("GHOSTIE_LOG").ok();
    let rust_log = std::env::var("RUST_LOG").ok();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(
            verbose,
            quiet,
            ghostie_log.as_deref(),
            rust_log.as_deref(),
        ))
        .with_writer(|| LogWriter)
        .with_ansi(!to_file && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

static ROTATION: OnceLock<Mutex<Rotation>> = OnceLock::new();

struct Rotation {
    path: PathBuf,
    cap: u64,
}

/// The size of what standard error is now (the log file), whoever wrote it.
fn stderr_size() -> u64 {
    // SAFETY: fstat into a zeroed struct we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(2, &mut st) == 0 {
            u64::try_from(st.st_size).unwrap_or(0)
        } else {
            0
        }
    }
}

impl Rotation {
    /// `mount.log` → `mount.log.1` → … → `mount.log.N` (dropped), then a new
    /// `mount.log` becomes standard error, so that whatever else writes there (a
    /// panic's message) lands in the current file too.
    fn rotate(&self) -> std::io::Result<()> {
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
        Ok(())
    }
}

/// Opens (or creates) a log file for appending, readable by its owner alone: it
/// names memories.
pub fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // A file an older version made keeps its mode on open: narrowed here.
    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    Ok(file)
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
                let r = rotation.lock().unwrap_or_else(|p| p.into_inner());
                let _ = std::io::stderr().write_all(buf);
                if stderr_size() >= r.cap {
                    if let Err(e) = r.rotate() {
                        // The log must not grow without bound all the same (its
                        // folder gone, a rename refused): start this file over.
                        // SAFETY: ftruncate of standard error, a descriptor we hold.
                        unsafe { libc::ftruncate(2, 0) };
                        let _ = writeln!(
                            std::io::stderr(),
                            "cannot rotate the log {} ({e}); it was emptied instead",
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
    fn directives(
        verbose: u8,
        quiet: bool,
        ghostie_log: Option<&str>,
        rust_log: Option<&str>,
    ) -> std::collections::BTreeSet<String> {
        filter(verbose, quiet, ghostie_log, rust_log)
            .to_string()
            .split(',')
            .map(str::to_owned)
            .collect()
    }

    fn set(text: &str) -> std::collections::BTreeSet<String> {
        text.split(',').map(str::to_owned).collect()
    }

    /// `text` and the directives that keep the FUSE library quiet.
    fn quieted(text: &str) -> std::collections::BTreeSet<String> {
        let mut out = set(text);
        out.extend(
            ghostie_fs::fs::QUIET_LOG
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
        );
        out
    }

    #[test]
    fn flags_win_then_the_environment_then_the_default() {
        assert_eq!(
            directives(0, false, None, None),
            set("error,ghostie_fs=warn")
        );
        assert_eq!(
            directives(1, false, None, None),
            quieted("warn,ghostie_fs=info")
        );
        assert_eq!(
            directives(2, false, None, None),
            quieted("warn,ghostie_fs=debug")
        );
        assert_eq!(
            directives(3, false, None, None),
            set("info,ghostie_fs=trace")
        );
        assert_eq!(directives(0, true, None, None), set("error"));
        let trace = Some("ghostie_fs=trace");
        let debug = Some("ghostie_fs=debug");
        assert_eq!(directives(0, false, None, trace), set("ghostie_fs=trace"));
        assert_eq!(directives(0, false, debug, trace), set("ghostie_fs=debug"));
        assert_eq!(
            directives(0, false, Some(""), trace),
            set("ghostie_fs=trace")
        );
        // What the user typed wins over what the environment holds.
        assert_eq!(directives(0, true, debug, trace), set("error"));
        assert_eq!(
            directives(1, false, debug, trace),
            quieted("warn,ghostie_fs=info")
        );
        // A filter with a mistake in it keeps what it can read.
        assert_eq!(
            directives(0, false, Some("ghostie_fs=debug,=nonsense=="), None),
            set("ghostie_fs=debug")
        );
    }
}
