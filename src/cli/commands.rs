//! One function per command: open, call, print.

use std::path::PathBuf;
use std::time::Instant;

use ghostie_fs::config::{filename_safe, valid_prefix, BackendConfig, Home};
use ghostie_fs::config::{DropboxUrls, GdriveUrls};
use ghostie_fs::folder;
use ghostie_fs::sync::{
    GcOptions, GcReport, Holder, Keep, NoProgress, SetupOutcome, SetupRequest, SyncError, Vault,
};

use super::errors::{CliError, EXIT_DAMAGED, EXIT_FAILURE, EXIT_USAGE};
use super::passphrase::CliPassphrase;
use super::progress::BarProgress;
use super::units::{count, human_bytes, plural, tally_sentence};
use super::{
    login, mount, BackendKind, Cli, Command, ConflictAction, DevicesAction, DevicesArgs, GcArgs,
    RemoveArgs, SetupArgs,
};

type CmdResult = Result<u8, CliError>;

fn home_of(cli: &Cli) -> Result<Home, CliError> {
    if let Some(h) = &cli.home {
        return Ok(Home::new(h));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(Home::new(PathBuf::from(h).join(".ghostie"))),
        None => Err(CliError::new(
            EXIT_FAILURE,
            "No home folder: pass --home or set GHOSTIE_HOME.",
        )),
    }
}

/// Opens the vault. A passphrase given without asking starts unlocking at once, on
/// another core, so that it is checked (see [`confirm`]) at little cost.
pub(super) fn open_vault(home: Home, pass: &CliPassphrase) -> Result<Vault, CliError> {
    let vault = Vault::open(home, Box::new(pass.clone()))?;
    if pass.given() {
        vault.begin_unlock();
    }
    Ok(vault)
}

/// Checks a given passphrase before a command reports success, even if its work
/// needed no key: a wrong one must never end in "✅". A passphrase typed at a prompt
/// was asked for because a key was needed, and was checked then.
pub(super) fn confirm(vault: &Vault, pass: &CliPassphrase) -> Result<(), CliError> {
    if pass.given() {
        vault.unlock()?;
    }
    Ok(())
}

/// The command's name, as `status` shows it to others while it holds the home.
fn name_of(command: &Command) -> &'static str {
    match command {
        Command::Setup(_) => "setup",
        Command::Push(_) => "push",
        Command::Pull(_) => "pull",
        Command::Sync(_) => "sync",
        Command::Status(_) => "status",
        Command::Conflict(_) => "conflict",
        Command::Devices(_) => "devices",
        Command::Anonymize(_) => "anonymize",
        Command::Rekey(_) => "rekey",
        Command::Passwd(_) => "passwd",
        Command::Verify => "verify",
        Command::Gc(_) => "gc",
        Command::Mount(_) => "mount",
        Command::Unmount(_) => "unmount",
        Command::Login(_) => "login",
        Command::Logout(_) => "logout",
        Command::Remember(_) => "remember",
        Command::Forget => "forget",
        Command::Completions { .. } => "completions",
        Command::Man { .. } => "man",
        Command::BenchSeal { .. } => "bench-seal",
        Command::BenchAnonymize { .. } => "bench-anonymize",
    }
}

/// Prints unless --quiet.
macro_rules! say {
    ($cli:expr, $($arg:tt)*) => {
        if !$cli.quiet {
            println!($($arg)*);
        }
    };
}

pub(super) fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

