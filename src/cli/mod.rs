//! Argument parsing and the commands. No logic of their own: each command opens the
//! vault, calls a front-end, and prints the result.

mod anonymize;
mod commands;
mod docs;
mod errors;
mod logging;
mod login;
mod login_dropbox;
mod login_google;
mod mount;
mod passphrase;
mod progress;
mod provider;
mod units;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// The version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GHOSTIE_COMMIT"),
    ")"
);

/// Keeps an assistant's memories the same on every device, end-to-end encrypted,
/// through a storage provider you already have.
#[derive(Debug, Parser)]
#[command(name = "ghostie-fs", version = VERSION, about, long_about = None)]
#[command(
    after_help = "Passphrase: --passphrase-file FILE or --passphrase-command CMD, else $GHOSTIE_PASSPHRASE, else a prompt.\n\
A passphrase given is checked by every command, even one that needs no key.\n\
A device that ran 'remember' needs no passphrase at all.\n\
Log: -v, -vv, or a filter in GHOSTIE_LOG or RUST_LOG (e.g. ghostie_fs=debug).\n\
Exit codes: 0 ok, 1 failure, 2 bad usage, 3 damaged data found, 4 not set up, 5 wrong passphrase,\n\
6 a provider refused the credential.\n\
\n\
First steps:\n  \
  ghostie-fs setup --backend local --path /mnt/usb/ghostie-vault   create a vault (or join it)\n  \
  ghostie-fs sync                   upload and download changes of ~/.ghostie/memories\n  \
  ghostie-fs mount                  or mount the vault over that folder (FUSE)\n  \
  ghostie-fs status                 what this device holds and waits for"
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
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log more: -v what the mount and the backend do, -vv each step (debug).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a vault, or join an existing one, and set this device up.
    #[command(after_help = "Examples:\n  \
  ghostie-fs setup --backend local --path /mnt/usb/ghostie-vault\n  \
  ghostie-fs setup --backend s3 --bucket my-memories --endpoint https://s3.example.com --path-style\n  \
  ghostie-fs login github && ghostie-fs setup --backend gist\n  \
  ghostie-fs setup --backend gdrive --client-id ID --client-secret SECRET --device phone\n\
