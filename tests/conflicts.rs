//! Must-hold 2 and 3: concurrent edits become `.conflict-<device>` siblings on every
//! device alike, an edit beats a concurrent delete, and each way of resolving reaches
//! the other device.

mod common;

use std::fs;

use common::*;
use filetime::FileTime;

fn set_mtime(h: &TempHome, rel: &str, secs: i64) {
    filetime::set_file_mtime(h.file(rel), FileTime::from_unix_time(secs, 0)).unwrap();
}

/// Two devices that both changed `note.json` since they last synced; B's edit is newer.
fn conflicted() -> (TempVault, TempHome, TempHome) {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("pixel9", &vault);
    a.write("note.json", b"{\"v\":0}");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    a.write("note.json", b"{\"v\":\"laptop\"}");
    set_mtime(&a, "note.json", 1_800_000_000);
    b.write("note.json", b"{\"v\":\"pixel9\"}");
    set_mtime(&b, "note.json", 1_800_000_100);
    a.ok(&["push"]);
    b.ok(&["push"]);
    let out = a.ok(&["pull"]);
    assert!(out.contains("⚠️ 1 conflict found"), "{out}");
    assert!(
        out.contains("Run 'ghostie-fs conflict' to resolve"),
        "{out}"
    );
    b.ok(&["pull"]);
    (vault, a, b)
}

#[test]
fn concurrent_edits_show_the_same_conflict_everywhere() {
    let (_v, a, b) = conflicted();
    assert_eq!(a.tree(), b.tree());
    assert_eq!(a.read("note.json").unwrap(), b"{\"v\":\"pixel9\"}");
    assert_eq!(
        a.read("note.json.conflict-laptop").unwrap(),
        b"{\"v\":\"laptop\"}"
    );
    let list = a.json(&["conflict", "--json"]);
    assert_eq!(list[0]["path"], "note.json");
    let recorded: serde_json::Value =
        serde_json::from_slice(&fs::read(a.home().join("sync/conflicts/current.json")).unwrap())
            .unwrap();
    assert_eq!(recorded["conflicts"], list);
    assert_eq!(list[0]["siblings"][0]["device"], "laptop");
    assert_eq!(a.json(&["status", "--json"])["conflict_count"], 1);
}

#[test]
fn an_edit_concurrent_with_a_delete_survives() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("pixel9", &vault);
    a.write("keep.json", b"original");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    fs::remove_file(a.file("keep.json")).unwrap();
    b.write("keep.json", b"edited on the phone");
    a.ok(&["push"]);
    b.ok(&["push"]);
    a.ok(&["pull"]);
    b.ok(&["pull"]);
    assert_eq!(a.read("keep.json").unwrap(), b"edited on the phone");
    assert_eq!(a.tree(), b.tree());
}

#[test]
fn pull_keeps_an_unpushed_local_edit_as_a_conflict() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("pixel9", &vault);
    a.write("x.json", b"0");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    a.write("x.json", b"remote edit");
    set_mtime(&a, "x.json", 1_800_000_000);
    a.ok(&["push"]);
    b.write("x.json", b"local edit, never pushed");
    set_mtime(&b, "x.json", 1_800_000_050);
    b.ok(&["pull"]);
    assert_eq!(b.read("x.json").unwrap(), b"local edit, never pushed");
    assert_eq!(b.read("x.json.conflict-laptop").unwrap(), b"remote edit");
}

#[test]
fn removing_the_sibling_keeps_the_shown_version() {
    let (_v, a, b) = conflicted();
    fs::remove_file(b.file("note.json.conflict-laptop")).unwrap();
    b.ok(&["push"]);
    a.ok(&["pull"]);
    assert_eq!(a.names(), vec!["note.json"]);
    assert_eq!(a.read("note.json").unwrap(), b"{\"v\":\"pixel9\"}");
    assert_eq!(a.tree(), b.tree());
    assert_eq!(a.json(&["status", "--json"])["conflict_count"], 0);
}

#[test]
fn moving_the_sibling_onto_the_file_keeps_the_sibling() {
    let (_v, a, b) = conflicted();
    fs::rename(b.file("note.json.conflict-laptop"), b.file("note.json")).unwrap();
    b.ok(&["push"]);
    a.ok(&["pull"]);
    assert_eq!(a.names(), vec!["note.json"]);
    assert_eq!(a.read("note.json").unwrap(), b"{\"v\":\"laptop\"}");
    assert_eq!(contents_of(&a.tree()), contents_of(&b.tree()));
}