pub fn run(cli: Cli) -> CmdResult {
    // Neither needs a home nor a passphrase.
    match &cli.command {
        Command::Completions { shell } => return super::docs::completions(*shell),
        Command::Man { dir } => {
            let written = super::docs::man_pages(dir)?;
            say!(
                cli,
                "✅ Wrote {} into {}",
                count(written.len(), "manual page", "manual pages"),
                dir.display()
            );
            return Ok(0);
        }
        _ => {}
    }
    Vault::name_this_process(name_of(&cli.command));
    let home = home_of(&cli)?;
    match &cli.command {
        Command::Push(_) | Command::Pull(_) | Command::Sync(_) => {
            mount::refuse_while_mounted(&home)?;
            mount::refuse_on_mount_home(&home)?;
        }
        Command::Conflict(_)
        | Command::Devices(_)
        | Command::Anonymize(_)
        | Command::Rekey(_)
        | Command::Passwd(_)
        | Command::Verify
        | Command::Setup(_) => mount::refuse_while_mounted(&home)?,
        // A mount home collects in its mount; a folder home here.
        Command::Gc(_) => mount::refuse_while_mounted(&home)?,
        _ => {}
    }
    // Read once, now: a passphrase file that is not there is an error for every
    // command, and a passphrase command runs once, here in the foreground.
    let pass = CliPassphrase::from_options(
        cli.passphrase_file.as_deref(),
        cli.passphrase_command.as_deref(),
    )?;
    let pass = &pass;
    match &cli.command {
        Command::Mount(a) => mount::mount(&cli, home, pass, a),
        Command::Unmount(a) => mount::unmount(&cli, home, pass, a),
        Command::Login(a) => login::login(&cli, home, pass, a),
        Command::Logout(a) => login::logout(&cli, home, pass, a),
        Command::Remember(a) => login::remember(&cli, home, pass, a),
        Command::Forget => login::forget(&cli, home),
        Command::Setup(args) => setup(&cli, home, pass, args),
        Command::Push(a) => push(&cli, &open_vault(home, pass)?, pass, a.json),
        Command::Pull(a) => {
            let (code, report) = pull_and(&cli, &open_vault(home, pass)?, pass, a.json, true)?;
            if a.json {
                print_json(&report);
            }
            Ok(code)
        }
        Command::Sync(a) => {
            // One vault for both halves: one unlock, one passphrase prompt.
            let vault = open_vault(home, pass)?;
            let (code, pulled) = pull_and(&cli, &vault, pass, a.json, false)?;
            let pushed = push_report(&cli, &vault, pass, a.json)?;
            // Nothing pushed: say how far this device read all the same.
            if let Err(e) = vault.acknowledge() {
                eprintln!(
                    "⚠️  could not tell the other devices how far this one has read ({e}); \
                     they keep superseded data until it can"
                );
            }
            let collected = auto_gc(&cli, &vault, a.json);
            if a.json {
                // One document for the whole command, so that `| jq` reads it.
                print_json(&serde_json::json!({
                    "pull": pulled,
                    "push": pushed,
                    "gc": collected,
                }));
            }
            Ok(code)
        }
        Command::Status(a) => status(home, pass, a.json),
        Command::Conflict(c) => match &c.action {
            None => conflict_list(&cli, home, pass, c.json),
            Some(ConflictAction::List { json }) => conflict_list(&cli, home, pass, *json || c.json),
            Some(ConflictAction::Resolve { path, keep }) => {
                conflict_resolve(&cli, home, pass, path, keep)
            }
        },
        Command::Devices(DevicesArgs {
            action: Some(DevicesAction::Remove(a)),
            ..
        }) => rekey(&cli, home, pass, Some(a), false, a.json),
        Command::Devices(DevicesArgs {
            action: Some(DevicesAction::Trust(a)),
            ..
        }) => super::anonymize::trust(&cli, home, pass, &a.name, true, a.json),
        Command::Devices(DevicesArgs {
            action: Some(DevicesAction::Untrust(a)),
            ..
        }) => super::anonymize::trust(&cli, home, pass, &a.name, false, a.json),
        Command::Devices(a) => devices(home, pass, a.json),
        Command::Anonymize(a) => super::anonymize::run(&cli, home, pass, &a.action),
        Command::Rekey(a) => rekey(&cli, home, pass, None, a.rewrite, a.json),
        Command::Passwd(a) => passwd(&cli, home, pass, a.new_passphrase_file.clone()),
        Command::Verify => verify(&cli, home, pass),
        Command::Gc(a) => gc(&cli, &open_vault(home, pass)?, pass, a),
        Command::BenchSeal { file } => bench_seal(file),
        Command::BenchAnonymize { dir } => bench_anonymize(dir),
        Command::Completions { .. } | Command::Man { .. } => Ok(0),
    }
}

