//! Must-hold 4: the storage provider learns nothing. After a push of files with known
//! names, contents and device names, none of them appears anywhere in the vault, and
//! nothing but the keyring is readable JSON.

mod common;

use common::*;

const SECRETS: &[&str] = &[
    "laptop-of-ada-lovelace",
    "pixel-of-ada-lovelace",
    "private-folder-mango",
    "diary-entry-kiwi",
    "diary-entry-kiwi.json",
    "private-folder-mango/diary-entry-kiwi.json",
    "vermilion-is-my-favourite-colour",
    "the owner walks the dog at seven",
    "nested-secret-papaya",
    "correct horse battery staple",
];

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_vault_holds_no_name_path_device_name_or_content() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop-of-ada-lovelace", &vault);
    let b = TempHome::joined("pixel-of-ada-lovelace", &vault);
    let body = "{\"content\":\"vermilion-is-my-favourite-colour\",\"more\":\"the owner walks the dog at seven\"}";
    a.write("private-folder-mango/diary-entry-kiwi.json", body);
    a.write(
        "private-folder-mango/nested-secret-papaya/x.json",
        body.repeat(200),
    );
    a.write(
        "big-vermilion-is-my-favourite-colour.json",
        body.repeat(20_000),
    );
    a.ok(&["push"]);
    b.ok(&["pull"]);
    b.write("pixel-note.json", "the owner walks the dog at seven");
    b.ok(&["sync"]);
    a.ok(&["pull"]);
    // A conflict, so conflict records reach the vault too.
    a.write(
        "private-folder-mango/diary-entry-kiwi.json",
        "vermilion-is-my-favourite-colour 1",
    );
    b.write(
        "private-folder-mango/diary-entry-kiwi.json",
        "vermilion-is-my-favourite-colour 2",
    );
    a.ok(&["push"]);
    b.ok(&["sync"]);

    let objects = vault.objects();
    assert!(
        objects.len() > 6,
        "{:?}",
        objects.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for (key, bytes) in &objects {
        for s in SECRETS {
            assert!(!key.contains(s), "key {key} names {s:?}");
        }
        for s in SECRETS {
            assert!(!find(bytes, s.as_bytes()), "{key} contains {s:?}");
        }
        let parses = serde_json::from_slice::<serde_json::Value>(bytes).is_ok();
        if key.ends_with("global/keyring.json") {
            assert!(parses, "the keyring is clear JSON by design");
        } else {
            assert!(!parses, "{key} parses as JSON");
        }
    }
}

#[test]
fn what_the_device_keeps_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    let mode = |rel: &str| {
        std::fs::metadata(a.home().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for file in [
        "keys/master.key",
        "sync/config.json",
        "sync/device_id",
        "sync/state.db",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    for dir in ["keys", "sync", "sync/queue", "sync/staging"] {
        assert_eq!(mode(dir), 0o700, "{dir}");
    }
    // The key file holds the master key only wrapped: no passphrase, no raw key.
    let key = std::fs::read_to_string(a.home().join("keys/master.key")).unwrap();
    assert!(!key.contains(PASSPHRASE));
    assert!(key.contains("pbkdf2-hmac-sha256"));
}
