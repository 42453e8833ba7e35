//! Unlocking: the passphrase, the wrapped master key, and changing the passphrase.

use super::*;
use crate::credentials::Remembered;

/// Where passphrases come from; the CLI asks the terminal, tests pass strings.
pub trait PassphraseSource: Send + Sync {
    /// The passphrase of an existing vault.
    fn existing(&self) -> SyncResult<Zeroizing<String>>;
    /// A new passphrase (asked twice on a terminal).
    fn new_passphrase(&self) -> SyncResult<Zeroizing<String>>;
    /// Whether asking means prompting someone: then keys are never derived ahead of
    /// need, since a prompt must not appear for work that turns out to need no key.
    fn is_interactive(&self) -> bool {
        false
    }
}

pub(super) fn read_master_key(home: &Home) -> SyncResult<WrappedKey> {
    let path = home.master_key_path();
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SyncError::Invalid(format!(
                "the key file {} is missing; run 'ghostie-fs setup --force' to set this device up again",
                path.display()
            ))
        } else {
            SyncError::io(&path)(e)
        }
    })?;
    let w = WrappedKey::from_json(&bytes).map_err(|e| {
        SyncError::Invalid(format!("the key file {} is damaged ({e})", path.display()))
    })?;
    w.validate()?;
    Ok(w)
}

pub(super) fn write_master_key(home: &Home, w: &WrappedKey) -> SyncResult<()> {
    crate::config::write_atomic(&home.master_key_path(), &w.to_json(), 0o600)?;
    Ok(())
}

/// What unlocking yields: the keys of every epoch the keyring keeps, and the
/// devices shut out of the vault.
#[derive(Debug, Clone)]
pub(crate) struct Unlocked {
    pub keys: SubKeys,
    pub removed: Vec<RemovedDevice>,
    /// What is sealed under an epoch below this is to be sealed again (0: nothing).
    pub rewrite_below: u32,
    /// The device that asked for it (it takes over removed devices' files).
    pub rewrite_by: String,
}

impl Unlocked {
    /// The keys and removed devices of `record`, whose key `master` is.
    pub(super) fn of(record: &WrappedKey, master: &MasterKey) -> SyncResult<(Self, VaultSecrets)> {
        let secrets = record.open_secrets(master)?;
        let keys = SubKeys::derive_all(record.epoch, master, &secrets.older()?);
        Ok((
            Self {
                keys,
                removed: secrets.removed.clone(),
                rewrite_below: secrets.rewrite_below,
                rewrite_by: secrets.rewrite_by.clone(),
            },
            secrets,
        ))
    }
}

/// What a new generation of the keyring holds: `master`, the key of `epoch`,
/// wrapped under `pass`, with `secrets` sealed under it.
pub(super) struct NewKeyring<'a> {
    pub master: &'a MasterKey,
    pub pass: &'a str,
    pub epoch: u32,
    pub secrets: &'a VaultSecrets,
}

/// `ring`'s keys under this device's own salt and `pass`, knowing `previous`.
pub(super) fn local_copy(
    ring: &WrappedKey,
    master: &MasterKey,
    secrets: &VaultSecrets,
    pass: &str,
    previous: &[String],
) -> WrappedKey {
    WrappedKey::wrap_epoch(
        master,
        pass.as_bytes(),
        ring.kdf.iterations.max(DEFAULT_ITERATIONS),
        &ring.vault_id,
        &ring.generation,
        previous,
        ring.epoch,
        secrets,
    )
}

/// A key remembered on this device (`remember`) follows the key it replaced.
pub(super) fn remember_again(home: &Home, vault_id: &str, master: &MasterKey) {
    if let Err(e) = crate::credentials::remember_instead(home, vault_id, master) {
        tracing::warn!("the new key could not be remembered ({e}); the passphrase will be asked");
    }
}

