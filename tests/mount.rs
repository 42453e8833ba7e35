//! The mount (issue #4): real FUSE mounts of the real binary, several devices over one
//! vault folder. Waits are bounded and generous; timing goals live in the benchmark.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use common::*;

const WAIT: u64 = 30;

fn meter(path: &Path) -> serde_json::Value {
    let bytes = fs::read(path).unwrap_or_else(|_| b"{\"bytes_out\":0,\"gets\":0}".to_vec());
    serde_json::from_slice(&bytes).expect("meter JSON")
}

#[test]
fn lazy_read_lists_before_fetching_and_reads_only_the_range_needed() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let big = patterned(50 * 1024 * 1024, 7);
    a.write("big.bin", &big);
    for i in 0..20 {
        a.write(&format!("notes/m{i}.json"), memory_json(i, 3000));
    }
    a.ok(&["push"]);
    let source = a.tree();

    let b = TempHome::joined("phone", &vault);
    let meter_file = b.home().join("meter.json");
    let m = b.mount_with(&[], &[("GHOSTIE_METER_FILE", meter_file.to_str().unwrap())]);
    let before = meter(&meter_file)["bytes_out"].as_u64().unwrap_or(0);

    // Sizes and times come from the log: stat every file by name, then list.
    for (rel, node) in &source {
        let meta = fs::symlink_metadata(m.path(rel)).unwrap();
        if let Node::File { data, mtime, .. } = node {
            assert_eq!(meta.len(), data.len() as u64, "{rel}");
            assert_eq!(meta.mtime(), *mtime, "{rel}");
        }
    }
    let after_stat = meter(&meter_file)["bytes_out"].as_u64().unwrap_or(0);
    assert!(
        after_stat - before < 64 * 1024,
        "stat fetched {} bytes of content",
        after_stat - before
    );
    let listed = sh(&m.at, "ls -l notes | wc -l");
    assert_eq!(listed.trim(), "21", "ls -l shows every file");

    // 4 KiB at 40 MiB of a 50 MiB file: one chunk, not the file.
    let start = meter(&meter_file)["bytes_out"].as_u64().unwrap_or(0);
    let f = fs::File::open(m.path("big.bin")).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 40 * 1024 * 1024).unwrap();
    assert_eq!(buf, big[40 * 1024 * 1024..40 * 1024 * 1024 + 4096]);
    let served = meter(&meter_file)["bytes_out"].as_u64().unwrap_or(0) - start;
    assert!(served < 1024 * 1024, "a 4 KiB read fetched {served} bytes");

    // cat fetches and decrypts on demand.
    for i in 0..20 {
        assert_eq!(
            fs::read(m.path(&format!("notes/m{i}.json"))).unwrap(),
            memory_json(i, 3000)
        );
    }
    assert_eq!(fs::read(m.path("big.bin")).unwrap(), big);
}

#[test]
fn listing_fetches_nothing_and_reading_a_folder_fetches_it_in_few_requests() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    for i in 0..300 {
        a.write(&format!("notes/m{i:03}.json"), memory_json(i, 2500));
    }
    a.ok(&["push"]);
    let b = TempHome::joined("phone", &vault);
    let meter_file = b.home().join("meter.json");
    let m = b.mount_with(&[], &[("GHOSTIE_METER_FILE", meter_file.to_str().unwrap())]);
    let before = meter(&meter_file);

    // ls -lR and find read no file: they fetch no content.
    sh(
        &m.at,
        "ls -lR >/dev/null && find . -name '*.json' | wc -l >/dev/null",
    );
    let listed = meter(&meter_file);
    let listed_bytes =
        listed["bytes_out"].as_u64().unwrap_or(0) - before["bytes_out"].as_u64().unwrap_or(0);
    assert!(
        listed_bytes < 64 * 1024,
        "listing fetched {listed_bytes} bytes"
    );

    // cat of the folder: the first read brings its neighbours along, many per request.
    for i in 0..300 {
        assert_eq!(
            fs::read(m.path(&format!("notes/m{i:03}.json"))).unwrap(),
            memory_json(i, 2500)
        );
    }
    let gets =
        meter(&meter_file)["gets"].as_u64().unwrap_or(0) - listed["gets"].as_u64().unwrap_or(0);
    eprintln!("listing fetched {listed_bytes} bytes; reading took {gets} requests");
    assert!(gets < 100, "reading 300 small files took {gets} requests");
}