The first device creates the vault and chooses its passphrase; every other device\n\
joins it with the same command and the same passphrase.")]
    Setup(Box<SetupArgs>),
    /// Upload local changes of the memories folder.
    #[command(after_help = "Examples:\n  \
  ghostie-fs push\n  \
  ghostie-fs push --json | jq .uploaded")]
    Push(JsonArg),
    /// Download what other devices changed; local changes not yet pushed are kept.
    #[command(after_help = "Examples:\n  \
  ghostie-fs pull\n  \
  ghostie-fs pull --json | jq .conflicts")]
    Pull(JsonArg),
    /// Pull, then push (and reclaim space, at most once an hour).
    #[command(after_help = "Examples:\n  \
  ghostie-fs sync\n  \
  ghostie-fs sync --json | jq '.pull.downloaded, .push.uploaded'\n  \
  */15 * * * * ghostie-fs --quiet sync      (crontab, on a device that ran 'remember')")]
    Sync(JsonArg),
    /// Show this device's sync state.
    #[command(after_help = "Examples:\n  \
  ghostie-fs status\n  \
  ghostie-fs status --json | jq .pending")]
    Status(JsonArg),
    /// List conflicts, or resolve one.
    #[command(after_help = "Examples:\n  \
  ghostie-fs conflict                                   list them\n  \
  ghostie-fs conflict resolve notes.json --keep laptop  keep the laptop's version\n  \
  ghostie-fs conflict resolve notes.json --keep all     keep every version as its own file\n  \
  rm notes.json.conflict-phone                          or drop the phone's version by hand")]
    Conflict(ConflictArgs),
    /// List the devices of the vault, or shut a lost one out (`devices remove NAME`).
    Devices(DevicesArgs),
    /// Show untrusted devices pseudonyms instead of sensitive values (off until
    /// turned on).
    ///
    /// With anonymization on, email addresses, phone numbers, card numbers, IBANs,
    /// API keys and IP addresses (and what the owner's rules in <home>/anonymize.toml
    /// name) reach the vault as stable pseudonyms such as ⟦email:7f3a9c01d2⟧; their
    /// originals are sealed to a key only trusted devices hold, which show the
    /// memories as written. Every device in the vault when it is turned on is
    /// trusted; a device that joins later is not until `devices trust NAME`.
    #[command(after_help = "Examples:\n  \
  ghostie-fs anonymize on                              every built-in detector\n  \
  ghostie-fs anonymize on --detectors email,phone,card\n  \
  $EDITOR ~/.ghostie/anonymize.toml && ghostie-fs anonymize on   apply edited rules\n  \
  ghostie-fs anonymize rules\n  \
  ghostie-fs devices trust work-laptop")]
    Anonymize(AnonymizeArgs),
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
    #[command(after_help = "Examples:\n  \
  ghostie-fs mount                         over ~/.ghostie/memories, in the background\n  \
  ghostie-fs mount ~/memories --poll 5 --cache-size 256MiB\n  \
  ghostie-fs mount --foreground -v         in this terminal, logging what it does\n  \
  ghostie-fs unmount                       once every change is uploaded")]
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
    /// Print a shell's completion script.
    #[command(after_help = "Examples:\n  \
  ghostie-fs completions bash > ~/.local/share/bash-completion/completions/ghostie-fs\n  \
  ghostie-fs completions zsh > ~/.zfunc/_ghostie-fs      (with fpath+=~/.zfunc in ~/.zshrc)\n  \
  ghostie-fs completions fish > ~/.config/fish/completions/ghostie-fs.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (ghostie-fs.1, ghostie-fs-setup.1, …) into a folder.
    #[command(after_help = "Examples:\n  \
  ghostie-fs man ~/.local/share/man/man1 && man ghostie-fs-mount")]
    Man {
        /// The folder to write them into (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Measure sealing throughput of one file (benchmarks).
    #[command(hide = true)]
    BenchSeal { file: PathBuf },
    /// Measure what looking for sensitive values adds to sealing, over every file
    /// of a folder (benchmarks).
    #[command(hide = true)]
    BenchAnonymize { dir: PathBuf },
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
    /// Trust a device with the sensitive values (`anonymize`): it receives the key
    /// that opens their originals (at its next sync if it has not published its
    /// exchange key yet).
    Trust(TrustArgs),
    /// Stop trusting a device: the sensitive key is replaced, so it cannot open any
    /// value written from now on (what it opened before, it keeps).
    Untrust(TrustArgs),
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The device's name, as `ghostie-fs devices` lists it.
    pub name: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AnonymizeArgs {
    #[command(subcommand)]
    pub action: AnonymizeAction,
}

#[derive(Debug, Subcommand)]
pub enum AnonymizeAction {
    /// Turn anonymization on, or apply the rules of <home>/anonymize.toml.
    On {
        /// The built-in detectors to run (default: the rules file's, else all).
        #[arg(long, value_delimiter = ',', value_name = "LIST",
              value_parser = ["email", "phone", "card", "iban", "secret", "ip"])]
        detectors: Option<Vec<String>>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop pseudonymizing what is written from now on (trusted devices still
    /// restore what was pseudonymized).
    Off {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the rules in force and the trusted devices.
    Rules {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
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
    /// How much of its mostly superseded packs this collection reads to repack them
    /// (bytes, or with a unit: 16M, 1GiB); the others wait for the next collection.
    /// Each is read whole while other commands and the mount wait to upload and to
    /// look for changes. 0 repacks nothing.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = units::parse_size)]
    pub repack_limit: u64,
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
    /// Where the vault lives. s3: credentials come from the usual AWS environment
    /// variables, shared files or profile, and are never stored; gist: the token
    /// from 'ghostie-fs login github' or GH_TOKEN; dropbox: the login from
    /// 'ghostie-fs login dropbox'; gdrive: the login from 'ghostie-fs login google'.
    #[arg(long, value_name = "KIND", value_enum)]
    pub backend: BackendKind,
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

/// Where a vault lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// A folder: a USB disk, a NAS share, a folder another sync tool carries.
    Local,
    /// A bucket of AWS S3 or of an S3-compatible server.
    S3,
    /// Secret gists of a GitHub account.
    Gist,
    /// A Dropbox app's folder.
    Dropbox,
    /// The hidden app data folder of a Google Drive.
    Gdrive,
}

#[derive(Debug, Args)]
pub struct ConflictArgs {
    #[command(subcommand)]
    pub action: Option<ConflictAction>,
    /// Print one JSON array instead of text (for the list).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConflictAction {
    /// List paths in conflict (the default).
    List {
        /// Print one JSON array instead of text.
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
    #[arg(long, value_name = "SECONDS", value_parser = parse_poll)]
    pub poll: Option<f64>,
    /// Memory for decrypted small files: bytes, or with a unit (512K, 64M, 64MiB,
    /// 1G; powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = units::parse_size)]
    pub cache_size: u64,
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
    /// The log file the background mount writes (and rotates): its standard error.
    #[arg(long, hide = true)]
    pub log_file: Option<PathBuf>,
}

/// Seconds between polls: above 0, at most a day.
fn parse_poll(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(secs),
        _ => Err(format!(
            "'{text}' is not a number of seconds above 0 and at most 86400"
        )),
    }
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
    /// The provider.
    #[arg(value_name = "PROVIDER", required_unless_present = "status", value_parser = ["github", "dropbox", "google"])]
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
    /// The provider.
    #[arg(value_name = "PROVIDER", value_parser = ["github", "dropbox", "google"])]
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let log_file = match &cli.command {
        Command::Mount(m) => m.log_file.as_deref(),
        _ => None,
    };
    logging::init(cli.verbose, cli.quiet, log_file);
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("❌ {}", e.sentence);
            ExitCode::from(e.code)
        }
    }
}

/// Help and --version as clap prints them; a usage mistake as every other error is
/// told: one line, then the usage exit code.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    eprintln!("❌ {}", usage_sentence(&e.render().to_string()));
    ExitCode::from(errors::EXIT_USAGE)
}

/// clap's message in one line: its first line, with the indented lines under it
/// (the missing arguments, the possible values) and its tip, then where help is.
fn usage_sentence(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .trim_end_matches(':');
    let mut sentence = errors::capitalise(first);
    let (tips, details): (Vec<&str>, Vec<&str>) = lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .partition(|l| l.starts_with("tip:"));
    match details.first() {
        None => {}
        Some(d) if d.starts_with('[') => sentence += &format!(" {}", details.join(" ")),
        Some(_) => sentence += &format!(": {}", details.join(", ")),
    }
    for tip in tips {
        sentence += &format!("; {}", tip.trim_start_matches("tip:").trim());
    }
    format!("{sentence} (see '{} --help').", command_path().join(" "))
}

/// The command the arguments name (`ghostie-fs conflict resolve`), as far as clap
/// can tell from arguments it refused.
fn command_path() -> Vec<String> {
    let mut path = vec!["ghostie-fs".to_owned()];
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(std::env::args_os());
    let Ok(mut matches) = matches else {
        return path;
    };
    while let Some((name, sub)) = matches.subcommand() {
        path.push(name.to_owned());
        matches = sub.clone();
    }
    path
}