fn setup(cli: &Cli, home: Home, pass: &CliPassphrase, args: &SetupArgs) -> CmdResult {
    let backend = match args.backend {
        BackendKind::Local => {
            let Some(path) = &args.path else {
                return Err(CliError::new(
                    EXIT_USAGE,
                    "The local backend needs --path DIR, the vault folder.",
                ));
            };
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            BackendConfig::Local { path: abs }
        }
        BackendKind::S3 => {
            let Some(bucket) = &args.bucket else {
                return Err(CliError::new(
                    EXIT_USAGE,
                    "The s3 backend needs --bucket NAME (and --endpoint URL for a server other than AWS).",
                ));
            };
            BackendConfig::S3 {
                bucket: bucket.clone(),
                endpoint: args.endpoint.clone(),
                region: args.region.clone(),
                path_style: args.path_style,
                profile: args.profile.clone(),
            }
        }
        BackendKind::Gist => {
            let api_url = match &args.api_url {
                Some(u) => super::login::checked_api_url(u)?,
                None => ghostie_fs::credentials::Provider::Github
                    .default_api_url()
                    .to_owned(),
            };
            BackendConfig::Gist { api_url }
        }
        BackendKind::Dropbox => {
            let checked = |given: &Option<String>, default: &str| match given {
                Some(u) => super::login::checked_url(u),
                None => Ok(default.to_owned()),
            };
            let defaults = DropboxUrls::default();
            BackendConfig::Dropbox {
                urls: DropboxUrls {
                    api: checked(&args.api_url, &defaults.api)?,
                    content: checked(&args.content_url, &defaults.content)?,
                    notify: checked(&args.notify_url, &defaults.notify)?,
                },
            }
        }
        BackendKind::Gdrive => {
            let checked = |given: &Option<String>, default: &str| match given {
                Some(u) => super::login::checked_url(u),
                None => Ok(default.to_owned()),
            };
            let defaults = GdriveUrls::default();
            BackendConfig::Gdrive {
                urls: GdriveUrls {
                    api: checked(&args.api_url, &defaults.api)?,
                    upload: checked(&args.upload_url, &defaults.upload)?,
                    oauth: checked(&args.oauth_url, &defaults.oauth)?,
                },
            }
        }
    };
    if !valid_prefix(&args.prefix) {
        return Err(CliError::new(
            EXIT_USAGE,
            format!("The prefix '{}' is not a valid key prefix.", args.prefix),
        ));
    }
    let raw_name = match &args.device {
        Some(n) => n.clone(),
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    };
    let device_name = filename_safe(&raw_name);
    let req = SetupRequest {
        home: home.clone(),
        backend: backend.clone(),
        prefix: args.prefix.clone(),
        device_name: device_name.clone(),
        force: args.force,
    };
    let login = match &backend {
        BackendConfig::Dropbox { urls } => super::login_dropbox::login_for_setup(
            &home,
            &urls.api,
            args.app_key.as_deref(),
            args.code_stdin,
        )?,
        BackendConfig::Gdrive { urls } => super::login_google::login_for_setup(
            &home,
            urls,
            args.client_id.as_deref(),
            args.client_secret.as_deref(),
            args.device_flow,
        )?,
        _ => None,
    };
    let logged_in = login
        .as_ref()
        .map(|l| (l.provider.title(), l.info.account.clone()));
    let (outcome, place) = match ghostie_fs::sync::setup_with_login(&req, pass, login.as_ref()) {
        Ok(done) => done,
        Err(e) => {
            if let Some(unused) = &login {
                match unused.provider {
                    ghostie_fs::credentials::Provider::Google => {
                        super::login_google::revoke_unused(unused)
                    }
                    _ => super::login_dropbox::revoke_unused(unused),
                }
            }
            return Err(e.into());
        }
    };
    if let Some((provider, account)) = logged_in {
        say!(
            cli,
            "✅ Logged in to {provider} as '{account}'; the login is kept with this device's keys."
        );
    }
    match outcome {
        SetupOutcome::Created => say!(cli, "✅ Cloud sync configured! Created a new vault in {place} for device '{device_name}'"),
        SetupOutcome::Joined { devices } => say!(
            cli,
            "✅ Cloud sync configured! Joined the vault in {place} as '{device_name}' ({devices} {} in the vault)",
            if devices == 1 { "device" } else { "devices" }
        ),
    }
    say!(cli, "   Memories folder: {}", home.memories().display());
    Ok(0)
}

