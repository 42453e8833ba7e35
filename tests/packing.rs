//! Must-hold 9 and 10, counted at the backend: small files travel together, an
//! unchanged folder costs nothing, and a new device starts from snapshots.

mod common;

use std::fs;
use std::sync::Arc;

use ghostie_fs::backend::{CountingStore, SharedStore};
use ghostie_fs::folder;
use ghostie_fs::sync::NoProgress;

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            n += count_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

/// A vault on the tested backend, behind a request counter.
fn counted_vault() -> (
    tempfile::TempDir,
    common::TempVault,
    Arc<CountingStore<SharedStore>>,
) {
    let work = tempfile::tempdir().unwrap();
    let vault = common::TempVault::new();
    let store = Arc::new(CountingStore::new(vault.store()));
    (work, vault, store)
}

fn device(
    work: &tempfile::TempDir,
    vault: &common::TempVault,
    name: &str,
    store: &Arc<CountingStore<SharedStore>>,
) -> ghostie_fs::sync::Vault {
    common::library_device_at(work.path(), name, store.clone(), &vault.prefix())
}

#[test]
fn ten_thousand_small_files_take_a_few_dozen_requests() {
    let (work, vault, store) = counted_vault();
    let a = device(&work, &vault, "laptop", &store);
    let root = a.home().memories();
    for i in 0..10_000usize {
        let size = 1024 + (i * 7919) % (7 * 1024);
        let body = "memory ".repeat(size / 7);
        fs::create_dir_all(root.join(format!("day{}", i % 50))).unwrap();
        fs::write(root.join(format!("day{}/m{i}.json", i % 50)), body).unwrap();
    }
    // Past one timestamp tick, so the second push can trust every stat.
    std::thread::sleep(std::time::Duration::from_millis(50));

    store.reset();
    let r = folder::push(&a, &NoProgress).unwrap();
    assert_eq!(r.uploaded, 10_050);
    let c = store.counts();
    assert!(c.puts <= 40, "push wrote {} objects", c.puts);

    store.reset();
    let again = folder::push(&a, &NoProgress).unwrap();
    assert_eq!(
        (again.uploaded, again.scan.hashed, again.scan.bytes_read),
        (0, 0, 0)
    );
    let c = store.counts();
    assert_eq!(
        (c.puts, c.gets),
        (0, 0),
        "an unchanged push touched the backend: {c:?}"
    );

    let b = device(&work, &vault, "phone", &store);
    store.reset();
    let pulled = folder::pull(&b, &NoProgress).unwrap();
    let c = store.counts();
    assert!(c.gets <= 40, "a new device's pull read {} objects", c.gets);
    assert!(pulled.damaged.is_empty());
    assert_eq!(count_files(&b.home().memories()), 10_000);
}

#[test]
fn a_new_device_starts_from_the_newest_snapshot() {
    let (work, vault, store) = counted_vault();
    let a = device(&work, &vault, "laptop", &store);
    let root = a.home().memories();
    for i in 0..40 {
        fs::write(
            root.join(format!("f{}.json", i % 5)),
            format!("version {i}"),
        )
        .unwrap();
        folder::push(&a, &NoProgress).unwrap();
    }
    let snaps: Vec<_> = vault
        .keys()
        .into_iter()
        .filter(|k| k.contains("/metadata/snapshot-"))
        .collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(snaps[0].ends_with("snapshot-00000000000000000032.enc"));

    let b = device(&work, &vault, "phone", &store);
    store.reset();
    folder::pull(&b, &NoProgress).unwrap();
    for i in 0..5 {
        let want = format!("version {}", 35 + i);
        let got = fs::read_to_string(b.home().memories().join(format!("f{i}.json"))).unwrap();
        assert_eq!(got, want);
    }
    // The snapshot, the 8 segments after it, device records, keyring, content: far
    // fewer reads than the 40 segments.
    let c = store.counts();
    assert!(c.gets < 20, "{c:?}");
    assert!(b.verify(&NoProgress).unwrap().is_empty());
    // A damaged snapshot is named by verify.
    let mut bytes = vault.get(&snaps[0]);
    bytes[40] ^= 1;
    vault.put(&snaps[0], &bytes);
    let damaged = b.verify(&NoProgress).unwrap();
    assert!(
        damaged.iter().any(|d| d.contains("snapshot")),
        "{damaged:?}"
    );
}
