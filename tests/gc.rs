//! Issue 16, must-hold 1 and 2: space comes back, and readers never break.
//!
//! Each device reclaims only its own objects, and a superseded pack goes only once
//! every other device has said it read past it, and a grace period after that.

mod common;

use std::fs;
use std::io::Read;

use common::*;

/// Bytes the vault holds in the backend, over every object.
fn vault_bytes(vault: &TempVault) -> u64 {
    vault.objects().iter().map(|(_, b)| b.len() as u64).sum()
}

fn packs_of(vault: &TempVault) -> usize {
    vault
        .keys()
        .iter()
        .filter(|k| k.contains("/memories/"))
        .count()
}

fn gc(home: &TempHome, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["gc", "--json", "--grace", "0"];
    args.extend_from_slice(extra);
    home.json(&args)
}

fn edit_all(home: &TempHome, files: usize, round: usize) {
    for i in 0..files {
        let mut body = memory_json(i, 2048);
        // Same size, different bytes every round.
        let stamp = format!("r{round:03}");
        body[20..24].copy_from_slice(&stamp.as_bytes()[..4]);
        home.write(&format!("m/{i:04}.json"), body);
    }
}

#[test]
fn two_devices_edit_a_thousand_files_twenty_times_and_gc_brings_the_vault_back_to_one_copy() {
    const FILES: usize = 1000;
    const ROUNDS: usize = 20;
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    edit_all(&a, FILES, 0);
    a.ok(&["push"]);
    b.ok(&["pull"]);
    for round in 1..=ROUNDS {
        let (writer, reader) = if round % 2 == 1 { (&b, &a) } else { (&a, &b) };
        edit_all(writer, FILES, round);
        writer.ok(&["push"]);
        reader.ok(&["pull"]);
    }
    // Both have read everything the other wrote, and said so.
    a.ok(&["pull"]);
    b.ok(&["pull"]);
    let live: u64 = a
        .tree()
        .values()
        .map(|n| match n {
            Node::File { data, .. } => data.len() as u64,
            _ => 0,
        })
        .sum();
    let before = vault_bytes(&vault);
    assert!(
        before > 10 * live,
        "the vault should hold every edit: {before} vs {live}"
    );

    // A dry run says what would go and deletes nothing.
    let dry = gc(&a, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["packs_deleted"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(vault_bytes(&vault), before, "a dry run deleted something");

    let ra = gc(&a, &[]);
    let rb = gc(&b, &[]);
    assert_eq!(
        ra["packs_deleted"], dry["packs_deleted"],
        "the dry run and the run disagree: {dry} vs {ra}"
    );
    for r in [&ra, &rb] {
        assert!(r["packs_deleted"].as_u64().unwrap() >= 9, "{r}");
        assert!(r["segments_deleted"].as_u64().unwrap() >= 9, "{r}");
        assert_eq!(r["packs_waiting"], 0, "{r}");
        // Every listing but a gist's tells sizes (a gist file's is that of its
        // base64, which does not give the object's to the byte).
        if !vault.is_gist() {
            assert_eq!(r["sizes_unknown"], 0, "{r}");
        }
    }
    let after = vault_bytes(&vault);
    let freed = ra["bytes_freed"].as_u64().unwrap() + rb["bytes_freed"].as_u64().unwrap();
    let written =
        ra["snapshot_written"].as_u64().unwrap_or(0) + rb["snapshot_written"].as_u64().unwrap_or(0);
    if !vault.is_gist() {
        assert_eq!(
            before + written - after,
            freed,
            "the report and the vault disagree: {ra} {rb}"
        );
    }
    assert!(
        (after as f64) <= 1.5 * live as f64,
        "after gc the vault holds {after} bytes for {live} bytes of live contents"
    );

    // Every device still reads every file, and so does one that joins now.
    a.ok(&["pull"]);
    b.ok(&["pull"]);
    assert_eq!(a.tree(), b.tree());
    let c = TempHome::joined("tablet", &vault);
    c.ok(&["pull"]);
    assert_eq!(c.tree(), a.tree());
    assert_eq!(
        c.tree()
            .values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count(),
        FILES
    );
    vault_verifies(&a);
}

fn vault_verifies(home: &TempHome) {
    let out = home.run(&["verify"]);
    assert!(
        out.status.success(),
        "verify failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn a_device_that_has_not_read_past_a_pack_keeps_it_and_is_named() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let away = TempHome::joined("phone", &vault);
    a.write("note.json", b"first");
    a.ok(&["push"]);
    away.ok(&["pull"]);
    // The phone goes away; the laptop supersedes what the phone last read.
    a.write("note.json", b"second");
    a.ok(&["push"]);
    let packs = packs_of(&vault);
    // A device this one has never read from holds everything back too.
    let r = gc(&a, &[]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["packs_waiting"], 1, "{r}");
    assert!(
        r["waiting_for"][0]
            .as_str()
            .unwrap()
            .starts_with("a device not yet pulled from"),
        "{r}"
    );
    a.ok(&["pull"]);
    let r = gc(&a, &[]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["packs_waiting"], 1, "{r}");
    assert_eq!(r["waiting_for"], serde_json::json!(["phone"]), "{r}");
    assert_eq!(packs_of(&vault), packs);
    let text = a.ok(&["gc", "--grace", "0"]);
    assert!(text.contains("until phone has read past them"), "{text}");

    // Back a month later: it reads the newer version, says so, and then the old
    // pack goes.
    away.ok(&["pull"]);
    assert_eq!(away.read("note.json").unwrap(), b"second");
    a.ok(&["pull"]);
    let r = gc(&a, &[]);
    assert_eq!(r["packs_deleted"], 1, "{r}");
    assert_eq!(packs_of(&vault), packs - 1);
    away.ok(&["pull"]);
    assert_eq!(away.read("note.json").unwrap(), b"second");
}

#[test]
fn a_superseded_pack_is_kept_for_the_grace_period() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("note.json", b"first");
    a.ok(&["push"]);
    a.write("note.json", b"second");
    a.ok(&["push"]);
    let packs = packs_of(&vault);
    let r = a.json(&["gc", "--json", "--grace", "1h"]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["packs_waiting"], 1, "{r}");
    assert_eq!(r["waiting_for"], serde_json::json!([]), "{r}");
    let text = a.ok(&["gc", "--grace", "1h"]);
    assert!(text.contains("kept for the grace period"), "{text}");
    assert_eq!(packs_of(&vault), packs);
    // Found dead an hour ago, as far as a grace of zero is concerned.
    let r = gc(&a, &[]);
    assert_eq!(r["packs_deleted"], 1, "{r}");
}

#[test]
fn a_reverted_edit_never_reuses_a_reclaimed_blob() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.write("note.json", b"the original words");
    a.write("copy.json", b"another file");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    a.write("note.json", b"an edit, soon undone");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    // The first pack also holds copy.json, still live: nothing goes yet.
    a.write("copy.json", b"another file, edited");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    a.ok(&["pull"]);
    let r = gc(&a, &[]);
    assert!(r["packs_deleted"].as_u64().unwrap() >= 1, "{r}");
    // Undo: the same bytes as the first version, whose blob is gone.
    a.write("note.json", b"the original words");
    let pushed = a.json(&["push", "--json"]);
    assert_eq!(
        pushed["sealed"], 1,
        "the undo must be sealed anew: {pushed}"
    );
    b.ok(&["pull"]);
    assert_eq!(b.read("note.json").unwrap(), b"the original words");
    let c = TempHome::joined("tablet", &vault);
    c.ok(&["pull"]);
    assert_eq!(c.tree(), a.tree());
    vault_verifies(&c);
}

#[test]
fn a_file_renamed_on_another_device_keeps_its_pack_alive() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.write("old-name.json", b"kept through a rename elsewhere");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    fs::rename(b.file("old-name.json"), b.file("new-name.json")).unwrap();
    b.ok(&["push"]);
    a.ok(&["pull"]);
    b.ok(&["pull"]);
    // The laptop's version is gone from the namespace, but the phone's names its blob.
    let r = gc(&a, &[]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["packs_live"], 1, "{r}");
    let c = TempHome::joined("tablet", &vault);
    c.ok(&["pull"]);
    assert_eq!(
        c.read("new-name.json").unwrap(),
        b"kept through a rename elsewhere"
    );
}