fn push(cli: &Cli, vault: &Vault, pass: &CliPassphrase, json: bool) -> CmdResult {
    let report = push_report(cli, vault, pass, json)?;
    if json {
        print_json(&report);
    }
    Ok(0)
}

/// Pushes; says what it did unless `json`, and returns it as JSON.
fn push_report(
    cli: &Cli,
    vault: &Vault,
    pass: &CliPassphrase,
    json: bool,
) -> Result<serde_json::Value, CliError> {
    let progress = BarProgress::new(cli.quiet || json);
    let started = Instant::now();
    let r = folder::push(vault, &progress)?;
    confirm(vault, pass)?;
    if !json {
        say!(cli, "✅ Uploaded {}", tally_sentence(&r.changed));
    }
    for w in &r.scan.warnings {
        eprintln!("⚠️  {w}");
    }
    for p in &r.lost {
        eprintln!("❌ lost before upload: the last change to {p} (its queued copy was damaged)");
    }
    Ok(serde_json::json!({
        "uploaded": r.uploaded,
        "changed": r.changed,
        "recorded": r.scan.versions,
        "hashed": r.scan.hashed,
        "bytes_read": r.scan.bytes_read,
        "sealed": r.scan.sealed,
        "packs": r.packs,
        "bytes_uploaded": r.bytes,
        "seconds": started.elapsed().as_secs_f64(),
        "warnings": r.scan.warnings,
        "lost": r.lost,
    }))
}

/// The collection `sync` runs when one is due; its failure is a warning, since
/// nothing the user asked for depends on it. Returns its report as JSON (null when
/// none was due).
fn auto_gc(cli: &Cli, vault: &Vault, json: bool) -> serde_json::Value {
    match vault.collect_garbage_if_due() {
        Ok(Some(r)) => {
            if r.objects_deleted() > 0 && !json {
                say!(cli, "🧹 {}", gc_sentence(&r));
            }
            serde_json::to_value(&r).unwrap_or_default()
        }
        Ok(None) => serde_json::Value::Null,
        Err(e) => {
            eprintln!("⚠️  reclaiming space failed, and is tried again later: {e}");
            serde_json::Value::Null
        }
    }
}

fn gc_sentence(r: &GcReport) -> String {
    let verb = if r.dry_run {
        "Would reclaim"
    } else {
        "Reclaimed"
    };
    let objects = r.objects_deleted();
    let bytes = if r.sizes_unknown > 0 {
        format!(
            "{} and {} of unknown size",
            human_bytes(r.bytes_freed),
            r.sizes_unknown
        )
    } else {
        human_bytes(r.bytes_freed)
    };
    format!(
        "{verb} {objects} {} ({bytes}): {} {}, {} log {}, {} {}",
        plural(objects, "object", "objects"),
        r.packs_deleted,
        plural(r.packs_deleted, "pack", "packs"),
        r.segments_deleted,
        plural(r.segments_deleted, "segment", "segments"),
        r.snapshots_deleted,
        plural(r.snapshots_deleted, "snapshot", "snapshots"),
    )
}

fn gc(cli: &Cli, vault: &Vault, pass: &CliPassphrase, a: &GcArgs) -> CmdResult {
    let r = vault.collect_garbage(&GcOptions {
        dry_run: a.dry_run,
        grace: a.grace,
        repack_limit: a.repack_limit,
    })?;
    confirm(vault, pass)?;
    if a.json {
        print_json(&serde_json::to_value(&r).unwrap_or_default());
        return Ok(0);
    }
    say!(cli, "🧹 {}", gc_sentence(&r));
    if r.repacked.packs > 0 {
        say!(
            cli,
            "📦 {} {} {} mostly superseded: {} live {} copied into a new pack; the old {} ({}) {} once every device has read the move",
            if r.dry_run { "Would repack" } else { "Repacked" },
            r.repacked.packs,
            plural(r.repacked.packs, "pack", "packs"),
            r.repacked.blobs,
            plural(r.repacked.blobs, "file", "files"),
            plural(r.repacked.packs, "one", "ones"),
            human_bytes(r.repacked.bytes_superseded),
            plural(r.repacked.packs, "goes", "go"),
        );
    }
    if r.repacked.packs_left > 0 {
        say!(
            cli,
            "📦 {} more mostly superseded {} left for the next collection (--repack-limit)",
            r.repacked.packs_left,
            plural(r.repacked.packs_left, "pack is", "packs are"),
        );
    }
    if r.packs_waiting > 0 {
        let why = if !r.behind.is_empty() {
            format!(
                "until this device has read as much of the logs of {} as another device has (pull first)",
                r.behind.join(", ")
            )
        } else if r.waiting_for.is_empty() {
            format!("for the grace period ({} s)", a.grace.as_secs())
        } else {
            format!(
                "until {} {} read past them",
                r.waiting_for.join(", "),
                if r.waiting_for.len() == 1 {
                    "has"
                } else {
                    "have"
                }
            )
        };
        say!(
            cli,
            "⏳ {} superseded {} kept {why}",
            r.packs_waiting,
            plural(r.packs_waiting, "pack", "packs")
        );
    }
    if r.originals_merged > 0 {
        say!(
            cli,
            "🔐 {} {} objects of this device's sealed originals (anonymization) into one",
            if r.dry_run { "Would merge" } else { "Merged" },
            r.originals_merged
        );
    }
    Ok(0)
}

