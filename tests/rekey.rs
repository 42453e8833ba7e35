//! Issue 16, must-holds 3 and 4: `rekey` seals what comes next under a new key while
//! what came before stays readable, and `devices remove` shuts a lost device out:
//! it reads nothing written after, and nobody sees what it writes after.

mod common;

use std::fs;
use std::process::Output;

use common::*;

const KEYRING: &str = "ghostie/global/keyring.json";

fn device_id(h: &TempHome) -> String {
    fs::read_to_string(h.home().join("sync/device_id"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The key epoch a sealed log record names in its header (format 1: epoch 0).
fn record_epoch(bytes: &[u8]) -> u32 {
    assert_eq!(&bytes[..4], b"GHRC");
    match bytes[4] {
        1 => 0,
        2 => u32::from_le_bytes(bytes[6..10].try_into().unwrap()),
        f => panic!("record format {f}"),
    }
}

/// `device`'s newest log segment.
fn newest_segment(vault: &TempVault, device: &TempHome) -> Vec<u8> {
    use ghostie_fs::backend::ObjectStore;
    // A store opened now: a listing cached by an older one could be behind.
    let store = vault.store();
    let prefix = format!("{}/{}/log/", vault.prefix(), device_id(device));
    let mut segs = store.list(&prefix, None).expect("list the log");
    segs.sort();
    store
        .get(segs.last().expect("a segment"))
        .expect("read the segment")
}

fn with_pass(h: &TempHome, pass: &str, args: &[&str]) -> Output {
    h.cmd()
        .env("GHOSTIE_PASSPHRASE", pass)
        .args(args)
        .output()
        .unwrap()
}

fn ok_with(h: &TempHome, pass: &str, args: &[&str]) -> String {
    let out = with_pass(h, pass, args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Every byte under `dir`, files only.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in walkdir(dir) {
        if let Ok(b) = fs::read(&entry) {
            out.extend_from_slice(&b);
        }
    }
    out
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn rekey_seals_what_comes_next_under_a_new_key_and_what_came_before_still_opens() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.write("before.json", b"{\"written\":\"before the rekey\"}");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    assert_eq!(record_epoch(&newest_segment(&vault, &a)), 0);
    let ring_before: serde_json::Value = serde_json::from_slice(&vault.get(KEYRING)).unwrap();
    assert_eq!(ring_before["format"], 1, "{ring_before}");

    // Changes not pushed yet go up first, under the key they were sealed with.
    a.write("pending.json", b"not pushed");
    let report = a.json(&["rekey", "--json"]);
    assert_eq!(report["epoch"], 1, "{report}");
    assert_eq!(report["older_epochs"], serde_json::json!([0]), "{report}");
    let ring: serde_json::Value = serde_json::from_slice(&vault.get(KEYRING)).unwrap();
    assert_eq!(
        (ring["format"].as_u64(), ring["epoch"].as_u64()),
        (Some(3), Some(1))
    );
    assert_ne!(ring["wrapped_key"], ring_before["wrapped_key"]);
    // The history of older keys is sealed: no key in the clear.
    let text = String::from_utf8(vault.get(KEYRING)).unwrap();
    assert!(!text.contains("older_keys"), "{text}");

    // From now on this device seals under epoch 1: its log and its blobs.
    a.write("after.json", b"{\"written\":\"after the rekey\"}");
    a.ok(&["push"]);
    assert_eq!(record_epoch(&newest_segment(&vault, &a)), 1);

    // Until it unlocks again, the phone's status says the key changed. Status
    // gives the backend a second: on a loaded machine a paced fake may answer the
    // listing in time but not the keyring, and that look says nothing of the
    // keyring (tamper.rs meets the same), so a few looks must show it.
    let status = |done: &dyn Fn(&serde_json::Value) -> bool| {
        let mut st = serde_json::Value::Null;
        for _ in 0..10 {
            st = b.json(&["status", "--json"]);
            if st["backend_reachable"] == true && done(&st) {
                break;
            }
        }
        st
    };
    let changed = |st: &serde_json::Value| {
        st["keyring_problem"]
            .as_str()
            .is_some_and(|p| p.contains("changed on another device"))
    };
    let st = status(&changed);
    assert!(changed(&st), "{st}");
    // The phone, same passphrase, takes the new key at its next unlock and reads
    // both; what it writes is sealed under the new key as well.
    b.ok(&["pull"]);
    let st = status(&|_| true);
    assert_eq!(st["backend_reachable"], true, "{st}");
    assert!(st["keyring_problem"].is_null(), "{st}");
    assert_eq!(
        b.read("before.json").unwrap(),
        b"{\"written\":\"before the rekey\"}"
    );
    assert_eq!(
        b.read("after.json").unwrap(),
        b"{\"written\":\"after the rekey\"}"
    );
    b.write("from-phone.json", b"phone after");
    b.ok(&["push"]);
    assert_eq!(record_epoch(&newest_segment(&vault, &b)), 1);
    let local: serde_json::Value =
        serde_json::from_slice(&fs::read(b.home().join("keys/master.key")).unwrap()).unwrap();
    assert_eq!(local["epoch"], 1, "{local}");

    // A device that joins now reads everything, old epoch and new, and verify is clean.
    let c = TempHome::joined("desktop", &vault);
    c.ok(&["pull"]);
    for (name, want) in [
        ("before.json", &b"{\"written\":\"before the rekey\"}"[..]),
        ("after.json", b"{\"written\":\"after the rekey\"}"),
        ("from-phone.json", b"phone after"),
        ("pending.json", b"not pushed"),
    ] {
        assert_eq!(c.read(name).as_deref(), Some(want), "{name}");
    }
    c.ok(&["verify"]);

    // A second rotation keeps both older keys.
    let report = b.json(&["rekey", "--json"]);
    assert_eq!(report["epoch"], 2, "{report}");
    assert_eq!(
        report["older_epochs"],
        serde_json::json!([0, 1]),
        "{report}"
    );
    let d = TempHome::joined("tablet", &vault);
    d.ok(&["pull"]);
    assert_eq!(
        d.read("before.json").unwrap(),
        b"{\"written\":\"before the rekey\"}"
    );
    assert_eq!(d.read("from-phone.json").unwrap(), b"phone after");
    d.ok(&["verify"]);
}

#[test]
fn a_remembered_key_is_given_the_passphrase_once_after_a_rekey_elsewhere() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.write("one.json", b"1");
    a.ok(&["push"]);
    b.ok(&["remember"]);
    let no_pass = |args: &[&str]| {
        b.cmd()
            .env_remove("GHOSTIE_PASSPHRASE")
            .args(args)
            .output()
            .unwrap()
    };
    let out = no_pass(&["pull"]);
    assert!(out.status.success(), "{}", stderr(&out));

    a.ok(&["rekey"]);
    a.write("two.json", b"2");
    a.ok(&["push"]);
    // The remembered key is the old one: the phone says what to do, reads nothing.
    let out = no_pass(&["pull"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("changed on another device"),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.read("two.json"), None);
    // Given the passphrase once, it takes the new key and remembers that one.
    b.ok(&["pull"]);
    assert_eq!(b.read("two.json").unwrap(), b"2");
    a.write("three.json", b"3");
    a.ok(&["push"]);
    let out = no_pass(&["pull"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.read("three.json").unwrap(), b"3");
}

#[test]
fn a_removed_device_reads_nothing_new_and_nobody_sees_its_writes() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let lost = TempHome::joined("phone", &vault);
    let c = TempHome::joined("desktop", &vault);
    a.write("shared.json", b"{\"v\":\"before\"}");
    a.ok(&["push"]);
    lost.ok(&["pull"]);
    c.ok(&["pull"]);
    lost.write("from-phone-before.json", b"written while trusted");
    lost.ok(&["push"]);
    let old_ring = vault.get(KEYRING);

    // Removing needs a new passphrase; a device cannot remove itself, nor one that
    // does not exist.
    let new = "a passphrase the phone never knew";
    let remove = |h: &TempHome, name: &str| {
        h.cmd()
            .env("GHOSTIE_NEW_PASSPHRASE", new)
            .args(["devices", "remove", name])
            .output()
            .unwrap()
    };
    let out = remove(&a, "laptop");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = remove(&a, "nosuch");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
    let out = remove(&a, "phone");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("phone"), "{}", stdout(&out));
    // What the phone wrote while trusted stays.
    assert_eq!(
        a.read("from-phone-before.json").unwrap(),
        b"written while trusted"
    );

    // The old passphrase no longer opens the vault; the new one does.
    let out = with_pass(&c, PASSPHRASE, &["pull"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    ok_with(&c, new, &["pull"]);
    let listed: serde_json::Value =
        serde_json::from_str(&ok_with(&a, new, &["devices", "--json"])).unwrap();
    let phone = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "phone")
        .unwrap();
    assert_eq!(phone["removed"], true, "{listed}");
    let text = ok_with(&c, new, &["devices"]);
    assert!(text.contains("phone (removed)"), "{text}");

    // Written after the removal.
    const SECRET: &[u8] = b"{\"v\":\"the phone must never read this\"}";
    a.write("shared.json", SECRET);
    a.write("after.json", SECRET);
    ok_with(&a, new, &["push"]);

    // The phone keeps running with its old home and old passphrase: the new keyring
    // does not open, and it reads nothing.
    let out = lost.run(&["pull"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let out = lost.run(&["push"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    // Even with the backend serving it the old keyring (a phone in someone else's
    // hands can arrange that for itself), it cannot open what came after, and
    // whatever it publishes now is ignored by everyone.
    let new_ring = vault.get(KEYRING);
    vault.put(KEYRING, &old_ring);
    lost.write("from-phone-after.json", b"written after removal");
    lost.write("shared.json", b"{\"v\":\"phone overwrites\"}");
    lost.ok(&["push"]);
    let _ = lost.run(&["pull"]);
    vault.put(KEYRING, &new_ring);
    assert_ne!(lost.read("after.json").as_deref(), Some(SECRET));
    assert!(!contains(
        &all_bytes(lost.home()),
        b"the phone must never read this"
    ));

    for h in [&a, &c] {
        let out = with_pass(h, new, &["pull"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(h.read("from-phone-after.json"), None);
        assert_eq!(h.read("shared.json").unwrap(), SECRET);
        assert_eq!(h.read("after.json").unwrap(), SECRET);
    }
    // A device that joins now does not see the phone's later writes either.
    let d = TempHome::new("tablet");
    if vault.is_gist() {
        d.set_github_token(Some(GIST_TOKEN));
    }
    d.set_dropbox_env(vault.is_dropbox());
    d.set_gdrive_env(vault.is_gdrive());
    let setup: Vec<String> = vault.setup_command("tablet");
    ok_with(
        &d,
        new,
        &setup.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    ok_with(&d, new, &["pull"]);
    assert_eq!(d.read("from-phone-after.json"), None);
    assert_eq!(d.read("shared.json").unwrap(), SECRET);
    assert_eq!(
        d.read("from-phone-before.json").unwrap(),
        b"written while trusted"
    );
    ok_with(&d, new, &["verify"]);

    // The phone no longer holds reclaiming back: once the desktop and the tablet
    // read past the laptop's superseded pack, it goes, whatever the phone said.
    a.write("shared.json", b"{\"v\":\"third\"}");
    ok_with(&a, new, &["push"]);
    let mut deleted = 0;
    for _ in 0..3 {
        ok_with(&c, new, &["pull"]);
        ok_with(&d, new, &["pull"]);
        ok_with(&a, new, &["pull"]);
        let r: serde_json::Value =
            serde_json::from_str(&ok_with(&a, new, &["gc", "--json", "--grace", "0"])).unwrap();
        assert!(
            !r["waiting_for"].to_string().contains("phone"),
            "the removed phone holds reclaiming back: {r}"
        );
        deleted += r["packs_deleted"].as_u64().unwrap();
        if deleted > 0 {
            break;
        }
    }
    assert!(deleted > 0, "nothing reclaimed");
}

#[test]
fn a_removed_device_cannot_write_under_another_devices_name_with_its_old_key() {
    use ghostie_fs::crypto::envelope::RecordKind;
    use ghostie_fs::crypto::{SubKeys, WrappedKey};
    use ghostie_fs::model::{DeviceId, Entry, Seq, Version, VersionVector};
    use ghostie_fs::sync::layout::Layout;
    use ghostie_fs::sync::records::{seal_log, LogRecord, RECORD_FORMAT};

    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let _lost = TempHome::joined("phone", &vault);
    let c = TempHome::joined("desktop", &vault);
    a.write("x.json", b"{\"keep\":true}");
    a.ok(&["push"]);
    c.ok(&["pull"]);
    // What the phone holds: the old keyring and the passphrase that opens it.
    let old_ring = WrappedKey::from_json(&vault.get(KEYRING)).unwrap();
    let old_keys = SubKeys::derive(&old_ring.unwrap_key(PASSPHRASE.as_bytes()).unwrap());

    let new = "the phone never learns this one";
    let out = a
        .cmd()
        .env("GHOSTIE_NEW_PASSPHRASE", new)
        .args(["devices", "remove", "phone"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    ok_with(&c, new, &["pull"]);
    a.write("y.json", b"after");
    ok_with(&a, new, &["push"]);
    ok_with(&c, new, &["pull"]);

    // The phone writes the laptop's next segment under the old key: x.json deleted.
    let laptop = DeviceId::parse(&device_id(&a)).unwrap();
    let layout = Layout::new(&vault.prefix());
    let next = {
        use ghostie_fs::backend::ObjectStore;
        let store = vault.store();
        let prefix = layout.log_prefix(&laptop);
        let listed = store.list(&prefix, None).unwrap();
        listed
            .iter()
            .filter_map(|k| Layout::seq_of(&prefix, k))
            .max()
            .unwrap()
            .0
            + 1
    };
    let mut vector = VersionVector::default();
    vector.set(&laptop, 1_000_000);
    let forged = LogRecord {
        format: RECORD_FORMAT,
        device: laptop.clone(),
        seq: Seq(next),
        created_ms: 0,
        counter: 1_000_000,
        versions: vec![Version {
            path: "x.json".into(),
            device: laptop.clone(),
            vector,
            mtime_ns: 0,
            entry: Entry::Deleted,
        }],
        seen: Default::default(),
        built_from: Default::default(),
        reads_moves: true,
    };
    let key = layout.segment(&laptop, Seq(next));
    let relative = key
        .split_once("ghostie/")
        .map(|(_, k)| format!("ghostie/{k}"))
        .unwrap();
    vault.put(
        &relative,
        &seal_log(&old_keys, RecordKind::Segment, &forged),
    );

    // The desktop read the laptop's log under the new key already: the older one
    // is refused and named, and x.json stays.
    let out = with_pass(&c, new, &["pull"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("laptop"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("older than epoch"),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.read("x.json").unwrap(), b"{\"keep\":true}");
}

#[test]
fn rekey_rewrite_seals_everything_again_and_then_drops_the_older_keys() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    let t = TempHome::joined("tablet", &vault);
    a.write("from-laptop.json", b"laptop, epoch 0");
    a.ok(&["push"]);
    b.write("from-phone.json", b"phone, epoch 0");
    b.ok(&["push"]);
    t.ok(&["pull"]);
    t.write("from-tablet.json", b"tablet, while trusted");
    fs::remove_file(t.file("from-laptop.json")).unwrap();
    t.write("from-laptop.json", b"tablet edited the laptop's file");
    t.ok(&["push"]);
    a.ok(&["pull"]);
    let new = "after the tablet left";
    let out = a
        .cmd()
        .env("GHOSTIE_NEW_PASSPHRASE", new)
        .args(["devices", "remove", "tablet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    ok_with(&b, new, &["pull"]);

    // The laptop seals its part again and takes over the tablet's files; the
    // phone's are still under the older key, so the older keys stay.
    let r: serde_json::Value =
        serde_json::from_str(&ok_with(&a, new, &["rekey", "--rewrite", "--json"])).unwrap();
    assert_eq!(r["epoch"], 2, "{r}");
    assert_eq!(r["rewrite"]["adopted"], 2, "{r}");
    assert_eq!(
        r["rewrite"]["waiting_for"],
        serde_json::json!(["phone"]),
        "{r}"
    );
    assert_eq!(r["rewrite"]["dropped"], serde_json::json!([]), "{r}");
    // The phone does its part at its next sync; run again, the laptop drops them.
    ok_with(&b, new, &["sync"]);
    ok_with(&a, new, &["pull"]);
    let r: serde_json::Value =
        serde_json::from_str(&ok_with(&a, new, &["rekey", "--rewrite", "--json"])).unwrap();
    assert_eq!(r["epoch"], 2, "no new rotation: {r}");
    assert_eq!(r["rewrite"]["waiting_for"], serde_json::json!([]), "{r}");
    assert_eq!(r["rewrite"]["dropped"], serde_json::json!([0, 1]), "{r}");

    // A device that joins now holds only the current key: it reads every file,
    // the tablet's too, and verify finds everything it needs.
    let c = TempHome::new("desktop");
    if vault.is_gist() {
        c.set_github_token(Some(GIST_TOKEN));
    }
    c.set_dropbox_env(vault.is_dropbox());
    c.set_gdrive_env(vault.is_gdrive());
    let setup: Vec<String> = vault.setup_command("desktop");
    ok_with(
        &c,
        new,
        &setup.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let local: serde_json::Value =
        serde_json::from_slice(&fs::read(c.home().join("keys/master.key")).unwrap()).unwrap();
    assert_eq!(local["epoch"], 2, "{local}");
    ok_with(&c, new, &["pull"]);
    for (name, want) in [
        ("from-laptop.json", &b"tablet edited the laptop's file"[..]),
        ("from-phone.json", b"phone, epoch 0"),
        ("from-tablet.json", b"tablet, while trusted"),
    ] {
        assert_eq!(c.read(name).as_deref(), Some(want), "{name}");
    }
    ok_with(&c, new, &["verify"]);
    for h in [&a, &b] {
        ok_with(h, new, &["pull"]);
        assert_eq!(
            h.read("from-tablet.json").unwrap(),
            b"tablet, while trusted"
        );
        ok_with(h, new, &["verify"]);
    }
}
