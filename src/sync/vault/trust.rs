//! Turning anonymization on and off, changing its rules, trusting and untrusting
//! devices: the policy changes, made only by a trusted device that holds the
//! sensitive key. After a change of rules, this device seals the current files
//! again as the new rules see them (only their views change: trusted devices keep
//! the bytes they hold, and no original is uploaded again).

use super::*;
use crate::anonymize::{pseudonymize, Policy, PseudonymKey, Rules, SensitiveSecrets};
use crate::model::{Entry, Showing};
use crate::sync::rules::{After, Change, LocalChange, Seen};

/// Files up to this size are pseudonymized (the folder's scan holds them in memory).
pub const ANONYMIZE_MAX: u64 = 8 * 1024 * 1024;

/// What a change of the policy did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrustReport {
    pub enabled: bool,
    pub rules: Vec<String>,
    /// Trusted devices by name.
    pub trusted: Vec<String>,
    /// Trusted devices that have not received the sensitive key yet (they publish
    /// their exchange key at their next sync; a trusted device's next sync hands it
    /// over).
    pub waiting: Vec<String>,
    /// Files sealed again as the new rules see them.
    pub resealed: usize,
}

impl Vault {
    fn names_or_ids(&self, ids: &[DeviceId]) -> SyncResult<Vec<String>> {
        let names = self.device_names()?;
        Ok(ids
            .iter()
            .map(|d| {
                names
                    .get(d)
                    .cloned()
                    .unwrap_or_else(|| d.as_str()[..8].to_owned())
            })
            .collect())
    }

    fn trust_report(&self, policy: &Policy, resealed: usize) -> SyncResult<TrustReport> {
        let rules = policy
            .rules()
            .map_err(|e| SyncError::Damaged(e.to_string()))?;
        Ok(TrustReport {
            enabled: policy.enabled,
            rules: rules.describe(),
            trusted: self.names_or_ids(&policy.trusted)?,
            waiting: self.names_or_ids(&policy.ungranted())?,
            resealed,
        })
    }

    /// The policy in force, for `anonymize rules` and `status`: `None` when the
    /// vault never used anonymization.
    pub fn anonymization_report(&self) -> SyncResult<Option<TrustReport>> {
        match self.read_policy()? {
            None => Ok(None),
            Some(p) => self.trust_report(&p, 0).map(Some),
        }
    }

    /// The rules in force: `None` when the vault never used anonymization.
    pub fn anonymization_rules(&self) -> SyncResult<Option<Rules>> {
        match self.read_policy()? {
            None => Ok(None),
            Some(p) => p
                .rules()
                .map(Some)
                .map_err(|e| SyncError::Damaged(e.to_string())),
        }
    }

    /// The sensitive secrets this device holds, or why it may not change the policy.
    fn trusted_secrets(&self, policy: &Policy) -> SyncResult<SensitiveSecrets> {
        let exchange = anonymize::exchange_secret(&self.home)?;
        match policy.open_grant(&self.device, &exchange) {
            Ok(Some(secrets)) => Ok(secrets),
            Ok(None) if policy.is_trusted(&self.device) => Err(SyncError::Invalid(
                "this device is trusted but has not received the sensitive key yet: run 'ghostie-fs sync' on a trusted device, then here".into(),
            )),
            Ok(None) => Err(SyncError::Invalid(
                "only a trusted device changes anonymization: run this on one, or have one run 'ghostie-fs devices trust' for this device".into(),
            )),
            Err(e) => Err(SyncError::Damaged(e.to_string())),
        }
    }

    /// Devices of the vault now, removed ones left out.
    fn live_devices(&self) -> SyncResult<Vec<DeviceId>> {
        let removed: Vec<String> = self
            .removed_devices()?
            .iter()
            .map(|r| r.device.clone())
            .collect();
        let mut ids: Vec<DeviceId> = self
            .device_names()?
            .into_keys()
            .filter(|d| !removed.iter().any(|r| r == d.as_str()))
            .collect();
        if !ids.contains(&self.device) {
            ids.push(self.device.clone());
        }
        Ok(ids)
    }