/// Pulls; says what it did unless `json`, and returns the exit code and what it did
/// as JSON.
fn pull_and(
    cli: &Cli,
    vault: &Vault,
    pass: &CliPassphrase,
    json: bool,
    acknowledge: bool,
) -> Result<(u8, serde_json::Value), CliError> {
    let progress = BarProgress::new(cli.quiet || json);
    let r = if acknowledge {
        folder::pull(vault, &progress)?
    } else {
        folder::pull_before_push(vault, &progress)?
    };
    confirm(vault, pass)?;
    if !json {
        say!(cli, "✅ Downloaded {}", tally_sentence(&r.changed));
        if r.conflicts > 0 {
            say!(
                cli,
                "⚠️ {} found",
                count(r.conflicts, "conflict", "conflicts")
            );
            say!(cli, "Run 'ghostie-fs conflict' to resolve");
        }
    }
    // Refused once, then passed by: not damage, and no reason to fail later pulls.
    for d in &r.refused {
        eprintln!("⚠️  not written here: {d}");
    }
    for d in &r.known_damage {
        eprintln!("⚠️  still damaged (reported before): {d}");
    }
    if let Some(why) = &r.unacknowledged {
        eprintln!(
            "⚠️  could not tell the other devices how far this one has read ({why}); \
             they keep superseded data until it can"
        );
    }
    for d in &r.damaged {
        eprintln!("❌ damaged: {d}");
    }
    let report = serde_json::json!({
        "downloaded": r.downloaded,
        "changed": r.changed,
        "recorded": r.recorded,
        "conflicts": r.conflicts,
        "damaged": r.damaged,
        "refused": r.refused,
    });
    if r.damaged.is_empty() {
        Ok((0, report))
    } else {
        eprintln!(
            "❌ {} damaged {} not written; everything else is in sync.",
            r.damaged.len(),
            plural(r.damaged.len(), "item was", "items were")
        );
        Ok((EXIT_DAMAGED, report))
    }
}

/// Who holds the home, as `status --json` shows it: null when nobody does.
pub(super) fn busy_json(holder: Option<&Holder>) -> serde_json::Value {
    match holder {
        None => serde_json::Value::Null,
        Some(h) => serde_json::json!({
            "command": h.command,
            "pid": h.pid,
            "since": h.since_ms.map(folder::format_time),
        }),
    }
}

/// "push (process 1234) since 2026-11-30T02:00:00Z", as much of it as is known.
pub(super) fn busy_text(h: &Holder) -> String {
    let mut text = h
        .command
        .clone()
        .unwrap_or_else(|| "another command".into());
    if let Some(pid) = h.pid {
        text += &format!(" (process {pid})");
    }
    if let Some(ms) = h.since_ms {
        text += &format!(" since {}", folder::format_time(ms));
    }
    text
}

