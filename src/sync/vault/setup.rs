//! Setup: creating a vault or joining one, with no partial state on failure.

use super::*;
use crate::credentials::{CredentialKey, Credentials, Place, Provider, Secret, StoredInfo};

/// What `setup` was asked to do.
#[derive(Debug, Clone)]
pub struct SetupRequest {
    pub home: Home,
    pub backend: crate::config::BackendConfig,
    pub prefix: String,
    pub device_name: String,
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOutcome {
    Created,
    Joined { devices: usize },
}

/// Opens the backend `req` names, checks this device can reach it (and write to a
/// folder), then sets the home up on it as [`setup_vault`] does. Returns what it did
/// and where the vault lives.
pub fn setup(
    req: &SetupRequest,
    pass: &dyn PassphraseSource,
) -> SyncResult<(SetupOutcome, String)> {
    setup_with_login(req, pass, None)
}

/// A provider login made during setup, before the home has anywhere safe to keep
/// it (a device without an OS keyring seals logins under the vault's key, which
/// setup is about to make or fetch): used for the setup, then stored.
pub struct NewLogin {
    pub provider: Provider,
    pub info: StoredInfo,
    pub refresh_token: Secret,
    /// The access token that came with it, and when it lapses (Unix seconds).
    pub access: Option<(Secret, u64)>,
    /// The OAuth client's secret (Google's installed-app clients have one).
    pub client_secret: Option<Secret>,
}

impl std::fmt::Debug for NewLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewLogin")
            .field("provider", &self.provider)
            .field("account", &self.info.account)
            .finish_non_exhaustive()
    }
}

/// As [`setup`], signing in with `login` when one is given; once the home is set
/// up the login is stored in its credential store. Returns also where it went.
pub fn setup_with_login(
    req: &SetupRequest,
    pass: &dyn PassphraseSource,
    login: Option<&NewLogin>,
) -> SyncResult<(SetupOutcome, String)> {
    // Before setup a token can come only from the environment or the OS keyring
    // (a sealed store needs the vault's key, which does not exist yet).
    let token = match login {
        Some(l) => Some(provider::credential_of_login(l, &req.backend)),
        None => provider::credential_for(&req.home, &req.backend, None)?,
    };
    if token.is_none() && matches!(req.backend, crate::config::BackendConfig::Gist { .. }) {
        return Err(SyncError::Invalid(
            "there is no GitHub token: run 'ghostie-fs login github' first, or set GH_TOKEN (GH_ENTERPRISE_TOKEN for --api-url) for the setup".into(),
        ));
    }
    if token.is_none() && matches!(req.backend, crate::config::BackendConfig::Dropbox { .. }) {
        return Err(SyncError::Invalid(
            "there is no Dropbox login here: give setup --app-key KEY to log in now, or run 'ghostie-fs login dropbox' first".into(),
        ));
    }
    if token.is_none() && matches!(req.backend, crate::config::BackendConfig::Gdrive { .. }) {
        return Err(SyncError::Invalid(
            "there is no Google login here: give setup --client-id ID --client-secret SECRET to log in now, or run 'ghostie-fs login google' first".into(),
        ));
    }
    let store = backend::open_for_setup(&req.backend, token)?;
    let (outcome, master) = setup_vault_keyed(req, Arc::clone(&store), pass)?;
    if let Some(login) = login {
        let config = req.home.load_config()?;
        let mut creds = Credentials::open(&req.home)?;
        let key = match creds.decide()? {
            Place::File => Some(CredentialKey::from_master(&master, &config.vault_id)),
            Place::OsKeyring => None,
        };
        let access = login.access.as_ref().map(|(s, at)| (s, *at));
        creds.store_tokens(
            login.provider,
            login.info.clone(),
            &login.refresh_token,
            access,
            login.client_secret.as_ref(),
            key.as_ref(),
        )?;
    }
    Ok((outcome, store.describe()))
}

/// Creates a vault where the backend holds none, else joins it. Everything that can
/// fail on the network or with the passphrase happens before anything is written to
/// the home, so a failed setup leaves no partial state.
pub fn setup_vault(
    req: &SetupRequest,
    store: SharedStore,
    pass: &dyn PassphraseSource,
) -> SyncResult<SetupOutcome> {
    setup_vault_keyed(req, store, pass).map(|(outcome, _)| outcome)
}