/// Opens the master key: from the vault's keyring when the passphrase was changed
/// elsewhere (refreshing the local copy), else from this device's own copy.
fn unlock(
    home: &Home,
    config: &Config,
    store: &dyn crate::backend::ObjectStore,
    layout: &Layout,
    passphrase: &dyn PassphraseSource,
) -> SyncResult<Unlocked> {
    let local = read_master_key(home)?;
    if local.vault_id != config.vault_id {
        return Err(SyncError::Invalid(format!(
            "the key file {} belongs to another vault",
            home.master_key_path().display()
        )));
    }
    let remote = match store.get(&layout.keyring()) {
        Ok(bytes) => Some(
            WrappedKey::from_json(&bytes)
                .map_err(|e| SyncError::Damaged(format!("the vault's keyring is damaged ({e})")))?,
        ),
        Err(e) if e.is_not_found() => {
            return Err(SyncError::Damaged(
                "the vault has no keyring: is this the right vault path?".into(),
            ))
        }
        // Offline: the local copy of the key still opens the vault.
        Err(e) if e.is_temporary() => None,
        // A backend that refuses this device (credentials, bucket) must say so now,
        // not after work was queued that can never be uploaded.
        Err(e) => return Err(e.into()),
    };
    if let Some(ring) = &remote {
        check_not_rolled_back(&local, ring)?;
    }
    // No passphrase at hand: a key this device remembers spares asking for one.
    let mut unavailable = None;
    if passphrase.is_interactive() {
        if let Some(ring) = &remote {
            if ring.vault_id != config.vault_id {
                return Err(SyncError::Invalid(
                    "the backend holds a different vault than this device joined".into(),
                ));
            }
        }
        // A key rotated elsewhere (a newer epoch) is not the one remembered: only
        // the passphrase opens the new keyring.
        let rotated = remote
            .as_ref()
            .is_some_and(|ring| ring.epoch != local.epoch);
        match crate::credentials::remembered_key(home, &config.vault_id) {
            Ok(Remembered::Key(master)) if !rotated => {
                if let Ok((unlocked, _)) = Unlocked::of(&local, &master) {
                    return Ok(unlocked);
                }
                unavailable = Some("it is not this vault's current key".into());
            }
            Ok(Remembered::Key(_)) => {
                unavailable = Some(
                    "the vault's key was changed on another device (rekey); give the \
                     passphrase once, and run 'ghostie-fs remember' to remember the new key"
                        .into(),
                )
            }
            Ok(Remembered::Nothing) => {}
            Ok(Remembered::Unavailable(why)) => unavailable = Some(why),
            Err(e) => unavailable = Some(e.to_string()),
        }
    }
    // Without a passphrase either, the reason the remembered key did not serve is
    // what the user needs to read, not "no passphrase given".
    let pass = match (passphrase.existing(), unavailable) {
        (Ok(p), _) => p,
        (Err(_), Some(why)) => {
            return Err(crate::credentials::CredentialError::RememberedUnavailable(why).into())
        }
        (Err(e), None) => return Err(e),
    };
    match remote {
        Some(ring) if ring.generation != local.generation => {
            if ring.vault_id != config.vault_id {
                return Err(SyncError::Invalid(
                    "the backend holds a different vault than this device joined".into(),
                ));
            }
            if ring.epoch < local.epoch {
                return Err(SyncError::Damaged(format!(
                    "the vault's keyring holds key epoch {}, older than epoch {} this device \
                     already uses: the backend serves an older state of it (rolled back); \
                     nothing was read or written",
                    ring.epoch, local.epoch
                )));
            }
            // The passphrase was changed, or the key rotated, on another device:
            // only the new passphrase opens the keyring; refresh the local copy.
            let master = ring.unwrap_key(pass.as_bytes()).map_err(|e| match e {
                crate::crypto::CryptoError::WrongPassphrase => SyncError::WrongPassphrase,
                e => e.into(),
            })?;
            let (unlocked, secrets) = Unlocked::of(&ring, &master)?;
            let rewrapped = local_copy(&ring, &master, &secrets, &pass, &replaced(&local, &ring));
            write_master_key(home, &rewrapped)?;
            if ring.epoch != local.epoch {
                remember_again(home, &config.vault_id, &master);
            }
            Ok(unlocked)
        }
        _ => {
            let master = local.unwrap_key(pass.as_bytes())?;
            Ok(Unlocked::of(&local, &master)?.0)
        }
    }
}