    /// Turns anonymization on with `rules` (or, when already on, keeps the rules in
    /// force unless `rules` are given), then seals the current files again as the
    /// rules see them. Every device in the vault now is trusted when it is first
    /// turned on.
    pub fn anonymize_on(&self, rules: Option<Rules>) -> SyncResult<TrustReport> {
        let mut policy = match self.read_policy()? {
            None => {
                let rules = rules.unwrap_or_else(|| {
                    Rules::with_detectors(crate::anonymize::Detector::ALL.to_vec())
                });
                let (mut policy, secrets) =
                    Policy::new(&self.device, self.live_devices()?, &rules, crate::now_ms());
                self.grant_waiting(&mut policy, &secrets)?;
                policy
            }
            Some(mut policy) => {
                let secrets = self.trusted_secrets(&policy)?;
                policy.enabled = true;
                if let Some(rules) = &rules {
                    policy.set_rules(rules);
                }
                policy.changed_ms = crate::now_ms();
                policy.changed_by = self.device.clone();
                self.grant_waiting(&mut policy, &secrets)?;
                policy
            }
        };
        self.write_policy(&policy)?;
        let resealed = self.reseal_views()?;
        policy = self.read_policy()?.unwrap_or(policy);
        self.trust_report(&policy, resealed)
    }

    /// Stops pseudonymizing what is written from now on; what the vault holds stays
    /// as it is, and trusted devices still restore it.
    pub fn anonymize_off(&self) -> SyncResult<TrustReport> {
        let mut policy = self.read_policy()?.ok_or_else(|| {
            SyncError::Invalid("anonymization was never turned on in this vault".into())
        })?;
        self.trusted_secrets(&policy)?;
        policy.enabled = false;
        policy.changed_ms = crate::now_ms();
        policy.changed_by = self.device.clone();
        self.write_policy(&policy)?;
        self.trust_report(&policy, 0)
    }

