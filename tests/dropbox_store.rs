//! The Dropbox store itself against a fake Dropbox: the backends' conformance
//! suite, create-only writes that refuse even identical content, keys that differ
//! only in case, parallel writers whose commits never meet, a file larger than one
//! upload, listings that cost one request when nothing changed, the longpoll.

mod common;

use std::time::Duration;

use ghostie_fs::backend::tests::Sizes;
use ghostie_fs::backend::{BackendError, ObjectStore};

use common::fake_dropbox::FakeDropbox;
use common::*;

fn fake() -> FakeDropbox {
    let fake = FakeDropbox::start();
    fake.add_app(DROPBOX_APP_KEY, DROPBOX_APP_NAME);
    fake.grant_as(DROPBOX_APP_KEY, DROPBOX_REFRESH_TOKEN);
    fake
}

#[test]
fn the_store_passes_the_backends_conformance_suite() {
    let fake = fake();
    ghostie_fs::backend::tests::check(&dropbox_store(&fake), Sizes::Told);
    assert_eq!(fake.write_conflicts(), 0);
    // The sizes a new store learns from Dropbox's listing, not from its own writes.
    assert_eq!(
        dropbox_store(&fake).list_sized("v/a/").unwrap(),
        vec![("v/a/x".to_owned(), Some(8)), ("v/a/z".to_owned(), Some(6))]
    );
}

#[test]
fn create_only_refuses_even_identical_content() {
    let fake = fake();
    let store = dropbox_store(&fake);
    store.put_if_absent("v/log/1", b"segment one").unwrap();
    // Dropbox takes an identical file under `add` as a success unless
    // strict_conflict is asked for: a log segment must never be written twice.
    assert!(matches!(
        store.put_if_absent("v/log/1", b"segment one"),
        Err(BackendError::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.put_if_absent("v/log/1", b"another"),
        Err(BackendError::AlreadyExists { .. })
    ));
    assert_eq!(store.get("v/log/1").unwrap(), b"segment one");
}

#[test]
fn keys_that_differ_only_in_case_stay_two_objects() {
    let fake = fake();
    let store = dropbox_store(&fake);
    store.put("V/Key", b"upper").unwrap();
    store.put("v/key", b"lower").unwrap();
    assert_eq!(store.get("V/Key").unwrap(), b"upper");
    assert_eq!(store.get("v/key").unwrap(), b"lower");
    assert_eq!(store.list("V/", None).unwrap(), vec!["V/Key"]);
    assert_eq!(store.list("v/", None).unwrap(), vec!["v/key"]);
}

#[test]
fn parallel_writers_share_batch_commits_and_never_meet() {
    let fake = fake();
    let store = dropbox_store(&fake);
    std::thread::scope(|s| {
        for t in 0..8 {
            let store = &store;
            s.spawn(move || {
                for i in 0..25 {
                    store
                        .put(&format!("v/{t}/{i}"), format!("{t}-{i}").as_bytes())
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(fake.write_conflicts(), 0, "two commits ran at once");
    let commits = fake.count("files/upload") + fake.count("files/upload_session/finish_batch_v2");
    assert!(
        commits < 200,
        "200 writes took {commits} commits: nothing was batched"
    );
    assert_eq!(store.list("v/", None).unwrap().len(), 200);
    for t in 0..8 {
        assert_eq!(
            store.get(&format!("v/{t}/24")).unwrap(),
            format!("{t}-24").as_bytes()
        );
    }
}

#[test]
fn a_file_larger_than_one_request_goes_in_a_session_and_reads_back_by_range() {
    let fake = fake();
    let store = dropbox_store(&fake);
    let dir = tempfile::tempdir().unwrap();
    let data = patterned(20 * 1024 * 1024 + 123, 7);
    let path = dir.path().join("big");
    std::fs::write(&path, &data).unwrap();
    store.put_file("v/big", &path).unwrap();
    assert!(fake.count("files/upload_session/append_v2") >= 2);
    assert_eq!(store.get("v/big").unwrap(), data);
    let r = 9 * 1024 * 1024..9 * 1024 * 1024 + 4096;
    assert_eq!(
        store
            .get_range("v/big", r.start as u64..r.end as u64)
            .unwrap(),
        &data[r]
    );
    let tail = store
        .get_range("v/big", data.len() as u64 - 10..data.len() as u64 + 100)
        .unwrap();
    assert_eq!(tail, &data[data.len() - 10..]);
}

#[test]
fn a_listing_that_finds_nothing_new_costs_one_request() {
    let fake = fake();
    let writer = dropbox_store(&fake);
    for i in 0..30 {
        writer
            .put(&format!("v/d{}/log/{i:03}", i % 3), b"x")
            .unwrap();
    }
    let reader = dropbox_store(&fake);
    assert_eq!(reader.list_dirs("v/").unwrap().len(), 3);
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(1_100));
        let before = fake.seen().len();
        reader.list_dirs("v/").unwrap();
        for d in 0..3 {
            assert_eq!(
                reader.list(&format!("v/d{d}/log/"), None).unwrap().len(),
                10
            );
        }
        let asked: Vec<String> = fake.seen()[before..]
            .iter()
            .map(|s| s.endpoint.clone())
            .collect();
        assert_eq!(
            asked,
            vec!["files/list_folder/continue".to_owned()],
            "round {round}"
        );
    }
    // A change by another writer shows at the next look.
    std::thread::sleep(Duration::from_millis(1_100));
    writer.put("v/d0/log/999", b"new").unwrap();
    assert_eq!(reader.list("v/d0/log/", None).unwrap().len(), 11);
    // And when Dropbox resets the cursor, the view is rebuilt whole.
    fake.reset_cursors();
    writer.delete("v/d1/log/001").unwrap();
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(reader.list("v/d1/log/", None).unwrap().len(), 9);
}

#[test]
fn the_longpoll_returns_when_another_writer_changes_something() {
    let fake = fake();
    let writer = dropbox_store(&fake);
    let reader = dropbox_store(&fake);
    writer.put("v/a", b"1").unwrap();
    reader.list("v/", None).unwrap();
    std::thread::scope(|s| {
        let waiting = s.spawn(|| reader.wait_for_change(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !waiting.is_finished(),
            "the longpoll returned with no change"
        );
        writer.put("v/b", b"2").unwrap();
        let heard = waiting.join().unwrap();
        assert!(matches!(heard, Some(Ok(true))), "{heard:?}");
    });
    // The view knows it must look again, at once.
    assert_eq!(reader.list("v/", None).unwrap(), vec!["v/a", "v/b"]);
}