fn set_mtime(p: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 0);
    filetime::set_file_mtime(p, t).unwrap();
}

#[test]
fn writes_through_the_mount_reach_a_mount_and_a_folder_device() {
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let c = TempHome::joined("desktop", &vault);
    let f = TempHome::joined("phone", &vault);
    let mb = b.mount();
    let mc = c.mount();
    let at = &mb.at;

    fs::write(at.join("a.json"), b"{\"a\":1}").unwrap();
    // append
    fs::write(at.join("log.txt"), b"one\n").unwrap();
    let mut app = fs::OpenOptions::new()
        .append(true)
        .open(at.join("log.txt"))
        .unwrap();
    app.write_all(b"two\n").unwrap();
    drop(app);
    // overwrite in place
    fs::write(at.join("inplace.txt"), b"abcdefgh").unwrap();
    let mut w = fs::OpenOptions::new()
        .write(true)
        .open(at.join("inplace.txt"))
        .unwrap();
    w.seek(SeekFrom::Start(2)).unwrap();
    w.write_all(b"XY").unwrap();
    drop(w);
    // truncate: an open file, and a closed one by path
    fs::write(at.join("t1.txt"), b"0123456789").unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(at.join("t1.txt"))
        .unwrap()
        .set_len(3)
        .unwrap();
    fs::write(at.join("t2.txt"), b"0123456789").unwrap();
    sh(at, "truncate -s 4 t2.txt");
    // renames of a file and of a folder
    fs::write(at.join("r1.json"), b"rename me").unwrap();
    fs::rename(at.join("r1.json"), at.join("r2.json")).unwrap();
    fs::create_dir_all(at.join("dir1/deep")).unwrap();
    fs::write(at.join("dir1/deep/x.json"), b"deep").unwrap();
    fs::write(at.join("dir1/y.json"), b"why").unwrap();
    fs::create_dir(at.join("dir2")).unwrap();
    fs::rename(at.join("dir1"), at.join("dir2/inner")).unwrap();
    // unlink, mkdir, rmdir
    fs::write(at.join("gone.json"), b"bye").unwrap();
    fs::remove_file(at.join("gone.json")).unwrap();
    fs::create_dir(at.join("newdir")).unwrap();
    fs::create_dir(at.join("emptydir")).unwrap();
    fs::remove_dir(at.join("emptydir")).unwrap();
    // chmod, utimens, symlink
    fs::write(at.join("private.json"), b"secret-ish").unwrap();
    fs::set_permissions(at.join("private.json"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(at.join("old.json"), b"from the past").unwrap();
    set_mtime(&at.join("old.json"), 1_600_000_000);
    std::os::unix::fs::symlink("a.json", at.join("link")).unwrap();
    // fsync
    let mut s = fs::File::create(at.join("synced.json")).unwrap();
    s.write_all(b"durable").unwrap();
    s.sync_all().unwrap();
    drop(s);
    // mmap writes
    fs::write(at.join("mapped.bin"), vec![b'.'; 8192]).unwrap();
    sh(
        at,
        "python3 -c \"import mmap\nwith open('mapped.bin','r+b') as f:\n m=mmap.mmap(f.fileno(),0)\n m[100:105]=b'HELLO'\n m.flush()\n m.close()\"",
    );

    let want = tree_of(at);
    assert_eq!(fs::read(at.join("log.txt")).unwrap(), b"one\ntwo\n");
    assert_eq!(fs::read(at.join("inplace.txt")).unwrap(), b"abXYefgh");
    assert_eq!(fs::read(at.join("t1.txt")).unwrap(), b"012");
    assert_eq!(fs::read(at.join("t2.txt")).unwrap(), b"0123");
    assert_eq!(
        &fs::read(at.join("mapped.bin")).unwrap()[100..105],
        b"HELLO"
    );
    assert!(!at.join("dir1").exists() && !at.join("r1.json").exists());
    assert!(!at.join("gone.json").exists() && !at.join("emptydir").exists());
    assert_eq!(
        fs::metadata(at.join("old.json")).unwrap().mtime(),
        1_600_000_000
    );

    // A second mount sees exactly this tree, modes and times included.
    assert!(
        eventually(WAIT, || tree_of(&mc.at) == want),
        "the second mount did not converge:\n{:#?}\nvs\n{:#?}",
        tree_of(&mc.at).keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    // A folder-sync device of the same vault pulls the same files.
    assert!(mb.drained(WAIT));
    f.ok(&["pull"]);
    assert_eq!(contents_of(&f.tree()), contents_of(&want));
    assert_eq!(
        fs::metadata(f.file("private.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // And what the folder device writes reaches both mounts.
    f.write("from-phone.json", b"{\"phone\":true}");
    f.ok(&["push"]);
    for m in [&mb, &mc] {
        assert!(eventually(WAIT, || fs::read(m.path("from-phone.json"))
            .ok()
            == Some(b"{\"phone\":true}".to_vec())));
    }
}

#[test]
fn kill_9_loses_nothing_acknowledged_and_shows_nothing_half_written() {
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let f = TempHome::joined("phone", &vault);
    let m = b.mount();
    fs::write(m.path("keep.json"), b"keep").unwrap();
    fs::write(m.path("doomed.json"), b"doomed").unwrap();
    fs::write(m.path("moveme.json"), b"moving").unwrap();
    assert!(m.drained(WAIT));

    // The backend goes away, so everything below stays queued.
    vault.go_offline();
    fs::create_dir(m.path("queued")).unwrap();
    for i in 0..50 {
        fs::write(m.path(&format!("queued/q{i}.json")), memory_json(i, 2000)).unwrap();
    }
    let mut synced = fs::File::create(m.path("synced.json")).unwrap();
    synced.write_all(b"fsynced").unwrap();
    synced.sync_all().unwrap();
    fs::remove_file(m.path("doomed.json")).unwrap();
    fs::rename(m.path("moveme.json"), m.path("moved.json")).unwrap();
    fs::create_dir(m.path("made")).unwrap();
    // Written but never closed: must never reach another device. A process of its
    // own holds it open, since a fork in this test process (another test starting
    // a command) would close a copy of the descriptor, which is a close().
    let mut half = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sys, time\nfd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)\n\
             os.write(fd, b'{\"half\":')\nprint('open', flush=True)\ntime.sleep(600)",
        )
        .arg(m.path("half.json"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(half.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "open");
    assert!(eventually(WAIT, || m.status()["pending_uploads"]
        .as_u64()
        .unwrap()
        > 0));

    let pid = m.pid();
    // SAFETY: signalling a child process of this test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(eventually(WAIT, || unsafe { libc::kill(pid as i32, 0) } != 0));
    let _ = half.kill();
    let _ = half.wait();
    force_unmount(&m.at);
    std::mem::forget(m);
    vault.come_back();

    let m = b.mount();
    assert!(m.drained(WAIT), "the queue did not drain after the restart");
    f.ok(&["pull"]);
    let got = f.tree();
    for i in 0..50 {
        assert_eq!(
            f.read(&format!("queued/q{i}.json")),
            Some(memory_json(i, 2000)),
            "q{i}"
        );
    }
    assert_eq!(f.read("synced.json"), Some(b"fsynced".to_vec()));
    assert_eq!(f.read("keep.json"), Some(b"keep".to_vec()));
    assert_eq!(f.read("moved.json"), Some(b"moving".to_vec()));
    assert!(!got.contains_key("doomed.json"));
    assert!(!got.contains_key("moveme.json"));
    assert!(matches!(got.get("made"), Some(Node::Dir { .. })));
    assert!(
        !got.contains_key("half.json"),
        "a file never closed reached another device"
    );
    // The remount shows the same.
    assert_eq!(contents_of(&tree_of(&m.at)), contents_of(&got));
}

/// Two mounts write the same path while the vault is away: neither saw the other.
fn make_conflict(vault: &TempVault, mb: &Mount, mc: &Mount, rel: &str) {
    vault.go_offline();
    fs::write(mb.path(rel), b"from laptop").unwrap();
    fs::write(mc.path(rel), b"from desktop").unwrap();
    vault.come_back();
}

fn siblings(at: &Path, rel: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(at)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{rel}.conflict-")))
        .collect();
    v.sort();
    v
}

#[test]
fn conflicts_show_as_siblings_and_rm_or_mv_resolves_them_everywhere() {
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let c = TempHome::joined("desktop", &vault);
    let mb = b.mount();
    let mc = c.mount();

    make_conflict(&vault, &mb, &mc, "x.json");
    for m in [&mb, &mc] {
        assert!(
            eventually(WAIT, || siblings(&m.at, "x.json").len() == 1),
            "no sibling in {}",
            m.at.display()
        );
    }
    let sib = siblings(&mb.at, "x.json").remove(0);
    assert_eq!(siblings(&mc.at, "x.json"), vec![sib.clone()]);
    let shown = fs::read(mb.path("x.json")).unwrap();
    let other = fs::read(mb.path(&sib)).unwrap();
    assert_ne!(shown, other);
    assert!(sib == "x.json.conflict-laptop" || sib == "x.json.conflict-desktop");

    // rm of the sibling keeps what is shown, on both.
    fs::remove_file(mb.path(&sib)).unwrap();
    assert!(eventually(WAIT, || siblings(&mc.at, "x.json").is_empty()));
    assert_eq!(fs::read(mc.path("x.json")).unwrap(), shown);

    // mv of the sibling onto the path keeps the sibling's version.
    make_conflict(&vault, &mb, &mc, "y.json");
    assert!(eventually(WAIT, || siblings(&mc.at, "y.json").len() == 1));
    let sib = siblings(&mc.at, "y.json").remove(0);
    let kept = fs::read(mc.path(&sib)).unwrap();
    fs::rename(mc.path(&sib), mc.path("y.json")).unwrap();
    assert!(eventually(WAIT, || siblings(&mb.at, "y.json").is_empty()
        && fs::read(mb.path("y.json")).ok() == Some(kept.clone())));
}

#[test]
fn remote_changes_reach_a_running_mount_without_stale_pages() {
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let f = TempHome::joined("phone", &vault);
    let m = b.mount();
    f.write("n.json", b"version-one");
    f.ok(&["push"]);
    assert!(eventually(WAIT, || fs::read(m.path("n.json")).ok()
        == Some(b"version-one".to_vec())));
    // The kernel now holds its pages; the same size changes content remotely.
    assert_eq!(fs::read(m.path("n.json")).unwrap(), b"version-one");
    f.write("n.json", b"version-two");
    f.ok(&["push"]);
    assert!(
        eventually(WAIT, || fs::read(m.path("n.json")).ok()
            == Some(b"version-two".to_vec())),
        "stale content after a remote change"
    );
    f.write("sub/new.json", b"new");
    f.ok(&["push"]);
    assert!(eventually(WAIT, || m.path("sub/new.json").exists()));
    fs::remove_file(f.file("n.json")).unwrap();
    f.ok(&["push"]);
    assert!(eventually(WAIT, || !m.path("n.json").exists()));
    assert!(!sh(&m.at, "ls").contains("n.json"));
}

fn getfattr(path: &Path) -> String {
    let out = std::process::Command::new("getfattr")
        .arg("-d")
        .arg(path)
        .output()
        .expect("getfattr (package attr)");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn read_only_xattrs_describe_each_file() {
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let c = TempHome::joined("desktop", &vault);
    let mb = b.mount();
    let mc = c.mount();
    fs::write(mb.path("x.json"), b"{}").unwrap();
    assert!(eventually(WAIT, || mc.path("x.json").exists()));
    let shown = getfattr(&mc.path("x.json"));
    for name in [
        "user.ghostie.version",
        "user.ghostie.device",
        "user.ghostie.sha256",
        "user.ghostie.conflict",
    ] {
        assert!(shown.contains(name), "{name} missing from:\n{shown}");
    }
    assert!(shown.contains("user.ghostie.device=\"laptop\""), "{shown}");
    // sha256 of "{}"
    assert!(shown.contains("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"));
    assert!(shown.contains("user.ghostie.conflict=\"none\""));
    let set = std::process::Command::new("setfattr")
        .args(["-n", "user.ghostie.device", "-v", "evil"])
        .arg(mc.path("x.json"))
        .output()
        .unwrap();
    assert!(!set.status.success(), "xattrs must be read-only");
    make_conflict(&vault, &mb, &mc, "x.json");
    assert!(eventually(WAIT, || siblings(&mb.at, "x.json").len() == 1));
    let sib = siblings(&mb.at, "x.json").remove(0);
    assert!(getfattr(&mb.path(&sib)).contains("user.ghostie.conflict=\"sibling of x.json\""));
    assert!(getfattr(&mb.path("x.json")).contains("in conflict with"));
}

#[test]
fn offline_reads_what_is_cached_queues_writes_and_drains_when_back() {
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let f = TempHome::joined("phone", &vault);
    f.write("small.json", b"{\"cached\":true}");
    f.write("large.bin", patterned(2 * 1024 * 1024, 3));
    f.ok(&["push"]);
    let m = b.mount();
    assert_eq!(
        fs::read(m.path("small.json")).unwrap(),
        b"{\"cached\":true}"
    );

    vault.go_offline();
    assert_eq!(
        fs::read(m.path("small.json")).unwrap(),
        b"{\"cached\":true}"
    );
    fs::write(m.path("offline.json"), b"written offline").unwrap();
    let started = std::time::Instant::now();
    let err = fs::read(m.path("large.bin")).expect_err("a read that needs the backend");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(eventually(WAIT, || m.status()["backend_reachable"] == false));
    assert!(eventually(WAIT, || m.status()["pending_uploads"]
        .as_u64()
        .unwrap()
        >= 1));
    let status = b.ok(&["status"]);
    assert!(status.contains("Backend reachable: no"), "{status}");
    assert!(
        m.log().contains("large.bin") || m.log().contains("not there"),
        "{}",
        m.log()
    );

    vault.come_back();
    assert!(
        m.drained(WAIT),
        "the queue did not drain when the backend came back"
    );
    assert_eq!(
        fs::read(m.path("large.bin")).unwrap(),
        patterned(2 * 1024 * 1024, 3)
    );
    f.ok(&["pull"]);
    assert_eq!(f.read("offline.json"), Some(b"written offline".to_vec()));
}

fn one_line_error(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success());
    let err = stderr(out);
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{err}");
}

#[test]
fn mounting_imports_a_full_folder_and_refuses_clearly() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("old/one.json", b"1");
    a.write("two.json", b"2");
    let before = contents_of(&a.tree());
    let m = a.mount();
    assert_eq!(contents_of(&tree_of(&m.at)), before, "nothing hidden");
    let again = a.cmd().arg("mount").output().unwrap();
    one_line_error(&again, "already mounted");
    let push = a.run(&["push"]);
    one_line_error(&push, "mounted");
    assert!(m.drained(WAIT));
    drop(m);
    // Unmounted, the home is still a mount home: its empty folder is no deletion.
    assert!(fs::read_dir(a.memories()).unwrap().next().is_none());
    one_line_error(&a.run(&["push"]), "mount home");
    let f = TempHome::joined("phone", &vault);
    f.ok(&["pull"]);
    assert_eq!(
        contents_of(&f.tree()),
        before,
        "imported files reach other devices"
    );
    a.ok(&["unmount", "--to-folder"]);
    assert_eq!(contents_of(&a.tree()), before);
    a.ok(&["push"]);

    let missing = a.home().join("nowhere");
    one_line_error(
        &a.cmd().arg("mount").arg(&missing).output().unwrap(),
        "does not exist",
    );
}

#[test]
fn mounting_without_fuse_says_so_in_one_sentence() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let bin = assert_cmd::cargo::cargo_bin("ghostie-fs");
    // A private mount namespace whose /dev has no fuse device.
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /dev && exec \"$0\" --home \"$1\" mount")
        .arg(&bin)
        .arg(a.home())
        .env("GHOSTIE_PASSPHRASE", PASSPHRASE)
        .output()
        .expect("unshare (util-linux)");
    one_line_error(&out, "FUSE is not available");
}

#[test]
fn real_programs_work_unchanged_on_the_mount() {
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let m = b.mount();
    for i in 0..30 {
        fs::write(m.path(&format!("m{i}.json")), memory_json(i, 1500)).unwrap();
    }
    sh(
        &m.at,
        "python3 -c \"import json,glob\nfor p in glob.glob('*.json'): json.load(open(p))\"",
    );
    sh(
        &m.at,
        "mkdir repo && cd repo && git init -q && git config user.email g@h.st && git config user.name ghost \
         && echo hi > a.txt && git add a.txt && git commit -qm first && echo more >> a.txt \
         && git commit -qam second && test \"$(git log --oneline | wc -l)\" = 2 && git fsck --no-progress 2>&1 | (! grep -i error)",
    );
    sh(
        &m.at,
        "python3 -c \"import sqlite3\nc=sqlite3.connect('db.sqlite')\nc.execute('create table t(x)')\nc.executemany('insert into t values(?)',[(i,) for i in range(1000)])\nc.commit()\nc.close()\nc=sqlite3.connect('db.sqlite')\nassert c.execute('select count(*) from t').fetchone()[0]==1000\"",
    );
    sh(&m.at, "tar cf /tmp/ghostie-tar-$$.tar m1.json m2.json repo && mkdir unpacked && tar xf /tmp/ghostie-tar-$$.tar -C unpacked && cmp m1.json unpacked/m1.json && rm /tmp/ghostie-tar-$$.tar");
    let src = tempfile::tempdir().unwrap();
    for i in 0..20 {
        fs::create_dir_all(src.path().join("tree/sub")).unwrap();
        fs::write(
            src.path().join(format!("tree/sub/f{i}.json")),
            memory_json(i, 900),
        )
        .unwrap();
    }
    sh(
        &m.at,
        &format!(
            "rsync -a {}/tree/ synced/ && diff -r {}/tree synced",
            src.path().display(),
            src.path().display()
        ),
    );
    // 30 memories and the 2 that tar extracted again.
    assert_eq!(
        sh(
            &m.at,
            "grep -rl '\"category\"' --include='m*.json' . | wc -l"
        )
        .trim(),
        "32"
    );
    assert!(sh(&m.at, "find . -name 'f1*.json' | sort").contains("./synced/sub/f1.json"));
    // And it all survives a remount.
    assert!(m.drained(WAIT));
    drop(m);
    let m = b.mount();
    sh(&m.at, "cd repo && git fsck --no-progress 2>&1 | (! grep -i error) && test \"$(git log --oneline | wc -l)\" = 2");
    sh(
        &m.at,
        "python3 -c \"import sqlite3\nassert sqlite3.connect('db.sqlite').execute('select count(*) from t').fetchone()[0]==1000\"",
    );
}

#[test]
fn sigterm_and_fusermount_unmount_cleanly_and_keep_the_queue() {
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let f = TempHome::joined("phone", &vault);
    let at = b.memories();
    let mounted = |p: &Path| {
        fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(1) == p.to_str())
    };

    // SIGTERM: unmounts, publishes what is queued, exits.
    let m = b.mount();
    let pid = m.pid();
    for i in 0..20 {
        fs::write(m.path(&format!("t{i}.json")), memory_json(i, 700)).unwrap();
    }
    // SAFETY: signalling a child process of this test.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(eventually(WAIT, || unsafe { libc::kill(pid as i32, 0) } != 0));
    assert!(!mounted(&at), "SIGTERM left the mount behind");
    assert!(!b.home().join("sync/mount-status.json").exists());
    std::mem::forget(m);
    f.ok(&["pull"]);
    for i in 0..20 {
        assert_eq!(f.read(&format!("t{i}.json")), Some(memory_json(i, 700)));
    }

    // fusermount3 -u: the same, from outside.
    let m = b.mount();
    let pid = m.pid();
    fs::write(m.path("after.json"), b"{}").unwrap();
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&at)
        .output()
        .expect("fusermount3");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(eventually(WAIT, || unsafe { libc::kill(pid as i32, 0) } != 0));
    std::mem::forget(m);
    // Whatever the last upload attempt did not send goes with the next mount.
    let m = b.mount();
    assert!(m.drained(WAIT));
    f.ok(&["pull"]);
    assert_eq!(f.read("after.json"), Some(b"{}".to_vec()));

    // `ghostie-fs unmount`: the same, and the log says each unmount plainly, with
    // no warning that the mount point was already gone (fuser's own, at the end of
    // a session someone else unmounted).
    b.ok(&["unmount"]);
    std::mem::forget(m);
    assert!(!mounted(&at));
    let log = fs::read_to_string(b.home().join("sync/mount.log")).unwrap();
    let said = format!("unmounted {}", at.display());
    assert_eq!(log.matches(&said).count(), 3, "{log}");
    assert!(!log.contains("Failed to umount"), "{log}");
    assert!(!log.contains("still mounted"), "{log}");
}

#[test]
fn o_trunc_cuts_like_a_native_folder_and_never_a_running_program() {
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let m = b.mount();
    let sleep = fs::read("/bin/sleep").expect("/bin/sleep");
    for round in 0..10 {
        let exe = m.path(&format!("sleeper{round}"));
        fs::write(&exe, &sleep).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        // Right away, while the file is still queued: the moment the kernel and the
        // mount disagreed, when O_TRUNC was done inside open.
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
            let err = fs::OpenOptions::new()
                .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
                .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
                .custom_flags(flags & libc::O_TRUNC)
                .open(&exe)
                .expect_err("a running program opened for writing");
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ETXTBSY),
                "round {round}, flags {flags:#x}"
            );
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the running program died"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            fs::read(&exe).unwrap(),
            sleep,
            "the program's bytes changed"
        );
    }

    // O_RDONLY | O_TRUNC truncates on Linux's own filesystems; so here.
    let p = m.path("cut.json");
    fs::write(&p, memory_json(1, 2000)).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_TRUNC)
        .open(&p)
        .unwrap();
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    assert!(m.drained(WAIT));
    drop(m);
    let m = b.mount();
    assert_eq!(fs::read(m.path("cut.json")).unwrap(), b"");
    assert_eq!(fs::read(m.path("sleeper3")).unwrap(), sleep);
}