#[test]
fn sync_collects_by_itself_and_a_reader_only_device_says_how_far_it_read() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let reader = TempHome::joined("phone", &vault);
    for round in 0..4 {
        a.write("note.json", format!("round {round}"));
        a.cmd()
            .args(["sync"])
            .env("GHOSTIE_GC_GRACE", "0")
            .env("GHOSTIE_GC_EVERY", "0")
            .assert()
            .success();
        // Only pulls: its acknowledgements are what lets the laptop reclaim.
        reader.ok(&["pull"]);
    }
    let out = a
        .cmd()
        .args(["sync"])
        .env("GHOSTIE_GC_GRACE", "0")
        .env("GHOSTIE_GC_EVERY", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Four versions were written; only the newest pack is left.
    assert_eq!(packs_of(&vault), 1, "{:?}", vault.keys());
    assert_eq!(reader.read("note.json").unwrap(), b"round 3");
    // Without the environment, the hourly rhythm holds: nothing more runs now.
    a.write("note.json", "round 4");
    a.ok(&["sync"]);
    reader.ok(&["pull"]);
    a.ok(&["sync"]);
    assert_eq!(packs_of(&vault), 2);
}

#[test]
fn open_files_read_the_newer_version_or_say_stale_never_eio_when_their_pack_is_reclaimed() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("desktop", &vault);
    a.write("edited.json", b"version one");
    a.write("deleted.json", b"soon deleted");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    let m = b.mount_with(
        &["--poll", "1"],
        &[("GHOSTIE_GC_EVERY", "1"), ("GHOSTIE_GC_GRACE", "0")],
    );
    // Opened, not read yet: nothing of them is cached.
    let mut edited = fs::File::open(m.path("edited.json")).unwrap();
    let mut deleted = fs::File::open(m.path("deleted.json")).unwrap();
    a.write("edited.json", b"version two, longer");
    fs::remove_file(a.file("deleted.json")).unwrap();
    a.ok(&["push"]);
    // Looked at without reading, so the old contents are never fetched.
    assert!(
        eventually(30, || fs::metadata(m.path("edited.json"))
            .is_ok_and(|md| md.len() == 19)
            && !m.path("deleted.json").exists()),
        "the mount never showed the changes"
    );
    // The mount says it read past the old versions; then the laptop reclaims them.
    assert!(
        eventually(30, || {
            a.ok(&["pull"]);
            gc(&a, &[])["packs_deleted"].as_u64() == Some(1)
        }),
        "the laptop never reclaimed the superseded pack"
    );
    // The file still there reads as it is now.
    let mut buf = Vec::new();
    edited.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"version two, longer");
    // The one deleted has no newer version: it is gone, not an I/O error.
    let err = deleted.read_to_end(&mut Vec::new()).unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ESTALE)),
        "{err}"
    );
    assert!(!m.log().contains("answered EIO"), "{}", m.log());
}

