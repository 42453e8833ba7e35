//! Must-hold 5: a flipped byte, a truncated object, two objects swapped, an old log
//! segment copied under a newer number, a log rolled back to an older state: `pull`
//! and `verify` name the damage, write no damaged content, and everything else still
//! syncs.

mod common;

use std::fs;

use common::*;

/// A vault where "laptop" pushed four files, one push each (one pack, one segment
/// each), and "desktop" pushed one more.
fn four_pushes() -> (TempVault, TempHome, TempHome) {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let c = TempHome::joined("desktop", &vault);
    for i in 1..=4 {
        a.write(&format!("file{i}.json"), memory_json(i, 3000 + i * 100));
        a.ok(&["push"]);
    }
    c.write("from-desktop.json", b"desktop content");
    c.ok(&["push"]);
    (vault, a, c)
}

/// The laptop's packs, oldest first (object ids sort by creation time).
fn packs_of(vault: &TempVault, device: &TempHome) -> Vec<String> {
    let id = fs::read_to_string(device.home().join("sync/device_id")).unwrap();
    let mut p = vault.keys_under(&format!("{}/memories/", id.trim()));
    p.sort();
    p
}

fn segment(device: &TempHome, seq: u64) -> String {
    let id = fs::read_to_string(device.home().join("sync/device_id")).unwrap();
    format!("ghostie/{}/log/{seq:020}.enc", id.trim())
}

fn pull_reports_damage(b: &TempHome, needle: &str) {
    let out = b.run(&["pull"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout {} stderr {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(needle),
        "stderr does not name {needle}: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"));
}

fn verify_reports_damage(h: &TempHome, needle: &str) {
    let out = h.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(needle),
        "verify does not name {needle}: {}",
        stderr(&out)
    );
}

#[test]
fn a_flipped_byte_is_named_and_not_written() {
    let (vault, a, _c) = four_pushes();
    let b = TempHome::joined("phone", &vault);
    b.ok(&["pull"]);
    // A new version of file2 whose pack then gets damaged: the old one must stay.
    a.write("file2.json", b"second version of file2");
    a.ok(&["push"]);
    let newest = packs_of(&vault, &a).pop().unwrap();
    let mut bytes = vault.get(&newest);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    vault.put(&newest, &bytes);
    a.write("file5.json", b"fine");
    a.ok(&["push"]);

    pull_reports_damage(&b, "file2.json");
    assert_eq!(
        b.read("file2.json").unwrap(),
        memory_json(2, 3200),
        "old content kept"
    );
    assert_eq!(b.read("file5.json").unwrap(), b"fine");
    assert_eq!(b.read("from-desktop.json").unwrap(), b"desktop content");
    verify_reports_damage(&a, "file2.json");
}

#[test]
fn a_truncated_object_is_named_and_not_written() {
    let (vault, a, _c) = four_pushes();
    let third = packs_of(&vault, &a)[2].clone();
    let bytes = vault.get(&third);
    vault.put(&third, &bytes[..bytes.len() - 100]);
    let b = TempHome::joined("phone", &vault);
    pull_reports_damage(&b, "file3.json");
    assert!(b.read("file3.json").is_none());
    for name in [
        "file1.json",
        "file2.json",
        "file4.json",
        "from-desktop.json",
    ] {
        assert!(b.read(name).is_some(), "{name} missing");
    }
    verify_reports_damage(&a, "file3.json");
}