    /// The device called `name` (removed ones too: a removed device is untrusted).
    fn device_named(&self, name: &str) -> SyncResult<DeviceId> {
        self.device_names()?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(d, _)| d)
            .ok_or_else(|| {
                SyncError::Invalid(format!(
                    "no device called '{name}' is in this vault ('ghostie-fs devices' lists them)"
                ))
            })
    }

    fn policy_to_change(&self) -> SyncResult<(Policy, SensitiveSecrets)> {
        let policy = self.read_policy()?.ok_or_else(|| {
            SyncError::Invalid(
                "anonymization is not on in this vault: 'ghostie-fs anonymize on' turns it on"
                    .into(),
            )
        })?;
        let secrets = self.trusted_secrets(&policy)?;
        Ok((policy, secrets))
    }

    /// Trusts `name` from now on: it receives the sensitive key (now, or once it has
    /// published its exchange key at its next sync and a trusted device syncs).
    pub fn trust_device(&self, name: &str) -> SyncResult<TrustReport> {
        let device = self.device_named(name)?;
        if !self.live_devices()?.contains(&device) {
            return Err(SyncError::Invalid(format!(
                "'{name}' was removed from the vault: it cannot be trusted"
            )));
        }
        let (mut policy, secrets) = self.policy_to_change()?;
        policy.trust(&device);
        self.grant_waiting(&mut policy, &secrets)?;
        policy.changed_ms = crate::now_ms();
        policy.changed_by = self.device.clone();
        self.write_policy(&policy)?;
        self.trust_report(&policy, 0)
    }

    /// Stops trusting `name`: the sensitive key is replaced, so nothing sealed from
    /// now on opens there; what it opened before, it keeps.
    pub fn untrust_device(&self, name: &str) -> SyncResult<TrustReport> {
        let device = self.device_named(name)?;
        if device == self.device {
            return Err(SyncError::Invalid(
                "a device cannot untrust itself: run this on another trusted device".into(),
            ));
        }
        let (mut policy, secrets) = self.policy_to_change()?;
        if !policy.is_trusted(&device) {
            return Err(SyncError::Invalid(format!("'{name}' is not trusted")));
        }
        let mut exchange = BTreeMap::new();
        for d in policy.trusted.clone() {
            if d != device {
                if let Some(public) = self.exchange_public(&d)? {
                    exchange.insert(d, public);
                }
            }
        }
        policy.untrust(&device, secrets, |d| exchange.get(d).copied());
        policy.changed_ms = crate::now_ms();
        policy.changed_by = self.device.clone();
        self.write_policy(&policy)?;
        self.trust_report(&policy, 0)
    }

    /// After `devices remove NAME`: a removed device that was trusted is untrusted
    /// too (the sensitive key replaced), when this device can do it. Returns what
    /// the owner must still do, if anything.
    pub fn untrust_removed(&self, name: &str) -> SyncResult<Option<String>> {
        let Some(policy) = self.read_policy()? else {
            return Ok(None);
        };
        let device = self.device_named(name)?;
        if !policy.is_trusted(&device) {
            return Ok(None);
        }
        match self.untrust_device(name) {
            Ok(_) => Ok(None),
            Err(SyncError::Invalid(_)) => Ok(Some(format!(
                "'{name}' held the sensitive key: run 'ghostie-fs devices untrust {name}' on a trusted device"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Hands the key to every trusted device that published an exchange key.
    fn grant_waiting(&self, policy: &mut Policy, secrets: &SensitiveSecrets) -> SyncResult<()> {
        // This device's own key is published first, so it is never left waiting.
        let own = anonymize::exchange_secret(&self.home)?;
        self.publish_exchange_key(&own)?;
        for device in policy.ungranted() {
            if let Some(public) = self.exchange_public(&device)? {
                policy
                    .grant(&device, &public, secrets)
                    .map_err(|e| SyncError::Damaged(format!("{device}'s exchange key: {e}")))?;
            }
        }
        Ok(())
    }

    /// Seals again, as the rules in force see them, every current file whose view
    /// would change (a rule added or removed): new versions of this device with the
    /// new views, which the folder of this device keeps showing as it is. Files in
    /// conflict are left for the resolution, which is sealed under the rules then.
    fn reseal_views(&self) -> SyncResult<usize> {
        let Some(a) = self.anonymizer()? else {
            return Ok(0);
        };
        if !a.policy().enabled {
            return Ok(0);
        }
        let ns = self.namespace()?;
        let mut candidates: Vec<(String, Version)> = Vec::new();
        for (path, shown) in &ns {
            if shown.sibling_of.is_some() {
                continue;
            }
            let Entry::File { content, .. } = &shown.version.entry else {
                continue;
            };
            let in_conflict = ns.values().any(|s| s.sibling_of.as_deref() == Some(path));
            if content.size <= ANONYMIZE_MAX && !in_conflict {
                candidates.push((path.clone(), shown.version.clone()));
            }
        }
        let refs: Vec<ContentRef> = candidates
            .iter()
            .filter_map(|(_, v)| match &v.entry {
                Entry::File { content, .. } => Some(content.clone()),
                _ => None,
            })
            .collect();
        let mut views: Vec<Option<Vec<u8>>> = vec![None; refs.len()];
        self.fetch_contents(&refs, |fetched| {
            views[fetched.index] = Some(fetched.result?);
            Ok(())
        })?;
        let key =
            PseudonymKey::new(&a.policy().pseudonym_key().ok_or_else(|| {
                SyncError::Damaged("the vault's pseudonym key is damaged".into())
            })?);
        let mut changes = Vec::new();
        for ((path, version), view) in candidates.into_iter().zip(views) {
            let Some(view) = view else { continue };
            let Entry::File { mode, .. } = &version.entry else {
                continue;
            };
            let original = self.restored(view.clone())?;
            let fresh = match pseudonymize(&original, a.rules(), &key) {
                Some(p) => {
                    self.note_originals(&a, p.originals);
                    p.view
                }
                None => original,
            };
            if fresh == view {
                continue;
            }
            let content = self.seal(fresh.as_slice(), fresh.len() as u64, None)?;
            changes.push(Change {
                path,
                seen: Seen::only(Showing::of(&version, None)),
                after: After::Put {
                    entry: Entry::File {
                        content,
                        mode: *mode,
                    },
                    mtime_ns: version.mtime_ns,
                },
                local: LocalChange::Restamp,
            });
        }
        let resealed = changes.len();
        self.queue_originals()?;
        if !changes.is_empty() {
            self.record(changes, Vec::new())?;
        }
        Ok(resealed)
    }
}
