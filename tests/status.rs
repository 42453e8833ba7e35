//! Issue 11, must-hold 4: `status` always answers at once: while another command
//! holds the home (it says which, and since when), with a backend that does not
//! answer, and with the local vault folder gone (an unplugged disk), which it reports
//! as `Backend reachable: no` and exit 0: an unreachable backend is a state to
//! show, not a failure of `status`.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// "Within a second", with room for a slow, shared machine: what is checked is that
/// status waits neither for the home's lock nor for the backend, which can take
/// minutes.
const AT_ONCE: Duration = Duration::from_secs(5);

/// Runs `args` (a status) with `env`, and how long it took. A status that waits is
/// stopped long before the holder would let go.
fn timed(h: &TempHome, args: &[&str], env: &[(String, String)]) -> (Output, Duration) {
    let mut c = h.cmd();
    c.args(args).timeout(Duration::from_secs(30));
    for (k, v) in env {
        c.env(k, v);
    }
    let started = Instant::now();
    let out = c.output().expect("run status");
    (out, started.elapsed())
}

/// The text of a status that succeeded at once.
fn at_once(h: &TempHome, args: &[&str], env: &[(String, String)]) -> String {
    let (out, took) = timed(h, args, env);
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}) after {took:?}:\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    assert!(took < AT_ONCE, "{args:?} took {took:?}: {}", stdout(&out));
    stdout(&out)
}

fn json_at_once(h: &TempHome, env: &[(String, String)]) -> serde_json::Value {
    let text = at_once(h, &["status", "--json"], env);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A push of `h` waiting in `vault`'s stalled backend, holding the home meanwhile.
fn stalled_push(h: &TempHome, vault: &TempVault) -> Child {
    vault.stall();
    let child = Command::new(assert_cmd::cargo::cargo_bin("ghostie-fs"))
        .arg("--home")
        .arg(h.home())
        .arg("push")
        .env("GHOSTIE_PASSPHRASE", PASSPHRASE)
        .envs_isolated(h)
        .envs(vault.stall_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a push");
    assert!(
        eventually(60, || vault.stalled_requests() > 0),
        "the push never reached the backend"
    );
    child
}

#[test]
fn status_names_the_command_holding_the_home_without_waiting_for_it() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"x");
    let mut push = stalled_push(&a, &vault);

    let text = at_once(&a, &["status"], &[]);
    let busy = format!("Busy: push (process {}) since 20", push.id());
    assert!(text.contains(&busy), "{text}");
    assert!(text.contains("Device Name: laptop"), "{text}");
    assert!(text.contains("Local Memories: 1"), "{text}");
    let s = json_at_once(&a, &[]);
    assert_eq!(s["busy"]["command"], "push", "{s}");
    assert_eq!(s["busy"]["pid"], push.id(), "{s}");
    assert!(
        s["busy"]["since"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{s}"
    );
    assert_eq!(s["local_count"], 1, "{s}");

    // A holder that dies holds nothing, whatever it left in the lock file.
    push.kill().expect("kill the push");
    push.wait().expect("reap the push");
    let text = at_once(&a, &["status"], &[]);
    assert!(!text.contains("Busy"), "{text}");
    assert_eq!(json_at_once(&a, &[])["busy"], serde_json::Value::Null);

    vault.unstall();
    assert!(a.ok(&["push"]).contains("Uploaded 1"));
    let s = json_at_once(&a, &[]);
    assert_eq!(s["busy"], serde_json::Value::Null, "{s}");
    assert_eq!(s["pending"], 0, "{s}");
}

#[test]
fn status_reports_a_missing_vault_folder_as_unreachable() {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    a.write("y.json", b"y");
    // The disk that holds the vault folder is unplugged.
    vault.go_offline();

    let text = at_once(&a, &["status"], &[]);
    assert!(text.contains("Backend reachable: no"), "{text}");
    assert!(
        text.contains(&vault.path().display().to_string()),
        "the reason names the folder: {text}"
    );
    for line in ["Device Name: laptop", "Cloud Memories: 1", "Pending: 1"] {
        assert!(text.contains(line), "{line:?} missing: {text}");
    }
    let s = json_at_once(&a, &[]);
    assert_eq!(s["backend_reachable"], false, "{s}");
    assert!(s["backend_problem"].is_string(), "{s}");
    assert_eq!(
        (s["cloud_count"].as_u64(), s["pending"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(
        !vault.path().exists(),
        "status recreated the vault folder on the missing disk"
    );

    vault.come_back();
    assert!(at_once(&a, &["status"], &[]).contains("Backend reachable: yes"));
}

#[test]
fn status_does_not_wait_for_a_backend_that_does_not_answer() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    vault.stall();

    let text = at_once(&a, &["status"], &vault.stall_env());
    assert!(text.contains("Backend reachable: no"), "{text}");
    assert!(text.contains("does not answer"), "{text}");
    assert!(text.contains("Cloud Memories: 1"), "{text}");
    let s = json_at_once(&a, &vault.stall_env());
    assert_eq!(s["backend_reachable"], false, "{s}");
    assert_eq!(s["cloud_count"], 1, "{s}");

    vault.unstall();
    assert!(at_once(&a, &["status"], &vault.stall_env()).contains("Backend reachable: yes"));
}

#[test]
fn status_of_an_unmounted_mount_home_with_its_vault_folder_gone() {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    let m = a.mount();
    std::fs::write(m.path("x.json"), b"x").unwrap();
    assert!(m.drained(60), "the mount never uploaded");
    a.ok(&["unmount"]);
    drop(m);
    vault.go_offline();

    let text = at_once(&a, &["status"], &[]);
    assert!(text.contains("Mount home, not mounted"), "{text}");
    assert!(text.contains("Backend reachable: no"), "{text}");
    assert!(text.contains("Cloud Memories: 1"), "{text}");
    let s = json_at_once(&a, &[]);
    assert_eq!(s["mode"], "mount", "{s}");
    assert_eq!(s["backend_reachable"], false, "{s}");
    assert_eq!(s["busy"], serde_json::Value::Null, "{s}");

    vault.come_back();
    assert!(at_once(&a, &["status"], &[]).contains("Backend reachable: yes"));
}
