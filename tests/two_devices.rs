//! Must-hold 1: what one device pushes, another pulls byte-identical.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use filetime::FileTime;

#[test]
fn a_push_arrives_byte_identical_with_modes_and_times() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("first.json", b"{\"content\":\"hi\"}\n");
    a.write("sub/deeper/note.json", b"{\"deep\":true}");
    a.write("sub/empty.txt", b"");
    a.write("names/with space.json", b"spaces");
    a.write(
        "names/n\u{e4}me-\u{1f47b}-\u{65e5}\u{672c}.json",
        b"non-ascii",
    );
    fs::create_dir_all(a.file("an/empty/folder")).unwrap();
    let big: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    a.write("big.bin", &big);
    fs::set_permissions(a.file("first.json"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(
        a.file("sub/deeper/note.json"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    filetime::set_file_mtime(
        a.file("sub/empty.txt"),
        FileTime::from_unix_time(1_600_000_000, 0),
    )
    .unwrap();
    std::os::unix::fs::symlink("first.json", a.file("link-to-first")).unwrap();

    let out = a.ok(&["push"]);
    assert!(out.contains("✅ Uploaded"), "{out}");

    let b = TempHome::joined("pixel9", &vault);
    let out = b.ok(&["pull"]);
    assert!(out.contains("✅ Downloaded"), "{out}");
    assert_eq!(a.tree(), b.tree(), "trees differ");
    assert_eq!(b.read("big.bin").unwrap().len(), big.len());
    let m = fs::metadata(b.file("sub/empty.txt")).unwrap();
    assert_eq!(
        FileTime::from_last_modification_time(&m).unix_seconds(),
        1_600_000_000
    );
}

#[test]
fn deletions_and_renames_propagate() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("desktop", &vault);
    for i in 0..5 {
        a.write(&format!("m{i}.json"), memory_json(i, 2000));
    }
    a.write("folder/inner.json", b"inner");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    assert_eq!(a.tree(), b.tree());

    fs::remove_file(a.file("m0.json")).unwrap();
    fs::rename(a.file("m1.json"), a.file("renamed.json")).unwrap();
    fs::rename(a.file("folder"), a.file("moved-folder")).unwrap();
    let pushed = a.json(&["push", "--json"]);
    // A rename reuses the content already in the vault: nothing is sealed again.
    assert_eq!(pushed["sealed"], 0, "{pushed}");
    b.ok(&["pull"]);
    assert_eq!(a.tree(), b.tree());
    assert!(b.read("m0.json").is_none());
    assert!(b.read("m1.json").is_none());
    assert_eq!(b.read("renamed.json").unwrap(), memory_json(1, 2000));
    assert!(!b.file("folder").exists());
    assert_eq!(b.read("moved-folder/inner.json").unwrap(), b"inner");

    // And back the other way.
    b.write("from-b.json", b"b says hi");
    fs::remove_file(b.file("m2.json")).unwrap();
    b.ok(&["sync"]);
    a.ok(&["pull"]);
    assert_eq!(a.tree(), b.tree());
}

#[test]
fn an_unchanged_folder_pushes_nothing_and_reads_nothing() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    for i in 0..300 {
        a.write(
            &format!("d{}/m{i}.json", i % 7),
            memory_json(i, 1024 + i * 20),
        );
    }
    // A file changed within one filesystem timestamp tick of a scan is hashed again
    // next time by design (a change in the same tick could leave its stat unchanged);
    // let the files age past that before the first push.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let first = a.json(&["push", "--json"]);
    assert_eq!(first["uploaded"].as_u64().unwrap(), 300 + 7);
    let again = a.json(&["push", "--json"]);
    assert_eq!(again["uploaded"], 0, "{again}");
    assert_eq!(again["hashed"], 0, "{again}");
    assert_eq!(again["bytes_read"], 0, "{again}");
    // Touching a file makes it hashed, but the same bytes upload nothing.
    filetime::set_file_mtime(
        a.file("d0/m0.json"),
        FileTime::from_unix_time(1_700_000_000, 0),
    )
    .unwrap();
    let touched = a.json(&["push", "--json"]);
    assert_eq!(touched["hashed"], 1, "{touched}");
    assert_eq!(touched["uploaded"], 0, "{touched}");
}

#[test]
fn a_missing_folder_is_refilled_not_taken_for_deletions() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("keep/me.json", b"precious");
    a.write("top.json", b"also precious");
    a.ok(&["push"]);
    let before = a.tree();
    fs::remove_dir_all(a.memories()).unwrap();
    let r = a.json(&["push", "--json"]);
    assert_eq!(
        r["uploaded"], 0,
        "a missing folder was pushed as deletions: {r}"
    );
    a.ok(&["pull"]);
    assert_eq!(contents_of(&a.tree()), contents_of(&before));
    let b = TempHome::joined("phone", &vault);
    b.ok(&["pull"]);
    assert_eq!(b.read("keep/me.json").unwrap(), b"precious");
}

