use super::*;

const TOKEN: &str = "ghp_unit0test0token0that0must0never0show";

fn info() -> StoredInfo {
    StoredInfo {
        account: "octocat".into(),
        scopes: Some(vec!["gist".into()]),
        expires: None,
        expires_at: None,
        api_url: "http://127.0.0.1:1".into(),
        stored_at: 1,
        client_id: None,
        oauth_url: None,
    }
}

fn file_home() -> (tempfile::TempDir, Home, Credentials) {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = Home::new(dir.path().join("home"));
    // The file store, whatever this machine offers: the OS keyring is the
    // integration tests' business (tests/credentials.rs, with a real one).
    std::fs::create_dir_all(home.keys_dir()).expect("keys dir");
    std::fs::write(
        home.keys_dir().join("credentials.json"),
        r#"{"format":1,"home_id":"00112233aabbccdd","store":"file"}"#,
    )
    .expect("record");
    let creds = Credentials::open(&home).expect("open");
    (dir, home, creds)
}

fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(every_file(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_file_store_keeps_secrets_sealed_and_replaces_them_whole() {
    let (dir, home, mut creds) = file_home();
    let master = MasterKey::random();
    let key = CredentialKey::from_master(&master, "vault-1");
    let secret = Secret::new(Zeroizing::new(TOKEN.into()));
    assert_eq!(
        creds
            .store(Provider::Github, info(), &secret, Some(&key))
            .expect("store"),
        Place::File
    );
    for f in every_file(dir.path()) {
        let bytes = std::fs::read(&f).expect("read");
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{} holds the token in clear",
            f.display()
        );
    }
    let again = Credentials::open(&home).expect("reopen");
    assert_eq!(again.place(), Some(Place::File));
    assert_eq!(again.info(Provider::Github), Some(&info()));
    let back = again
        .secret(Provider::Github, Some(&key))
        .expect("read")
        .expect("stored");
    assert_eq!(back.expose(), TOKEN);

    // Another vault's key opens nothing, and says so rather than "no token".
    let other = CredentialKey::from_master(&MasterKey::random(), "vault-1");
    assert!(matches!(
        again.secret(Provider::Github, Some(&other)),
        Err(CredentialError::Corrupt { .. })
    ));
    let foreign = CredentialKey::from_master(&master, "vault-2");
    assert!(matches!(
        again.secret(Provider::Github, Some(&foreign)),
        Err(CredentialError::Invalid(_))
    ));
    // Without a key the file store cannot be read at all.
    assert!(again.secret(Provider::Github, None).is_err());

    let newer = Secret::new(Zeroizing::new("ghp_rotated".into()));
    let mut creds2 = Credentials::open(&home).expect("reopen");
    creds2
        .store(Provider::Github, info(), &newer, Some(&key))
        .expect("replace");
    let read = creds2.secret(Provider::Github, Some(&key)).expect("read");
    assert_eq!(read.expect("stored").expose(), "ghp_rotated");

    assert!(creds2.remove(Provider::Github, Some(&key)).expect("remove"));
    assert!(!credentials_file(&home).exists());
    assert!(creds2.info(Provider::Github).is_none());
    assert!(!creds2.remove(Provider::Github, Some(&key)).expect("again"));
    drop(creds);
}

#[test]
fn secrets_sealed_before_a_rekey_open_with_the_older_key_and_move_to_the_new_one() {
    let (_dir, home, mut creds) = file_home();
    let old = MasterKey::random();
    let secret = Secret::new(Zeroizing::new(TOKEN.into()));
    let before = CredentialKey::from_master(&old, "vault-1");
    creds
        .store(Provider::Github, info(), &secret, Some(&before))
        .expect("store");
    // After a rekey the current key alone does not open the file; with the key
    // history it does, and the next write seals it under the current key.
    let new = MasterKey::random();
    let current_only = CredentialKey::from_master(&new, "vault-1");
    let again = Credentials::open(&home).expect("reopen");
    assert!(again.secret(Provider::Github, Some(&current_only)).is_err());
    let after = CredentialKey::from_master(&new, "vault-1").with_older(&[(0, old.clone())]);
    let read = again.secret(Provider::Github, Some(&after)).expect("read");
    assert_eq!(read.expect("stored").expose(), TOKEN);
    let mut creds2 = Credentials::open(&home).expect("reopen");
    creds2
        .store(Provider::Github, info(), &secret, Some(&after))
        .expect("store again");
    let read = Credentials::open(&home)
        .expect("reopen")
        .secret(Provider::Github, Some(&current_only))
        .expect("read");
    assert_eq!(read.expect("stored").expose(), TOKEN);
    drop(creds);
}

#[test]
fn secrets_never_show_in_debug() {
    let s = Secret::new(Zeroizing::new(TOKEN.into()));
    assert!(!format!("{s:?}").contains("ghp_"));
    let k = CredentialKey::from_master(&MasterKey::random(), "v");
    assert_eq!(format!("{k:?}"), "CredentialKey(..)");
}

#[test]
fn providers_and_places_have_stable_names() {
    assert_eq!(Provider::from_name("GitHub"), Some(Provider::Github));
    assert_eq!(Provider::from_name("gitlab"), None);
    assert_eq!(
        serde_json::to_string(&Place::OsKeyring).expect("json"),
        "\"os-keyring\""
    );
    assert_eq!(Place::File.name(), "file");
}
