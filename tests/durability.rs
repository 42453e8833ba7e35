//! "Acknowledged means kept" (issue #11): whatever fails under the home — its upload
//! queue removed or unwritable, its disk full — a close() that returned 0 reaches the
//! other devices, and one that could not keep its bytes says so. Real mounts of the
//! real binary over a vault folder; the disk failures are made for real (a small
//! tmpfs, a read-only bind mount), which needs root, as the mount tests do.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const WAIT: u64 = 60;

/// Writes `data` to a new file and closes it, returning the errno of the first step
/// that failed: a close() that fails is a write that was not kept.
fn write_and_close(path: &Path, data: &[u8]) -> Result<(), i32> {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let mut f = fs::File::create(path).map_err(errno)?;
    f.write_all(data).map_err(errno)?;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` is ours alone (taken from the File above) and closed once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(errno(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A filesystem of its own under a path, unmounted on drop: a small disk to fill, or
/// a read-only view of a folder.
struct MountedOver {
    at: PathBuf,
}

impl MountedOver {
    fn tmpfs(at: &Path, size: &str) -> Self {
        fs::create_dir_all(at).expect("mount point");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                at.to_str().expect("path"),
            ],
        );
        Self { at: at.to_owned() }
    }

    fn read_only(at: &Path) -> Self {
        let p = at.to_str().expect("path");
        run("mount", &["--bind", p, p]);
        run("mount", &["-o", "remount,ro,bind", p]);
        Self { at: at.to_owned() }
    }

    fn release(self) {}
}

impl Drop for MountedOver {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).output();
    }
}

/// What a folder device sees of the vault after a pull.
fn pulled(vault: &TempVault) -> BTreeMap<String, Vec<u8>> {
    let other = TempHome::joined("other", vault);
    other.ok(&["pull"]);
    contents_of(&other.tree())
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Waits until the mount reports an empty queue in a status written after this call:
/// an older status file may predate the last write.
fn settled(m: &Mount) -> bool {
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    eventually(WAIT * 2, || {
        let s = m.status();
        s["updated_ms"].as_u64().is_some_and(|t| t > asked + 600)
            && s["pending_uploads"].as_u64() == Some(0)
            && s["open_dirty"].as_u64() == Some(0)
    })
}

fn last_error(m: &Mount) -> String {
    m.status()["last_error"].as_str().unwrap_or("").to_owned()
}

#[test]
fn a_queue_folder_removed_while_unmounted_is_made_again() {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    let m = a.mount();
    write_and_close(&m.path("one.json"), b"one").expect("write one");
    assert!(settled(&m));
    drop(m);
    // Its name once said "cache": users and cleaners delete such folders.
    fs::remove_dir_all(a.home().join("sync/queue")).expect("remove the queue");

    let m = a.mount();
    write_and_close(&m.path("two.json"), b"two").expect("a write after the removal");
    assert!(settled(&m), "the queue drains: {}", m.log());
    assert_eq!(last_error(&m), "", "{}", m.log());
    drop(m);

    let seen = pulled(&vault);
    assert_eq!(seen.get("one.json").map(Vec::as_slice), Some(&b"one"[..]));
    assert_eq!(seen.get("two.json").map(Vec::as_slice), Some(&b"two"[..]));
    // And this device still has it after a remount.
    let _m = a.mount();
    assert_eq!(fs::read(a.file("two.json")).expect("two.json"), b"two");
}

#[test]
fn a_queue_folder_removed_under_a_running_mount_loses_nothing() {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    let env = vault.stall_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let m = a.mount_with(&[], &env);
    // Nothing reaches the vault: every pack stays in the queue.
    vault.stall();
    let mut written = BTreeMap::new();
    for i in 0..40 {
        let data = memory_json(i, 900);
        write_and_close(&m.path(&format!("before-{i}.json")), &data).expect("write");
        written.insert(format!("before-{i}.json"), data);
    }
    assert!(eventually(WAIT, || vault.stalled_requests() > 0));
    fs::remove_dir_all(a.home().join("sync/queue")).expect("remove the queue");
    for i in 0..40 {
        let data = memory_json(100 + i, 900);
        write_and_close(&m.path(&format!("after-{i}.json")), &data).expect("write");
        written.insert(format!("after-{i}.json"), data);
    }
    vault.unstall();
    assert!(settled(&m), "the queue drains: {}", m.log());
    drop(m);

    let seen = pulled(&vault);
    for (name, data) in &written {
        assert_eq!(
            seen.get(name),
            Some(data),
            "{name} reached the other device"
        );
    }
}

#[test]
fn an_unwritable_queue_fails_the_close_and_status_says_why_until_it_clears() {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    let m = a.mount();
    write_and_close(&m.path("first.json"), b"first").expect("write");
    assert!(settled(&m));

    let queue = a.home().join("sync/queue");
    let ro = MountedOver::read_only(&queue);
    let refused = write_and_close(&m.path("refused.json"), b"not kept yet");
    assert_eq!(
        refused,
        Err(libc::EROFS),
        "a close() whose bytes could not be queued says so"
    );
    // The bytes stay where the next attempt finds them: in the file.
    assert_eq!(
        fs::read(m.path("refused.json")).expect("read"),
        b"not kept yet"
    );
    assert!(
        eventually(WAIT, || last_error(&m).contains("refused.json")),
        "status names the failure: {:?}",
        m.status()
    );
    drop(ro);

    write_and_close(&m.path("later.json"), b"later").expect("writes work again");
    assert!(settled(&m), "{}", m.log());
    assert!(
        eventually(WAIT, || last_error(&m).is_empty()),
        "the error clears once a write is kept: {:?}",
        m.status()
    );
    drop(m);
    let seen = pulled(&vault);
    assert_eq!(
        seen.get("first.json").map(Vec::as_slice),
        Some(&b"first"[..])
    );
    assert_eq!(
        seen.get("later.json").map(Vec::as_slice),
        Some(&b"later"[..])
    );
    assert_eq!(
        seen.get("refused.json").map(Vec::as_slice),
        Some(&b"not kept yet"[..]),
        "what could not be queued then is recorded once the queue is writable"
    );
}

#[test]
fn a_full_disk_answers_enospc_and_every_acknowledged_file_arrives_once_space_is_back() {
    let vault = TempVault::local();
    let a = TempHome::new("laptop");
    let disk = MountedOver::tmpfs(a.home(), "40m");
    let mut args = vec!["setup".to_owned()];
    args.extend(vault.setup_args());
    args.extend(["--device".to_owned(), "laptop".to_owned()]);
    a.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let env = vault.stall_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let m = a.mount_with(&[], &env);
    // Uploads wait, so the queue and the index fill what the ballast leaves.
    vault.stall();
    let ballast = a.home().join("ballast");
    let free = free_bytes(a.home());
    fs::write(&ballast, vec![7u8; free.saturating_sub(3 << 20) as usize]).expect("ballast");

    let mut kept = BTreeMap::new();
    let mut refusals = Vec::new();
    let mut in_a_row = 0;
    for i in 0..20_000 {
        let name = format!("m{i:05}.json");
        let data = memory_json(i, 6000);
        match write_and_close(&m.path(&name), &data) {
            Ok(()) => {
                kept.insert(name, data);
                in_a_row = 0;
            }
            Err(errno) => {
                refusals.push(errno);
                in_a_row += 1;
                if in_a_row == 30 {
                    break;
                }
            }
        }
    }
    assert_eq!(
        in_a_row,
        30,
        "the disk never filled ({} files kept)",
        kept.len()
    );
    assert!(!kept.is_empty());
    assert!(
        refusals.iter().all(|&e| e == libc::ENOSPC),
        "a full disk is ENOSPC, not {refusals:?}"
    );
    // The mount is alive and still serves what it kept.
    let (name, data) = kept.iter().next().expect("one kept");
    assert_eq!(&fs::read(m.path(name)).expect("read back"), data);
    assert!(fs::read_dir(&m.at).is_ok());

    fs::remove_file(&ballast).expect("free the space");
    vault.unstall();
    assert!(settled(&m), "the queue drains: {}", m.log());
    drop(m);
    let seen = pulled(&vault);
    for (name, data) in &kept {
        assert_eq!(seen.get(name), Some(data), "{name} was acknowledged");
    }
    disk.release();
}

#[test]
fn the_index_log_stays_small_while_writes_keep_coming() {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    let m = a.mount();
    let wal = a.home().join("sync/state.db-wal");
    let mut largest = 0;
    for i in 0..3000 {
        write_and_close(&m.path(&format!("w{i:04}.json")), &memory_json(i, 300)).expect("write");
        if i % 50 == 0 {
            largest = largest.max(fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
    }
    largest = largest.max(fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    assert!(
        largest <= 16 << 20,
        "the index's log grew to {} MiB for 3000 closes",
        largest >> 20
    );
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("free bytes")
}

/// The packs waiting in a home's upload queue.
fn queued_packs(home: &TempHome) -> Vec<PathBuf> {
    let mut packs: Vec<PathBuf> = fs::read_dir(home.home().join("sync/queue"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    packs.retain(|p| p.extension().is_some_and(|e| e == "enc"));
    packs.sort();
    packs
}

/// What a power cut leaves of a pack whose tail never reached the disk.
fn cut_short(pack: &Path, keep: u64) {
    let f = fs::OpenOptions::new().write(true).open(pack).expect("pack");
    f.set_len(keep).expect("truncate");
}

/// A byte of a pack changed on the disk: what a torn write can leave.
fn corrupt_middle(pack: &Path) {
    let mut bytes = fs::read(pack).expect("pack");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    fs::write(pack, bytes).expect("write pack");
}

#[test]
fn a_damaged_queued_pack_is_never_uploaded_and_a_push_seals_the_folder_again() {
    push_after_damage(|pack| {
        // The second blob loses its end, as after a power cut.
        let len = fs::metadata(pack).unwrap().len();
        cut_short(pack, len - 100);
    });
}

#[test]
fn a_corrupted_queued_pack_is_never_uploaded_either() {
    push_after_damage(corrupt_middle);
}

fn push_after_damage(damage: impl Fn(&Path)) {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    a.write("first.json", memory_json(1, 4000));
    a.write("second.json", memory_json(2, 4000));
    // Killed once the changes are recorded and before anything is uploaded.
    let out = a
        .cmd()
        .env("GHOSTIE_FAILPOINT", "push-before-upload")
        .arg("push")
        .output()
        .expect("push");
    assert!(!out.status.success(), "the push was killed");
    let packs = queued_packs(&a);
    assert_eq!(packs.len(), 1, "{packs:?}");
    damage(&packs[0]);
    let damaged_id = packs[0].file_stem().unwrap().to_string_lossy().into_owned();

    let out = a.run(&["push"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("lost"), "{}", stderr(&out));
    assert!(
        vault.keys().iter().all(|k| !k.contains(&damaged_id)),
        "the damaged pack was uploaded"
    );
    let seen = pulled(&vault);
    assert_eq!(seen.get("first.json"), Some(&memory_json(1, 4000)));
    assert_eq!(seen.get("second.json"), Some(&memory_json(2, 4000)));
    let b = TempHome::joined("checker", &vault);
    b.ok(&["pull"]);
    b.ok(&["verify"]);
}

#[test]
fn after_a_kill_and_a_power_cut_a_mount_names_what_was_lost_and_uploads_nothing_damaged() {
    let vault = TempVault::local();
    let a = TempHome::joined("laptop", &vault);
    let env = vault.stall_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let m = a.mount_with(&[], &env);
    write_and_close(&m.path("kept.json"), b"published before").expect("write");
    write_and_close(&m.path("edited.json"), b"old").expect("write");
    assert!(settled(&m), "{}", m.log());
    vault.stall();
    write_and_close(&m.path("edited.json"), b"new, never on disk").expect("write");
    write_and_close(&m.path("fresh.json"), b"also never on disk").expect("write");
    assert!(eventually(WAIT, || vault.stalled_requests() > 0));
    let pid = m.pid();
    // SAFETY: a plain kill(2) of the mount process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(eventually(WAIT, || {
        !Path::new(&format!("/proc/{pid}")).exists()
    }));
    force_unmount(&m.at);
    std::mem::forget(m);
    // Only the header reached the disk.
    let packs = queued_packs(&a);
    assert!(!packs.is_empty());
    for p in &packs {
        cut_short(p, 8);
    }
    let ids: Vec<String> = packs
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    vault.unstall();

    let m = a.mount_with(&[], &env);
    assert!(settled(&m), "{}", m.log());
    assert!(
        eventually(WAIT, || {
            let lost = m.status()["lost"].clone();
            lost == serde_json::json!(["edited.json", "fresh.json"])
        }),
        "status names what was lost: {:?}",
        m.status()
    );
    assert!(m
        .log()
        .contains("lost before upload: the change to edited.json"));
    let status = a.ok(&["status"]);
    assert!(
        status.contains("Lost before upload: edited.json, fresh.json"),
        "{status}"
    );
    // The path shows what it showed before the lost change; the new file is gone.
    assert!(eventually(WAIT, || fs::read(m.path("edited.json"))
        .ok()
        .as_deref()
        == Some(&b"old"[..])));
    assert!(!m.path("fresh.json").exists());
    assert!(
        vault
            .keys()
            .iter()
            .all(|k| ids.iter().all(|id| !k.contains(id))),
        "a damaged pack was uploaded"
    );
    drop(m);
    let seen = pulled(&vault);
    assert_eq!(
        seen.get("kept.json").map(Vec::as_slice),
        Some(&b"published before"[..])
    );
    assert_eq!(
        seen.get("edited.json").map(Vec::as_slice),
        Some(&b"old"[..])
    );
    assert!(!seen.contains_key("fresh.json"));
    let b = TempHome::joined("checker", &vault);
    b.ok(&["pull"]);
    b.ok(&["verify"]);
}