#[test]
fn swapped_objects_are_named_and_not_written() {
    let (vault, a, _c) = four_pushes();
    let packs = packs_of(&vault, &a);
    let (first, second) = (vault.get(&packs[0]), vault.get(&packs[1]));
    vault.put(&packs[0], &second);
    vault.put(&packs[1], &first);
    let b = TempHome::joined("phone", &vault);
    pull_reports_damage(&b, "file1.json");
    // Reported once, then passed by (exit 3 is for new damage), and listed.
    let again = b.run(&["pull"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let status = b.ok(&["status"]);
    assert!(
        status.contains("file1.json: its content in the vault is damaged")
            && status.contains("file2.json: its content in the vault is damaged"),
        "{status}"
    );
    assert!(b.read("file1.json").is_none());
    assert!(b.read("file2.json").is_none());
    assert_eq!(b.read("file3.json").unwrap(), memory_json(3, 3300));
    assert_eq!(b.read("from-desktop.json").unwrap(), b"desktop content");
    verify_reports_damage(&a, "file1.json");
}

#[test]
fn an_old_segment_under_a_newer_number_is_named() {
    let (vault, a, _c) = four_pushes();
    vault.put(&segment(&a, 3), &vault.get(&segment(&a, 1)));
    let b = TempHome::joined("phone", &vault);
    pull_reports_damage(&b, "segment 3");
    // Known damage is a warning from then on, not a failure of every later pull.
    let again = b.run(&["pull"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("still damaged"),
        "{}",
        stderr(&again)
    );
    // Segments before the damage apply, and other devices' logs are untouched.
    assert_eq!(b.read("file1.json").unwrap(), memory_json(1, 3100));
    assert_eq!(b.read("file2.json").unwrap(), memory_json(2, 3200));
    assert!(b.read("file3.json").is_none());
    assert_eq!(b.read("from-desktop.json").unwrap(), b"desktop content");
    verify_reports_damage(&b, "segment 3");
    // Another device's log copied into this one's prefix fails too.
    let (vault, a, c) = four_pushes();
    vault.put(&segment(&a, 5), &vault.get(&segment(&c, 1)));
    let b = TempHome::joined("phone", &vault);
    pull_reports_damage(&b, "segment 5");
    assert!(b.read("file4.json").is_some());
}

#[test]
fn a_large_file_damaged_in_its_middle_is_named_and_not_written() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    a.write("big.bin", &big);
    a.write("small.json", b"small");
    a.ok(&["push"]);
    // The large file has a pack of its own: the biggest object in the vault.
    let (pack, mut bytes) = packs_of(&vault, &a)
        .into_iter()
        .map(|k| {
            let bytes = vault.get(&k);
            (k, bytes)
        })
        .max_by_key(|(_, b)| b.len())
        .unwrap();
    bytes[12 * 1024 * 1024] ^= 0x40;
    vault.put(&pack, &bytes);
    let b = TempHome::joined("phone", &vault);
    pull_reports_damage(&b, "big.bin");
    assert!(b.read("big.bin").is_none(), "damaged content was written");
    assert_eq!(b.read("small.json").unwrap(), b"small");
    let staging = fs::read_dir(b.home().join("sync/staging")).unwrap().count();
    assert_eq!(staging, 0, "a partial file was left in staging");
    verify_reports_damage(&a, "big.bin");
}

#[test]
fn a_log_the_backend_rolled_back_is_named_and_never_merged() {
    let (vault, a, c) = four_pushes();
    let b = TempHome::joined("phone", &vault);
    b.ok(&["pull"]);
    assert!(b.read("file4.json").is_some());
    // The backend now serves an older state of the laptop's log: the segment
    // the phone applied last is gone from it.
    let newest = vault.get(&segment(&a, 4));
    vault.delete(&segment(&a, 4));
    c.write("later-from-desktop.json", b"still arrives");
    c.ok(&["push"]);
    pull_reports_damage(&b, "rolled back");
    let out = b.run(&["pull"]);
    assert!(stderr(&out).contains("laptop"), "{}", stderr(&out));
    // Nothing is taken back on the phone, and other devices' changes arrive.
    assert_eq!(b.read("file4.json").unwrap(), memory_json(4, 3400));
    assert_eq!(b.read("later-from-desktop.json").unwrap(), b"still arrives");
    verify_reports_damage(&b, "rolled back");
    // The laptop's own verify sees its published log cut short too.
    verify_reports_damage(&a, "rolled back");
    // Once the backend serves the log again, pulls are clean.
    vault.put(&segment(&a, 4), &newest);
    let out = b.run(&["pull"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("damaged"), "{}", stderr(&out));
}

#[test]
fn a_device_behind_follows_a_log_whose_early_segments_a_snapshot_replaced() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.write("early.json", b"{\"n\":0}");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    // The laptop publishes past its first snapshot (every 32 segments)...
    for i in 1..=34 {
        a.write(&format!("f{}.json", i % 5), format!("{{\"n\":{i}}}"));
        a.ok(&["push"]);
    }
    let id = fs::read_to_string(a.home().join("sync/device_id")).unwrap();
    let snapshots = vault.keys_under(&format!("{}/metadata/snapshot-", id.trim()));
    assert!(!snapshots.is_empty(), "no snapshot was written");
    // ...and its segments up to the snapshot go, as a device reclaiming its log
    // removes them, the one the phone applied last included.
    for seq in 1..=32 {
        vault.delete(&segment(&a, seq));
    }
    // The phone, behind, goes on from the snapshot: no damage, every file.
    let out = b.run(&["pull"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert_eq!(contents_of(&b.tree()), contents_of(&a.tree()));
    let out = b.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A device new to the vault starts from the snapshot as before.
    let c = TempHome::joined("desktop", &vault);
    c.ok(&["pull"]);
    assert_eq!(contents_of(&c.tree()), contents_of(&a.tree()));
}

#[test]
fn a_log_whose_newest_segments_the_backend_hides_is_named_with_the_device_that_read_them() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    let c = TempHome::joined("desktop", &vault);
    a.write("one.json", b"1");
    a.ok(&["push"]);
    c.ok(&["pull"]);
    a.write("two.json", b"2");
    a.ok(&["push"]);
    // The phone reads the laptop's second segment, and says so.
    b.ok(&["pull"]);
    // The backend hides it from then on; the desktop never read it.
    let hidden = vault.get(&segment(&a, 2));
    vault.delete(&segment(&a, 2));
    pull_reports_damage(&c, "hides its newest segments");
    // Said again at every pull while it lasts, as damage already reported.
    let out = c.run(&["pull"]);
    assert!(stderr(&out).contains("still damaged"), "{}", stderr(&out));
    assert!(stderr(&out).contains("laptop"), "{}", stderr(&out));
    assert!(stderr(&out).contains("phone"), "{}", stderr(&out));
    assert_eq!(c.read("one.json").unwrap(), b"1");
    assert!(c.read("two.json").is_none());
    let status = c.ok(&["status"]);
    assert!(
        status.contains("hides its newest segments") && status.contains("laptop"),
        "{status}"
    );
    let json = c.json(&["status", "--json"]);
    assert_eq!(json["damaged_logs"].as_array().unwrap().len(), 1, "{json}");
    verify_reports_damage(&c, "hidden");
    // Served whole again: the desktop catches up, with no damage left.
    vault.put(&segment(&a, 2), &hidden);
    let out = c.run(&["pull"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(c.read("two.json").unwrap(), b"2");
    assert!(c.json(&["status", "--json"])["damaged_logs"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn an_older_keyring_served_again_is_refused_and_named() {
    const KEYRING: &str = "ghostie/global/keyring.json";
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    let old_ring = vault.get(KEYRING);
    // The passphrase changes (say, because it leaked), and the phone opens the new
    // keyring once.
    let new = "a whole new passphrase";
    let out = a
        .cmd()
        .env("GHOSTIE_NEW_PASSPHRASE", new)
        .arg("passwd")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let new_ring = vault.get(KEYRING);
    let pull_with = |h: &TempHome, pass: &str| {
        h.cmd()
            .env("GHOSTIE_PASSPHRASE", pass)
            .arg("pull")
            .output()
            .unwrap()
    };
    let out = pull_with(&b, new);
    assert!(out.status.success(), "{}", stderr(&out));

    // The backend serves the old keyring again: neither the old passphrase nor the
    // new one opens the vault through it, on either device.
    vault.put(KEYRING, &old_ring);
    for (h, pass) in [(&b, PASSPHRASE), (&b, new), (&a, PASSPHRASE), (&a, new)] {
        let out = pull_with(h, pass);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("keyring") && stderr(&out).contains("rolled back"),
            "{}",
            stderr(&out)
        );
    }
    // The old passphrase is not taken for the phone's own by `status` either.
    let out = b.run(&["status"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    // `status` says so too (with the phone's own passphrase, the new one).
    let status = |args: &[&str]| {
        let out = b
            .cmd()
            .env("GHOSTIE_PASSPHRASE", new)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // `status` looks with a second's patience: on a busy machine a backend may not
    // answer in time, and the look then says less. A few looks must show it.
    let mut text = String::new();
    for _ in 0..5 {
        text = status(&["status"]);
        if text.contains("rolled back") {
            break;
        }
    }
    assert!(
        text.contains("keyring") && text.contains("rolled back"),
        "{text}"
    );
    let looked = |want_problem: bool| -> serde_json::Value {
        let mut json = serde_json::Value::Null;
        for _ in 0..5 {
            json = serde_json::from_str(&status(&["status", "--json"])).unwrap();
            if json["backend_reachable"] == true
                && json["keyring_problem"].is_string() == want_problem
            {
                break;
            }
        }
        json
    };
    let json = looked(true);
    assert!(json["keyring_problem"].is_string(), "{json}");
    let out = b
        .cmd()
        .env("GHOSTIE_PASSPHRASE", new)
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Nothing of the old generation reached the phone's own key file.
    let local = fs::read_to_string(b.home().join("keys/master.key")).unwrap();
    let ring: serde_json::Value = serde_json::from_slice(&new_ring).unwrap();
    assert!(local.contains(ring["generation"].as_str().unwrap()));

    // Served right again, all is well.
    vault.put(KEYRING, &new_ring);
    let out = pull_with(&b, new);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = looked(false);
    assert_eq!(json["backend_reachable"], true, "{json}");
    assert!(json["keyring_problem"].is_null(), "{json}");
}
