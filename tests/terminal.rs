//! The passphrase prompt on a real terminal (a pty made by `script`): setup asks a new
//! passphrase twice, and `sync` asks once for both of its halves.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// Runs the binary with `args` on a pseudo-terminal, typing `input`.
fn on_terminal(home: &TempHome, args: &str, input: &str) -> (bool, String) {
    let bin = assert_cmd::cargo::cargo_bin("ghostie-fs");
    let line = format!("{} --home {} {args}", bin.display(), home.home().display());
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .envs_isolated(home)
        .env_remove("GHOSTIE_PASSPHRASE")
        .env_remove("GHOSTIE_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs the command on a pty");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn prompts_ask_twice_for_a_new_passphrase_and_once_per_command() {
    let vault = TempVault::new();
    let a = TempHome::new("laptop");
    let args = format!("setup {} --device laptop", vault.setup_args().join(" "));
    let (ok, text) = on_terminal(&a, &args, "typed passphrase 1\ntyped passphrase 1\n");
    assert!(ok, "{text}");
    assert!(text.contains("Choose a passphrase"), "{text}");
    assert!(text.contains("Repeat it"), "{text}");

    a.write("x.json", b"x");
    let (ok, text) = on_terminal(&a, "sync", "typed passphrase 1\n");
    assert!(ok, "{text}");
    assert_eq!(text.matches("Passphrase:").count(), 1, "{text}");
    assert!(text.contains("✅ Uploaded 1 file"), "{text}");

    let b = TempHome::new("phone");
    let args = format!("setup {} --device phone", vault.setup_args().join(" "));
    let (ok, text) = on_terminal(&b, &args, "not it\n");
    assert!(!ok, "{text}");
    assert!(text.contains("Wrong passphrase"), "{text}");

    let c = TempHome::new("mismatch");
    let other = TempVault::new();
    let args = format!("setup {} --device c", other.setup_args().join(" "));
    let (ok, text) = on_terminal(&c, &args, "first passphrase\nsecond passphrase\n");
    assert!(!ok, "{text}");
    assert!(text.contains("differ"), "{text}");
    assert!(other.keys().is_empty(), "a vault was created anyway");
}