/// `status` answers at once: it never waits for the home's lock (it names the
/// command holding the home instead) nor for the backend (see `Vault::open_to_look`),
/// and asks no passphrase; one given is checked against this device's key file.
fn status(home: Home, pass: &CliPassphrase, json: bool) -> CmdResult {
    if pass.given() {
        Vault::check_passphrase(&home, pass)?;
    }
    let holder = Vault::holder(&home)?;
    if let Some(r) = mount::status(&home, holder.as_ref(), json) {
        return r;
    }
    let vault = Vault::open_to_look(home)?;
    let s = folder::status(&vault)?;
    let provider = if s.backend_problem.is_none() {
        vault.provider_status(true)
    } else {
        vault.provider_status(false)
    };
    if json {
        let mut v =
            serde_json::to_value(&s).map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            // The keys of a mount home's status, each one here too (README: JSON output).
            o.insert("mode".into(), "folder".into());
            o.insert("mounted".into(), false.into());
            o.insert("mountpoint".into(), serde_json::Value::Null);
            o.insert("mount".into(), serde_json::Value::Null);
            o.insert("busy".into(), busy_json(holder.as_ref()));
            o.insert("credentials".into(), login::credentials_json(vault.home())?);
            o.insert("provider".into(), super::provider::json(provider.as_ref()));
        }
        print_json(&v);
        return Ok(0);
    }
    println!("🔗 SYNC STATUS:");
    if let Some(h) = &holder {
        println!("   Busy: {}", busy_text(h));
    }
    println!("   Backend: {}", s.backend);
    match &s.backend_problem {
        None => println!("   Backend reachable: yes"),
        Some(why) => println!("   Backend reachable: no ({why})"),
    }
    for line in provider.iter().flat_map(super::provider::lines) {
        println!("   {line}");
    }
    println!("   Device ID: {}", s.device_id);
    println!("   Device Name: {}", s.device_name);
    println!(
        "   Last Sync: {}",
        s.last_sync.as_deref().unwrap_or("never")
    );
    println!("   Local Memories: {}", s.local_count);
    println!("   Cloud Memories: {}", s.cloud_count);
    println!("   Conflicts: {}", s.conflict_count);
    println!("   Pending: {}", s.pending);
    println!("   Known Devices: {}", s.known_devices.join(", "));
    if !s.lost.is_empty() {
        println!("   Lost before upload: {}", s.lost.join(", "));
    }
    for d in &s.damaged_logs {
        println!("   ⚠️  {d}");
    }
    if let Some(k) = &s.keyring_problem {
        println!("   ⚠️  {k}");
    }
    for line in login::status_lines(vault.home()) {
        println!("   {line}");
    }
    if !s.refused.is_empty() {
        println!("   Not written here: {}", s.refused.len());
        for r in &s.refused {
            println!("     {r}");
        }
    }
    Ok(0)
}

fn conflict_list(cli: &Cli, home: Home, pass: &CliPassphrase, json: bool) -> CmdResult {
    let vault = open_vault(home, pass)?;
    confirm(&vault, pass)?;
    let list = vault.conflicts()?;
    if json {
        print_json(
            &serde_json::to_value(&list).map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))?,
        );
        return Ok(0);
    }
    if list.is_empty() {
        say!(cli, "✅ No conflicts");
        return Ok(0);
    }
    for c in &list {
        println!("{}  (shown: {})", c.path, c.shown_device);
        for s in &c.siblings {
            println!("    {}  (from {})", s.path, s.device);
        }
    }
    say!(cli, "Resolve with: ghostie-fs conflict resolve PATH --keep DEVICE|all, or rm/mv the sibling files");
    Ok(0)
}

fn conflict_resolve(
    cli: &Cli,
    home: Home,
    pass: &CliPassphrase,
    path: &str,
    keep: &str,
) -> CmdResult {
    let path = path.trim_start_matches("./").trim_end_matches('/');
    if path.is_empty() {
        return Err(CliError::new(
            EXIT_USAGE,
            "Name the path in conflict, as 'ghostie-fs conflict' lists it.",
        ));
    }
    let vault = open_vault(home, pass)?;
    // A resolution is published, so the key is needed: ask (or check) before the
    // folder changes, not after.
    vault.unlock()?;
    let keep = if keep == "all" {
        Keep::All
    } else {
        Keep::Device(keep.to_owned())
    };
    let progress = BarProgress::new(cli.quiet);
    folder::resolve(&vault, path, &keep, &progress)?;
    say!(cli, "✅ Resolved {path}");
    Ok(0)
}

