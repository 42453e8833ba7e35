//! A backend that fails in the middle of a push: the push reports it, the vault stays
//! consistent for every other device, and the next push completes the work.

mod common;

use std::fs;
use std::sync::Arc;

use ghostie_fs::backend::{FaultStore, SharedStore};
use ghostie_fs::folder;
use ghostie_fs::sync::NoProgress;

#[test]
fn a_failing_backend_mid_push_loses_nothing_and_the_next_push_completes() {
    let work = tempfile::tempdir().unwrap();
    let vault = common::TempVault::new();
    let faulty = Arc::new(FaultStore::new(vault.store()));
    let plain: SharedStore = vault.store();
    let prefix = vault.prefix();
    let a = common::library_device_at(work.path(), "laptop", faulty.clone(), &prefix);
    let root = a.home().memories();
    for i in 0..300 {
        fs::write(
            root.join(format!("m{i}.json")),
            format!("{i} ").repeat(5000),
        )
        .unwrap();
    }
    // Nothing, then one pack, then the last pack but not the segment that names them.
    for (round, allowed) in [0, 1, 1].into_iter().enumerate() {
        // The first `allowed` writes go through (some packs), then the backend fails.
        faulty.fail_writes_after(allowed);
        assert!(
            folder::push(&a, &NoProgress).is_err(),
            "push with a failing backend succeeded"
        );
        let c = common::library_device_at(
            work.path(),
            &format!("checker{round}"),
            plain.clone(),
            &prefix,
        );
        let pulled = folder::pull(&c, &NoProgress).unwrap();
        assert!(pulled.damaged.is_empty(), "{:?}", pulled.damaged);
        assert!(c.verify(&NoProgress).unwrap().is_empty());
    }
    faulty.heal();
    let r = folder::push(&a, &NoProgress).unwrap();
    assert_eq!(r.uploaded, 300);
    let b = common::library_device_at(work.path(), "phone", plain, &prefix);
    folder::pull(&b, &NoProgress).unwrap();
    for i in 0..300 {
        let got = fs::read_to_string(b.home().memories().join(format!("m{i}.json"))).unwrap();
        assert_eq!(got, format!("{i} ").repeat(5000));
    }
}
