//! The Google Drive store itself against a fake Drive: the backends' conformance
//! suite, one holder per name however many writers race to create it, a name
//! held twice read the same everywhere, a resumable upload that survives a cut
//! link, and listings that cost one request when nothing changed.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use ghostie_fs::backend::tests::Sizes;
use ghostie_fs::backend::{BackendError, ObjectStore};

use common::fake_gdrive::{FakeGdrive, Outage};
use common::*;

fn fake() -> FakeGdrive {
    let fake = FakeGdrive::start();
    fake.add_client(
        GDRIVE_CLIENT_ID,
        GDRIVE_CLIENT_SECRET,
        common::fake_gdrive::ClientKind::Desktop,
        false,
    );
    fake.grant_as(GDRIVE_CLIENT_ID, GDRIVE_REFRESH_TOKEN);
    fake
}

#[test]
fn the_store_passes_the_backends_conformance_suite() {
    let fake = fake();
    ghostie_fs::backend::tests::check(&gdrive_store(&fake), Sizes::Told);
    assert_eq!(fake.duplicate_names(), 0);
    // The sizes a new store learns from Drive's listing, not from its own writes.
    assert_eq!(
        gdrive_store(&fake).list_sized("v/a/").unwrap(),
        vec![("v/a/x".to_owned(), Some(8)), ("v/a/z".to_owned(), Some(6))]
    );
}

#[test]
fn a_create_only_write_has_one_winner_however_many_devices_race() {
    let fake = fake();
    // Each round, four devices (stores with views of their own) create the same
    // key at the same moment, as four devices making a vault's keyring would.
    for round in 0..8 {
        let key = format!("v/keyring-{round}.json");
        let stores: Vec<_> = (0..4).map(|_| Arc::new(gdrive_store(&fake))).collect();
        for s in &stores {
            // Each has its view already, as a device that looked first has.
            s.list("v/", None).unwrap();
        }
        let barrier = Arc::new(Barrier::new(stores.len()));
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (s, barrier, key) = (s.clone(), barrier.clone(), key.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    s.put_if_absent(&key, format!("device {i}").as_bytes())
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| i)
            .collect();
        for r in &results {
            assert!(
                matches!(r, Ok(()) | Err(BackendError::AlreadyExists { .. })),
                "{r:?}"
            );
        }
        // Two created at the same millisecond both yield (the caller is told
        // to try again); never two winners.
        assert!(winners.len() <= 1, "round {round}: winners {winners:?}");
        let reader = gdrive_store(&fake);
        match winners.first() {
            Some(w) => {
                assert_eq!(reader.get(&key).unwrap(), format!("device {w}").as_bytes());
                for s in &stores {
                    assert_eq!(s.get(&key).unwrap(), format!("device {w}").as_bytes());
                }
            }
            None => assert!(reader.get(&key).unwrap_err().is_not_found()),
        }
        assert_eq!(fake.duplicate_names(), 0, "round {round}");
    }
}

#[test]
fn a_name_held_twice_reads_the_same_everywhere_and_is_cleared_at_its_next_write() {
    let fake = fake();
    let first = gdrive_store(&fake);
    let late = gdrive_store(&fake);
    // The late store's view predates the first store's file: it makes a second
    // file of the same name, as a retried upload whose answer was lost would.
    late.list("v/", None).unwrap();
    first.put("v/packs/p1", b"the first file").unwrap();
    // Not in the same millisecond: a tie is settled by the file id instead (the
    // store's unit tests show that order).
    std::thread::sleep(Duration::from_millis(5));
    late.put("v/packs/p1", b"the second file").unwrap();
    assert_eq!(fake.duplicate_names(), 1, "the fake kept both files");
    // Every reader, whatever it saw first, reads the file created first once it
    // has looked (the late writer too, which knew only its own file).
    for reader in [gdrive_store(&fake), first, late] {
        reader.list_dirs("v/").unwrap();
        assert_eq!(reader.get("v/packs/p1").unwrap(), b"the first file");
        assert_eq!(reader.list("v/packs/", None).unwrap(), vec!["v/packs/p1"]);
    }
    // The next write of the key goes to that file and removes the other.
    let writer = gdrive_store(&fake);
    writer.put("v/packs/p1", b"written again").unwrap();
    assert_eq!(fake.duplicate_names(), 0);
    assert_eq!(
        gdrive_store(&fake).get("v/packs/p1").unwrap(),
        b"written again"
    );
}

