//! The command line as a user of rclone or restic expects it: completions, manual
//! pages, help with possible values and examples, logs, one JSON document per
//! `--json`, names and counts as written, usage mistakes with the usage code.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("ghostie-fs")
}

/// Runs the binary with no home and no passphrase in the environment.
fn bare(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env_remove("GHOSTIE_HOME")
        .env_remove("GHOSTIE_PASSPHRASE")
        .env_remove("GHOSTIE_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run ghostie-fs")
}

/// The visible commands, as `--help` lists them.
const COMMANDS: [&str; 19] = [
    "setup",
    "push",
    "pull",
    "sync",
    "status",
    "conflict",
    "devices",
    "passwd",
    "rekey",
    "verify",
    "gc",
    "mount",
    "unmount",
    "login",
    "logout",
    "remember",
    "forget",
    "completions",
    "man",
];

#[test]
fn completions_for_bash_zsh_and_fish_know_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bare(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for command in COMMANDS {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}"
            );
        }
        // Possible values complete too.
        assert!(script.contains("gdrive"), "{shell}: no backend values");
        match shell {
            "zsh" => assert!(script.starts_with("#compdef ghostie-fs"), "{script}"),
            "fish" => assert!(script.contains("complete -c ghostie-fs"), "{script}"),
            _ => {}
        }
    }
    // The bash script loads, and registers itself for the command.
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{}' completions bash) && complete -p ghostie-fs",
            bin().display()
        ))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    assert!(
        stdout(&loaded).contains("ghostie-fs"),
        "{}",
        stdout(&loaded)
    );
    // An unknown shell is a usage mistake.
    one_sentence(&bare(&["completions", "tcsh"]), 2, "'tcsh'");
}

#[test]
fn a_manual_page_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = bare(&["man", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut pages: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert!(pages.contains(&"ghostie-fs.1".to_owned()), "{pages:?}");
    for command in COMMANDS {
        let page = format!("ghostie-fs-{command}.1");
        assert!(pages.contains(&page), "{page} missing from {pages:?}");
        let text = fs::read_to_string(dir.path().join(&page)).unwrap();
        assert!(text.contains(".TH"), "{page} is not a manual page");
    }
    assert!(pages.contains(&"ghostie-fs-conflict-resolve.1".to_owned()));
    assert!(pages.contains(&"ghostie-fs-devices-remove.1".to_owned()));
    // Hidden commands get none.
    assert!(!pages.iter().any(|p| p.contains("bench")), "{pages:?}");
    let mount = fs::read_to_string(dir.path().join("ghostie-fs-mount.1")).unwrap();
    assert!(
        mount.contains("cache\\-size"),
        "mount's page lacks its options"
    );
    assert!(
        mount.contains("Examples"),
        "mount's page lacks its examples"
    );
    // man itself renders it (scripts/test.sh installs man-db).
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("ghostie-fs-setup.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (package man-db)");
    assert!(rendered.status.success(), "{}", stderr(&rendered));
    assert!(stdout(&rendered).contains("backend"));
}

#[test]
fn help_lists_possible_values_and_shows_examples() {
    let setup = stdout(&bare(&["setup", "--help"]));
    assert!(
        setup.contains("local") && setup.contains("Possible values"),
        "{setup}"
    );
    for value in ["s3", "gist", "dropbox", "gdrive"] {
        assert!(setup.contains(&format!("- {value}:")), "{value}: {setup}");
    }
    let login = stdout(&bare(&["login", "--help"]));
    assert!(login.contains("github, dropbox, google"), "{login}");
    // Every command a user runs first shows how.
    for command in [
        "setup", "push", "pull", "sync", "status", "mount", "conflict",
    ] {
        let help = stdout(&bare(&[command, "--help"]));
        assert!(
            help.contains("Examples:\n  ghostie-fs"),
            "{command} --help has no example:\n{help}"
        );
    }
    let top = stdout(&bare(&["--help"]));
    assert!(top.contains("First steps:"), "{top}");
    assert!(top.contains("RUST_LOG"), "{top}");
    let list = stdout(&bare(&["conflict", "list", "--help"]));
    assert!(
        list.contains("Print one JSON array instead of text"),
        "{list}"
    );
}

#[test]
fn version_names_the_commit() {
    let out = bare(&["--version"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "ghostie-fs {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        let head = stdout(&head).trim().to_owned();
        assert!(text.contains(&head), "{text} is not HEAD {head}");
    }
}

#[test]
fn usage_mistakes_exit_with_the_usage_code() {
    let vault = TempVault::local();
    let h = TempHome::new("x");
    let dir = vault.path().to_str().unwrap().to_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["setup", "--backend", "ftp", "--path", &dir], "'ftp'"),
        (vec!["setup", "--backend", "local"], "--path"),
        (vec!["setup", "--backend", "s3"], "--bucket"),
        (vec!["setup"], "--backend"),
        (
            vec![
                "setup",
                "--backend",
                "local",
                "--path",
                &dir,
                "--prefix",
                "../x",
            ],
            "prefix",
        ),
        (vec!["mount", "--poll", "0"], "'0'"),
        (vec!["mount", "--poll", "-1"], "'-1'"),
        (vec!["mount", "--poll", "soon"], "'soon'"),
        (vec!["mount", "--cache-size", "64XB"], "'64XB'"),
        (vec!["mount", "--fsync", "sometimes"], "'sometimes'"),
        (vec!["gc", "--grace", "a while"], "a while"),
        (vec!["gc", "--repack-limit", "64XB"], "'64XB'"),
        (vec!["remember", "--for", "ever"], "ever"),
        (vec!["conflict", "resolve", "", "--keep", "laptop"], "path"),
        (vec!["conflict", "resolve", "x.json"], "--keep"),
        (vec!["login", "gitlab"], "'gitlab'"),
        (vec!["logout", "gitlab"], "'gitlab'"),
        (vec!["frobnicate"], "'frobnicate'"),
        (vec!["push", "--no-such-flag"], "--no-such-flag"),
        (vec!["--quiet", "--verbose", "status"], "--quiet"),
        (vec!["completions"], "<SHELL>"),
        (vec!["mount", "-o", "uid=me"], "uid=me"),
        (vec!["conflict", "reslove", "x.json"], "resolve"),
    ];
    for (args, needle) in cases {
        let out = h.run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        one_sentence(&out, 2, needle);
    }
    assert!(!h.home().join("sync").exists(), "a mistake wrote a home");
}