fn devices(home: Home, pass: &CliPassphrase, json: bool) -> CmdResult {
    let vault = open_vault(home, pass)?;
    confirm(&vault, pass)?;
    // Learn names and activity of devices that joined since the last pull. The list
    // is the index's either way; only a wrong passphrase stops it.
    let stale = match vault.poll(&NoProgress) {
        Ok(_) => None,
        Err(SyncError::WrongPassphrase) => return Err(SyncError::WrongPassphrase.into()),
        Err(e) => Some(e),
    };
    let me = vault.device().clone();
    let rows = vault.devices()?;
    let removed = vault.removed_devices()?.to_vec();
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|d| {
            serde_json::json!({
                "name": d.name.clone().unwrap_or_else(|| "(unknown)".into()),
                "id": d.id.to_string(),
                "last_activity": d.last_activity_ms.map(folder::format_time),
                "this_device": d.id == me,
                "removed": removed.iter().any(|r| r.device == d.id.as_str()),
                "problem": d.problem,
            })
        })
        .collect();
    if json {
        print_json(&serde_json::Value::Array(list));
        return Ok(0);
    }
    for d in &list {
        println!(
            "{}{}{}  {}  last activity: {}",
            d["name"].as_str().unwrap_or_default(),
            if d["this_device"].as_bool() == Some(true) {
                " (this device)"
            } else {
                ""
            },
            if d["removed"].as_bool() == Some(true) {
                " (removed)"
            } else {
                ""
            },
            d["id"].as_str().unwrap_or_default(),
            d["last_activity"].as_str().unwrap_or("never"),
        );
    }
    if let Some(e) = stale {
        eprintln!("⚠️ this list may be out of date: {e}");
    }
    Ok(0)
}

/// `rekey`, or with `remove`, `devices remove NAME`.
fn rekey(
    cli: &Cli,
    home: Home,
    pass: &CliPassphrase,
    remove: Option<&RemoveArgs>,
    rewrite: bool,
    json: bool,
) -> CmdResult {
    let source = CliPassphrase {
        new_file: remove.and_then(|r| r.new_passphrase_file.clone()),
        changing: remove.is_some(),
        ..pass.clone()
    };
    let vault = Vault::open(home.clone(), Box::new(source))?;
    // A sync first: what this device has not pushed goes up under the key it was
    // sealed with, and a removed device is cut after everything it published so far.
    let progress = BarProgress::new(cli.quiet || json);
    let pulled = folder::pull_before_push(&vault, &progress)?;
    for problem in pulled.damaged.iter().chain(&pulled.known_damage) {
        eprintln!("⚠️  {problem}");
    }
    folder::push(&vault, &progress)?;
    let report = vault.rekey(remove.map(|r| r.name.as_str()), rewrite)?;
    // A removed device that held the sensitive key (anonymization) loses it too.
    // (The policy is sealed under the key this process opened the vault with:
    // every other device still holds it, and a rewrite seals it again.)
    if let Some(name) = &report.removed {
        if let Some(todo) = vault.untrust_removed(name)? {
            eprintln!("⚠️  {todo}");
        }
    }
    // What comes next opens the vault again, under the new key.
    drop(vault);
    // The rest under the new key.
    let rewritten = if rewrite {
        let vault = open_vault(home, pass)?;
        Some(vault.rewrite()?)
    } else {
        None
    };
    if json {
        print_json(&serde_json::json!({
            "epoch": report.epoch,
            "older_epochs": report.older_epochs,
            "removed": report.removed,
            "rewrite": rewritten,
        }));
        return Ok(0);
    }
    if let Some(r) = &rewritten {
        if !r.needs_update.is_empty() {
            say!(
                cli,
                "⏳ Nothing is sealed again while {} {} an older version of ghostie-fs, which would not follow the change: update {}, then run 'ghostie-fs rekey --rewrite' again.",
                r.needs_update.join(", "),
                if r.needs_update.len() == 1 { "runs" } else { "run" },
                if r.needs_update.len() == 1 { "it" } else { "them" },
            );
            return Ok(0);
        }
        if r.dropped.is_empty() {
            say!(
                cli,
                "🔁 Sealed again under the new key: {} {} of this device, {} taken over from removed devices. \
                 The older keys stay until {} {} done the same (at their next sync); then run 'ghostie-fs rekey --rewrite' again.",
                r.resealed,
                plural(r.resealed, "file", "files"),
                r.adopted,
                r.waiting_for.join(", "),
                if r.waiting_for.len() == 1 { "has" } else { "have" },
            );
        } else {
            say!(
                cli,
                "🔁 Everything is sealed under the new key (this device: {} {}, {} taken over); the older keys were dropped from the keyring.",
                r.resealed,
                plural(r.resealed, "file", "files"),
                r.adopted,
            );
        }
        return Ok(0);
    }
    match &report.removed {
        Some(name) => {
            say!(
                cli,
                "✅ Device {name} removed: the vault's key and passphrase changed (key epoch {}); \
                 other devices will ask for the new passphrase at their next unlock",
                report.epoch
            );
            say!(
                cli,
                "⚠️  Give the new passphrase to your other devices (and passphrase files) before they run \
                 with the old one, and change the storage provider's credentials {name} may hold \
                 (a new S3 key, a new token, or the app revoked at Dropbox or Google)."
            );
        }
        None => say!(
            cli,
            "✅ The vault's key was rotated (key epoch {}); other devices take it at their \
             next unlock, with the passphrase",
            report.epoch
        ),
    }
    Ok(0)
}

