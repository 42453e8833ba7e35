//! Issue 12: provider tokens and a remembered key, kept where they are safe.
//!
//! The OS keyring is a real Secret Service (gnome-keyring) in a private D-Bus
//! session each test starts; "no keyring" is the same machine with no session at
//! all. GitHub is the fake in tests/common/fake_github.rs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fake_github::{expiry_in, FakeGithub, Outage};
use common::*;

const TOKEN: &str = "ghp_c0ffee0credentials0test0token00000001";
const OTHER_TOKEN: &str = "ghp_c0ffee0credentials0test0token00000002";
const BAD_TOKEN: &str = "ghp_c0ffee0credentials0test0token0000bad0";

/// A real Secret Service: a private D-Bus session and gnome-keyring on it, with an
/// unlocked login keyring, stopped when dropped.
struct SecretService {
    dir: tempfile::TempDir,
    address: String,
    dbus: Child,
    keyring: Child,
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

impl SecretService {
    fn start() -> Option<Self> {
        let tools = [
            "dbus-daemon",
            "dbus-send",
            "gnome-keyring-daemon",
            "secret-tool",
        ];
        if let Some(missing) = tools.iter().find(|t| !have(t)) {
            assert!(
                std::env::var_os("GHOSTIE_REQUIRE_KEYRING").is_none(),
                "{missing} is missing: scripts/test.sh installs dbus-daemon, dbus-bin, gnome-keyring and libsecret-tools"
            );
            eprintln!("no Secret Service here ({missing} is missing): run scripts/test.sh");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let run = dir.path().join("run");
        std::fs::create_dir(&run).expect("run dir");
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
        let env = |c: &mut Command| {
            c.env("HOME", dir.path())
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("XDG_RUNTIME_DIR", &run)
                .env_remove("DBUS_SESSION_BUS_ADDRESS");
        };
        let mut dbus_cmd = Command::new("dbus-daemon");
        dbus_cmd
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        env(&mut dbus_cmd);
        let mut dbus = dbus_cmd.spawn().expect("start dbus-daemon");
        let mut line = String::new();
        BufReader::new(dbus.stdout.take().expect("dbus stdout"))
            .read_line(&mut line)
            .expect("read the bus address");
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "bus address {address:?}");
        let mut keyring_cmd = Command::new("gnome-keyring-daemon");
        env(&mut keyring_cmd);
        keyring_cmd
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut keyring = keyring_cmd.spawn().expect("start gnome-keyring-daemon");
        {
            let mut stdin = keyring.stdin.take().expect("keyring stdin");
            stdin
                .write_all(b"login keyring password")
                .expect("unlock the keyring");
        }
        let ss = Self {
            dir,
            address,
            dbus,
            keyring,
        };
        // The bus name is taken before the login collection is ready: wait for a
        // store and lookup to go through, as ghostie-fs's own probe does.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(ss.answers() && ss.round_trip()) {
            assert!(
                Instant::now() < deadline,
                "gnome-keyring never answered a store and lookup"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(ss)
    }

    fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", self.dir.path())
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"));
        c
    }

    fn answers(&self) -> bool {
        self.tool("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
    }

    fn round_trip(&self) -> bool {
        let mut store = self
            .tool("secret-tool")
            .args([
                "store",
                "--label=probe",
                "service",
                "test-probe",
                "username",
                "p",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("secret-tool");
        if let Some(mut stdin) = store.stdin.take() {
            let _ = stdin.write_all(b"ready");
        }
        let stored = store.wait().is_ok_and(|s| s.success());
        let back = self
            .tool("secret-tool")
            .args(["lookup", "service", "test-probe", "username", "p"])
            .output()
            .is_ok_and(|o| o.stdout == b"ready");
        stored && back
    }

    /// What `secret-tool` reads for ghostie-fs's entry `user`.
    fn lookup(&self, user: &str) -> Option<String> {
        let out = self
            .tool("secret-tool")
            .args(["lookup", "service", "ghostie-fs", "username", user])
            .output()
            .expect("secret-tool");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        let _ = self.keyring.kill();
        let _ = self.keyring.wait();
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
    }
}

/// Every file under `dirs`, for scans.
fn files_under(dirs: &[&Path]) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&path, out),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(d, &mut out);
    }
    out
}

fn assert_nowhere(secret: &str, dirs: &[&Path]) {
    for f in files_under(dirs) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds a secret in clear",
            f.display()
        );
    }
}

