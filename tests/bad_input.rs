//! Must-hold 6 and 7: wrong passphrases and bad input end in one clear sentence and a
//! non-zero exit, write nothing, and never panic.

mod common;

use std::fs;

use common::*;

fn vault_bytes(vault: &TempVault) -> Vec<(String, Vec<u8>)> {
    vault.objects()
}

/// `setup` on `vault` with `extra` arguments after the backend's.
fn setup_args<'a>(vault: &'a TempVault, extra: &[&'a str]) -> Vec<String> {
    let mut args = vec!["setup".to_owned()];
    args.extend(vault.setup_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn not_set_up() {
    let h = TempHome::new("nobody");
    for cmd in [
        "push", "pull", "sync", "status", "conflict", "devices", "verify", "passwd",
    ] {
        let out = h.run(&[cmd]);
        one_sentence(&out, 4, "Run 'ghostie-fs setup' first");
    }
}

#[test]
fn wrong_passphrase_on_join_unlock_and_passwd() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    let before = vault_bytes(&vault);

    let b = TempHome::new("phone");
    let out = b
        .cmd()
        .env("GHOSTIE_PASSPHRASE", "not the passphrase")
        .args(setup_args(&vault, &["--device", "phone"]))
        .output()
        .unwrap();
    one_sentence(&out, 5, "Wrong passphrase");
    assert!(!b.home().join("sync/config.json").exists());
    assert!(!b.home().join("keys/master.key").exists());

    a.write("y.json", b"y");
    let out = a
        .cmd()
        .env("GHOSTIE_PASSPHRASE", "not the passphrase")
        .arg("push")
        .output()
        .unwrap();
    one_sentence(&out, 5, "Wrong passphrase");
    let out = a
        .cmd()
        .env("GHOSTIE_PASSPHRASE", "not the passphrase")
        .env("GHOSTIE_NEW_PASSPHRASE", "a whole new passphrase")
        .arg("passwd")
        .output()
        .unwrap();
    one_sentence(&out, 5, "Wrong passphrase");
    assert_eq!(vault_bytes(&vault), before, "the vault changed");
}

#[test]
fn passwd_rewraps_and_the_old_passphrase_stops_working_everywhere() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    let objects_before: Vec<String> = vault.keys();
    let ring: serde_json::Value =
        serde_json::from_slice(&vault.get("ghostie/global/keyring.json")).unwrap();
    assert_eq!(ring["kdf"]["name"], "pbkdf2-hmac-sha256");
    assert!(
        ring["kdf"]["iterations"].as_u64().unwrap() >= 600_000,
        "{ring}"
    );

    let new = "a whole new passphrase";
    let out = a
        .cmd()
        .env("GHOSTIE_NEW_PASSPHRASE", new)
        .arg("passwd")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // No data object was touched: the same keys, and only the keyring changed.
    assert_eq!(vault.keys(), objects_before);

    let out = b.run(&["pull"]);
    one_sentence(&out, 5, "Wrong passphrase");
    let out = b
        .cmd()
        .env("GHOSTIE_PASSPHRASE", new)
        .arg("pull")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.read("x.json").unwrap(), b"x");
    // The laptop's own key file was rewrapped too: the old passphrase no longer opens it.
    a.write("y.json", b"y");
    let out = a.run(&["push"]);
    one_sentence(&out, 5, "Wrong passphrase");
    let ring: serde_json::Value =
        serde_json::from_slice(&vault.get("ghostie/global/keyring.json")).unwrap();
    assert!(ring["kdf"]["iterations"].as_u64().unwrap() >= 600_000);
}

#[test]
fn no_passphrase_and_no_terminal() {
    let vault = TempVault::new();
    let h = TempHome::new("x");
    let out = h
        .cmd()
        .env_remove("GHOSTIE_PASSPHRASE")
        .args(setup_args(&vault, &[]))
        .output()
        .unwrap();
    one_sentence(&out, 1, "No passphrase given");
    assert!(!h.home().join("sync").exists());
}

#[test]
fn setup_refuses_bad_places_and_names() {
    let vault = TempVault::local();
    let h = TempHome::new("x");
    let missing = vault.path().join("no/such/folder");
    let out = h.run(&[
        "setup",
        "--backend",
        "local",
        "--path",
        missing.to_str().unwrap(),
    ]);
    one_sentence(&out, 1, "does not exist");
    assert!(
        !h.home().join("sync").exists(),
        "setup wrote a partial home"
    );

    let file = vault.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let out = h.run(&[
        "setup",
        "--backend",
        "local",
        "--path",
        file.to_str().unwrap(),
    ]);
    one_sentence(&out, 1, "is not a folder");

    // Root may write anywhere on a normal filesystem; sysfs refuses even root.
    let out = h.run(&["setup", "--backend", "local", "--path", "/sys/fs"]);
    one_sentence(&out, 1, "is not writable");

    let out = h.run(&[
        "setup",
        "--backend",
        "ftp",
        "--path",
        vault.path().to_str().unwrap(),
    ]);
    // A usage mistake: the usage code, one line naming what is possible.
    one_sentence(&out, 2, "'ftp'");
    assert!(stderr(&out).contains("local, s3, gist, dropbox, gdrive"));
    assert!(!h.home().join("sync").exists());

    let a = TempHome::joined("laptop", &vault);
    let out = TempHome::new("dup").run(&[
        "setup",
        "--backend",
        "local",
        "--path",
        vault.path().to_str().unwrap(),
        "--device",
        "laptop",
    ]);
    one_sentence(&out, 1, "already called 'laptop'");
    let out = a.run(&[
        "setup",
        "--backend",
        "local",
        "--path",
        vault.path().to_str().unwrap(),
    ]);
    one_sentence(&out, 1, "--force");
}