fn passwd(cli: &Cli, home: Home, pass: &CliPassphrase, new_file: Option<PathBuf>) -> CmdResult {
    let source = CliPassphrase {
        new_file,
        changing: true,
        ..pass.clone()
    };
    let vault = Vault::open(home, Box::new(source))?;
    vault.change_passphrase()?;
    say!(
        cli,
        "✅ Passphrase changed; other devices will ask for the new one at their next unlock"
    );
    Ok(0)
}

fn verify(cli: &Cli, home: Home, pass: &CliPassphrase) -> CmdResult {
    let vault = open_vault(home, pass)?;
    confirm(&vault, pass)?;
    let progress = BarProgress::new(cli.quiet);
    let damaged = vault.verify(&progress)?;
    for r in folder::refused(&vault)? {
        say!(cli, "⚠️  not written here: {r}");
    }
    if damaged.is_empty() {
        say!(cli, "✅ Every object checked out");
        return Ok(0);
    }
    for d in &damaged {
        eprintln!("❌ damaged: {d}");
    }
    eprintln!("❌ {} damaged items found.", damaged.len());
    Ok(EXIT_DAMAGED)
}

fn bench_anonymize(dir: &PathBuf) -> CmdResult {
    let fail = |e: std::io::Error| CliError::new(EXIT_FAILURE, format!("Benchmark failed: {e}."));
    let mut memories = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let path = entry.map_err(fail)?.path();
        if path.is_file() {
            memories.push(std::fs::read(&path).map_err(fail)?);
        }
    }
    let bytes: usize = memories.iter().map(Vec::len).sum();
    let (sealing, detecting, found, floor) =
        ghostie_fs::sync::anonymize_cost(&memories).map_err(fail)?;
    println!(
        "{} memories, {bytes} bytes, {found} with sensitive values",
        memories.len()
    );
    println!("sealing: {sealing:.3} s, detection and pseudonyms: {detecting:.3} s");
    println!("one pass over every byte, splitting words (the floor of a detector): {floor:.3} s");
    println!(
        "detection / sealing: {:.0} % (goal: under 20 %)",
        detecting / sealing.max(f64::MIN_POSITIVE) * 100.0
    );
    Ok(0)
}

fn bench_seal(file: &PathBuf) -> CmdResult {
    let fail = |e: std::io::Error| CliError::new(EXIT_FAILURE, format!("Benchmark failed: {e}."));
    let data = std::fs::read(file).map_err(fail)?;
    // Encryption alone (the hash given), then encryption with the SHA-256 of the
    // plaintext that every version records, computed on a second core.
    let (sealed, hashed) = ghostie_fs::sync::seal_speed(&data).map_err(fail)?;
    let size = data.len();
    println!(
        "sealed {size} bytes in {sealed:.3} s: {:.1} MB/s",
        size as f64 / sealed / 1e6
    );
    println!(
        "sealed+hashed {size} bytes in {hashed:.3} s: {:.1} MB/s",
        size as f64 / hashed / 1e6
    );
    Ok(0)
}
