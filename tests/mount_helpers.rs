//! mount-helpers/: the fstab helper and the systemd user unit, run for real.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("ghostie-fs")
}

fn passphrase_file(dir: &Path) -> PathBuf {
    let p = dir.join("passphrase");
    fs::write(&p, format!("{PASSPHRASE}\n")).unwrap();
    p
}

fn mounted(at: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(at.to_str().unwrap()))
}

#[test]
fn fstab_helper_turns_mount_options_into_a_mount() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("seen.json", b"{}");
    a.ok(&["push"]);
    let b = TempHome::joined("desktop", &vault);
    let pass = passphrase_file(b.home());
    let helper = repo().join("mount-helpers/mount.fuse.ghostie-fs");
    // The options a FUSE user writes in fstab: the owner shown, the kernel's own
    // permission checks, atime.
    let opts = format!(
        "rw,noauto,_netdev,x-systemd.automount,passphrase_file={},poll=2,cache_size=32M,\
         default_permissions,uid=12345,gid=23456,noatime",
        pass.display()
    );
    // -f (fake): what it would run.
    let fake = Command::new(&helper)
        .arg(b.home())
        .arg(b.memories())
        .args(["-f", "-o", &opts])
        .env("GHOSTIE_FS_BIN", bin())
        .output()
        .unwrap();
    assert!(fake.status.success(), "{}", stderr(&fake));
    let line = stdout(&fake);
    for want in [
        "--passphrase-file",
        "--poll 2",
        "--cache-size 32M",
        "mount",
        "-o rw\\,default_permissions\\,uid=12345\\,gid=23456\\,noatime",
    ] {
        assert!(line.contains(want), "{want} missing from: {line}");
    }
    assert!(
        !line.contains("_netdev") && !line.contains("noauto"),
        "{line}"
    );
    // For real: mounted once the helper returns, as mount(8) expects.
    let out = Command::new(&helper)
        .arg(b.home())
        .arg(b.memories())
        .args(["-o", &opts])
        .env("GHOSTIE_FS_BIN", bin())
        .env_remove("GHOSTIE_PASSPHRASE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let at = b.memories();
    assert!(mounted(&at));
    assert_eq!(fs::read(at.join("seen.json")).unwrap(), b"{}");
    // uid= and gid= name the owner every file shows.
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(at.join("seen.json")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (12345, 23456));
    b.ok(&["unmount"]);
    assert!(!mounted(&at));
    // An id that is not a number is refused before anything runs.
    let bad = Command::new(&helper)
        .arg(b.home())
        .arg(b.memories())
        .args(["-o", "uid=me"])
        .env("GHOSTIE_FS_BIN", bin())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("uid=me"), "{}", stderr(&bad));
    // Unknown options are refused in one line.
    let bad = Command::new(&helper)
        .arg(b.home())
        .arg(b.memories())
        .args(["-o", "frobnicate"])
        .env("GHOSTIE_FS_BIN", bin())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("unknown option 'frobnicate'"));
}

fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= missing from the unit"))
        .to_owned()
}