#[test]
fn damaged_or_missing_local_files() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    let home = a.home().to_path_buf();
    let save = |rel: &str| fs::read(home.join(rel)).unwrap();
    let config = save("sync/config.json");
    let key = save("keys/master.key");

    fs::write(home.join("sync/config.json"), b"{ this is not json").unwrap();
    one_sentence(&a.run(&["push"]), 1, "config.json is damaged");
    fs::remove_file(home.join("sync/config.json")).unwrap();
    one_sentence(&a.run(&["push"]), 4, "Run 'ghostie-fs setup' first");
    fs::write(home.join("sync/config.json"), &config).unwrap();

    a.write("y.json", b"y"); // something to push, so the key is needed
    fs::write(home.join("keys/master.key"), b"garbage").unwrap();
    one_sentence(&a.run(&["push"]), 1, "master.key is damaged");
    fs::remove_file(home.join("keys/master.key")).unwrap();
    one_sentence(&a.run(&["push"]), 1, "master.key is missing");
    fs::write(home.join("keys/master.key"), &key).unwrap();

    fs::rename(home.join("sync/state.db"), home.join("state.db.saved")).unwrap();
    one_sentence(&a.run(&["push"]), 1, "state.db is missing");
    assert!(
        !home.join("sync/state.db").exists(),
        "an empty index was created"
    );
    fs::write(home.join("sync/state.db"), vec![0x42u8; 10_000]).unwrap();
    one_sentence(&a.run(&["push"]), 1, "state.db is damaged");
    fs::remove_file(home.join("sync/state.db")).unwrap();
    for ext in ["-wal", "-shm"] {
        let _ = fs::remove_file(home.join(format!("sync/state.db{ext}")));
    }
    fs::rename(home.join("state.db.saved"), home.join("sync/state.db")).unwrap();
    a.ok(&["push"]);

    // A file where the memories folder should be.
    fs::remove_dir_all(a.memories()).unwrap();
    fs::write(a.memories(), b"not a folder").unwrap();
    one_sentence(&a.run(&["push"]), 1, "is a file");
    one_sentence(&a.run(&["pull"]), 1, "is a file");
}

#[test]
fn setup_force_rebuilds_a_device_without_reusing_its_counters() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.write("x.json", b"one");
    a.ok(&["push"]);
    fs::remove_file(a.home().join("sync/state.db")).unwrap();
    let args = setup_args(&vault, &["--force", "--device", "laptop"]);
    a.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // Nothing changed locally, so nothing new is published…
    let r = a.json(&["push", "--json"]);
    assert_eq!(r["uploaded"], 0, "{r}");
    // …and a new edit supersedes the old one everywhere (no reused counter).
    a.write("x.json", b"two");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    assert_eq!(b.names(), vec!["x.json"]);
    assert_eq!(b.read("x.json").unwrap(), b"two");
}

#[test]
fn a_file_where_a_folder_should_be() {
    // In the vault: the prefix folder is a file.
    let vault = TempVault::local();
    fs::write(vault.path().join("ghostie"), b"not a folder").unwrap();
    let h = TempHome::new("x");
    let out = h.run(&[
        "setup",
        "--backend",
        "local",
        "--path",
        vault.path().to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    one_sentence(&out, 1, "ghostie");
    assert!(!h.home().join("sync/config.json").exists());

    // In the home: `sync` is a file.
    let vault = TempVault::local();
    let h = TempHome::new("y");
    fs::write(h.home().join("sync"), b"not a folder").unwrap();
    let out = h.run(&[
        "setup",
        "--backend",
        "local",
        "--path",
        vault.path().to_str().unwrap(),
    ]);
    one_sentence(&out, 1, "is a file, not a folder");
}

#[test]
fn status_json_has_exactly_the_documented_keys() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"x");
    let s = a.json(&["status", "--json"]);
    let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "backend",
            "backend_problem",
            "backend_reachable",
            "busy",
            "cloud_count",
            "conflict_count",
            "credentials",
            "damaged_logs",
            "device_id",
            "device_name",
            "keyring_problem",
            "known_devices",
            "last_sync",
            "local_count",
            "lost",
            "mode",
            "mount",
            "mounted",
            "mountpoint",
            "pending",
            "provider",
            "refused"
        ]
    );
    assert_eq!(s["pending"], 1);
    assert_eq!(s["local_count"], 1);
    assert_eq!(s["cloud_count"], 0);
    a.ok(&["push"]);
    // `status` gives the backend a second to answer: on a loaded machine a slow
    // provider may miss one look, never every one of a few.
    let mut s = serde_json::Value::Null;
    for _ in 0..5 {
        s = a.json(&["status", "--json"]);
        if s["backend_reachable"] == true {
            break;
        }
    }
    assert_eq!(
        (s["pending"].as_u64(), s["cloud_count"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(s["device_name"], "laptop");
    assert!(s["last_sync"].as_str().unwrap().ends_with('Z'));
    assert_eq!(s["backend_reachable"], true, "{s}");
    assert_eq!(s["backend_problem"], serde_json::Value::Null);
    let reachable = (0..5).any(|_| a.ok(&["status"]).contains("Backend reachable: yes"));
    assert!(reachable, "no look found the backend reachable");
}
