//! A vault made by the first release stays readable: people's memories live in it.

mod common;

use std::path::Path;

use common::*;

#[test]
fn the_first_format_still_opens() {
    // The fixture is a folder as the first release wrote it.
    let vault = TempVault::local();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vault-v1"),
        vault.path(),
    );
    let h = TempHome::new("reader");
    let out = h
        .cmd()
        .env("GHOSTIE_PASSPHRASE", "fixture passphrase v1")
        .args([
            "setup",
            "--backend",
            "local",
            "--path",
            vault.path().to_str().unwrap(),
            "--device",
            "reader",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = h
        .cmd()
        .env("GHOSTIE_PASSPHRASE", "fixture passphrase v1")
        .arg("pull")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        h.names(),
        vec![
            "empty.txt",
            "first.json",
            "notes",
            "notes/note.json",
            "shared.json",
            "shared.json.conflict-laptop"
        ]
    );
    assert_eq!(
        h.read("first.json").unwrap(),
        b"{\"content\":\"first memory\"}\n"
    );
    assert_eq!(
        h.read("notes/note.json").unwrap(),
        b"{\"content\":\"a note\"}\n"
    );
    assert_eq!(h.read("empty.txt").unwrap(), b"");
    assert_eq!(h.read("shared.json").unwrap(), b"{\"v\":\"phone\"}\n");
    assert_eq!(
        h.read("shared.json.conflict-laptop").unwrap(),
        b"{\"v\":\"laptop\"}\n"
    );
    let m = std::fs::metadata(h.file("first.json")).unwrap();
    assert_eq!(
        filetime::FileTime::from_last_modification_time(&m).unix_seconds(),
        1_751_121_000
    );
    let out = h
        .cmd()
        .env("GHOSTIE_PASSPHRASE", "fixture passphrase v1")
        .arg("verify")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // A first-format vault can be rekeyed: what the first release sealed still
    // opens through the key history, on this device and on one that joins after.
    let run = |h: &TempHome, args: &[&str]| {
        let out = h
            .cmd()
            .env("GHOSTIE_PASSPHRASE", "fixture passphrase v1")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    run(&h, &["rekey"]);
    h.write("after.json", b"{\"content\":\"after the rekey\"}");
    run(&h, &["push"]);
    let late = TempHome::new("late");
    run(
        &late,
        &[
            "setup",
            "--backend",
            "local",
            "--path",
            vault.path().to_str().unwrap(),
            "--device",
            "late",
        ],
    );
    run(&late, &["pull"]);
    assert_eq!(
        late.read("first.json").unwrap(),
        b"{\"content\":\"first memory\"}\n"
    );
    assert_eq!(
        late.read("after.json").unwrap(),
        b"{\"content\":\"after the rekey\"}"
    );
    run(&late, &["verify"]);
}

#[test]
fn a_vault_rekeyed_twice_with_a_device_removed_still_opens() {
    const PASS: &str = "fixture passphrase v3";
    let vault = TempVault::local();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vault-v3-rekeyed"),
        vault.path(),
    );
    let h = TempHome::new("reader");
    let run = |args: &[&str]| {
        let out = h
            .cmd()
            .env("GHOSTIE_PASSPHRASE", PASS)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    run(&[
        "setup",
        "--backend",
        "local",
        "--path",
        vault.path().to_str().unwrap(),
        "--device",
        "reader",
    ]);
    run(&["pull"]);
    assert_eq!(
        h.names(),
        vec!["a.json", "b.json", "c.json", "p.json", "t.json"]
    );
    for (name, want) in [
        ("a.json", "sealed at epoch 0"),
        ("b.json", "sealed at epoch 1"),
        ("c.json", "sealed at epoch 2"),
        ("p.json", "phone, edited at epoch 2"),
        ("t.json", "tablet, while trusted"),
    ] {
        assert_eq!(
            h.read(name).unwrap(),
            format!("{{\"content\":\"{want}\"}}\n").into_bytes(),
            "{name}"
        );
    }
    let devices: serde_json::Value = serde_json::from_str(&run(&["devices", "--json"])).unwrap();
    let tablet = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "tablet")
        .unwrap();
    assert_eq!(tablet["removed"], true, "{devices}");
    run(&["verify"]);
    // The passphrase from before the removal opens nothing.
    let out = h
        .cmd()
        .env("GHOSTIE_PASSPHRASE", "fixture passphrase v3 first")
        .arg("pull")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}