#[test]
fn systemd_user_unit_starts_and_stops_the_mount() {
    let unit = fs::read_to_string(repo().join("mount-helpers/systemd/ghostie-fs.service")).unwrap();
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.contains(section), "{section} missing");
    }
    assert_eq!(unit_value(&unit, "WantedBy"), "default.target");
    // A user unit: the system manager's targets mean nothing there, and the mount
    // says when it is ready.
    let settings: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        !settings.iter().any(|l| l.contains("network-online.target")),
        "a user unit cannot wait for network-online.target"
    );
    assert_eq!(unit_value(&unit, "Type"), "notify");
    // systemd's own check, of the unit as installed: the binary it names in place,
    // and its manual page (Documentation=) where man finds it.
    let checked = tempfile::tempdir().unwrap();
    let installed = unit.replace("%h/.cargo/bin/ghostie-fs", bin().to_str().unwrap());
    let copy = checked.path().join("ghostie-fs.service");
    fs::write(&copy, &installed).unwrap();
    let man = checked.path().join("man");
    let pages = Command::new(bin())
        .arg("man")
        .arg(man.join("man1"))
        .output()
        .unwrap();
    assert!(pages.status.success(), "{}", stderr(&pages));
    fs::create_dir_all(checked.path().join("run")).unwrap();
    let v = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(&copy)
        .env("MANPATH", &man)
        .env("XDG_RUNTIME_DIR", checked.path().join("run"))
        .output()
        .expect("systemd-analyze (package systemd; scripts/test.sh installs it)");
    let err = stderr(&v);
    assert!(v.status.success(), "systemd-analyze verify: {err}");
    // Unknown settings are only warned about: any warning is a defect here.
    assert!(err.trim().is_empty(), "systemd-analyze verify: {err}");
    // The commands it runs, for a user whose home is a temp folder (%h).
    let user = tempfile::tempdir().unwrap();
    let h = user.path();
    fs::create_dir_all(h.join(".cargo/bin")).unwrap();
    std::os::unix::fs::symlink(bin(), h.join(".cargo/bin/ghostie-fs")).unwrap();
    let vault = TempVault::new();
    let home = h.join(".ghostie");
    let setup = Command::new(bin())
        .arg("--home")
        .arg(&home)
        .arg("setup")
        .args(vault.setup_args())
        .args(["--device", "unit"])
        .env("GHOSTIE_PASSPHRASE", PASSPHRASE)
        .envs(vault.token_env())
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", stderr(&setup));
    // The unit has no passphrase: the device remembers its key, as the unit's
    // comment says to do once. The user's own folders are the temp home's, with no
    // D-Bus session (a headless box): the key is sealed, its unlock key in
    // ~/.local/state.
    fs::create_dir_all(h.join("run")).unwrap();
    let user_env = |c: &mut Command| {
        c.env("HOME", h)
            .env("XDG_RUNTIME_DIR", h.join("run"))
            .env_remove("XDG_STATE_HOME")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("GHOSTIE_CREDENTIAL_STORE");
    };
    let mut remember = Command::new(bin());
    remember
        .arg("--home")
        .arg(&home)
        .arg("remember")
        .env("GHOSTIE_PASSPHRASE", PASSPHRASE);
    user_env(&mut remember);
    let out = remember.output().unwrap();
    assert!(out.status.success(), "remember: {}", stderr(&out));
    assert!(h.join(".local/state/ghostie-fs").is_dir());
    vault.keep_token(&home, |c| {
        c.env("GHOSTIE_PASSPHRASE", PASSPHRASE);
        user_env(c);
    });
    let expand = |v: String| -> Vec<String> {
        v.replace("%h", h.to_str().unwrap())
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let env_home = unit_value(&unit, "Environment").replace("%h", h.to_str().unwrap());
    let (var, value) = env_home.split_once('=').unwrap();
    let start = expand(unit_value(&unit, "ExecStart"));
    // systemd's side of Type=notify: a datagram socket named by NOTIFY_SOCKET.
    let notify_path = h.join("run/notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let ready = |service: &mut std::process::Child| {
        let mut buf = [0u8; 512];
        loop {
            let n = match notify.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = service.kill();
                    let said = fs::read_to_string(h.join("service.err")).unwrap_or_default();
                    panic!("no READY=1 from the service ({e}); it said: {said}");
                }
            };
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                return;
            }
        }
    };
    let start_service = || {
        let mut service_cmd = Command::new(&start[0]);
        service_cmd
            .args(&start[1..])
            .env(var, value)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("GHOSTIE_PASSPHRASE")
            .stdin(std::process::Stdio::null())
            .stderr(fs::File::create(h.join("service.err")).unwrap());
        user_env(&mut service_cmd);
        service_cmd.spawn().unwrap()
    };
    let at = home.join("memories");
    let mut service = start_service();
    ready(&mut service);
    // Ready means mounted: whatever systemd starts next finds the memories.
    assert!(mounted(&at), "READY=1 came before the mount");

    // A crash leaves a dead mount point; the next start (Restart=) clears it and
    // mounts again, instead of failing until someone runs unmount.
    service.kill().unwrap();
    service.wait().unwrap();
    assert!(mounted(&at), "the kill left no dead mount to clear");
    assert_eq!(
        fs::metadata(&at).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    let mut service = start_service();
    ready(&mut service);
    assert!(
        fs::read_dir(&at).is_ok(),
        "the restarted mount does not answer"
    );
    fs::write(at.join("via-unit.json"), b"{}").unwrap();
    let stop = expand(unit_value(&unit, "ExecStop"));
    let out = Command::new(&stop[0])
        .args(&stop[1..])
        .env(var, value)
        .output()
        .unwrap();
    assert!(out.status.success(), "ExecStop: {}", stderr(&out));
    let status = service.wait().unwrap();
    assert!(status.success(), "the service exited with {status}");
    assert!(!mounted(&at));
    // What was written through the unit's mount is in the vault.
    let other = TempHome::joined("check", &vault);
    other.ok(&["pull"]);
    assert_eq!(other.read("via-unit.json"), Some(b"{}".to_vec()));
}

#[test]
fn the_termux_job_syncs_a_device_that_remembers_its_key() {
    let script = repo().join("mount-helpers/termux/ghostie-sync-job.sh");
    let vault = TempVault::new();
    let phone = TempHome::joined("phone", &vault);
    let laptop = TempHome::joined("laptop", &vault);
    let user = tempfile::tempdir().unwrap();
    fs::create_dir_all(user.path().join("run")).unwrap();
    let job = || {
        let out = Command::new("bash")
            .arg(&script)
            .env("HOME", user.path())
            .env("GHOSTIE_HOME", phone.home())
            .env("GHOSTIE_BIN", bin())
            .env("XDG_RUNTIME_DIR", user.path().join("run"))
            .env_remove("XDG_STATE_HOME")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("GHOSTIE_PASSPHRASE")
            .env_remove("GHOSTIE_PASSPHRASE_FILE")
            .env_remove("GHOSTIE_CREDENTIAL_STORE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let log = fs::read_to_string(phone.home().join("sync/termux-job.log")).unwrap_or_default();
        (out, log)
    };
    // Neither a remembered key nor a passphrase file: the log says what to do.
    phone.write("from-phone.json", b"{\"n\":1}");
    let (out, log) = job();
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("ghostie-fs remember"), "{log}");

    let mut remember = Command::new(bin());
    remember
        .arg("--home")
        .arg(phone.home())
        .arg("remember")
        .env("HOME", user.path())
        .env("XDG_RUNTIME_DIR", user.path().join("run"))
        .env_remove("XDG_STATE_HOME")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("GHOSTIE_CREDENTIAL_STORE")
        .env("GHOSTIE_PASSPHRASE", PASSPHRASE);
    let r = remember.output().unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    let (out, log) = job();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("sync done"), "{log}");
    laptop.ok(&["pull"]);
    assert_eq!(laptop.read("from-phone.json"), Some(b"{\"n\":1}".to_vec()));
}