#[test]
fn a_link_pointing_outside_the_folder_is_refused_once_and_never_breaks_later_pulls() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("inside.json", b"x");
    std::os::unix::fs::symlink("../../../../etc/passwd", a.file("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", a.file("absolute")).unwrap();
    std::os::unix::fs::symlink("inside.json", a.file("fine")).unwrap();
    // The sender is told, and still keeps its own links.
    let out = a.run(&["push"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("escape points outside the folder")
            && stderr(&out).contains("absolute points outside the folder"),
        "{}",
        stderr(&out)
    );

    let b = TempHome::joined("phone", &vault);
    let out = b.run(&["pull"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a refusal is not damage: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("not written here: escape"),
        "{}",
        stderr(&out)
    );
    assert!(fs::symlink_metadata(b.file("escape")).is_err());
    assert!(fs::symlink_metadata(b.file("absolute")).is_err());
    assert_eq!(
        fs::read_link(b.file("fine")).unwrap().to_str(),
        Some("inside.json")
    );
    // Refused once: later pulls and syncs pass it by, silently and successfully.
    for cmd in ["pull", "sync", "pull"] {
        let out = b.run(&[cmd]);
        assert_eq!(out.status.code(), Some(0), "{cmd}: {}", stderr(&out));
        assert!(!stderr(&out).contains("escape"), "{cmd}: {}", stderr(&out));
    }
    // status and verify name what was refused, with its path.
    let status = b.ok(&["status"]);
    assert!(
        status.contains("escape: a link pointing outside the folder")
            && status.contains("absolute: a link pointing outside the folder (/etc/passwd)"),
        "{status}"
    );
    let listed = b.json(&["status", "--json"]);
    assert_eq!(
        listed["refused"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let verified = b.run(&["verify"]);
    assert_eq!(verified.status.code(), Some(0), "{}", stderr(&verified));
    assert!(
        stdout(&verified).contains("not written here: absolute"),
        "{}",
        stdout(&verified)
    );

    // The refusing device never reads the missing link as a deletion.
    a.ok(&["pull"]);
    assert_eq!(
        fs::read_link(a.file("absolute")).unwrap().to_str(),
        Some("/etc/passwd")
    );
    // A newer version replaces the refusal.
    fs::remove_file(a.file("absolute")).unwrap();
    a.write("absolute", b"now a file");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    assert_eq!(b.read("absolute").as_deref(), Some(&b"now a file"[..]));
    let listed = b.json(&["status", "--json"]);
    assert_eq!(
        listed["refused"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

#[test]
fn the_device_name_defaults_to_the_host_name_made_safe() {
    let vault = TempVault::new();
    let h = TempHome::new("unnamed");
    let mut args = vec!["setup".to_owned()];
    args.extend(vault.setup_args());
    h.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let want = ghostie_fs::config::filename_safe(host.trim());
    assert_eq!(h.json(&["status", "--json"])["device_name"], want.as_str());
}
