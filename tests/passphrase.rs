//! Issue 11, must-hold 5: a passphrase given is a passphrase checked. Every command
//! given a wrong passphrase (flag, file, command or environment) ends with exit 5,
//! even when its work needed no key; a passphrase file that is missing is an error;
//! `--passphrase-file` and `--passphrase-command` use the first line only.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const WRONG: &str = "not the passphrase";

fn run_with_env(h: &TempHome, passphrase: &str, args: &[&str]) -> Output {
    h.cmd()
        .env("GHOSTIE_PASSPHRASE", passphrase)
        .args(args)
        .output()
        .expect("run ghostie-fs")
}

/// `global` (passphrase options) then `args`, with no passphrase in the environment.
fn run_with(h: &TempHome, global: &[&str], args: &[&str]) -> Output {
    h.cmd()
        .env_remove("GHOSTIE_PASSPHRASE")
        .args(global)
        .args(args)
        .output()
        .expect("run ghostie-fs")
}

fn file_with(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A command that fails with a wrong passphrase says so, prints no result and
/// leaves the vault alone.
fn refused(out: &Output, what: &[&str]) {
    assert_eq!(out.status.code(), Some(5), "{what:?}: {}", stderr(out));
    one_sentence(out, 5, "Wrong passphrase");
    assert!(stdout(out).is_empty(), "{what:?} printed: {}", stdout(out));
}

#[test]
fn a_wrong_passphrase_fails_every_command_even_with_nothing_to_do() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let _b = TempHome::joined("phone", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    let before = vault.objects();

    // Nothing changed: none of these needs a key to do its work.
    let commands: [&[&str]; 13] = [
        &["push"],
        &["push", "--json"],
        &["pull"],
        &["sync"],
        &["devices"],
        &["devices", "--json"],
        &["conflict"],
        &["conflict", "list", "--json"],
        &["conflict", "resolve", "x.json", "--keep", "laptop"],
        &["verify"],
        &["status"],
        &["status", "--json"],
        &["unmount"],
    ];
    let outs: Vec<(&[&str], Output)> = commands
        .iter()
        .map(|args| (*args, run_with_env(&a, WRONG, args)))
        .collect();
    let accepted: Vec<String> = outs
        .iter()
        .filter(|(_, out)| out.status.code() != Some(5))
        .map(|(args, out)| format!("{} (exit {:?})", args.join(" "), out.status.code()))
        .collect();
    assert!(
        accepted.is_empty(),
        "a wrong passphrase passed: {accepted:#?}"
    );
    for (args, out) in &outs {
        refused(out, args);
    }
    assert_eq!(vault.objects(), before, "the vault changed");

    // The right one still works, and a command that needs no key asks for none.
    assert!(a.ok(&["push"]).contains("Uploaded 0"));
    assert!(a.ok(&["devices"]).contains("phone"));
    let out = run_with(&a, &[], &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_missing_passphrase_file_is_an_error_for_every_command() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file");
    let flag = ["--passphrase-file", missing.to_str().unwrap()];
    for args in [&["push"][..], &["status"], &["devices"], &["conflict"]] {
        let out = run_with(&a, &flag, args);
        one_sentence(&out, 1, "Cannot read the passphrase file");
        assert!(stderr(&out).contains("no-such-file"), "{}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}

#[test]
fn a_passphrase_file_is_read_up_to_its_first_line_end() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let dir = tempfile::tempdir().unwrap();

    // The right passphrase, then other lines: only the first counts.
    let right_first = file_with(
        dir.path(),
        "right-first",
        &format!("{PASSPHRASE}\nthe second line is a note\n"),
    );
    let flag = ["--passphrase-file", right_first.to_str().unwrap()];
    a.write("x.json", b"x");
    let out = run_with(&a, &flag, &["push"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Uploaded 1"), "{}", stdout(&out));
    let crlf = file_with(dir.path(), "crlf", &format!("{PASSPHRASE}\r\nnote\r\n"));
    let out = run_with(
        &a,
        &["--passphrase-file", crlf.to_str().unwrap()],
        &["devices"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The right passphrase on the second line is not the passphrase.
    let right_second = file_with(
        dir.path(),
        "right-second",
        &format!("{WRONG}\n{PASSPHRASE}\n"),
    );
    let flag = ["--passphrase-file", right_second.to_str().unwrap()];
    for args in [&["push"][..], &["devices"], &["status"]] {
        refused(&run_with(&a, &flag, args), args);
    }
    let empty = file_with(dir.path(), "empty", "\n");
    let out = run_with(
        &a,
        &["--passphrase-file", empty.to_str().unwrap()],
        &["push"],
    );
    one_sentence(&out, 1, "nothing on its first line");
}

#[test]
fn a_passphrase_command_gives_its_first_line() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // Prints the passphrase and a second line, counting its runs.
    let good = format!(
        "echo run >> '{}'; printf '%s\\n%s\\n' '{PASSPHRASE}' 'a second line'",
        runs.display()
    );
    a.write("x.json", b"x");
    let out = run_with(&a, &["--passphrase-command", &good], &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Uploaded 1"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        1,
        "the command ran more than once for one sync"
    );

    let wrong = format!("echo '{WRONG}'");
    for args in [&["push"][..], &["devices"], &["status"]] {
        refused(&run_with(&a, &["--passphrase-command", &wrong], args), args);
    }

    // A command that fails, or prints nothing, is an error that does not repeat
    // what it printed.
    let out = run_with(
        &a,
        &["--passphrase-command", "echo hunter2-secret; exit 3"],
        &["status"],
    );
    one_sentence(&out, 1, "The passphrase command failed");
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    let out = run_with(&a, &["--passphrase-command", "true"], &["push"]);
    one_sentence(&out, 1, "printed nothing");
    let out = run_with(&a, &["--passphrase-command", "printf ''"], &["status"]);
    one_sentence(&out, 1, "printed nothing");

    // It is one passphrase source or the other.
    let file = file_with(dir.path(), "file", PASSPHRASE);
    let out = run_with(
        &a,
        &[
            "--passphrase-file",
            file.to_str().unwrap(),
            "--passphrase-command",
            &good,
        ],
        &["status"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn help_names_every_passphrase_source_in_order() {
    let out = TempHome::new("x").run(&["--help"]);
    // However the help is wrapped.
    let text = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        text.contains(
            "Passphrase: --passphrase-file FILE or --passphrase-command CMD, else $GHOSTIE_PASSPHRASE, else a prompt."
        ),
        "{text}"
    );
    assert!(text.contains("5 wrong passphrase"), "{text}");
}

#[test]
fn a_background_mount_runs_the_passphrase_command_once_and_checks_it() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let good = format!("echo run >> '{}'; echo '{PASSPHRASE}'", runs.display());
    let out = run_with(&a, &["--passphrase-command", &good], &["mount"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let m = a.adopt_mount();
    std::fs::write(m.path("x.json"), b"x").unwrap();
    assert!(m.drained(60), "the mount never uploaded");
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);
    assert!(
        !m.log().contains(PASSPHRASE),
        "the passphrase reached the mount's log"
    );
    drop(m);

    let out = run_with(
        &a,
        &["--passphrase-command", &format!("echo '{WRONG}'")],
        &["mount"],
    );
    one_sentence(&out, 5, "Wrong passphrase");
}