/// The vault's keyring is one this device's own copy says was replaced: the
/// backend serves an older state of it (a rollback, perhaps to a passphrase that
/// was changed because it leaked). Nothing is unlocked through it.
pub(super) fn check_not_rolled_back(local: &WrappedKey, ring: &WrappedKey) -> SyncResult<()> {
    if ring.generation != local.generation && local.previous.contains(&ring.generation) {
        return Err(SyncError::Damaged(
            "the vault's keyring is older than the one this device already uses: the \
             backend serves an older state of it (rolled back); nothing was read or \
             written, and this device keeps its newer key"
                .into(),
        ));
    }
    Ok(())
}

/// What this device's copy will know was replaced once it takes `ring`: what the
/// ring says, and what the copy knew, itself included (two `passwd` run at once, or
/// an older version writing the first format, must not make it forget).
fn replaced(local: &WrappedKey, ring: &WrappedKey) -> Vec<String> {
    let mut out = ring.previous.clone();
    for g in local
        .previous
        .iter()
        .chain(std::iter::once(&local.generation))
    {
        if *g != ring.generation && !out.contains(g) {
            out.push(g.clone());
        }
    }
    out
}

/// Used right after setup, when the keys are already in hand.
pub(super) struct NoPassphrase;

impl PassphraseSource for NoPassphrase {
    fn existing(&self) -> SyncResult<Zeroizing<String>> {
        Err(SyncError::Passphrase("no passphrase is needed here".into()))
    }
    fn new_passphrase(&self) -> SyncResult<Zeroizing<String>> {
        self.existing()
    }
}

impl Vault {
    /// The sub-keys, unlocking on first use. The vault's keyring is consulted when the
    /// backend answers, so a passphrase changed on another device takes effect here.
    pub(crate) fn keys(&self) -> SyncResult<&SubKeys> {
        self.unlocked().map(|u| &u.keys)
    }

    /// The devices removed from the vault (`devices remove`), as the keyring says.
    pub fn removed_devices(&self) -> SyncResult<&[RemovedDevice]> {
        self.unlocked().map(|u| u.removed.as_slice())
    }

    pub(super) fn unlocked(&self) -> SyncResult<&Unlocked> {
        if let Some(k) = self.keys.get() {
            return Ok(k);
        }
        let mut started = lock(&self.unlocking);
        if let Some(k) = self.keys.get() {
            return Ok(k);
        }
        let keys = match started.take() {
            Some(handle) => handle
                .join()
                .map_err(|_| SyncError::Invalid("unlocking the vault failed".into()))??,
            None => unlock(
                &self.home,
                &self.config,
                self.store.as_ref(),
                &self.layout,
                self.passphrase.as_ref(),
            )?,
        };
        drop(started);
        Ok(self.keys.get_or_init(|| keys))
    }

    /// Unlocks the vault now (asking for the passphrase if it must): a wrong
    /// passphrase fails here, before any work.
    pub fn unlock(&self) -> SyncResult<()> {
        self.keys().map(|_| ())
    }

    /// Starts deriving the keys on another core while the caller goes on (scanning the
    /// folder, say): PBKDF2 at 600,000 iterations is a tenth of a second by design.
    pub fn begin_unlock(&self) {
        if self.keys.get().is_some() || self.passphrase.is_interactive() {
            return;
        }
        let mut started = lock(&self.unlocking);
        if started.is_some() {
            return;
        }
        let (home, config, store, layout, pass) = (
            self.home.clone(),
            self.config.clone(),
            Arc::clone(&self.store),
            self.layout.clone(),
            Arc::clone(&self.passphrase),
        );
        *started = Some(std::thread::spawn(move || {
            unlock(&home, &config, store.as_ref(), &layout, pass.as_ref())
        }));
    }

    /// What `status` says of the backend and of the keyring it serves: why the
    /// backend cannot be used now, or else what is wrong with its keyring. `status`
    /// looks with a second's patience: a keyring that did not come in that time is
    /// not looked at (the next look, or any command that unlocks, checks it).
    pub fn backend_and_keyring_problems(&self) -> (Option<String>, Option<String>) {
        if let Err(e) = self.check_backend() {
            return (Some(e.to_string()), None);
        }
        match self.keyring_problem() {
            Ok(problem) => (None, problem),
            Err(e) => {
                tracing::debug!("the keyring was not checked: {e}");
                (None, None)
            }
        }
    }