#[test]
fn conflict_resolve_keep_device_and_keep_all() {
    let (_v, a, b) = conflicted();
    a.ok(&["conflict", "resolve", "note.json", "--keep", "laptop"]);
    assert_eq!(a.names(), vec!["note.json"]);
    assert_eq!(a.read("note.json").unwrap(), b"{\"v\":\"laptop\"}");
    b.ok(&["pull"]);
    assert_eq!(b.names(), vec!["note.json"]);
    assert_eq!(b.read("note.json").unwrap(), b"{\"v\":\"laptop\"}");

    let (_v, a, b) = conflicted();
    let bad = a.run(&["conflict", "resolve", "note.json", "--keep", "toaster"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("toaster"), "{}", stderr(&bad));
    a.ok(&["conflict", "resolve", "note.json", "--keep", "all"]);
    b.ok(&["pull"]);
    for h in [&a, &b] {
        assert_eq!(h.names(), vec!["note.json", "note.laptop.json"]);
        assert_eq!(h.read("note.laptop.json").unwrap(), b"{\"v\":\"laptop\"}");
        assert_eq!(h.read("note.json").unwrap(), b"{\"v\":\"pixel9\"}");
    }
}

#[test]
fn deleting_the_main_file_removes_the_siblings_too() {
    let (_v, a, b) = conflicted();
    fs::remove_file(a.file("note.json")).unwrap();
    a.ok(&["sync"]);
    b.ok(&["pull"]);
    assert!(a.names().is_empty(), "{:?}", a.names());
    assert!(b.names().is_empty(), "{:?}", b.names());
}

#[test]
fn an_edit_on_top_of_an_unapplied_remote_version_is_a_conflict_not_an_overwrite() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("pixel9", &vault);
    a.write("x.json", b"0");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    a.write("x.json", b"laptop edit");
    set_mtime(&a, "x.json", 1_800_000_000);
    a.ok(&["push"]);
    // `devices` learns of the laptop's new version without writing it into the folder.
    b.ok(&["devices"]);
    b.write("x.json", b"phone edit, made without seeing the laptop's");
    set_mtime(&b, "x.json", 1_800_000_050);
    b.ok(&["push"]);
    a.ok(&["pull"]);
    b.ok(&["pull"]);
    for h in [&a, &b] {
        assert_eq!(
            h.read("x.json").unwrap(),
            b"phone edit, made without seeing the laptop's"
        );
        assert_eq!(h.read("x.json.conflict-laptop").unwrap(), b"laptop edit");
    }
}

#[test]
fn keeping_all_twice_never_overwrites_an_earlier_kept_copy() {
    let (_v, a, b) = conflicted();
    a.ok(&["conflict", "resolve", "note.json", "--keep", "all"]);
    b.ok(&["pull"]);
    a.write("note.json", b"{\"v\":\"laptop again\"}");
    set_mtime(&a, "note.json", 1_800_001_000);
    b.write("note.json", b"{\"v\":\"pixel9 again\"}");
    set_mtime(&b, "note.json", 1_800_001_100);
    a.ok(&["push"]);
    b.ok(&["push"]);
    a.ok(&["pull"]);
    a.ok(&["conflict", "resolve", "note.json", "--keep", "all"]);
    b.ok(&["pull"]);
    assert_eq!(b.read("note.laptop.json").unwrap(), b"{\"v\":\"laptop\"}");
    assert_eq!(
        b.read("note.laptop-2.json").unwrap(),
        b"{\"v\":\"laptop again\"}"
    );
    assert_eq!(b.read("note.json").unwrap(), b"{\"v\":\"pixel9 again\"}");
    assert_eq!(a.tree(), b.tree());
}

#[test]
fn an_edited_sibling_becomes_a_file_of_its_own() {
    let (_v, a, b) = conflicted();
    b.write(
        "note.json.conflict-laptop",
        b"merged by hand: laptop + pixel9",
    );
    b.ok(&["push"]);
    a.ok(&["pull"]);
    b.ok(&["pull"]);
    for h in [&a, &b] {
        assert_eq!(h.read("note.json").unwrap(), b"{\"v\":\"pixel9\"}");
        assert_eq!(
            h.read("note.json.conflict-laptop").unwrap(),
            b"merged by hand: laptop + pixel9"
        );
        assert_eq!(h.json(&["status", "--json"])["conflict_count"], 0);
    }
    assert_eq!(a.tree(), b.tree());
}
