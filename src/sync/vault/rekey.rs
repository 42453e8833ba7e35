//! Rotating the vault's key (`rekey`) and shutting a device out (`devices remove`).
//!
//! A rekey makes a new master key, one key epoch after the keyring's, and writes a
//! keyring (format 3) that wraps it under the passphrase and seals, under the new
//! key, the older keys (so everything sealed before stays readable) and the removed
//! devices. Everything sealed from then on names the new epoch: blobs in their
//! `ContentRef`, log segments, snapshots and device records in their envelope.
//!
//! Other devices take the new keyring at their next unlock (the passphrase is
//! needed once: a key remembered with `remember` is the old one). A removed device
//! is cut: its log counts up to the segment the remover had applied and not
//! beyond, whatever it publishes later, and it no longer holds reclaiming back.
//! Removing changes the passphrase too, so the removed device, which knows only the
//! old one, cannot open the new keyring: what is sealed from then on is closed to it.

use super::*;
use crate::crypto::{OlderKey, RemovedDevice};
use crate::sync::progress::NoProgress;

/// What a rekey did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RekeyReport {
    /// The key epoch everything is sealed under from now on.
    pub epoch: u32,
    /// The older epochs the keyring keeps, so what was sealed under them opens.
    pub older_epochs: Vec<u32>,
    /// The device shut out, if any.
    pub removed: Option<String>,
}

impl Vault {
    /// Rotates the vault's key; with `remove`, also shuts the device of that name
    /// out and changes the passphrase (asked through the passphrase source's
    /// `new_passphrase`). Needs this device's changes pushed first: content sealed
    /// under the old key would otherwise reach the vault after the rekey.
    ///
    /// This vault keeps sealing under the old key until it is opened again: the
    /// caller (a CLI command) ends here.
    pub fn rekey(&self, remove: Option<&str>, rewrite: bool) -> SyncResult<RekeyReport> {
        self.keys()?;
        if self.has_pending_work()? {
            return Err(SyncError::Invalid(
                "this device has changes not uploaded yet; run 'ghostie-fs push' (or sync) first, so that nothing sealed under the old key reaches the vault after it changes".into(),
            ));
        }
        // Read every log as far as it goes first: a removed device's cut covers all
        // it published until now, and the others' words are current.
        self.poll(&NoProgress)?;
        let _no_publishing = lock(&self.publishing);
        let local = read_master_key(&self.home)?;
        let ring_bytes = self.store.get(&self.layout.keyring())?;
        let ring = WrappedKey::from_json(&ring_bytes)
            .map_err(|e| SyncError::Damaged(format!("the vault's keyring is damaged ({e})")))?;
        if local.vault_id != ring.vault_id {
            return Err(SyncError::Invalid(
                "the backend holds a different vault than this device joined".into(),
            ));
        }
        check_not_rolled_back(&local, &ring)?;
        let old = self.passphrase.existing()?;
        let master = ring.unwrap_key(old.as_bytes())?;
        let (_, mut secrets) = Unlocked::of(&ring, &master)?;
        // A rewrite under way (asked for by an earlier `rekey --rewrite`) is
        // carried on, not started over under yet another key.
        if rewrite && remove.is_none() && secrets.rewrite_below > 0 {
            return Ok(RekeyReport {
                epoch: ring.epoch,
                older_epochs: secrets.older_epochs(),
                removed: None,
            });
        }
        let removed = match remove {
            Some(name) => Some(self.removal_of(name, &secrets)?),
            None => None,
        };
        let epoch = ring.epoch.checked_add(1).ok_or_else(|| {
            SyncError::Invalid("this vault's key was rotated too many times".into())
        })?;
        secrets.older_keys.push(OlderKey::new(ring.epoch, &master));
        if rewrite {
            secrets.rewrite_below = epoch;
            secrets.rewrite_by = self.device.as_str().to_owned();
        }
        if let Some(r) = &removed {
            secrets.removed.push(r.clone());
        }
        // Shutting a device out means a passphrase it does not know.
        let pass = match remove {
            Some(_) => {
                let new = self.passphrase.new_passphrase()?;
                if new.as_bytes() == old.as_bytes() {
                    return Err(SyncError::Invalid(
                        "the new passphrase is the one the removed device knows; choose another"
                            .into(),
                    ));
                }
                new
            }
            None => old,
        };
        let new_master = MasterKey::random();
        self.replace_keyring(
            &local,
            &ring,
            NewKeyring {
                master: &new_master,
                pass: &pass,
                epoch,
                secrets: &secrets,
            },
        )?;
        remember_again(&self.home, &self.config.vault_id, &new_master);
        tracing::info!(
            epoch,
            removed = removed.as_ref().map(|r| r.name.as_str()),
            "the vault's key was rotated"
        );
        Ok(RekeyReport {
            epoch,
            older_epochs: secrets.older_epochs(),
            removed: removed.map(|r| r.name),
        })
    }

    /// The record shutting the device called `name` out, cut at what this device
    /// applied of its log.
    fn removal_of(&self, name: &str, secrets: &VaultSecrets) -> SyncResult<RemovedDevice> {
        let names = self.name_map()?;
        let matching: Vec<&DeviceId> = names
            .iter()
            .filter(|(_, n)| n.as_str() == name)
            .map(|(d, _)| d)
            .collect();
        let device = match matching.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(SyncError::Invalid(format!(
                    "no device of this vault is called '{name}'; 'ghostie-fs devices' lists them"
                )))
            }
            _ => {
                return Err(SyncError::Invalid(format!(
                    "more than one device is called '{name}'"
                )))
            }
        };
        if device == self.device {
            return Err(SyncError::Invalid(
                "this device cannot remove itself; run 'devices remove' on another device".into(),
            ));
        }
        if secrets.removed.iter().any(|r| r.device == device.as_str()) {
            return Err(SyncError::Invalid(format!(
                "device '{name}' was already removed"
            )));
        }
        // A log that could not be read to its end would cut the device short of
        // what it wrote while it was still trusted.
        if let Some(problem) = self
            .index()
            .devices()?
            .into_iter()
            .find(|r| r.id == device)
            .and_then(|r| r.problem)
        {
            return Err(SyncError::Damaged(format!(
                "{problem}; its log must be readable to be cut where it stands"
            )));
        }
        let log_cut = self
            .index()
            .applied_seqs()?
            .get(&device)
            .copied()
            .unwrap_or(0);
        Ok(RemovedDevice {
            device: device.as_str().to_owned(),
            name: name.to_owned(),
            log_cut,
            removed_ms: u64::try_from(crate::now_ms()).unwrap_or(0),
            by: self.device.as_str().to_owned(),
        })
    }
}
