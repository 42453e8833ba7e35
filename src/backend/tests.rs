//! The conformance suite: one behaviour every backend must show, run against each.

use super::ObjectStore;

pub fn check(store: &dyn ObjectStore) {
    assert!(store.get("v/a/x").unwrap_err().is_not_found());
    store.put("v/a/x", b"hello world").unwrap();
    store.put("v/a/y", b"second").unwrap();
    store.put("v/b/log/001", b"1").unwrap();
    store.put("v/b/log/002", b"2").unwrap();
    assert_eq!(store.get("v/a/x").unwrap(), b"hello world");
    assert_eq!(store.get_range("v/a/x", 6..11).unwrap(), b"world");
    assert_eq!(store.get_range("v/a/x", 6..100).unwrap(), b"world");
    store.put("v/a/x", b"replaced").unwrap();
    assert_eq!(store.get("v/a/x").unwrap(), b"replaced");
    assert!(matches!(
        store.put_if_absent("v/a/x", b"no"),
        Err(super::BackendError::AlreadyExists { .. })
    ));
    store.put_if_absent("v/a/z", b"new").unwrap();
    assert_eq!(
        store.list("v/a/", None).unwrap(),
        vec!["v/a/x", "v/a/y", "v/a/z"]
    );
    assert_eq!(
        store.list("v/b/log/", Some("v/b/log/001")).unwrap(),
        vec!["v/b/log/002"]
    );
    assert_eq!(store.list_dirs("v/").unwrap(), vec!["v/a/", "v/b/"]);
    assert!(store.list("w/", None).unwrap().is_empty());
    store.delete("v/a/y").unwrap();
    assert!(store.get("v/a/y").unwrap_err().is_not_found());
    store.delete("v/a/y").unwrap();
}
