//! `mount` and `unmount`: starting the mount in the background (or foreground),
//! importing a non-empty folder first, and stopping it once its queue has drained.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use ghostie_fs::config::Home;
use ghostie_fs::folder;
use ghostie_fs::fs::{
    is_ghostie_mount, is_mounted, serve, MountError, MountHome, MountOptions, MountStatus,
};
use ghostie_fs::sync::{Holder, PassphraseSource, SyncError, Vault};

use super::errors::{CliError, EXIT_FAILURE, EXIT_USAGE};
use super::passphrase::CliPassphrase;
use super::progress::BarProgress;
use super::units::{count, human_bytes, tally_sentence};
use super::{Cli, MountArgs, UnmountArgs};

type CmdResult = Result<u8, CliError>;

fn fail(sentence: impl Into<String>) -> CliError {
    CliError::new(EXIT_FAILURE, sentence)
}

impl From<MountError> for CliError {
    fn from(e: MountError) -> Self {
        match e {
            MountError::Sync(s) => s.into(),
            MountError::Fuse { path, source } => fail(format!(
                "Cannot mount at {}: {source} (is FUSE available, and is the folder free?).",
                path.display()
            )),
        }
    }
}

fn mount_options(args: &MountArgs, home: &Home) -> Result<MountOptions, CliError> {
    let backend = home.load_config().map_err(SyncError::from)?.backend;
    let poll = match args.poll {
        Some(secs) => Duration::from_secs_f64(secs),
        None => backend.default_poll(),
    };
    let owner = owner_options(&options_list(args))?;
    Ok(MountOptions {
        poll,
        publish_gap: backend.publish_gap(),
        cache_limit: args.cache_size.max(1 << 20),
        fsync_remote: args.fsync == super::FsyncMode::Remote,
        uid: owner.0,
        gid: owner.1,
        ..MountOptions::default()
    })
}

/// `uid=N` and `gid=N`: the owner the mount shows for every file (as rclone's --uid
/// and a FUSE filesystem's own uid= do), instead of the user running it.
fn owner_options(options: &[String]) -> Result<(Option<u32>, Option<u32>), CliError> {
    let mut owner = (None, None);
    for o in options {
        let (slot, value) = match o.split_once('=') {
            Some(("uid", v)) => (&mut owner.0, v),
            Some(("gid", v)) => (&mut owner.1, v),
            _ => continue,
        };
        *slot = Some(value.parse().map_err(|_| {
            CliError::new(
                EXIT_USAGE,
                format!("-o {o}: the value is not a number (a user or group id)."),
            )
        })?);
    }
    Ok(owner)
}