    /// Whether the backend now serves a keyring older than this device's copy (one
    /// request; no passphrase needed): the sentence saying so, for `status`.
    pub fn keyring_problem(&self) -> SyncResult<Option<String>> {
        let local = read_master_key(&self.home)?;
        let bytes = match self.store.get(&self.layout.keyring()) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => {
                return Ok(Some("the vault has no keyring".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let ring = match WrappedKey::from_json(&bytes) {
            Ok(ring) => ring,
            Err(e) => return Ok(Some(format!("the vault's keyring is damaged ({e})"))),
        };
        if let Err(e) = check_not_rolled_back(&local, &ring) {
            return Ok(Some(e.to_string()));
        }
        // Rotated elsewhere: what others seal from now on opens here only once
        // this device has taken the new key, with the passphrase.
        let holds = self
            .keys
            .get()
            .map_or(local.epoch, |u| u.keys.newest_epoch().max(local.epoch));
        if ring.epoch > holds {
            return Ok(Some(format!(
                "the vault's key was changed on another device (key epoch {}, this device holds {holds}): \
                 it takes the new key at its next unlock, with the passphrase; a running mount must be \
                 restarted to read what is written from now on",
                ring.epoch
            )));
        }
        Ok(None)
    }

    /// Changes the passphrase: rewraps the master key in the vault's keyring and here.
    pub fn change_passphrase(&self) -> SyncResult<()> {
        let local = read_master_key(&self.home)?;
        let ring_bytes = self.store.get(&self.layout.keyring())?;
        let ring = WrappedKey::from_json(&ring_bytes)
            .map_err(|e| SyncError::Damaged(format!("the vault's keyring is damaged ({e})")))?;
        let old = self.passphrase.existing()?;
        let master = ring.unwrap_key(old.as_bytes())?;
        let (unlocked, secrets) = Unlocked::of(&ring, &master)?;
        if local.vault_id != ring.vault_id {
            return Err(SyncError::Invalid(
                "the backend holds a different vault than this device joined".into(),
            ));
        }
        check_not_rolled_back(&local, &ring)?;
        let new = self.passphrase.new_passphrase()?;
        self.replace_keyring(
            &local,
            &ring,
            NewKeyring {
                master: &master,
                pass: &new,
                epoch: ring.epoch,
                secrets: &secrets,
            },
        )?;
        // The master key stays the same, and so do the keys derived from it.
        let _ = self.keys.set(unlocked);
        Ok(())
    }

    /// Writes a new generation of the keyring in place of `ring`, then this
    /// device's copy. The keyring is the one object ever replaced (DESIGN §4):
    /// written first, so a crash in between leaves a local copy that the next
    /// unlock refreshes; and read back, so that another device changing it at the
    /// same moment (a `passwd`, a `rekey`) is said rather than silently undone.
    /// Every device that later reads the new keyring, or this copy, knows the
    /// generations it replaced, and refuses them if they are served again.
    pub(super) fn replace_keyring(
        &self,
        local: &WrappedKey,
        ring: &WrappedKey,
        new: NewKeyring<'_>,
    ) -> SyncResult<()> {
        let mut previous = replaced(local, ring);
        if !previous.contains(&ring.generation) {
            previous.push(ring.generation.clone());
        }
        let generation = random_id();
        let wrap = || {
            WrappedKey::wrap_epoch(
                new.master,
                new.pass.as_bytes(),
                ring.kdf.iterations.max(DEFAULT_ITERATIONS),
                &ring.vault_id,
                &generation,
                &previous,
                new.epoch,
                new.secrets,
            )
        };
        let (new_ring, new_local) = (wrap(), wrap());
        self.store
            .put(&self.layout.keyring(), &new_ring.to_json())?;
        let back = self.store.get(&self.layout.keyring())?;
        if WrappedKey::from_json(&back).ok().map(|r| r.generation) != Some(generation.clone()) {
            return Err(SyncError::Invalid(
                "another device changed the vault's keyring at the same moment; run this again once it is done".into(),
            ));
        }
        write_master_key(&self.home, &new_local)
    }
}