#[test]
fn s3_without_credentials_says_so_and_where_they_are_looked_for() {
    let h = TempHome::new("x");
    let empty = tempfile::tempdir().unwrap();
    let out = h
        .cmd()
        .args([
            "setup",
            "--backend",
            "s3",
            "--bucket",
            "memories",
            "--endpoint",
            "http://127.0.0.1:9",
            "--path-style",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            empty.path().join("credentials"),
        )
        .env("AWS_CONFIG_FILE", empty.path().join("config"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    one_sentence(&out, 1, "No AWS credentials were found");
    let err = stderr(&out);
    for place in ["AWS_ACCESS_KEY_ID", "~/.aws/credentials", "--profile"] {
        assert!(err.contains(place), "{err} does not say {place}");
    }
    assert!(
        !err.contains("does not answer"),
        "blames the network: {err}"
    );
    assert!(!h.home().join("sync").exists());
}

#[test]
fn names_keep_their_case_and_counts_name_what_they_count() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("desktop", &vault);
    a.write("notes/one.json", b"{}");
    a.write("two.json", b"{}");
    let out = a.ok(&["push"]);
    assert!(out.contains("✅ Uploaded 2 files and 1 folder"), "{out}");
    let out = b.ok(&["pull"]);
    assert!(out.contains("✅ Downloaded 2 files and 1 folder"), "{out}");
    fs::remove_file(b.file("two.json")).unwrap();
    let out = b.ok(&["push"]);
    assert!(out.contains("✅ Uploaded 1 removal"), "{out}");
    let out = a.ok(&["pull"]);
    assert!(out.contains("✅ Downloaded 1 removal"), "{out}");
    let out = a.ok(&["push"]);
    assert!(out.contains("✅ Uploaded 0 files"), "{out}");

    // One conflict is "1 conflict".
    a.write("clash.json", b"{\"by\":\"a\"}");
    b.write("clash.json", b"{\"by\":\"b\"}");
    a.ok(&["push"]);
    b.ok(&["push"]);
    let out = a.ok(&["pull"]);
    assert!(out.contains("⚠️ 1 conflict found"), "{out}");

    // The user's names as written, in every message.
    for name in ["nothere.json", "iPhone-Notes.json", "lower case.json"] {
        let out = a.run(&["conflict", "resolve", name, "--keep", "laptop"]);
        one_sentence(&out, 1, &format!("'{name}' is not in conflict"));
    }
}

/// Parses stdout as exactly one JSON document (serde_json refuses trailing data).
fn one_document(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", stdout(out)))
}

#[test]
fn every_json_output_is_one_document() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("desktop", &vault);
    a.write("x.json", b"{}");
    let pushed = one_document(&a.run(&["push", "--json"]));
    assert_eq!(pushed["uploaded"], 1);
    assert_eq!(pushed["changed"]["files"], 1);
    b.write("y.json", b"{}");
    // sync: the pull, the push and the collection in one object.
    let synced = one_document(&b.run(&["sync", "--json"]));
    assert_eq!(synced["pull"]["downloaded"], 1, "{synced}");
    assert_eq!(synced["push"]["uploaded"], 1, "{synced}");
    assert!(synced.get("gc").is_some(), "{synced}");
    let pulled = one_document(&a.run(&["pull", "--json"]));
    assert_eq!(pulled["changed"]["files"], 1, "{pulled}");
    for args in [
        &["status", "--json"][..],
        &["conflict", "--json"],
        &["conflict", "list", "--json"],
        &["devices", "--json"],
        &["gc", "--dry-run", "--json"],
        &["gc", "--json"],
        &["login", "--status", "--json"],
        &["rekey", "--json"],
    ] {
        let doc = one_document(&a.run(args));
        assert!(doc.is_object() || doc.is_array(), "{args:?}: {doc}");
    }
}

#[test]
fn status_json_has_the_same_keys_on_a_folder_home_and_a_mount_home() {
    let vault = TempVault::new();
    let folder = TempHome::joined("laptop", &vault);
    let mounted = TempHome::joined("desktop", &vault);
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        k.sort();
        k
    };
    let of_folder = one_document(&folder.run(&["status", "--json"]));
    assert_eq!(of_folder["mode"], "folder");
    let m = mounted.mount_with(&["--cache-size", "32MiB"], &[]);
    let running = one_document(&mounted.run(&["status", "--json"]));
    assert_eq!(running["mode"], "mount");
    assert_eq!(running["mounted"], true);
    assert_eq!(keys(&running), keys(&of_folder));
    // Human units in, human units out.
    assert_eq!(running["mount"]["cache_limit"], 32 << 20);
    let text = mounted.ok(&["status"]);
    assert!(text.contains("of 32 MiB"), "{text}");
    drop(m);
    let unmounted = one_document(&mounted.run(&["status", "--json"]));
    assert_eq!(unmounted["mounted"], false);
    assert_eq!(keys(&unmounted), keys(&of_folder));
    assert_eq!(unmounted["device_id"], running["device_id"]);
    assert!(
        unmounted["known_devices"].as_array().is_some(),
        "{unmounted}"
    );
}