#[test]
fn a_pack_named_again_after_it_was_found_dead_waits_for_a_new_view() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.write("f.json", b"kept through renames elsewhere");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    // The laptop deletes it: its pack is found dead, and waits for the phone.
    fs::remove_file(a.file("f.json")).unwrap();
    a.ok(&["push"]);
    assert_eq!(gc(&a, &[])["packs_waiting"], 1);
    // The phone, not having read that, renames the file: its version names the
    // laptop's blob again. Then it reads the deletion and says so.
    fs::rename(b.file("f.json"), b.file("g.json")).unwrap();
    b.ok(&["push"]);
    b.ok(&["pull"]);
    // The laptop reads the rename, then deletes that file too.
    a.ok(&["pull"]);
    assert_eq!(a.read("g.json").unwrap(), b"kept through renames elsewhere");
    fs::remove_file(a.file("g.json")).unwrap();
    a.ok(&["push"]);
    // Dead again, but in a newer view the phone has not read: it stays.
    let r = gc(&a, &[]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    // The phone, still behind, renames once more; the blob must still be there.
    fs::rename(b.file("g.json"), b.file("h.json")).unwrap();
    b.ok(&["push"]);
    let c = TempHome::joined("tablet", &vault);
    let out = c.run(&["pull"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.read("h.json").unwrap(), b"kept through renames elsewhere");
}

/// The vault's packs of `device`, by key.
fn packs_of_device(vault: &TempVault, device: &TempHome) -> Vec<String> {
    let id = fs::read_to_string(device.home().join("sync/device_id")).unwrap();
    let mut p = vault.keys_under(&format!("{}/memories/", id.trim()));
    p.sort();
    p
}

/// Writes `{prefix}00.json`… : `count` memories of about 4 KiB, the i-th with
/// content `seed + i`.
fn write_memories(home: &TempHome, prefix: &str, count: usize, seed: usize) {
    for i in 0..count {
        home.write(&format!("{prefix}{i:02}.json"), memory_json(seed + i, 4096));
    }
}

#[test]
fn a_mostly_superseded_pack_is_repacked_and_every_device_reads_what_it_held() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    // One push of 40 memories: one pack of about 160 KiB.
    write_memories(&a, "m", 40, 0);
    a.ok(&["push"]);
    b.ok(&["pull"]);
    // (A provider's listing may lag a write by a moment.)
    assert!(eventually(10, || packs_of_device(&vault, &a).len() == 1));
    let first = packs_of_device(&vault, &a);
    // 36 of them edited: nine tenths of that pack superseded, four files live in it.
    write_memories(&a, "m", 36, 1000);
    a.ok(&["push"]);
    // Not past the threshold in a dry run's eyes either way: it says, moves nothing.
    let dry = gc(&a, &["--dry-run"]);
    assert_eq!(dry["repacked"]["packs"], 1, "{dry}");
    assert!(eventually(10, || packs_of_device(&vault, &a).len() == 2));
    let r = gc(&a, &[]);
    assert_eq!(r["repacked"]["packs"], 1, "{r}");
    assert_eq!(r["repacked"]["blobs"], 4, "{r}");
    assert!(
        r["repacked"]["bytes_superseded"].as_u64().unwrap() > 100_000,
        "{r}"
    );
    // The move is published; the old pack waits for the phone to read it.
    assert!(packs_of_device(&vault, &a).contains(&first[0]));
    assert_eq!(r["packs_waiting"], 1, "{r}");
    // The phone takes the move as a move: nothing changes in its folder, no conflict.
    let before: Vec<_> = (36..40)
        .map(|i| {
            fs::metadata(b.file(&format!("m{i:02}.json")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    let pulled = b.json(&["pull", "--json"]);
    assert_eq!(pulled["conflicts"], 0, "{pulled}");
    for (k, i) in (36..40).enumerate() {
        let path = format!("m{i:02}.json");
        assert_eq!(b.read(&path).unwrap(), memory_json(i, 4096));
        assert_eq!(
            fs::metadata(b.file(&path)).unwrap().modified().unwrap(),
            before[k]
        );
    }
    a.ok(&["pull"]);
    let r = gc(&a, &[]);
    assert_eq!(r["packs_deleted"], 1, "{r}");
    assert!(eventually(10, || !packs_of_device(&vault, &a).contains(&first[0])));
    // The size came from the listing: the space freed is known.
    assert_eq!(r["sizes_unknown"], 0, "{r}");
    assert!(r["bytes_freed"].as_u64().unwrap() > 100_000, "{r}");
    // Every device, and one that joins now, reads every file; verify is clean.
    let c = TempHome::joined("desktop", &vault);
    c.ok(&["pull"]);
    for h in [&a, &b, &c] {
        for i in 0..40 {
            let want = if i < 36 {
                memory_json(1000 + i, 4096)
            } else {
                memory_json(i, 4096)
            };
            assert_eq!(
                h.read(&format!("m{i:02}.json")).unwrap(),
                want,
                "{}",
                h.name
            );
        }
    }
    vault_verifies(&b);
    vault_verifies(&c);
    // A second collection finds nothing more to move.
    let r = gc(&a, &[]);
    assert_eq!(r["repacked"]["packs"], 0, "{r}");
}

/// One collection reads a bounded amount of old packs to repack (each is read whole
/// while uploads and polls wait): the packs beyond it wait for the next collection,
/// the most superseded first.
#[test]
fn a_collection_repacks_at_most_its_limit_and_leaves_the_rest_for_the_next() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    // Two pushes of 40 memories: two packs of about 160 KiB each.
    write_memories(&a, "m", 40, 0);
    a.ok(&["push"]);
    write_memories(&a, "n", 40, 100);
    a.ok(&["push"]);
    b.ok(&["pull"]);
    assert!(eventually(10, || packs_of_device(&vault, &a).len() == 2));
    // 36 of the first edited, 39 of the second: both packs are candidates, the
    // second more superseded (one live file in it, four in the first).
    write_memories(&a, "m", 36, 1000);
    write_memories(&a, "n", 39, 2000);
    a.ok(&["push"]);
    assert!(eventually(10, || packs_of_device(&vault, &a).len() == 3));
    // A limit of nothing moves nothing, and says both wait.
    let none = gc(&a, &["--repack-limit", "0"]);
    assert_eq!(none["repacked"]["packs"], 0, "{none}");
    assert_eq!(none["repacked"]["packs_left"], 2, "{none}");
    // A limit below one pack's size still repacks one: the most superseded.
    let dry = gc(&a, &["--dry-run", "--repack-limit", "1"]);
    assert_eq!(dry["repacked"]["packs"], 1, "{dry}");
    assert_eq!(dry["repacked"]["blobs"], 1, "{dry}");
    assert_eq!(dry["repacked"]["packs_left"], 1, "{dry}");
    // Sizes add up: room for one pack of about 165 KiB, then for both.
    let one = gc(&a, &["--dry-run", "--repack-limit", "200KiB"]);
    assert_eq!(one["repacked"]["packs"], 1, "{one}");
    assert_eq!(one["repacked"]["packs_left"], 1, "{one}");
    let both = gc(&a, &["--dry-run", "--repack-limit", "400KiB"]);
    assert_eq!(both["repacked"]["packs"], 2, "{both}");
    assert_eq!(both["repacked"]["packs_left"], 0, "{both}");
    let first = a.run(&["gc", "--grace", "0", "--repack-limit", "1"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let said = stdout(&first);
    assert!(
        said.contains("Repacked 1 pack") && said.contains("1 more mostly superseded pack is left"),
        "{said}"
    );
    // The next collection, with the default limit, takes the other.
    let next = gc(&a, &[]);
    assert_eq!(next["repacked"]["packs"], 1, "{next}");
    assert_eq!(next["repacked"]["blobs"], 4, "{next}");
    assert_eq!(next["repacked"]["packs_left"], 0, "{next}");
    let again = gc(&a, &[]);
    assert_eq!(again["repacked"]["packs"], 0, "{again}");
    assert_eq!(again["repacked"]["packs_left"], 0, "{again}");
    // Every file reads as last written on the other device, taken as moves.
    let pulled = b.json(&["pull", "--json"]);
    assert_eq!(pulled["conflicts"], 0, "{pulled}");
    for i in 0..40 {
        let m = if i < 36 { 1000 + i } else { i };
        let n = if i < 39 { 2000 + i } else { 100 + i };
        assert_eq!(
            b.read(&format!("m{i:02}.json")).unwrap(),
            memory_json(m, 4096)
        );
        assert_eq!(
            b.read(&format!("n{i:02}.json")).unwrap(),
            memory_json(n, 4096)
        );
    }
    vault_verifies(&b);
}

#[test]
fn an_open_file_whose_pack_was_repacked_and_reclaimed_still_reads() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("desktop", &vault);
    write_memories(&a, "m", 40, 0);
    a.ok(&["push"]);
    b.ok(&["pull"]);
    // The mount says how far it read every second (its own collection finds
    // nothing to take).
    let m = b.mount_with(&["--poll", "1"], &[("GHOSTIE_GC_EVERY", "1")]);
    // Opened, not read: nothing of it is cached in the mount.
    let mut kept = fs::File::open(m.path("m39.json")).unwrap();
    write_memories(&a, "m", 36, 1000);
    a.ok(&["push"]);
    assert_eq!(gc(&a, &[])["repacked"]["packs"], 1);
    // The mount reads the move and says so; then the laptop reclaims the old pack.
    assert!(
        eventually(60, || {
            a.ok(&["pull"]);
            gc(&a, &[])["packs_deleted"].as_u64() == Some(1)
        }),
        "the laptop never reclaimed the repacked pack"
    );
    let mut buf = Vec::new();
    kept.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, memory_json(39, 4096));
    assert_eq!(fs::read(m.path("m38.json")).unwrap(), memory_json(38, 4096));
    assert!(!m.log().contains("answered EIO"), "{}", m.log());
}

#[test]
fn no_pack_is_repacked_while_a_device_runs_a_version_that_would_not_follow_the_move() {
    use ghostie_fs::crypto::envelope::RecordKind;
    use ghostie_fs::crypto::{SubKeys, WrappedKey};
    use ghostie_fs::model::{DeviceId, Seq};
    use ghostie_fs::sync::layout::Layout;
    use ghostie_fs::sync::records::{
        seal_device, seal_log, DeviceRecord, LogRecord, RECORD_FORMAT,
    };

    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    write_memories(&a, "m", 40, 0);
    a.ok(&["push"]);
    write_memories(&a, "m", 36, 1000);
    a.ok(&["push"]);
    // A device on a version before moves existed: its records do not say it
    // follows them (written here as that version would).
    let ring = WrappedKey::from_json(&vault.get("ghostie/global/keyring.json")).unwrap();
    let keys = SubKeys::derive(&ring.unwrap_key(PASSPHRASE.as_bytes()).unwrap());
    let old = DeviceId::random();
    let layout = Layout::new("ghostie");
    let record = DeviceRecord {
        format: RECORD_FORMAT,
        id: old.clone(),
        name: "old-phone".into(),
        created_ms: 1,
    };
    if !vault.is_remote() {
        fs::create_dir_all(vault.path().join(layout.log_prefix(&old))).unwrap();
    }
    vault.put(&layout.device_record(&old), &seal_device(&keys, &record));
    let segment = |seq: u64, reads_moves: bool| LogRecord {
        format: RECORD_FORMAT,
        device: old.clone(),
        seq: Seq(seq),
        created_ms: 1,
        counter: 0,
        versions: Vec::new(),
        seen: Default::default(),
        built_from: Default::default(),
        reads_moves,
    };
    vault.put(
        &layout.segment(&old, Seq(1)),
        &seal_log(&keys, RecordKind::Segment, &segment(1, false)),
    );
    a.ok(&["pull"]);
    let r = gc(&a, &[]);
    assert_eq!(r["repacked"]["packs"], 0, "{r}");
    // Updated, it says so in its next record: the repack goes ahead.
    vault.put(
        &layout.segment(&old, Seq(2)),
        &seal_log(&keys, RecordKind::Segment, &segment(2, true)),
    );
    a.ok(&["pull"]);
    let r = gc(&a, &[]);
    assert_eq!(r["repacked"]["packs"], 1, "{r}");
}