fn options_list(args: &MountArgs) -> Vec<String> {
    args.options
        .iter()
        .flat_map(|o| o.split(','))
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

/// The options the kernel is given: uid= and gid= are the mount's own.
fn kernel_options(args: &MountArgs) -> Vec<String> {
    options_list(args)
        .into_iter()
        .filter(|o| !o.starts_with("uid=") && !o.starts_with("gid="))
        .collect()
}

fn fuse_available() -> Result<(), CliError> {
    if !ghostie_fs::fs::CAN_MOUNT {
        return Err(fail(
            "This ghostie-fs was built without FUSE (cargo's 'fuse' feature): use 'ghostie-fs sync' on this device, or build it with default features to mount.",
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(fail(
            "FUSE is not available here (/dev/fuse is missing); use 'ghostie-fs sync' on this device instead.",
        ));
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let helper = ["fusermount3", "fusermount"]
        .iter()
        .any(|h| which(h).is_some());
    if !root && !helper {
        return Err(fail(
            "fusermount3 is not installed (Debian/Ubuntu: apt-get install fuse3); it is needed to mount as a normal user.",
        ));
    }
    Ok(())
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

fn preflight(home: &Home, mountpoint: &Path) -> Result<(), CliError> {
    home.load_config().map_err(SyncError::from)?;
    if let Some(s) = MountStatus::running(home) {
        return Err(fail(format!(
            "This home is already mounted at {} (process {}).",
            s.mountpoint.display(),
            s.pid
        )));
    }
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(fail(format!(
                "The mount point {} is a file, not a folder.",
                mountpoint.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(format!(
                "The mount point {} does not exist; create it first (mkdir -p {}).",
                mountpoint.display(),
                mountpoint.display()
            )))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => clear_dead_mount(mountpoint)?,
        Err(e) => {
            return Err(fail(format!(
                "Cannot use the mount point {}: {e}.",
                mountpoint.display()
            )))
        }
    }
    if is_mounted(mountpoint) {
        return Err(fail(format!(
            "{} is already a mount point; unmount it first.",
            mountpoint.display()
        )));
    }
    fuse_available()
}

/// A mount of ours whose process died (a crash, a kill) leaves the kernel holding a
/// dead mount point that answers nothing: unmounted here, so that a restart (by
/// systemd, by hand) mounts again instead of failing until someone runs unmount. A
/// dead mount of another filesystem is left to its owner.
fn clear_dead_mount(mountpoint: &Path) -> Result<(), CliError> {
    if !is_ghostie_mount(mountpoint) {
        return Err(fail(format!(
            "{} is a dead mount of another filesystem; unmount it first (fusermount3 -u {}).",
            mountpoint.display(),
            mountpoint.display()
        )));
    }
    tracing::warn!(
        "{} was left mounted by a mount process that died; unmounting it first",
        mountpoint.display()
    );
    run_unmount_tool(mountpoint, true)?;
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => Ok(()),
        _ => Err(fail(format!(
            "{} was left mounted by a mount process that died, and is still not usable after unmounting it.",
            mountpoint.display()
        ))),
    }
}

pub fn mount(cli: &Cli, home: Home, pass: &CliPassphrase, args: &MountArgs) -> CmdResult {
    let mountpoint =
        std::path::absolute(args.mountpoint.clone().unwrap_or_else(|| home.memories()))
            .map_err(|e| fail(format!("Cannot resolve the mount point: {e}.")))?;
    if args.daemon_child {
        // Errors go to the parent, which is waiting for one line.
        let code = match run_here(cli, &home, pass, args, &mountpoint, true) {
            Ok(code) => code,
            Err(e) => {
                println!("error {} {}", e.code, e.sentence);
                return Ok(e.code);
            }
        };
        return Ok(code);
    }
    // A mistake in the options is a usage mistake, whatever state the home is in.
    owner_options(&options_list(args))?;
    preflight(&home, &mountpoint)?;
    mount_options(args, &home)?;
    if args.foreground {
        return run_here(cli, &home, pass, args, &mountpoint, false);
    }
    start_in_background(cli, &home, pass, args, &mountpoint)
}

fn read_stdin_passphrase() -> Result<Zeroizing<String>, CliError> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| fail(format!("Cannot read the passphrase: {e}.")))?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
    Ok(Zeroizing::new(trimmed))
}

fn run_here(
    cli: &Cli,
    home: &Home,
    pass: &CliPassphrase,
    args: &MountArgs,
    mountpoint: &Path,
    child: bool,
) -> CmdResult {
    if child {
        preflight(home, mountpoint)?;
    }
    let mut source = pass.clone();
    if args.passphrase_stdin {
        source.preset = Some(read_stdin_passphrase()?);
    }
    let opts = mount_options(args, home)?;
    // The backend may start threads as the vault opens: they must leave the signals
    // that end a mount to the thread that unmounts cleanly (see serve), while this
    // thread still answers Ctrl-C at a passphrase prompt.
    let exit_signals = ghostie_fs::fs::block_exit_signals();
    let opened = Vault::open_for_mount(home.clone(), Box::new(source));
    ghostie_fs::fs::unblock_exit_signals(&exit_signals);
    let vault = opened?;
    vault.unlock()?;
    // A backend that refuses this device stops the mount; one that does not answer
    // does not: the mount works from this device's copy and uploads later.
    let offline = match vault.check_backend() {
        Ok(()) => None,
        Err(e) if e.is_temporary() => Some(format!(
            "The backend does not answer ({e}); mounted from this device's copy: changes upload when it answers."
        )),
        Err(e) => return Err(SyncError::Backend(e).into()),
    };
    let imported = folder::import_for_mount(&vault, mountpoint)?;
    if imported > 0 {
        tracing::info!("imported {imported} files from {}", mountpoint.display());
    }
    let quiet = cli.quiet;
    let shown = mountpoint.to_path_buf();
    serve(vault, mountpoint, opts, &kernel_options(args), move || {
        // systemd (Type=notify) starts what waits for the memories now; nothing
        // happens without NOTIFY_SOCKET.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        if child {
            match &offline {
                Some(warning) => println!("ready {warning}"),
                None => println!("ready"),
            }
            let _ = std::io::stdout().flush();
            // Nothing reads our stdout from here on.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                use std::os::fd::AsRawFd;
                // SAFETY: dup2 onto stdout of a descriptor we own for the call.
                unsafe { libc::dup2(null.as_raw_fd(), 1) };
            }
        } else if !quiet {
            println!(
                "✅ Mounted at {} (Ctrl-C or 'ghostie-fs unmount' to stop)",
                shown.display()
            );
            if let Some(warning) = &offline {
                eprintln!("⚠️  {warning}");
            }
        }
    })?;
    Ok(0)
}

fn start_in_background(
    cli: &Cli,
    home: &Home,
    pass: &CliPassphrase,
    args: &MountArgs,
    mountpoint: &Path,
) -> CmdResult {
    let exe = std::env::current_exe()
        .map_err(|e| fail(format!("Cannot find this program to start the mount: {e}.")))?;
    let log_path = home.sync_dir().join("mount.log");
    let log = super::logging::open_log(&log_path)
        .map_err(|e| fail(format!("Cannot open the log {}: {e}.", log_path.display())))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--home").arg(home.root());
    cmd.arg("mount")
        .arg(mountpoint)
        .arg("--daemon-child")
        .arg("--log-file")
        .arg(&log_path)
        .arg("--cache-size")
        .arg(args.cache_size.to_string())
        .arg("--fsync")
        .arg(match args.fsync {
            super::FsyncMode::Local => "local",
            super::FsyncMode::Remote => "remote",
        });
    if let Some(secs) = args.poll {
        cmd.arg("--poll").arg(secs.to_string());
    }
    for o in &args.options {
        cmd.arg("-o").arg(o);
    }
    // The passphrase is read here (a file, a command run once) or asked here, on
    // the terminal, and handed over a pipe; one in the environment is inherited.
    // A remembered key is the child's to read: nothing to ask then.
    let typed = if pass.preset.is_some()
        || (pass.is_interactive()
            && std::io::stdin().is_terminal()
            && !super::login::remembered_usable(home))
    {
        Some(pass.existing()?)
    } else {
        None
    };
    if typed.is_some() {
        cmd.arg("--passphrase-stdin");
    }
    // The log of a mount in the background says what it does (-v), unless -v was
    // given (passed on) or the environment names a filter (inherited, and used).
    if cli.verbose > 0 || !super::logging::filter_in_environment() {
        cmd.arg(format!("-{}", "v".repeat(usize::from(cli.verbose.max(1)))));
    }
    cmd.stdin(if typed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(log);
    // SAFETY: setsid in the child before exec touches no memory of ours; the mount
    // must outlive this terminal session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("Cannot start the mount process: {e}.")))?;
    if let (Some(p), Some(mut stdin)) = (typed, child.stdin.take()) {
        let _ = writeln!(stdin, "{}", p.as_str());
    }
    let Some(out) = child.stdout.take() else {
        return Err(fail("Cannot talk to the mount process."));
    };
    let mut line = String::new();
    let _ = BufReader::new(out).read_line(&mut line);
    let line = line.trim_end();
    if let Some(warning) = line.strip_prefix("ready") {
        if !cli.quiet {
            println!("✅ Mounted at {}", mountpoint.display());
            println!("   Log: {}", log_path.display());
        }
        let warning = warning.trim();
        if !warning.is_empty() {
            eprintln!("⚠️  {warning}");
        }
        return Ok(0);
    }
    let _ = child.wait();
    if let Some(rest) = line.strip_prefix("error ") {
        let (code, sentence) = rest.split_once(' ').unwrap_or(("1", rest));
        return Err(CliError::new(
            code.parse().unwrap_or(EXIT_FAILURE),
            sentence,
        ));
    }
    Err(fail(format!(
        "The mount process stopped before the mount was ready; see {}.",
        log_path.display()
    )))
}

/// Unmounts with fusermount (or umount, as root). `lazy` detaches a dead mount that
/// a process still has a file open in.
fn run_unmount_tool(mountpoint: &Path, lazy: bool) -> Result<(), CliError> {
    let mut last = String::new();
    for tool in ["fusermount3", "fusermount"] {
        if which(tool).is_none() {
            continue;
        }
        let flags = if lazy { "-uz" } else { "-u" };
        match Command::new(tool).arg(flags).arg(mountpoint).output() {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => last = e.to_string(),
        }
    }
    let mut umount = Command::new("umount");
    if lazy {
        umount.arg("-l");
    }
    match umount.arg(mountpoint).output() {
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) if last.is_empty() => last = String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        _ => {}
    }
    Err(fail(format!(
        "Cannot unmount {}: {}.",
        mountpoint.display(),
        last.trim_end_matches('.')
    )))
}

/// Waits until the running mount reports an empty queue in a status written after
/// this call began.
fn wait_for_drain(cli: &Cli, home: &Home) {
    let started = ghostie_fs::now_ms();
    let bar = if !cli.quiet && std::io::stderr().is_terminal() {
        Some(indicatif::ProgressBar::new_spinner())
    } else {
        None
    };
    let mut warned = false;
    while let Some(s) = MountStatus::running(home) {
        let waiting = s.pending_uploads + s.open_dirty;
        if s.updated_ms >= started && waiting == 0 {
            break;
        }
        if let Some(b) = &bar {
            b.set_message(format!(
                "Uploading {} changes ({} KiB)…{}",
                s.pending_uploads,
                s.pending_bytes / 1024,
                s.last_error
                    .as_deref()
                    .map(|e| format!(" backend: {e}"))
                    .unwrap_or_default()
            ));
            b.tick();
        } else if !warned && !cli.quiet && ghostie_fs::now_ms() - started > 2000 {
            eprintln!(
                "Waiting for {} changes to upload (Ctrl-C to stop waiting; --no-wait unmounts now)…",
                s.pending_uploads
            );
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

pub fn unmount(cli: &Cli, home: Home, pass: &CliPassphrase, args: &UnmountArgs) -> CmdResult {
    // Unmounting needs no key, but a passphrase given is checked all the same
    // (`--to-folder` unlocks the vault, which checks it).
    if pass.given() && !args.to_folder {
        Vault::check_passphrase(&home, pass)?;
    }
    let running = MountStatus::running(&home);
    let mountpoint = args
        .mountpoint
        .clone()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .or_else(|| running.as_ref().map(|s| s.mountpoint.clone()))
        .or_else(|| MountHome::read(&home).map(|m| m.mountpoint))
        .unwrap_or_else(|| home.memories());
    match &running {
        Some(s) => {
            if !args.no_wait {
                wait_for_drain(cli, &home);
            }
            run_unmount_tool(&mountpoint, false)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while s.is_alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if s.is_alive() {
                return Err(fail(format!(
                    "Unmounted {}, but its process {} is still finishing; check {}.",
                    mountpoint.display(),
                    s.pid,
                    home.sync_dir().join("mount.log").display()
                )));
            }
        }
        None if is_mounted(&mountpoint) => {
            // Its process died: the kernel still holds a dead mount.
            run_unmount_tool(&mountpoint, true)?;
        }
        None if !args.to_folder => {
            return Err(fail(format!(
                "Nothing is mounted at {}.",
                mountpoint.display()
            )));
        }
        None => {}
    }
    if !cli.quiet && running.is_some() {
        println!("✅ Unmounted {}", mountpoint.display());
    }
    if args.to_folder {
        to_folder(cli, home, pass)?;
    }
    Ok(0)
}

/// Turns a mount home back into a folder-sync home with every file in its folder.
fn to_folder(cli: &Cli, home: Home, pass: &CliPassphrase) -> Result<(), CliError> {
    let vault = Vault::open(home.clone(), Box::new(pass.clone()))?;
    // The pull below needs the key: ask (or check) before anything changes.
    vault.unlock()?;
    let progress = BarProgress::new(cli.quiet);
    // Whatever is still queued goes out first, so the folder starts in step.
    vault.publish(&progress)?;
    MountHome::clear(&home)
        .map_err(|e| fail(format!("Cannot update {}: {e}.", home.sync_dir().display())))?;
    let r = folder::pull(&vault, &progress)?;
    if !cli.quiet {
        println!(
            "✅ {} is a plain folder again ({} written); use push, pull and sync",
            home.memories().display(),
            tally_sentence(&r.changed)
        );
    }
    Ok(())
}

/// Refuses folder-sync commands on a mount home (DESIGN §7).
pub fn refuse_on_mount_home(home: &Home) -> Result<(), CliError> {
    if let Some(m) = MountHome::read(home) {
        return Err(fail(format!(
            "This home is a mount home (its memories live in the mount at {}), so push, pull and sync are refused; run 'ghostie-fs unmount --to-folder' to make it a plain folder again.",
            m.mountpoint.display()
        )));
    }
    Ok(())
}

/// Refuses commands that need the vault while the mount holds it.
pub fn refuse_while_mounted(home: &Home) -> Result<(), CliError> {
    if let Some(s) = MountStatus::running(home) {
        return Err(fail(format!(
            "This home is mounted at {} (process {}); run this after 'ghostie-fs unmount'.",
            s.mountpoint.display(),
            s.pid
        )));
    }
    Ok(())
}

/// `status` of a mount home: the running mount's own report (the vault is its to hold),
/// or, unmounted, what the index says without reading the empty mount point. Like a
/// folder home's, it never waits for the home's lock or the backend.
pub fn status(home: &Home, holder: Option<&Holder>, json: bool) -> Option<CmdResult> {
    let marked = MountHome::read(home)?;
    Some(mount_status(home, &marked, holder, json))
}

/// What a look at the index of a mount home that is not mounted finds.
#[derive(Default)]
struct Looked {
    known_devices: Option<Vec<String>>,
    lost: Option<Vec<String>>,
    damaged_logs: Option<Vec<String>>,
    keyring_problem: Option<String>,
}

fn mount_status(home: &Home, marked: &MountHome, holder: Option<&Holder>, json: bool) -> CmdResult {
    let config = home.load_config().map_err(SyncError::from)?;
    let running = MountStatus::running(home);
    // What a folder home's status says too, as far as it is known here: a running
    // mount holds the vault, so only its own report is read then (null: unknown).
    let mut known = Looked::default();
    let (cloud, pending, conflicts, last_sync, backend_problem) = match &running {
        Some(s) => {
            known.lost = Some(s.lost.clone());
            known.damaged_logs = Some(s.damaged_logs.clone());
            (
                None,
                None,
                None,
                None,
                (!s.backend_reachable).then(|| {
                    s.last_error
                        .clone()
                        .unwrap_or_else(|| "the backend did not answer the mount".into())
                }),
            )
        }
        None => {
            let vault = Vault::open_to_look(home.clone())?;
            let ns = vault.namespace()?;
            let cloud = ns
                .values()
                .filter(|s| {
                    s.sibling_of.is_none()
                        && !matches!(s.version.entry, ghostie_fs::model::Entry::Dir { .. })
                })
                .count();
            let conflicts = ns.values().filter(|s| s.sibling_of.is_some()).count();
            let (problem, keyring_problem) = vault.backend_and_keyring_problems();
            let mut names: Vec<String> = vault.device_names()?.into_values().collect();
            names.sort();
            known = Looked {
                known_devices: Some(names),
                lost: Some(vault.lost_files()?),
                damaged_logs: Some(
                    vault
                        .devices()?
                        .into_iter()
                        .filter_map(|d| d.problem)
                        .collect(),
                ),
                keyring_problem,
            };
            (
                Some(cloud),
                Some(vault.unpublished_count()?),
                Some(conflicts),
                vault.last_sync_ms()?.map(folder::format_time),
                problem,
            )
        }
    };
    // The account and budget as a look finds them now; the mount's own wait, if a
    // rate limit holds it back.
    let mut provider = Vault::provider_look(home);
    if let Some(mine) = running.as_ref().and_then(|s| s.provider.as_ref()) {
        let p = provider.get_or_insert_with(|| mine.clone());
        p.waiting_until = mine.waiting_until;
        p.writes_last_hour = mine.writes_last_hour;
    }
    let backend = match &config.backend {
        ghostie_fs::config::BackendConfig::Local { path } => {
            format!("local (local folder {})", path.display())
        }
        ghostie_fs::config::BackendConfig::S3 {
            bucket, endpoint, ..
        } => match endpoint {
            Some(e) => format!("s3 (bucket {bucket} at {e})"),
            None => format!("s3 (bucket {bucket})"),
        },
        ghostie_fs::config::BackendConfig::Gist { api_url } => {
            if api_url == ghostie_fs::credentials::Provider::Github.default_api_url() {
                "gist (secret gists of GitHub)".to_owned()
            } else {
                format!("gist (secret gists of the GitHub API at {api_url})")
            }
        }
        ghostie_fs::config::BackendConfig::Dropbox { .. }
        | ghostie_fs::config::BackendConfig::Gdrive { .. } => {
            format!(
                "{} ({})",
                config.backend.kind(),
                ghostie_fs::sync::describe_backend(&config.backend)
            )
        }
    };
    if json {
        // The keys of a folder home's status, each one here too (README: JSON output).
        let device_id = std::fs::read_to_string(home.device_id_path())
            .ok()
            .map(|id| id.trim().to_owned());
        let v = serde_json::json!({
            "mode": "mount",
            "backend": backend,
            "device_id": device_id,
            "device_name": config.device_name,
            "last_sync": last_sync,
            "local_count": null,
            "cloud_count": cloud,
            "conflict_count": conflicts,
            "pending": pending,
            "known_devices": known.known_devices,
            "backend_reachable": backend_problem.is_none(),
            "backend_problem": backend_problem,
            "refused": null,
            "lost": known.lost,
            "damaged_logs": known.damaged_logs,
            "keyring_problem": known.keyring_problem,
            "mounted": running.is_some(),
            "mountpoint": running.as_ref().map(|s| s.mountpoint.clone()).unwrap_or(marked.mountpoint.clone()),
            "mount": running,
            "busy": super::commands::busy_json(holder),
            "credentials": super::login::credentials_json(home)?,
            "provider": super::provider::json(provider.as_ref()),
        });
        println!("{v}");
        return Ok(0);
    }
    println!("🔗 SYNC STATUS:");
    println!("   Backend: {backend}");
    for line in provider.iter().flat_map(super::provider::lines) {
        println!("   {line}");
    }
    println!("   Device Name: {}", config.device_name);
    match &running {
        Some(s) => {
            println!(
                "   Mounted at: {} (process {})",
                s.mountpoint.display(),
                s.pid
            );
            println!(
                "   Pending uploads: {} ({}){}",
                s.pending_uploads,
                human_bytes(s.pending_bytes),
                if s.open_dirty > 0 {
                    format!(
                        ", {} open with unsaved changes",
                        count(
                            usize::try_from(s.open_dirty).unwrap_or(usize::MAX),
                            "file",
                            "files"
                        )
                    )
                } else {
                    String::new()
                }
            );
            if !s.local_only.is_empty() {
                println!(
                    "   Local only (fifos and sockets, never uploaded): {} ({})",
                    s.local_only.len(),
                    s.local_only.join(", ")
                );
            }
            println!(
                "   Cache: {} of {}",
                human_bytes(s.cache_used),
                human_bytes(s.cache_limit)
            );
            println!(
                "   Looks for changes every: {} s",
                s.poll_ms as f64 / 1000.0
            );
            println!(
                "   Last poll: {}",
                s.last_poll_ms
                    .map(folder::format_time)
                    .as_deref()
                    .unwrap_or("not yet")
            );
            println!(
                "   Backend reachable: {}",
                if s.backend_reachable { "yes" } else { "no" }
            );
            println!(
                "   Last error: {}",
                s.last_error.as_deref().unwrap_or("none")
            );
            if !s.lost.is_empty() {
                println!("   Lost before upload: {}", s.lost.join(", "));
            }
            for d in &s.damaged_logs {
                println!("   ⚠️  {d}");
            }
        }
        None => {
            if let Some(h) = holder {
                println!("   Busy: {}", super::commands::busy_text(h));
            }
            match &backend_problem {
                None => println!("   Backend reachable: yes"),
                Some(why) => println!("   Backend reachable: no ({why})"),
            }
            println!(
                "   Mount home, not mounted (last mounted at {}); run 'ghostie-fs mount'",
                marked.mountpoint.display()
            );
            println!("   Last Sync: {}", last_sync.as_deref().unwrap_or("never"));
            println!("   Cloud Memories: {}", cloud.unwrap_or_default());
            println!("   Conflicts: {}", conflicts.unwrap_or_default());
            println!("   Pending: {}", pending.unwrap_or_default());
        }
    }
    for line in super::login::status_lines(home) {
        println!("   {line}");
    }
    Ok(0)
}