/// [`setup_vault`], returning the vault's master key as well.
fn setup_vault_keyed(
    req: &SetupRequest,
    store: SharedStore,
    pass: &dyn PassphraseSource,
) -> SyncResult<(SetupOutcome, MasterKey)> {
    let home = &req.home;
    if home.is_set_up() && !req.force {
        return Err(SyncError::Invalid(format!(
            "{} is already set up; add --force to set it up again",
            home.root().display()
        )));
    }
    let layout = Layout::new(&req.prefix);
    let (master, ring, outcome, passphrase) = match store.get(&layout.keyring()) {
        Ok(bytes) => {
            let ring = WrappedKey::from_json(&bytes)
                .map_err(|e| SyncError::Damaged(format!("the vault's keyring is damaged ({e})")))?;
            // Set up again: the key this home already used says what is older.
            if let Ok(local) = read_master_key(home) {
                if local.vault_id == ring.vault_id {
                    check_not_rolled_back(&local, &ring)?;
                    if ring.epoch < local.epoch {
                        return Err(SyncError::Damaged(format!(
                            "the vault's keyring holds key epoch {}, older than epoch {} this home already used: the backend serves an older state of it (rolled back)",
                            ring.epoch, local.epoch
                        )));
                    }
                }
            }
            let p = pass.existing()?;
            let master = ring.unwrap_key(p.as_bytes())?;
            let devices = store
                .list_dirs(&layout.root())?
                .iter()
                .filter_map(|d| layout.device_of_dir(d))
                .count();
            (master, ring, SetupOutcome::Joined { devices }, p)
        }
        Err(e) if e.is_not_found() => {
            let p = pass.new_passphrase()?;
            let master = MasterKey::random();
            let ring = WrappedKey::wrap(
                &master,
                p.as_bytes(),
                DEFAULT_ITERATIONS,
                &random_id(),
                &random_id(),
            );
            (master, ring, SetupOutcome::Created, p)
        }
        Err(e) => return Err(e.into()),
    };
    let (unlocked, secrets) = Unlocked::of(&ring, &master)?;
    let keys = unlocked.keys.clone();

    // On --force, keep this home's device id (and rebuild its history from the vault)
    // unless the device is being renamed: then it starts afresh under a new id, so
    // no device ever shows under two names.
    let previous = home.load_device_id().ok();
    let reuse = match &previous {
        None => false,
        // A device that was removed and is set up again starts afresh: its old id's
        // log is cut where it was removed.
        Some(id) if unlocked.removed.iter().any(|r| r.device == id.as_str()) => false,
        Some(id) => match store.get(&layout.device_record(id)) {
            Ok(b) => open_device(&keys, id, &b).is_ok_and(|r| r.name == req.device_name),
            Err(e) if e.is_not_found() => true,
            Err(e) => return Err(e.into()),
        },
    };
    let device = match (&previous, reuse) {
        (Some(id), true) => id.clone(),
        _ => DeviceId::random(),
    };
    for dir in store.list_dirs(&layout.root())? {
        let Some(other) = layout.device_of_dir(&dir) else {
            continue;
        };
        if other == device {
            continue;
        }
        let rec = match store.get(&layout.device_record(&other)) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        if let Ok(r) = open_device(&keys, &other, &rec) {
            if r.name == req.device_name {
                return Err(SyncError::Invalid(format!(
                    "another device of this vault is already called '{}'; choose another name with --device",
                    req.device_name
                )));
            }
        }
    }

    // The home's folders before anything reaches the vault: a home that cannot hold
    // them (a file where a folder must be) must not leave a device record behind.
    home.create_dirs()?;

    if outcome == SetupOutcome::Created {
        match store.put_if_absent(&layout.keyring(), &ring.to_json()) {
            Ok(()) => {}
            Err(BackendError::AlreadyExists { .. }) => return Err(SyncError::Invalid(
                "another device created this vault at the same moment; run setup again to join it"
                    .into(),
            )),
            Err(e) => return Err(e.into()),
        }
    }
    let record = DeviceRecord {
        format: RECORD_FORMAT,
        id: device.clone(),
        name: req.device_name.clone(),
        created_ms: crate::now_ms(),
    };
    store.put(&layout.device_record(&device), &seal_device(&keys, &record))?;

    if req.force {
        for suffix in ["", "-wal", "-shm"] {
            let p = std::path::PathBuf::from(format!("{}{suffix}", home.state_db().display()));
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_file(home.config_path());
    }
    // The same key under this device's own salt.
    let local = local_copy(&ring, &master, &secrets, &passphrase, &ring.previous);
    let mut index = Index::open(&home.state_db(), true)?;
    index.transaction(|tx| {
        tx.set_device_name(&device, &req.device_name)?;
        // Cleared once the device's own history is rebuilt: a setup killed before
        // that must not leave a home that reuses counters.
        tx.set_meta(META_SETUP_INCOMPLETE, "1")
    })?;
    drop(index);
    home.save_device_id(&device)?;
    write_master_key(home, &local)?;
    let config = Config {
        format: CONFIG_FORMAT,
        backend: req.backend.clone(),
        prefix: req.prefix.clone(),
        device_name: req.device_name.clone(),
        vault_id: ring.vault_id.clone(),
    };
    home.save_config(&config)?;
    let vault = Vault::open_inner(
        home.clone(),
        Arc::clone(&store),
        Box::new(NoPassphrase),
        true,
    )?;
    let _ = vault.keys.set(unlocked);
    if reuse {
        vault
            .index()
            .transaction(|tx| tx.set_meta(META_REUSE_AFTER_POLL, "1"))?;
        vault.recover_own()?;
    }
    vault
        .index()
        .transaction(|tx| tx.set_meta(META_SETUP_INCOMPLETE, ""))?;
    Ok((outcome, master))
}