/// Runs `args` with `stdin` on standard input and `env` added.
fn run_in(h: &TempHome, env: &[(&str, &str)], stdin: &str, args: &[&str]) -> Output {
    let mut c = h.cmd();
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args)
        .write_stdin(stdin.to_owned())
        .output()
        .expect("run")
}

fn login(h: &TempHome, env: &[(&str, &str)], fake: &FakeGithub, token: &str) -> Output {
    run_in(
        h,
        env,
        &format!("{token}\n"),
        &["login", "github", "--token-stdin", "--api-url", &fake.url()],
    )
}

fn home_id(h: &TempHome) -> String {
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(h.home().join("keys/credentials.json")).expect("credentials.json"),
    )
    .expect("json");
    meta["home_id"].as_str().expect("home_id").to_owned()
}

fn stored(h: &TempHome, env: &[(&str, &str)]) -> serde_json::Value {
    let out = run_in(h, env, "", &["login", "--status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("login --status --json")
}

fn nothing_stored(h: &TempHome) {
    let s = stored(h, &[]);
    assert_eq!(s["credentials"], serde_json::json!([]), "{s}");
    assert!(!h.home().join("keys/credentials.enc").exists());
}

#[test]
fn a_token_goes_to_the_os_keyring_when_a_real_one_answers() {
    let Some(ss) = SecretService::start() else {
        return;
    };
    let bus = [("DBUS_SESSION_BUS_ADDRESS", ss.address.as_str())];
    let fake = FakeGithub::start();
    fake.add_classic_token(TOKEN, "octo-ghost", &["gist"], None);
    // Not set up yet: with a keyring, a token can be stored before setup.
    let h = TempHome::new("laptop");
    let out = login(&h, &bus, &fake, TOKEN);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("OS keyring"), "{}", stdout(&out));
    assert!(stdout(&out).contains("octo-ghost"), "{}", stdout(&out));

    let user = format!("github@{}", home_id(&h));
    assert_eq!(ss.lookup(&user).as_deref(), Some(TOKEN));
    assert!(!h.home().join("keys/credentials.enc").exists());
    assert_nowhere(TOKEN, &[h.home(), h.outside.path()]);

    let s = stored(&h, &bus);
    assert_eq!(s["store"], "os-keyring");
    assert_eq!(s["credentials"][0]["account"], "octo-ghost");
    assert_eq!(s["credentials"][0]["kept_in"], "os-keyring");
    assert_eq!(s["credentials"][0]["scopes"], serde_json::json!(["gist"]));
    assert!(!s.to_string().contains(TOKEN));

    // The store was decided once: later commands use the keyring, and logging out
    // removes the entry and revokes the token at GitHub.
    let out = run_in(&h, &bus, "", &["logout", "github"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fake.is_revoked(TOKEN));
    assert_eq!(ss.lookup(&user), None);
    assert_eq!(stored(&h, &bus)["credentials"], serde_json::json!([]));
}

#[test]
fn without_a_keyring_the_token_is_sealed_and_a_copied_home_cannot_read_it() {
    let vault = TempVault::local();
    let h = TempHome::joined("server", &vault);
    let fake = FakeGithub::start();
    fake.add_classic_token(TOKEN, "octo-ghost", &["gist"], None);
    let out = login(&h, &[], &fake, TOKEN);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("encrypted file"), "{}", stdout(&out));
    assert!(h.home().join("keys/credentials.enc").exists());
    assert_nowhere(TOKEN, &[h.home(), h.outside.path(), vault.path()]);
    assert_eq!(stored(&h, &[])["store"], "file");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(h.home().join("keys/credentials.enc"))
            .expect("stat")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // A copy of the home, with a wrong passphrase: the token cannot be read, so it
    // cannot be used (here: to revoke it) and GitHub never sees it.
    let thief = TempHome::new("thief");
    copy_dir(h.home(), thief.home());
    let out = run_in(
        &thief,
        &[("GHOSTIE_PASSPHRASE", "not the passphrase")],
        "",
        &["logout", "github"],
    );
    one_sentence(&out, 5, "Wrong passphrase");
    assert!(!fake.is_revoked(TOKEN));
    assert!(fake.seen().iter().all(|s| s.path != "/credentials/revoke"));

    // The passphrase opens it: the sealed file does hold the token.
    let out = run_in(&thief, &[], "", &["logout", "github"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fake.is_revoked(TOKEN));
    assert!(!thief.home().join("keys/credentials.enc").exists());
}

/// Runs with no passphrase source at all: no variable, no file, no terminal.
fn bare(h: &TempHome, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = h.cmd();
    c.env_remove("GHOSTIE_PASSPHRASE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).write_stdin(Vec::new()).output().expect("run")
}

fn remember_then_sync(
    env: &[(&str, &str)],
    place: &str,
    while_remembered: impl Fn(&TempHome),
) -> (TempVault, TempHome) {
    let vault = TempVault::local();
    let h = TempHome::joined("cron-box", &vault);
    let other = TempHome::joined("phone", &vault);
    let out = run_in(&h, env, "", &["remember"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(place), "{}", stdout(&out));

    h.write("note.json", b"{\"from\":\"a scheduled sync\"}");
    let out = bare(&h, env, &["sync"]);
    assert!(
        out.status.success(),
        "sync without a passphrase: {}",
        stderr(&out)
    );
    other.ok(&["pull"]);
    assert_eq!(
        other.read("note.json").as_deref(),
        Some(&b"{\"from\":\"a scheduled sync\"}"[..])
    );
    let out = bare(&h, env, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(s["credentials"]["remembered"].is_object(), "{s}");
    while_remembered(&h);
    // A passphrase given still wins, and is checked: a wrong one fails.
    let mut wrong = env.to_vec();
    wrong.push(("GHOSTIE_PASSPHRASE", "not the passphrase"));
    one_sentence(&run_in(&h, &wrong, "", &["sync"]), 5, "Wrong passphrase");

    let out = run_in(&h, env, "", &["forget"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bare(&h, env, &["sync"]);
    one_sentence(&out, 1, "run 'ghostie-fs remember' once");
    assert!(
        stderr(&out).contains("GHOSTIE_PASSPHRASE"),
        "{}",
        stderr(&out)
    );
    (vault, h)
}

#[test]
fn remember_lets_a_scheduled_sync_run_without_a_passphrase_until_forget() {
    let (_vault, h) = remember_then_sync(&[], "encrypted", |h| {
        assert!(h.home().join("keys/remembered.enc").exists());
        assert_eq!(files_under(&[&h.state_dir()]).len(), 1);
    });
    // Nothing is left of the remembered key: neither its sealed copy nor the unlock
    // key outside the home.
    assert!(!h.home().join("keys/remembered.enc").exists());
    assert!(files_under(&[&h.state_dir()]).is_empty());
}

#[test]
fn remember_uses_the_os_keyring_when_a_real_one_answers() {
    let Some(ss) = SecretService::start() else {
        return;
    };
    let bus = [("DBUS_SESSION_BUS_ADDRESS", ss.address.as_str())];
    let (_vault, h) = remember_then_sync(&bus, "OS keyring", |h| {
        let entry = ss.lookup(&format!("master-key@{}", home_id(h)));
        assert!(entry.is_some_and(|e| e.contains("vault_id")));
        assert!(!h.home().join("keys/remembered.enc").exists());
        assert!(files_under(&[&h.state_dir()]).is_empty());
    });
    assert_eq!(ss.lookup(&format!("master-key@{}", home_id(&h))), None);
}

#[test]
fn a_remembered_key_expires_and_a_copied_home_does_not_carry_it() {
    let vault = TempVault::local();
    let h = TempHome::joined("laptop", &vault);
    h.ok(&["remember"]);
    assert!(h.home().join("keys/remembered.enc").exists());
    assert_eq!(files_under(&[&h.state_dir()]).len(), 1);

    // The home copied elsewhere (a backup, a stolen disk image) without the unlock
    // key kept outside it: no passphrase, no access.
    // (On another machine, the unlock key's place is empty: moved away here.)
    let copy = TempHome::new("copy");
    copy_dir(h.home(), copy.home());
    let away = h.outside.path().join("state-away");
    std::fs::rename(h.state_dir(), &away).expect("move the state folder");
    let out = bare(&copy, &[], &["sync"]);
    one_sentence(&out, 1, "remembers its key, but its unlock key");
    std::fs::rename(&away, h.state_dir()).expect("move it back");

    let out = run_in(&h, &[], "", &["remember", "--for", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(2100));
    let out = bare(&h, &[], &["sync"]);
    one_sentence(&out, 1, "No passphrase given");
    // An expired key is removed, not kept around: its sealed copy and its unlock key.
    assert!(!h.home().join("keys/remembered.enc").exists());
    assert!(files_under(&[&h.state_dir()]).is_empty());

    let out = run_in(&h, &[], "", &["remember", "--for", "soon"]);
    one_sentence(&out, 2, "not a duration");
}

#[test]
fn bad_tokens_and_bad_apis_are_one_sentence_each_and_store_nothing() {
    let vault = TempVault::local();
    let h = TempHome::joined("laptop", &vault);
    let fake = FakeGithub::start();
    fake.add_classic_token(TOKEN, "octo-ghost", &["gist"], None);
    fake.add_classic_token(OTHER_TOKEN, "octo-ghost", &["repo", "read:org"], None);
    fake.add_fine_grained_token("github_pat_nogists0000000000", "octo-ghost", false, None);
    fake.add_classic_token(
        "ghp_revoked0000000000000000000000",
        "octo-ghost",
        &["gist"],
        None,
    );
    fake.revoke("ghp_revoked0000000000000000000000");

    one_sentence(&login(&h, &[], &fake, BAD_TOKEN), 6, "refused this token");
    one_sentence(
        &login(&h, &[], &fake, "ghp_revoked0000000000000000000000"),
        6,
        "refused this token",
    );
    one_sentence(
        &login(&h, &[], &fake, OTHER_TOKEN),
        6,
        "lacks the 'gist' scope",
    );
    one_sentence(
        &login(&h, &[], &fake, "github_pat_nogists0000000000"),
        6,
        "Gists permission",
    );
    one_sentence(&login(&h, &[], &fake, ""), 2, "empty");
    one_sentence(&login(&h, &[], &fake, "ghp_has a space"), 6, "not a token");
    nothing_stored(&h);

    // Nothing listens on port 1 of this machine: the connection is refused.
    let out = run_in(
        &h,
        &[],
        &format!("{TOKEN}\n"),
        &[
            "login",
            "github",
            "--token-stdin",
            "--api-url",
            "http://127.0.0.1:1",
        ],
    );
    one_sentence(&out, 1, "does not answer (cannot connect");
    // A server that takes the request and hangs: the timeout ends it.
    fake.set_outage(Outage::Stall);
    let out = run_in(
        &h,
        &[("GHOSTIE_PROVIDER_TIMEOUT", "1")],
        &format!("{TOKEN}\n"),
        &["login", "github", "--token-stdin", "--api-url", &fake.url()],
    );
    one_sentence(&out, 1, "no answer in 1 s");
    // URLs a token must not travel to.
    for (url, why) in [
        ("http://github.example.com/api/v3", "plain HTTP"),
        (
            "https://user:pw@github.example.com/api/v3",
            "user name or password",
        ),
        ("https://github.example.com/api/v3?x=1", "query or fragment"),
        ("ftp://github.example.com", "not an HTTPS one"),
        ("github.example.com", "not a URL"),
    ] {
        let out = run_in(
            &h,
            &[],
            &format!("{TOKEN}\n"),
            &["login", "github", "--token-stdin", "--api-url", url],
        );
        one_sentence(&out, 2, why);
    }
    fake.set_outage(Outage::CutConnections);
    one_sentence(&login(&h, &[], &fake, TOKEN), 1, "does not answer");
    fake.set_outage(Outage::ServerError);
    one_sentence(&login(&h, &[], &fake, TOKEN), 1, "503");
    fake.set_outage(Outage::NotGithub);
    one_sentence(&login(&h, &[], &fake, TOKEN), 1, "check --api-url");
    // A secondary rate limit on the permission check is a wait, not a missing
    // permission.
    fake.set_outage(Outage::None);
    fake.add_fine_grained_token("github_pat_gists0000000000000", "octo-ghost", true, None);
    fake.set_secondary_limits(0, 0);
    one_sentence(
        &login(&h, &[], &fake, "github_pat_gists0000000000000"),
        1,
        "secondary limit",
    );
    fake.set_secondary_limits(80, 500);
    // A redirect is not followed: the token goes nowhere but where it was sent.
    let elsewhere = FakeGithub::start();
    let port: u16 = elsewhere
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    fake.set_outage(Outage::RedirectToPort(port));
    one_sentence(&login(&h, &[], &fake, TOKEN), 1, "redirects to");
    assert!(elsewhere.seen().is_empty(), "the redirect was followed");
    fake.set_outage(Outage::None);
    one_sentence(
        &run_in(&h, &[], "", &["login", "gitlab", "--token-stdin"]),
        2,
        "'gitlab'",
    );
    nothing_stored(&h);

    // Every one of them was said to the user and to nobody else: no secret in any
    // message.
    assert!(fake.seen().iter().all(|s| s.user_agent.is_some()));
}

#[test]
fn more_power_than_needed_and_a_near_expiry_are_warned_about() {
    let vault = TempVault::local();
    let h = TempHome::joined("laptop", &vault);
    let fake = FakeGithub::start();
    let soon = expiry_in(Duration::from_secs(3 * 86_400));
    fake.add_classic_token(TOKEN, "octo-ghost", &["gist", "repo"], Some(&soon));
    let out = login(&h, &[], &fake, TOKEN);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("more than ghostie-fs needs (repo)"), "{err}");
    assert!(err.contains("only the 'gist' scope"), "{err}");
    assert!(err.contains(&format!("expires on {soon}")), "{err}");
    let s = stored(&h, &[]);
    assert_eq!(s["credentials"][0]["expires"], soon.as_str());
    assert_eq!(s["credentials"][0]["expires_soon"], true);
    let text = h.ok(&["status"]);
    assert!(
        text.contains(&soon) && text.contains("make a new token soon"),
        "{text}"
    );

    // A fine-grained token lists no scopes; with the Gists permission it is taken.
    let far = expiry_in(Duration::from_secs(90 * 86_400));
    fake.add_fine_grained_token(
        "github_pat_gists0000000000000",
        "octo-ghost",
        true,
        Some(&far),
    );
    let out = login(&h, &[], &fake, "github_pat_gists0000000000000");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("expires"), "{}", stderr(&out));
    let s = stored(&h, &[]);
    assert_eq!(s["credentials"][0]["scopes"], serde_json::Value::Null);
    assert_eq!(s["credentials"][0]["expires_soon"], false);
}

#[test]
fn logging_in_again_replaces_the_token_and_a_failed_login_keeps_the_old_one() {
    let vault = TempVault::local();
    let h = TempHome::joined("laptop", &vault);
    let fake = FakeGithub::start();
    fake.add_classic_token(TOKEN, "octo-ghost", &["gist"], None);
    fake.add_classic_token(OTHER_TOKEN, "octo-second", &["gist"], None);
    assert!(login(&h, &[], &fake, TOKEN).status.success());
    // A bad new token changes nothing: the old one stays.
    one_sentence(&login(&h, &[], &fake, BAD_TOKEN), 6, "refused this token");
    assert_eq!(stored(&h, &[])["credentials"][0]["account"], "octo-ghost");

    let out = login(&h, &[], &fake, OTHER_TOKEN);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("replaced"), "{}", stdout(&out));
    assert_eq!(stored(&h, &[])["credentials"][0]["account"], "octo-second");
    // The stored token is the new one: logout revokes it, and only it.
    let out = run_in(&h, &[], "", &["logout", "github"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fake.is_revoked(OTHER_TOKEN));
    assert!(!fake.is_revoked(TOKEN));
    // Keeping it at the provider is a choice.
    assert!(login(&h, &[], &fake, TOKEN).status.success());
    let out = run_in(&h, &[], "", &["logout", "github", "--keep-at-provider"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!fake.is_revoked(TOKEN));
    nothing_stored(&h);
}

#[test]
fn a_token_in_the_environment_wins_and_is_never_stored() {
    let vault = TempVault::local();
    let h = TempHome::joined("laptop", &vault);
    let fake = FakeGithub::start();
    fake.add_classic_token(TOKEN, "from-enterprise-token", &["gist"], None);
    fake.add_classic_token(OTHER_TOKEN, "from-github-enterprise-token", &["gist"], None);
    fake.add_classic_token(BAD_TOKEN, "a-github-com-user", &["gist"], None);
    let api = ["login", "github", "--api-url", &fake.url()];
    // The fake is not github.com: as with `gh`, GH_TOKEN and GITHUB_TOKEN (meant for
    // github.com) are not sent to it; the enterprise variables are.
    let com = [("GH_TOKEN", BAD_TOKEN), ("GITHUB_TOKEN", BAD_TOKEN)];
    one_sentence(&run_in(&h, &com, "", &api), 2, "No token given");
    assert!(
        fake.seen().is_empty(),
        "a github.com token went to another host"
    );
    let both = [
        ("GH_ENTERPRISE_TOKEN", TOKEN),
        ("GITHUB_ENTERPRISE_TOKEN", OTHER_TOKEN),
    ];
    let out = run_in(&h, &both, "", &api);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("GH_ENTERPRISE_TOKEN"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("from-enterprise-token"),
        "{}",
        stdout(&out)
    );
    let only = [("GITHUB_ENTERPRISE_TOKEN", OTHER_TOKEN)];
    let out = run_in(&h, &only, "", &api);
    assert!(
        stdout(&out).contains("from-github-enterprise-token"),
        "{}",
        stdout(&out)
    );
    // A refused environment token is named as such.
    fake.revoke(OTHER_TOKEN);
    let out = run_in(&h, &only, "", &api);
    one_sentence(&out, 6, "the token in GITHUB_ENTERPRISE_TOKEN");
    nothing_stored(&h);
    assert!(!h.home().join("keys/credentials.json").exists());
    assert_nowhere(TOKEN, &[h.home(), h.outside.path()]);

    // For github.com itself (no --api-url), GH_TOKEN is what status reports.
    let s = stored(&h, &com);
    assert_eq!(
        s["environment"],
        serde_json::json!([{"provider": "github", "variable": "GH_TOKEN"}])
    );
    let out = run_in(&h, &com, "", &["status"]);
    assert!(
        stdout(&out).contains("github from GH_TOKEN"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn no_secret_reaches_a_log_a_message_json_or_a_file() {
    let vault = TempVault::local();
    let h = TempHome::joined("laptop", &vault);
    let fake = FakeGithub::start();
    fake.add_classic_token(TOKEN, "octo-ghost", &["gist"], None);
    let trace = [("GHOSTIE_LOG", "trace")];
    let mut outputs = Vec::new();
    // A failed login, a good one, every way of looking, a remembered key in use.
    outputs.push(login(&h, &trace, &fake, BAD_TOKEN));
    outputs.push(login(&h, &trace, &fake, TOKEN));
    for args in [
        &["login", "--status"][..],
        &["login", "--status", "--json"],
        &["status"],
        &["status", "--json"],
        &["remember"],
    ] {
        outputs.push(run_in(&h, &trace, "", args));
    }
    h.write("a.json", b"{}");
    outputs.push(bare(&h, &trace, &["sync", "--json"]));
    // The passphrase through every way of giving it, a wrong one included.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let pass_file = elsewhere.path().join("pass");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).expect("pass file");
    let file_arg = pass_file.to_str().expect("utf-8").to_owned();
    outputs.push(bare(
        &h,
        &trace,
        &["--passphrase-file", &file_arg, "status"],
    ));
    let command = format!("cat {file_arg}");
    outputs.push(bare(
        &h,
        &trace,
        &["--passphrase-command", &command, "sync"],
    ));
    outputs.push(run_in(
        &h,
        &[("GHOSTIE_PASSPHRASE", "wrong wrong wrong"), trace[0]],
        "",
        &["sync"],
    ));
    // A backend error: the vault folder gone.
    let moved = vault.path().with_extension("moved");
    std::fs::rename(vault.path(), &moved).expect("move the vault away");
    h.write("b.json", b"{}");
    let failed = bare(&h, &trace, &["push"]);
    assert!(!failed.status.success());
    outputs.push(failed);
    outputs.push(run_in(&h, &trace, "", &["logout", "github"]));
    std::fs::rename(&moved, vault.path()).expect("move the vault back");
    for o in &outputs {
        for text in [stdout(o), stderr(o)] {
            for secret in [TOKEN, BAD_TOKEN, PASSPHRASE, "wrong wrong wrong"] {
                assert!(!text.contains(secret), "a secret was printed: {text}");
            }
        }
    }
    // The trace log did run (so the check above read real log lines).
    assert!(outputs.iter().any(|o| stderr(o).contains("TRACE")));
    for secret in [TOKEN, BAD_TOKEN, PASSPHRASE] {
        assert_nowhere(secret, &[h.home(), h.outside.path(), vault.path()]);
    }
    let config = std::fs::read_to_string(h.home().join("sync/config.json")).expect("config");
    assert!(!config.contains("ghp_"));
}

/// A token endpoint as Dropbox and Google run them (RFC 6749 §6): a refresh token
/// buys an access token; with `rotate`, each answer carries a new refresh token and
/// retires the old one; an unknown or retired refresh token is `invalid_grant`.
struct FakeTokenEndpoint {
    url: String,
    state: std::sync::Arc<std::sync::Mutex<TokenState>>,
}

#[derive(Default)]
struct TokenState {
    valid_refresh: std::collections::HashSet<String>,
    rotate: bool,
    issued: usize,
    expires_in: u64,
}

fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
    })
}

impl FakeTokenEndpoint {
    fn start(first_refresh: &str, rotate: bool, expires_in: u64) -> Self {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/oauth2/token",
            listener.local_addr().expect("addr")
        );
        let state = std::sync::Arc::new(std::sync::Mutex::new(TokenState {
            valid_refresh: [first_refresh.to_owned()].into(),
            rotate,
            expires_in,
            ..TokenState::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = stream.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break (String::new(), String::new());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if rest.len() >= len {
                            break (head.to_owned(), rest[..len].to_owned());
                        }
                    }
                };
                let form = head
                    .to_ascii_lowercase()
                    .contains("content-type: application/x-www-form-urlencoded");
                let (status, json) = {
                    let mut st = s.lock().unwrap();
                    let presented = form_value(&body, "refresh_token").unwrap_or_default();
                    if !head.starts_with("POST ") || !form {
                        (400, serde_json::json!({"error": "invalid_request"}))
                    } else if form_value(&body, "grant_type").as_deref() != Some("refresh_token") {
                        (400, serde_json::json!({"error": "unsupported_grant_type"}))
                    } else if !st.valid_refresh.contains(&presented) {
                        (
                            400,
                            serde_json::json!({"error": "invalid_grant", "error_description": "refresh token is invalid"}),
                        )
                    } else {
                        st.issued += 1;
                        let mut answer = serde_json::json!({
                            "access_token": format!("access-{}", st.issued),
                            "token_type": "bearer",
                            "expires_in": st.expires_in,
                        });
                        if st.rotate {
                            st.valid_refresh.remove(&presented);
                            let next = format!("refresh-{}", st.issued);
                            st.valid_refresh.insert(next.clone());
                            answer["refresh_token"] = serde_json::Value::String(next);
                        }
                        (200, answer)
                    }
                };
                let body = json.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, state }
    }

    fn issued(&self) -> usize {
        self.state.lock().unwrap().issued
    }

    fn retire_everything(&self) {
        self.state.lock().unwrap().valid_refresh.clear();
    }
}

/// The refresh that Dropbox's and Google's logins will use, through the library:
/// the same layer `login` stores through, on the sealed-file store.
#[test]
fn short_lived_access_tokens_are_refreshed_and_a_rotated_refresh_token_is_stored_at_once() {
    use ghostie_fs::config::Home;
    use ghostie_fs::credentials::oauth::OAuthClient;
    use ghostie_fs::credentials::{
        CredentialError, CredentialKey, Credentials, Provider, Secret, StoredInfo,
    };
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    std::fs::create_dir_all(home.keys_dir()).unwrap();
    std::fs::write(
        home.keys_dir().join("credentials.json"),
        r#"{"format":1,"home_id":"0123456789abcdef","store":"file"}"#,
    )
    .unwrap();
    let key = CredentialKey::from_master(&ghostie_fs::crypto::MasterKey::random(), "vault");
    let endpoint = FakeTokenEndpoint::start("refresh-0", true, 3600);
    let client = OAuthClient {
        token_url: endpoint.url.clone(),
        client_id: "ghostie-test-app".into(),
        client_secret: None,
    };
    let secret = |s: &str| Secret::new(zeroize::Zeroizing::new(s.to_owned()));
    let info = StoredInfo {
        account: "owner@example.com".into(),
        scopes: None,
        expires: None,
        expires_at: None,
        api_url: endpoint.url.clone(),
        stored_at: 0,
        client_id: None,
        oauth_url: None,
    };
    let mut creds = Credentials::open(&home).unwrap();
    // A login that came with an access token that has already run out.
    let stale = (&secret("access-from-login"), 1);
    creds
        .store_tokens(
            Provider::Github,
            info,
            &secret("refresh-0"),
            Some(stale),
            None,
            Some(&key),
        )
        .unwrap();

    let (first, _) = creds
        .access_token(Provider::Github, &client, Some(&key), None)
        .unwrap();
    assert_eq!(first.expose(), "access-1");
    assert_eq!(endpoint.issued(), 1);
    // The rotated refresh token is what the store holds now, read afresh from disk.
    let reopened = Credentials::open(&home).unwrap();
    let stored = reopened
        .refresh_token(Provider::Github, Some(&key))
        .unwrap()
        .unwrap();
    assert_eq!(stored.expose(), "refresh-1");
    assert_nowhere("refresh-1", &[dir.path()]);

    // Still valid: handed out again without a request.
    let mut creds = reopened;
    let (again, _) = creds
        .access_token(Provider::Github, &client, Some(&key), None)
        .unwrap();
    assert_eq!(again.expose(), "access-1");
    assert_eq!(endpoint.issued(), 1);
    // Called expired by the provider although it has time left by this clock: the
    // refused token is never handed out again.
    let (renewed, _) = creds
        .access_token(Provider::Github, &client, Some(&key), Some("access-1"))
        .unwrap();
    assert_eq!(renewed.expose(), "access-2");
    assert_eq!(endpoint.issued(), 2);

    // An hour later (the access token stored as run out), at an endpoint that grants
    // tokens for less than the margin: every use refreshes, each time with the
    // refresh token the last answer rotated in (the endpoint retires each one used).
    let info = creds.info(Provider::Github).cloned().unwrap();
    creds
        .store_tokens(
            Provider::Github,
            info,
            &secret("refresh-1"),
            Some(stale),
            None,
            Some(&key),
        )
        .unwrap();
    let short = FakeTokenEndpoint::start("refresh-1", true, 30);
    let short_client = OAuthClient {
        token_url: short.url.clone(),
        ..client
    };
    for _ in 0..3 {
        creds
            .access_token(Provider::Github, &short_client, Some(&key), None)
            .unwrap();
    }
    assert_eq!(short.issued(), 3);
    assert_eq!(
        creds
            .refresh_token(Provider::Github, Some(&key))
            .unwrap()
            .unwrap()
            .expose(),
        "refresh-3"
    );

    // Revoked at the provider: one clear error that says to log in again.
    short.retire_everything();
    match creds.access_token(Provider::Github, &short_client, Some(&key), None) {
        Err(e @ CredentialError::LoginExpired(_)) => {
            assert!(e.to_string().contains("ghostie-fs login github"), "{e}")
        }
        Err(other) => panic!("expected LoginExpired, got {other}"),
        Ok(_) => panic!("a retired refresh token bought an access token"),
    }
}

#[test]
fn a_background_mount_unlocks_with_the_remembered_key() {
    let vault = TempVault::local();
    let h = TempHome::joined("desktop", &vault);
    let other = TempHome::joined("phone", &vault);
    h.ok(&["remember"]);
    // No passphrase anywhere: the mount's background process reads the key itself.
    let out = bare(&h, &[], &["mount"]);
    assert!(out.status.success(), "mount: {}", stderr(&out));
    let guard = h.adopt_mount();
    std::fs::write(h.file("mounted.json"), b"{\"via\":\"remembered key\"}").expect("write");
    let out = bare(&h, &[], &["unmount"]);
    assert!(out.status.success(), "unmount: {}", stderr(&out));
    drop(guard);
    other.ok(&["pull"]);
    assert_eq!(
        other.read("mounted.json").as_deref(),
        Some(&b"{\"via\":\"remembered key\"}"[..])
    );
    let log = std::fs::read_to_string(h.home().join("sync/mount.log")).unwrap_or_default();
    assert!(!log.contains(PASSPHRASE));
}
