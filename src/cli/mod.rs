//! Argument parsing and the commands. No logic of their own: each command opens the
//! vault, calls a front-end, and prints the result.

mod commands;
mod errors;
mod login;
mod login_dropbox;
mod login_google;
mod mount;
mod passphrase;
mod progress;
mod provider;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Keeps an assistant's memories the same on every device, end-to-end encrypted,
/// through a storage provider you already have.
#[derive(Debug, Parser)]
#[command(name = "ghostie-fs", version, about, long_about = None)]
#[command(
    after_help = "Passphrase: --passphrase-file FILE or --passphrase-command CMD, else $GHOSTIE_PASSPHRASE, else a prompt.\n\
A passphrase given is checked by every command, even one that needs no key.\n\
A device that ran 'remember' needs no passphrase at all.\n\
Exit codes: 0 ok, 1 failure, 2 bad usage, 3 damaged data found, 4 not set up, 5 wrong passphrase,\n\
6 a provider refused the credential."
)]
pub struct Cli {
    /// The device's home: settings, keys, index and the memories folder.
    #[arg(long, global = true, env = "GHOSTIE_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Read the passphrase from the first line of this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Run this command (with sh -c) and use the first line it prints as the
    /// passphrase, e.g. "pass show ghostie".
    #[arg(
        long,
        global = true,
        value_name = "CMD",
        conflicts_with = "passphrase_file"
    )]
    pub passphrase_command: Option<String>,
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a vault, or join an existing one, and set this device up.
    Setup(Box<SetupArgs>),
    /// Upload local changes of the memories folder.
    Push(JsonArg),
    /// Download what other devices changed; local changes not yet pushed are kept.
    Pull(JsonArg),
    /// Pull, then push.
    Sync(JsonArg),
    /// Show this device's sync state.
    Status(JsonArg),
    /// List conflicts, or resolve one.
    Conflict(ConflictArgs),
    /// List the devices of the vault, or shut a lost one out (`devices remove NAME`).
    Devices(DevicesArgs),
    /// Change the vault's passphrase (on every device).
    Passwd(PasswdArgs),
    /// Rotate the vault's key: everything sealed from now on uses a new one.
    ///
    /// The older keys stay in the keyring (sealed under the new one), so what was
    /// written before still opens. Other devices take the new key at their next
    /// unlock, with the passphrase (a key kept with `remember` must be given the
    /// passphrase once).
    ///
    /// With --rewrite, everything the vault still needs is then sealed again under
    /// the new key, and the older keys are dropped once nothing needs them: this
    /// device does its part at once, the others at their next sync (or within the
    /// hour in a running mount); run `rekey --rewrite` again to finish.
    Rekey(RekeyArgs),
    /// Fetch and check every object the vault's namespace points to.
    Verify,
    /// Reclaim space: delete this device's data that newer versions replaced.
    ///
    /// Deletes this device's packs that no version names any more, once every other
    /// device has said it read past them and a grace period has passed (for readers
    /// in flight), and its log segments that a newer snapshot stands in for. Only
    /// this device's own objects are touched. `sync` and a running mount do this by
    /// themselves, at most once an hour.
    Gc(GcArgs),
    /// Mount the vault over the memories folder (FUSE): files are fetched and
    /// decrypted when read, and encrypted and uploaded in the background when written.
    Mount(MountArgs),
    /// Unmount, once every change is uploaded.
    Unmount(UnmountArgs),
    /// Store a provider's token, checked with the provider first (--status: list them).
    ///
    /// The token goes to the OS keyring, or, where there is none, to a file sealed
    /// under the vault's key.
    Login(LoginArgs),
    /// Remove a provider's stored token, and revoke it at the provider.
    Logout(LogoutArgs),
    /// Keep this device's unlocked key, so that commands need no passphrase here.
    ///
    /// The key goes to the OS keyring, or, where there is none, to a file sealed with
    /// an unlock key kept outside the home. For scheduled syncs and unattended mounts.
    Remember(RememberArgs),
    /// Stop remembering this device's key: commands ask for the passphrase again.
    Forget,
    /// Measure sealing throughput of one file (benchmarks).
    #[command(hide = true)]
    BenchSeal { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// Seal everything again under the new key, then drop the older keys (run it
    /// again to finish a rewrite under way).
    #[arg(long)]
    pub rewrite: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub action: Option<DevicesAction>,
    /// Print one JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DevicesAction {
    /// Shut a lost or retired device out of the vault, with a new passphrase.
    ///
    /// Rotates the vault's key and changes the passphrase, so the removed device
    /// (which knows only the old one) cannot read anything written from now on;
    /// whatever it publishes from now on is ignored by every device, and it no
    /// longer holds back reclaiming space. What it read before, it keeps. Every
    /// other device asks for the new passphrase at its next unlock.
    ///
    /// Example: ghostie-fs devices remove old-phone
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The device's name, as `ghostie-fs devices` lists it.
    pub name: String,
    /// Read the new passphrase from this file (else GHOSTIE_NEW_PASSPHRASE, else
    /// it is asked twice on the terminal).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep superseded data this long after it was found superseded, for readers in
    /// flight: seconds, or a number with s, m, h or d.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub grace: std::time::Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `90`, `90s`, `15m`, `1h`, `7d`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 90s, 15m, 1h or 7d)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration (like 90s, 15m, 1h or 7d)"
            ))
        }
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(unit)))
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Where the vault lives: local (a folder), s3 (a bucket of AWS S3 or of an
    /// S3-compatible server; credentials come from the usual AWS environment
    /// variables, shared files or profile, and are never stored), gist (secret
    /// gists of your GitHub account; the token from 'ghostie-fs login github' or
    /// GH_TOKEN), dropbox (your Dropbox app's folder; the login from
    /// 'ghostie-fs login dropbox') or gdrive (the hidden app data folder of your
    /// Google Drive; the login from 'ghostie-fs login google').
    #[arg(long, value_name = "KIND")]
    pub backend: String,
    /// The vault folder (local backend). It must exist.
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// The bucket (s3 backend). It must exist.
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,
    /// The URL of an S3-compatible server (s3 backend) [default: AWS].
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The region (s3 backend) [default: from the AWS configuration, else us-east-1].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Address the bucket as URL/bucket/key (s3 backend; most self-hosted servers).
    #[arg(long)]
    pub path_style: bool,
    /// A profile of the shared AWS configuration files (s3 backend).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// The provider's API: for gist, GitHub Enterprise Server's
    /// https://HOST/api/v3 [default: https://api.github.com]; for dropbox
    /// [default: https://api.dropboxapi.com]; for gdrive [default:
    /// https://www.googleapis.com].
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// Google Drive's upload host (gdrive backend) [default:
    /// https://www.googleapis.com].
    #[arg(long, value_name = "URL")]
    pub upload_url: Option<String>,
    /// Google's OAuth host (gdrive backend) [default:
    /// https://oauth2.googleapis.com].
    #[arg(long, value_name = "URL")]
    pub oauth_url: Option<String>,
    /// Dropbox's content host (dropbox backend) [default:
    /// https://content.dropboxapi.com].
    #[arg(long, value_name = "URL")]
    pub content_url: Option<String>,
    /// Dropbox's notification host (dropbox backend) [default:
    /// https://notify.dropboxapi.com].
    #[arg(long, value_name = "URL")]
    pub notify_url: Option<String>,
    /// Your Dropbox app's key, to log in as you set up when this device has no
    /// Dropbox login yet (dropbox backend; see 'ghostie-fs login dropbox')
    /// [env: GHOSTIE_DROPBOX_APP_KEY].
    #[arg(long, value_name = "KEY")]
    pub app_key: Option<String>,
    /// Read Dropbox's code from the first line of standard input (dropbox backend).
    #[arg(long)]
    pub code_stdin: bool,
    /// Your Google OAuth client's id, to log in as you set up when this device has
    /// no Google login yet (gdrive backend; see 'ghostie-fs login google')
    /// [env: GHOSTIE_GDRIVE_CLIENT_ID].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// That client's secret [env: GHOSTIE_GDRIVE_CLIENT_SECRET; the
    /// variable keeps it out of the process list and the shell's history].
    #[arg(long, value_name = "SECRET")]
    pub client_secret: Option<String>,
    /// Log in with Google's device flow (a code typed on another device) instead
    /// of the browser on this one (gdrive backend; a "TVs and Limited Input"
    /// client).
    #[arg(long)]
    pub device_flow: bool,
    /// This device's name, unique in the vault [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// The vault's root prefix inside the backend.
    #[arg(long, default_value = ghostie_fs::config::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Set up again a home that is already set up.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ConflictArgs {
    #[command(subcommand)]
    pub action: Option<ConflictAction>,
    /// Print JSON (for the list).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConflictAction {
    /// List paths in conflict (the default).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Keep one device's version at PATH, or keep them all as separate files.
    Resolve {
        /// The path in conflict, relative to the memories folder.
        path: String,
        /// A device name, or `all`.
        #[arg(long, value_name = "DEVICE|all")]
        keep: String,
    },
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Where to mount [default: <home>/memories]. It must exist; files already in it
    /// are imported into the vault first.
    pub mountpoint: Option<PathBuf>,
    /// Stay in the foreground, logging to stderr, until unmounted (Ctrl-C unmounts).
    /// Without it the command returns once the mount is ready, and the mount logs to
    /// <home>/sync/mount.log.
    #[arg(long)]
    pub foreground: bool,
    /// Seconds between looks for other devices' changes. Each look costs one listing
    /// per device of the vault, which a cloud bills (one request in all on Gist and
    /// Dropbox). Default: 1 for a local folder, 10 for S3, Gist and Dropbox; on
    /// Dropbox a change is also heard at once, through Dropbox's longpoll.
    #[arg(long, value_name = "SECONDS")]
    pub poll: Option<f64>,
    /// Memory for decrypted small files (e.g. 64M, 1G).
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    pub cache_size: String,
    /// What fsync() waits for: `local`, the change is durable in this device's upload
    /// queue; `remote`, it is in the backend.
    #[arg(long, value_enum, default_value = "local")]
    pub fsync: FsyncMode,
    /// Mount options, comma-separated: allow_other, allow_root, ro, noexec, …
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    #[arg(long, hide = true)]
    pub passphrase_stdin: bool,
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncMode {
    Local,
    Remote,
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    /// The mount point [default: where this home is mounted].
    pub mountpoint: Option<PathBuf>,
    /// Unmount now; changes still queued upload at the next mount.
    #[arg(long)]
    pub no_wait: bool,
    /// Then make this a folder-sync home again: every file written into the memories
    /// folder, for push, pull and sync.
    #[arg(long)]
    pub to_folder: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
  ghostie-fs login github                      paste a token at the prompt (not echoed)\n  \
  pass show github | ghostie-fs login github --token-stdin\n  \
  ghostie-fs login --status                    what is stored where (never a secret)\n\
GH_TOKEN, then GITHUB_TOKEN (for github.com; GH_ENTERPRISE_TOKEN, then GITHUB_ENTERPRISE_TOKEN,\n\
for another server), win over a stored token while set, and are never stored.")]
pub struct LoginArgs {
    /// The provider: github, dropbox or google.
    #[arg(value_name = "PROVIDER", required_unless_present = "status")]
    pub provider: Option<String>,
    /// Your Dropbox app's key (dropbox; an app with "App folder" access made in
    /// Dropbox's App Console: see the README) [env: GHOSTIE_DROPBOX_APP_KEY].
    #[arg(long, value_name = "KEY")]
    pub app_key: Option<String>,
    /// Read Dropbox's code from the first line of standard input, without asking
    /// (dropbox).
    #[arg(long)]
    pub code_stdin: bool,
    /// Your Google OAuth client's id (google; a "Desktop app" client, or "TVs and
    /// Limited Input devices" for --device, made in Google Cloud: see the README)
    /// [env: GHOSTIE_GDRIVE_CLIENT_ID].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// That client's secret (google) [env: GHOSTIE_GDRIVE_CLIENT_SECRET; the
    /// variable keeps it out of the process list and the shell's history].
    #[arg(long, value_name = "SECRET")]
    pub client_secret: Option<String>,
    /// Log in by typing a code on another device instead of a browser on this
    /// one (google: a phone, a server).
    #[arg(long)]
    pub device: bool,
    /// Read the token from the first line of standard input.
    #[arg(long)]
    pub token_stdin: bool,
    /// The provider's API (GitHub Enterprise Server: https://HOST/api/v3)
    /// [default: https://api.github.com, https://api.dropboxapi.com,
    /// https://www.googleapis.com].
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// Google's OAuth host (google) [default: https://oauth2.googleapis.com].
    #[arg(long, value_name = "URL")]
    pub oauth_url: Option<String>,
    /// List the stored credentials (provider, account, where kept, scopes, expiry).
    #[arg(long, conflicts_with_all = ["token_stdin", "api_url", "app_key", "code_stdin", "client_id", "client_secret", "device", "oauth_url"])]
    pub status: bool,
    /// With --status: print one JSON object.
    #[arg(long, requires = "status")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The provider: github, dropbox or google.
    #[arg(value_name = "PROVIDER")]
    pub provider: String,
    /// Only forget the token here; leave it valid at the provider.
    #[arg(long)]
    pub keep_at_provider: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
  ghostie-fs remember              until 'ghostie-fs forget'\n  \
  ghostie-fs remember --for 30d    then the passphrase is asked again")]
pub struct RememberArgs {
    /// How long: e.g. 12h, 30d, 2w [default: until 'ghostie-fs forget'].
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Read the new passphrase from this file.
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet);
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("❌ {}", e.sentence);
            ExitCode::from(e.code)
        }
    }
}

fn init_logging(quiet: bool) {
    // Other crates' warnings (the AWS SDK's, say) are not the user's business.
    let default = if quiet {
        "error"
    } else {
        "error,ghostie_fs=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GHOSTIE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .try_init();
}

/// Standard error for the log, where a failed write is dropped: the mount's log sits
/// on the home's disk, and a full disk must cost log lines, not the mount (the
/// logging crate reports a failed write by printing to standard error, which then
/// panics).
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