/// A poll that finds nothing new costs one listing per device of the vault, never a
/// request per file (on S3, each listing is billed).
#[test]
fn an_idle_poll_costs_one_listing_per_device_and_nothing_per_file() {
    let vault = TempVault::new();
    let phone = TempHome::joined("phone", &vault);
    let desktop = TempHome::joined("desktop", &vault);
    for i in 0..60 {
        phone.write(&format!("notes/m{i}.json"), memory_json(i, 500));
    }
    phone.ok(&["push"]);
    desktop.write("d.json", b"d");
    desktop.ok(&["push"]);
    // A device that joined and never published anything.
    let _tablet = TempHome::joined("tablet", &vault);
    let laptop = TempHome::joined("laptop", &vault);
    let meter_file = laptop.home().join("meter.json");
    let m = laptop.mount_with(
        &["--poll", "0.2"],
        &[("GHOSTIE_METER_FILE", meter_file.to_str().unwrap())],
    );
    assert!(eventually(WAIT, || m.status()["polls"].as_u64() >= Some(3)));
    let counts = |key: &str| meter(&meter_file)[key].as_u64().unwrap_or(0);
    let polls_before = m.status()["polls"].as_u64().unwrap();
    let (lists, gets, puts) = (counts("lists"), counts("gets"), counts("puts"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let polls = m.status()["polls"].as_u64().unwrap() - polls_before;
    let (lists, gets, puts) = (
        counts("lists") - lists,
        counts("gets") - gets,
        counts("puts") - puts,
    );
    assert!(polls >= 5, "only {polls} polls in 3 s at --poll 0.2");
    // Four devices: the vault's top, and what each of the three others wrote. One
    // poll may be half done at either end of the window.
    assert!(
        lists <= 4 * (polls + 1),
        "{lists} listings for {polls} polls of a four-device vault"
    );
    assert_eq!((gets, puts), (0, 0), "an idle poll read or wrote objects");
}

#[test]
fn a_stalled_backend_never_holds_up_the_mount() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("desk", &vault);
    let env = vault.stall_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let m = a.mount_with(&["--poll", "0.2"], &env);
    fs::write(m.path("cached.json"), memory_json(0, 1500)).unwrap();
    // Big enough that no backend hands it over with a listing (a gist inlines
    // files under 1 MB in its answer): reading it needs a request of its own.
    let cold_bytes = memory_json(1, 1_200_000);
    b.write("cold.json", &cold_bytes);
    b.ok(&["push"]);
    assert!(eventually(WAIT, || m.path("cold.json").exists()));
    assert_eq!(
        fs::read(m.path("cached.json")).unwrap(),
        memory_json(0, 1500)
    );
    assert!(m.drained(WAIT));

    vault.stall();
    // An upload, a poll and a cold read, each waiting on the backend.
    fs::write(m.path("queued.json"), b"queued while stalled").unwrap();
    let cold = std::thread::spawn({
        let path = m.path("cold.json");
        move || fs::read(path)
    });
    assert!(
        eventually(60, || vault.stalled_requests() >= 3),
        "only {} requests reached the stalled backend",
        vault.stalled_requests()
    );

    // Meanwhile stat, ls -l, cat of a cached file, mkdir and a new file written
    // and closed all complete on the same mount.
    let local = std::thread::spawn({
        let at = m.at.clone();
        move || {
            sh(
                &at,
                "stat cached.json >/dev/null && ls -l >/dev/null && cat cached.json >/dev/null \
                 && mkdir made && echo new > made/new.json && cat made/new.json",
            )
        }
    });
    let done = eventually(60, || local.is_finished());
    let cold_waiting = !cold.is_finished();
    vault.unstall();
    assert!(done, "local work waited for the stalled backend");
    assert_eq!(local.join().unwrap().trim(), "new");
    assert!(
        cold_waiting,
        "the cold read finished while the backend was stalled"
    );
    assert_eq!(cold.join().unwrap().unwrap(), cold_bytes);

    assert!(m.drained(WAIT));
    b.ok(&["pull"]);
    assert_eq!(b.read("made/new.json").unwrap(), b"new\n");
    assert_eq!(b.read("queued.json").unwrap(), b"queued while stalled");
}

#[test]
fn reading_by_name_without_a_listing_brings_in_each_pack_once() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    for i in 0..300 {
        a.write(&format!("notes/m{i:03}.json"), memory_json(i, 2500));
    }
    a.ok(&["push"]);
    let b = TempHome::joined("phone", &vault);
    let meter_file = b.home().join("meter.json");
    let m = b.mount_with(&[], &[("GHOSTIE_METER_FILE", meter_file.to_str().unwrap())]);
    let before = meter(&meter_file);
    // A program that keeps its own index opens files by name, in its own order, and
    // never lists the folder.
    let mut order: Vec<usize> = (0..300).collect();
    order.sort_by_key(|i| (i * 7919) % 300);
    for i in order {
        assert_eq!(
            fs::read(m.path(&format!("notes/m{i:03}.json"))).unwrap(),
            memory_json(i, 2500)
        );
    }
    let gets =
        meter(&meter_file)["gets"].as_u64().unwrap_or(0) - before["gets"].as_u64().unwrap_or(0);
    eprintln!("reading 300 files by name took {gets} requests");
    assert!(
        gets <= 10,
        "reading 300 small files by name took {gets} requests"
    );
}

