//! The conformance suite: one behaviour every backend must show, run against each.

use super::ObjectStore;

/// Whether a backend's listings tell each object's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    Told,
    /// Gist: a file's size is that of its base64, not the object's to the byte.
    NotTold,
}

pub fn check(store: &dyn ObjectStore, sizes: Sizes) {
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
    // Sizes as written last ("replaced" over "hello world"), none for what is gone.
    let told = |size| (sizes == Sizes::Told).then_some(size);
    assert_eq!(
        store.list_sized("v/a/").unwrap(),
        vec![("v/a/x".to_owned(), told(8)), ("v/a/z".to_owned(), told(3))]
    );
    // Written again once listed: the size this store's own write tells.
    store.put("v/a/z", b"longer").unwrap();
    assert_eq!(
        store.list_sized("v/a/").unwrap(),
        vec![("v/a/x".to_owned(), told(8)), ("v/a/z".to_owned(), told(6))]
    );
}