#[test]
fn verbosity_and_log_filters() {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"{}");
    let quiet = a.run(&["push"]);
    assert!(stderr(&quiet).is_empty(), "{}", stderr(&quiet));
    a.write("y.json", b"{}");
    let loud = a.run(&["-v", "push"]);
    assert!(loud.status.success());
    let err = stderr(&loud);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("INFO")).collect();
    assert!(!lines.is_empty(), "-v logged nothing: {err}");
    // Each line starts with when it happened (RFC 3339, UTC).
    for line in &lines {
        let stamp = line.split_whitespace().next().unwrap_or_default();
        assert!(
            stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.contains('T'),
            "no timestamp: {line}"
        );
    }
    // RUST_LOG is read as GHOSTIE_LOG is.
    a.write("z.json", b"{}");
    let out = a
        .cmd()
        .arg("push")
        .env("RUST_LOG", "ghostie_fs=debug")
        .output()
        .unwrap();
    assert!(stderr(&out).contains("DEBUG"), "{}", stderr(&out));
    let out = a
        .cmd()
        .arg("status")
        .env("GHOSTIE_LOG", "ghostie_fs=debug")
        .output()
        .unwrap();
    assert!(stderr(&out).contains("DEBUG"), "{}", stderr(&out));
    // --quiet: nothing but errors.
    a.write("w.json", b"{}");
    let out = a.run(&["--quiet", "push"]);
    assert!(stdout(&out).is_empty() && stderr(&out).is_empty());
}

#[test]
fn the_mount_log_is_rotated_and_carries_timestamps() {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    // A small cap and a fast poll (two debug lines a poll) fill a file in a second.
    const CAP: u64 = 1024;
    let m = a.mount_with(
        &["-vv", "--poll", "0.05"],
        &[("GHOSTIE_LOG_FILE_CAP", &CAP.to_string())],
    );
    let log = a.home().join("sync/mount.log");
    let numbered = |n: usize| a.home().join(format!("sync/mount.log.{n}"));
    fs::write(m.path("x.json"), b"{}").unwrap();
    assert!(
        eventually(60, || numbered(3).exists()),
        "the log was rotated fewer than three times"
    );
    // Rotations go on past the number of files kept.
    let third = fs::read_to_string(numbered(3)).unwrap();
    assert!(eventually(60, || fs::read_to_string(numbered(3))
        .is_ok_and(|t| t != third)));
    assert!(m.drained(60));
    drop(m);
    assert!(numbered(1).exists(), "the log was never rotated");
    assert!(numbered(3).exists(), "fewer rotations than the test needs");
    assert!(!numbered(4).exists(), "more than three old logs kept");
    for path in [log.clone(), numbered(1), numbered(2), numbered(3)] {
        let text = fs::read_to_string(&path).unwrap();
        // A file passes the cap by at most the line that crossed it.
        let longest = text.lines().map(|l| l.len() as u64 + 1).max().unwrap_or(0);
        assert!(
            (text.len() as u64) < CAP + longest,
            "{} holds {} bytes",
            path.display(),
            text.len()
        );
        for line in text
            .lines()
            .filter(|l| l.contains("DEBUG") || l.contains("INFO"))
        {
            assert!(
                line.as_bytes().get(4) == Some(&b'-'),
                "no timestamp: {line}"
            );
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
    }
}
