//! Issue 16, must-hold 2: readers never break while space is reclaimed. Every
//! device collects at every sync while the others write, sync, get killed
//! mid-sync and start again, and a mounted device reads everything the whole time:
//! no read ever fails with EIO or returns bytes nobody wrote, and in the end every
//! device shows the same files.

mod common;

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const FILES: usize = 40;
const ROUNDS: usize = 24;
/// Collections on every sync, with no grace: the harshest setting.
const GC_NOW: [(&str, &str); 2] = [("GHOSTIE_GC_EVERY", "0"), ("GHOSTIE_GC_GRACE", "0")];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What a device writes: its name, the round, the file, padded to a few KiB, so a
/// wrong byte or a mix of two versions shows.
fn body(device: &str, round: usize, file: usize) -> Vec<u8> {
    let head = format!("{device}:{round}:{file}:");
    let mut out = head.clone().into_bytes();
    while out.len() < 3000 {
        out.extend_from_slice(head.as_bytes());
    }
    out
}

/// Whether `data` is something some device wrote at `file`.
fn well_formed(data: &[u8], file: usize) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, ':');
    let (Some(device), Some(round), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    at == file.to_string()
        && round
            .parse()
            .is_ok_and(|round: usize| body(device, round, file) == data)
}

fn sync_with_gc(h: &TempHome) {
    let mut c = h.cmd();
    c.arg("sync");
    for (k, v) in GC_NOW {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{} sync failed: {}{}",
        h.home().display(),
        stdout(&out),
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// A sync killed part-way, as a phone's battery or a closed laptop would.
fn killed_sync(h: &TempHome, after: Duration) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ghostie-fs"))
        .arg("--home")
        .arg(h.home())
        .arg("sync")
        .env("GHOSTIE_PASSPHRASE", PASSPHRASE)
        .envs_isolated(h)
        .envs(GC_NOW)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn gc_on_every_device_while_others_read_write_and_restart_never_breaks_a_reader() {
    let vault = TempVault::new();
    let names = ["laptop", "desktop", "phone"];
    let devices: Vec<TempHome> = names.iter().map(|n| TempHome::joined(n, &vault)).collect();
    for i in 0..FILES {
        devices[0].write(&format!("f{i:02}.json"), body("laptop", 0, i));
    }
    sync_with_gc(&devices[0]);
    for d in &devices[1..] {
        sync_with_gc(d);
    }
    let reader_home = TempHome::joined("tablet", &vault);
    reader_home.ok(&["pull"]);
    let mount = reader_home.mount_with(
        &["--poll", "1"],
        &[("GHOSTIE_GC_EVERY", "1"), ("GHOSTIE_GC_GRACE", "0")],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let settling = Arc::new(AtomicBool::new(false));
    let settled = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
        let settling = settling.clone();
        let settled = settled.clone();
        let at = mount.at.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for i in 0..FILES {
                    match fs::read(at.join(format!("f{i:02}.json"))) {
                        Ok(data) if well_formed(&data, i) => {
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(data) => lock(&failures).push(format!(
                            "f{i:02}.json read {} bytes nobody wrote: {:?}",
                            data.len(),
                            String::from_utf8_lossy(&data[..data.len().min(40)])
                        )),
                        Err(e) => lock(&failures).push(format!("f{i:02}.json: {e}")),
                    }
                }
                // Its own writes go through the mount too, until the others settle.
                if settling.load(Ordering::SeqCst) {
                    settled.store(true, Ordering::SeqCst);
                } else {
                    let _ = fs::write(at.join("tablet-notes.json"), b"the tablet writes as well");
                }
            }
        })
    };

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64);
    let started = Instant::now();
    for round in 1..=ROUNDS {
        let who = rng.below(devices.len());
        let d = &devices[who];
        for _ in 0..1 + rng.below(FILES / 2) {
            let i = rng.below(FILES);
            d.write(&format!("f{i:02}.json"), body(names[who], round, i));
        }
        match rng.below(5) {
            0 => killed_sync(d, Duration::from_millis(50 + rng.below(400) as u64)),
            1 => {
                d.ok(&["gc", "--grace", "0"]);
                sync_with_gc(d);
            }
            _ => sync_with_gc(d),
        }
        // Someone else catches up now and then, collecting as it goes.
        let other = &devices[rng.below(devices.len())];
        sync_with_gc(other);
    }
    // Everyone settles: two rounds of syncs, so every device has read every other's
    // last word, then a collection everywhere.
    settling.store(true, Ordering::SeqCst);
    assert!(
        eventually(60, || settled.load(Ordering::SeqCst)),
        "the reader never stopped writing"
    );
    assert!(mount.drained(60), "the mount never drained");
    for _ in 0..2 {
        for d in &devices {
            sync_with_gc(d);
        }
    }
    assert!(mount.drained(60), "the mount never drained");
    for d in &devices {
        sync_with_gc(d);
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let failures = lock(&failures).clone();
    assert!(
        failures.is_empty(),
        "{} failed reads of {} (seed printed above), first: {:?}",
        failures.len(),
        reads.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
    assert!(
        reads.load(Ordering::Relaxed) > FILES,
        "the reader hardly read"
    );
    assert!(!mount.log().contains("answered EIO"), "{}", mount.log());

    // Every device shows the same files with the same bytes, and the mount does
    // too. (Not the same times: a version whose bytes equal what a folder already
    // holds leaves its file alone, so its time stays the older one; see the note.)
    let first = contents_of(&devices[0].tree());
    for (d, name) in devices[1..].iter().zip(&names[1..]) {
        let other = contents_of(&d.tree());
        let differ: Vec<String> = first
            .keys()
            .chain(other.keys())
            .filter(|p| first.get(*p) != other.get(*p))
            .map(|p| {
                let head = |t: &std::collections::BTreeMap<String, Option<Vec<u8>>>| match t.get(p)
                {
                    Some(Some(data)) => {
                        format!("{:?}", String::from_utf8_lossy(&data[..data.len().min(24)]))
                    }
                    other => format!("{other:?}"),
                };
                format!("{p}: laptop {} vs {name} {}", head(&first), head(&other))
            })
            .collect();
        assert!(differ.is_empty(), "devices disagree: {differ:#?}");
    }
    assert!(
        eventually(30, || {
            (0..FILES).all(|i| {
                let name = format!("f{i:02}.json");
                fs::read(mount.path(&name)).ok() == devices[0].read(&name)
            })
        }),
        "the mount does not show what the devices show"
    );
    let out = devices[1].run(&["verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // And once everyone has read everything, nothing superseded is left waiting:
    // every device's acknowledgements reached every other.
    for d in &devices {
        assert!(
            eventually(60, || {
                d.ok(&["pull"]);
                let r = d.json(&["gc", "--json", "--grace", "0"]);
                r["packs_waiting"] == 0
            }),
            "superseded packs stay waiting: {}",
            d.json(&["gc", "--json", "--grace", "0", "--dry-run"])
        );
    }
    let packs = vault
        .keys()
        .iter()
        .filter(|k| k.contains("/memories/"))
        .count();
    eprintln!(
        "chaos: {} reads, {packs} packs left, {:?}",
        reads.load(Ordering::Relaxed),
        started.elapsed()
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