#[test]
fn fifos_sockets_and_hard_links_work_here_and_travel_as_files() {
    use std::os::unix::fs::FileTypeExt;
    let vault = TempVault::new();
    let b = TempHome::joined("laptop", &vault);
    let f = TempHome::joined("phone", &vault);
    let m = b.mount();
    // A writer and a reader meet through a fifo in the mount.
    let out = sh(
        &m.at,
        "mkfifo pipe && (echo through the pipe > pipe &) && read line < pipe && echo \"$line\"",
    );
    assert_eq!(out.trim(), "through the pipe");
    sh(
        &m.at,
        "python3 -c \"import socket\ns=socket.socket(socket.AF_UNIX)\ns.bind('sock')\"",
    );
    assert!(fs::symlink_metadata(m.path("sock"))
        .unwrap()
        .file_type()
        .is_socket());
    // Hard links: one inode, two names, writes through either.
    fs::write(m.path("a.json"), b"one").unwrap();
    sh(&m.at, "ln a.json b.json");
    let (a, l) = (
        fs::metadata(m.path("a.json")).unwrap(),
        fs::metadata(m.path("b.json")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (l.ino(), 2));
    fs::write(m.path("b.json"), b"two, via b").unwrap();
    assert_eq!(fs::read(m.path("a.json")).unwrap(), b"two, via b");
    // status lists what stays on this device.
    assert!(eventually(WAIT, || b.ok(&["status"]).contains(
        "Local only (fifos and sockets, never uploaded): 2 (pipe, sock)"
    )));
    // Another device gets two files, and no fifo or socket.
    assert!(m.drained(WAIT));
    f.ok(&["pull"]);
    assert_eq!(f.read("a.json"), Some(b"two, via b".to_vec()));
    assert_eq!(f.read("b.json"), Some(b"two, via b".to_vec()));
    assert!(f.read("pipe").is_none());
    assert!(f.read("sock").is_none());
    // All of it survives a remount.
    drop(m);
    let m = b.mount();
    assert!(fs::symlink_metadata(m.path("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::metadata(m.path("b.json")).unwrap().nlink(), 2);
    let out = sh(
        &m.at,
        "(echo again > pipe &) && read line < pipe && echo \"$line\"",
    );
    assert_eq!(out.trim(), "again");
}
