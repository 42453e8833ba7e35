//! Looking at a home without holding it, for `status`, which must answer at once
//! whatever else runs on the home and whether or not the backend answers.
//!
//! A vault opened to look takes no lock and changes nothing another command may be
//! using: it leaves the upload queue alone (the holder may be sealing into it) and
//! never unlocks. The index is read beside its writer (SQLite's write-ahead log lets
//! a reader in while another process writes), and the backend is reached through a
//! deadline, so one that does not answer, or a vault folder on a disk that is not
//! plugged in, shows as unreachable instead of failing or stalling the look.

use std::time::Duration;

use super::*;
use crate::crypto::CryptoError;
use crate::store::lock::{self, Holder};

/// How long a look waits for the backend before saying that it does not answer.
pub const LOOK_PATIENCE: Duration = Duration::from_secs(1);

impl Vault {
    /// Opens a set-up home to look at it (see the module's comment): no lock, no
    /// passphrase, and a backend that needs not answer.
    pub fn open_to_look(home: Home) -> SyncResult<Self> {
        let config = home.load_config()?;
        let device = home.load_device_id()?;
        let index = open_index(&home, false)?;
        let token = provider::credential_for(&home, &config.backend, None).unwrap_or(None);
        let store = backend::open_to_look(&config.backend, LOOK_PATIENCE, token);
        Ok(Self::assemble(
            home,
            config,
            device,
            store,
            index,
            Arc::new(NoPassphrase),
            None,
        ))
    }

    /// The provider's account and budget for `home`'s vault (Gist), asked now,
    /// without opening the index: a running mount keeps it to itself. None for a
    /// backend with nothing of the kind, or one that does not answer in time.
    pub fn provider_look(home: &Home) -> Option<backend::ProviderStatus> {
        let config = home.load_config().ok()?;
        if !matches!(
            config.backend,
            crate::config::BackendConfig::Gist { .. }
                | crate::config::BackendConfig::Dropbox { .. }
                | crate::config::BackendConfig::Gdrive { .. }
        ) {
            return None;
        }
        let token = provider::credential_for(home, &config.backend, None).unwrap_or(None);
        let store = backend::open_to_look(&config.backend, LOOK_PATIENCE, token);
        // The listing teaches the store the vault's prefix, so it counts its gists.
        if matches!(config.backend, crate::config::BackendConfig::Gist { .. }) {
            store.list_dirs(&Layout::new(&config.prefix).root()).ok()?;
        }
        store.provider_status(true)
    }

    /// Who holds `home` right now (a command running on it), without waiting; `None`
    /// when nobody does.
    pub fn holder(home: &Home) -> SyncResult<Option<Holder>> {
        let path = home.sync_dir().join("lock");
        lock::HomeLock::holder(&path).map_err(SyncError::io(path))
    }

    /// Names what this process does (`push`, `mount`): while it holds a home, a look
    /// at that home shows the name.
    pub fn name_this_process(command: &str) {
        lock::name_this_process(command);
    }

    /// Checks a passphrase without unlocking the vault for use and without the
    /// home's lock, for commands that need no key but were given a passphrase: it
    /// must open this device's copy of the master key or, when the passphrase was
    /// changed on another device since this one last unlocked, the vault's keyring.
    /// Writes nothing.
    pub fn check_passphrase(home: &Home, passphrase: &dyn PassphraseSource) -> SyncResult<()> {
        let config = home.load_config()?;
        let local = unlock::read_master_key(home)?;
        if local.vault_id != config.vault_id {
            return Err(SyncError::Invalid(format!(
                "the key file {} belongs to another vault",
                home.master_key_path().display()
            )));
        }
        let pass = passphrase.existing()?;
        match local.unwrap_key(pass.as_bytes()) {
            Ok(_) => return Ok(()),
            Err(CryptoError::WrongPassphrase) => {}
            Err(e) => return Err(e.into()),
        }
        let token = provider::credential_for(home, &config.backend, None).unwrap_or(None);
        let store = backend::open_to_look(&config.backend, LOOK_PATIENCE, token);
        let layout = Layout::new(&config.prefix);
        // Unreachable or unreadable: this device's copy is all there is to go by, as
        // when a command unlocks offline.
        let Ok(bytes) = store.get(&layout.keyring()) else {
            return Err(SyncError::WrongPassphrase);
        };
        let Ok(ring) = WrappedKey::from_json(&bytes) else {
            return Err(SyncError::WrongPassphrase);
        };
        // A generation this device's copy says was replaced is older, not newer: the
        // passphrase that opens it is one this device stopped taking.
        let newer = ring.vault_id == config.vault_id
            && ring.generation != local.generation
            && !local.previous.contains(&ring.generation);
        if newer && ring.unwrap_key(pass.as_bytes()).is_ok() {
            return Ok(());
        }
        Err(SyncError::WrongPassphrase)
    }
}