#[test]
fn a_resumable_upload_resumes_after_a_cut_connection_instead_of_starting_over() {
    let fake = fake();
    let store = Arc::new(gdrive_store(&fake));
    let data = patterned(40 * 1024 * 1024, 7);
    // Slow enough that the cut lands in the middle of the upload.
    fake.set_latency(Duration::from_millis(150));
    let upload = {
        let (store, data) = (store.clone(), data.clone());
        std::thread::spawn(move || store.put("v/big", &data))
    };
    let pieces = || fake.count("PUT", "/upload/drive/v3/files");
    assert!(eventually(30, || pieces() >= 2), "the upload never began");
    fake.set_outage(Outage::CutConnections);
    std::thread::sleep(Duration::from_millis(400));
    fake.set_outage(Outage::None);
    upload.join().unwrap().unwrap();
    fake.set_latency(Duration::ZERO);
    let seen = fake.seen();
    let cut = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.status == 0)
        .count();
    let sessions = seen
        .iter()
        .filter(|s| s.method == "POST" && s.query.contains("uploadType=resumable"))
        .count();
    assert!(cut >= 1, "no piece was cut: {seen:?}");
    assert_eq!(sessions, 1, "the upload started over");
    assert_eq!(gdrive_store(&fake).get("v/big").unwrap(), data);
    assert!(
        fake.everything_stored()
            .iter()
            .all(|(name, _)| !name.starts_with("upload_session:")),
        "an unfinished session was left"
    );
}

#[test]
fn a_listing_that_finds_nothing_new_costs_one_request() {
    let fake = fake();
    let writer = gdrive_store(&fake);
    for i in 0..30 {
        writer.put(&format!("v/d{}/k{i}", i % 3), b"x").unwrap();
    }
    let reader = gdrive_store(&fake);
    assert_eq!(reader.list_dirs("v/").unwrap().len(), 3);
    let before = fake.seen().len();
    assert_eq!(reader.list_dirs("v/").unwrap().len(), 3);
    for d in 0..3 {
        assert_eq!(reader.list(&format!("v/d{d}/"), None).unwrap().len(), 10);
    }
    let asked: Vec<_> = fake.seen()[before..].to_vec();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].path, "/drive/v3/changes");
    // A change by another writer is in the next look.
    writer.put("v/d0/new", b"y").unwrap();
    assert!(reader
        .list_dirs("v/")
        .and_then(|_| reader.list("v/d0/", None))
        .unwrap()
        .contains(&"v/d0/new".to_owned()));
    // And a key deleted elsewhere leaves it.
    writer.delete("v/d0/new").unwrap();
    reader.list_dirs("v/").unwrap();
    assert!(!reader
        .list("v/d0/", None)
        .unwrap()
        .contains(&"v/d0/new".to_owned()));
}

#[test]
fn short_and_empty_pages_lose_no_file() {
    let fake = fake();
    let writer = gdrive_store(&fake);
    for i in 0..25 {
        writer.put(&format!("v/k{i:02}"), b"x").unwrap();
    }
    fake.set_short_pages(true);
    let reader = gdrive_store(&fake);
    assert_eq!(reader.list("v/", None).unwrap().len(), 25);
    for i in 25..40 {
        writer.put(&format!("v/k{i:02}"), b"x").unwrap();
    }
    reader.list_dirs("").unwrap();
    assert_eq!(reader.list("v/", None).unwrap().len(), 40);
}
