//! The vault's anonymization policy: the rules, the key pseudonyms are made with,
//! which devices are trusted, and the sensitive keys handed to each of them.
//!
//! The sensitive key is a key pair, not a secret key: every device seals the
//! originals of what it writes to the public half (an untrusted device too, for the
//! values it adds), and only trusted devices hold the secret half that opens them.
//! Each trusted device receives every sensitive secret it may use in a grant sealed
//! to its own exchange key (a key pair whose secret never leaves the device). When a
//! device is untrusted the pair is replaced (a new epoch): what is sealed from then
//! on opens only for the devices still trusted, whose grants carry the older
//! secrets too, so everything sealed before still opens for them.
//!
//! The policy travels sealed with the vault's keys, so the provider reads none of it;
//! every device of the vault can read it (it holds the pseudonym key, which every
//! device needs), but a grant opens only for its device.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::rules::{Rules, RulesError};
use crate::crypto::sealed_box::{self, BoxPublic, BoxSecret};
use crate::crypto::CryptoError;
use crate::model::DeviceId;

pub const POLICY_FORMAT: u32 = 1;

/// What a policy cannot be read as.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the vault's anonymization policy is of format {0}, newer than this ghostie-fs reads: update it")]
    Newer(u32),
    #[error("the vault's anonymization policy is damaged ({0})")]
    Damaged(String),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("this device's grant of the sensitive key does not open ({0})")]
    Grant(CryptoError),
}

/// The sensitive secrets one device may use, by epoch.
pub type SensitiveSecrets = BTreeMap<u32, BoxSecret>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub format: u32,
    /// Off keeps the policy (and so the pseudonym key and the sensitive keys):
    /// turned on again, the same values get the same pseudonyms as before.
    pub enabled: bool,
    pub changed_ms: i64,
    pub changed_by: DeviceId,
    /// Hex of the 32-byte key every device makes pseudonyms with.
    pseudonym_key: String,
    rules: serde_json::Value,
    /// The current sensitive key pair's epoch and public half.
    pub epoch: u32,
    public_key: String,
    pub trusted: Vec<DeviceId>,
    /// Device → its grant: every sensitive secret up to `epoch`, sealed to the
    /// device's exchange key. A trusted device without one has not published an
    /// exchange key yet: a trusted device that sees it later makes the grant.
    #[serde(default)]
    grants: BTreeMap<DeviceId, String>,
}

#[derive(Serialize, Deserialize)]
struct GrantBody {
    /// Epoch → hex of the secret.
    secrets: BTreeMap<u32, String>,
}

fn grant_context(device: &DeviceId, epoch: u32) -> Vec<u8> {
    format!("sensitive grant\0{device}\0{epoch}").into_bytes()
}

impl Policy {
    /// A new policy made by `device`, which is trusted along with `also_trusted`;
    /// returns it with the first sensitive secret (which the caller grants).
    pub fn new(
        device: &DeviceId,
        also_trusted: impl IntoIterator<Item = DeviceId>,
        rules: &Rules,
        now_ms: i64,
    ) -> (Self, SensitiveSecrets) {
        let secret = BoxSecret::random();
        let mut trusted: Vec<DeviceId> = also_trusted.into_iter().collect();
        trusted.push(device.clone());
        trusted.sort();
        trusted.dedup();
        let mut key = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), key.as_mut());
        let policy = Self {
            format: POLICY_FORMAT,
            enabled: true,
            changed_ms: now_ms,
            changed_by: device.clone(),
            pseudonym_key: hex::encode(key.as_ref()),
            rules: rules.to_json(),
            epoch: 1,
            public_key: secret.public().to_hex(),
            trusted,
            grants: BTreeMap::new(),
        };
        (policy, BTreeMap::from([(1, secret)]))
    }

    /// Reads a policy's JSON, refusing a newer format and anything inconsistent.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let f: Format =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Damaged(e.to_string()))?;
        if f.format > POLICY_FORMAT {
            return Err(PolicyError::Newer(f.format));
        }
        let p: Self =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Damaged(e.to_string()))?;
        if p.pseudonym_key().is_none() || p.public_key().is_none() || p.epoch == 0 {
            return Err(PolicyError::Damaged("a key of the wrong length".into()));
        }
        p.rules()?;
        Ok(p)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("policies serialise"))
    }

    pub fn pseudonym_key(&self) -> Option<[u8; 32]> {
        hex::decode(&self.pseudonym_key).ok()?.try_into().ok()
    }

    pub fn public_key(&self) -> Option<BoxPublic> {
        BoxPublic::from_hex(&self.public_key)
    }

    pub fn rules(&self) -> Result<Rules, RulesError> {
        Rules::from_json(&self.rules)
    }

    pub fn set_rules(&mut self, rules: &Rules) {
        self.rules = rules.to_json();
    }

    pub fn is_trusted(&self, device: &DeviceId) -> bool {
        self.trusted.contains(device)
    }

    /// Trusted devices still waiting for their grant.
    pub fn ungranted(&self) -> Vec<DeviceId> {
        self.trusted
            .iter()
            .filter(|d| !self.grants.contains_key(*d))
            .cloned()
            .collect()
    }

    /// Hands `device` (trusted) every secret in `secrets`, sealed to its exchange key.
    pub fn grant(
        &mut self,
        device: &DeviceId,
        exchange: &BoxPublic,
        secrets: &SensitiveSecrets,
    ) -> Result<(), PolicyError> {
        let body = GrantBody {
            secrets: secrets
                .iter()
                .map(|(e, s)| (*e, hex::encode(s.to_bytes().as_ref())))
                .collect(),
        };
        let plain = Zeroizing::new(
            serde_json::to_vec(&body).unwrap_or_else(|_| unreachable!("grants serialise")),
        );
        let sealed = sealed_box::seal(exchange, &grant_context(device, self.epoch), &plain)
            .map_err(PolicyError::Grant)?;
        self.grants.insert(device.clone(), hex::encode(sealed));
        Ok(())
    }

    /// Forgets `device`'s grant (one that no longer opens there): it is made again
    /// from the exchange key the device publishes now.
    pub fn drop_grant(&mut self, device: &DeviceId) {
        self.grants.remove(device);
    }

    /// Opens `device`'s grant with its exchange secret: `None` when it has none.
    pub fn open_grant(
        &self,
        device: &DeviceId,
        exchange: &BoxSecret,
    ) -> Result<Option<SensitiveSecrets>, PolicyError> {
        if !self.is_trusted(device) {
            return Ok(None);
        }
        let Some(sealed) = self.grants.get(device) else {
            return Ok(None);
        };
        let sealed = hex::decode(sealed).map_err(|e| PolicyError::Damaged(e.to_string()))?;
        let plain = Zeroizing::new(
            sealed_box::open(exchange, &grant_context(device, self.epoch), &sealed)
                .map_err(PolicyError::Grant)?,
        );
        let body: GrantBody =
            serde_json::from_slice(&plain).map_err(|e| PolicyError::Damaged(e.to_string()))?;
        let mut out = SensitiveSecrets::new();
        for (epoch, hexed) in body.secrets {
            let bytes: [u8; 32] = hex::decode(&hexed)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| PolicyError::Damaged("a granted key of the wrong length".into()))?;
            out.insert(epoch, BoxSecret::from_bytes(bytes));
        }
        // The grant must hold the current pair's secret: anything else is not a
        // grant of this policy.
        let current = out.get(&self.epoch).map(BoxSecret::public);
        if current != self.public_key() {
            return Err(PolicyError::Damaged(
                "a grant without the current sensitive key".into(),
            ));
        }
        Ok(Some(out))
    }

    /// Trusts `device` from now on (its grant follows once its exchange key is known).
    pub fn trust(&mut self, device: &DeviceId) {
        if !self.trusted.contains(device) {
            self.trusted.push(device.clone());
            self.trusted.sort();
        }
    }

    /// Stops trusting `device`: a new sensitive key pair, so that nothing sealed
    /// from now on opens for it, and every grant made anew for the devices still
    /// trusted whose exchange keys `exchange_of` knows. `secrets` are the older ones
    /// (held by the caller, a trusted device); returns all of them, new included.
    pub fn untrust(
        &mut self,
        device: &DeviceId,
        mut secrets: SensitiveSecrets,
        exchange_of: impl Fn(&DeviceId) -> Option<BoxPublic>,
    ) -> SensitiveSecrets {
        self.trusted.retain(|d| d != device);
        self.grants.clear();
        self.epoch += 1;
        let fresh = BoxSecret::random();
        self.public_key = fresh.public().to_hex();
        secrets.insert(self.epoch, fresh);
        for d in self.trusted.clone() {
            if let Some(public) = exchange_of(&d) {
                // A key that cannot be sealed to leaves that device waiting.
                if let Err(e) = self.grant(&d, &public, &secrets) {
                    tracing::warn!("no grant for {d}: {e}");
                }
            }
        }
        secrets
    }
}

/// The originals of the values one push pseudonymized (token → value), sealed to
/// the current sensitive key: `epoch` (4 bytes, big-endian) then the box.
pub fn seal_originals(
    policy: &Policy,
    context: &[u8],
    originals: &BTreeMap<String, String>,
) -> Result<Vec<u8>, CryptoError> {
    let public = policy
        .public_key()
        .ok_or_else(|| CryptoError::InvalidRecord("a sensitive key of the wrong length".into()))?;
    let plain = Zeroizing::new(
        serde_json::to_vec(originals).unwrap_or_else(|_| unreachable!("maps of strings serialise")),
    );
    let mut out = policy.epoch.to_be_bytes().to_vec();
    out.extend_from_slice(&sealed_box::seal(&public, context, &plain)?);
    Ok(out)
}

/// Opens an originals object with the secret of its epoch.
pub fn open_originals(
    secrets: &SensitiveSecrets,
    context: &[u8],
    sealed: &[u8],
) -> Result<BTreeMap<String, String>, CryptoError> {
    let (epoch, boxed) = sealed
        .split_first_chunk::<4>()
        .ok_or_else(|| CryptoError::Damaged("an originals object too short".into()))?;
    let epoch = u32::from_be_bytes(*epoch);
    let secret = secrets.get(&epoch).ok_or(CryptoError::NewerKey(epoch))?;
    let plain = Zeroizing::new(sealed_box::open(secret, context, boxed)?);
    serde_json::from_slice(&plain).map_err(|e| CryptoError::Damaged(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anonymize::Detector;

    #[test]
    fn a_grant_opens_for_its_device_only_and_untrust_shuts_out_what_comes_after() {
        let (a, b, c) = (DeviceId::random(), DeviceId::random(), DeviceId::random());
        let (ka, kb, kc) = (
            BoxSecret::random(),
            BoxSecret::random(),
            BoxSecret::random(),
        );
        let rules = Rules::with_detectors(vec![Detector::Email]);
        let (mut policy, secrets) = Policy::new(&a, [b.clone()], &rules, 1);
        assert_eq!(policy.ungranted(), {
            let mut v = vec![a.clone(), b.clone()];
            v.sort();
            v
        });
        policy.grant(&a, &ka.public(), &secrets).unwrap();
        policy.grant(&b, &kb.public(), &secrets).unwrap();
        // Through the vault's JSON and back.
        let policy = Policy::from_json(&policy.to_json()).unwrap();
        assert!(policy.ungranted().is_empty());
        assert!(policy.open_grant(&b, &kb).unwrap().is_some());
        assert!(policy.open_grant(&c, &kc).unwrap().is_none());
        // b's grant is no key for anyone else.
        assert!(policy.open_grant(&b, &kc).is_err());
        assert_eq!(policy.rules().unwrap(), rules);

        let old = seal_originals(
            &policy,
            b"o1",
            &BTreeMap::from([("t1".into(), "anna@x.org".into())]),
        )
        .unwrap();
        let b_secrets = policy.open_grant(&b, &kb).unwrap().unwrap();
        assert_eq!(
            open_originals(&b_secrets, b"o1", &old).unwrap()["t1"],
            "anna@x.org"
        );

        let mut policy = policy;
        let a_secrets = policy.open_grant(&a, &ka).unwrap().unwrap();
        let all = policy.untrust(&b, a_secrets, |d| (d == &a).then(|| ka.public()));
        assert_eq!(all.len(), 2);
        assert!(!policy.is_trusted(&b));
        assert!(policy.open_grant(&b, &kb).unwrap().is_none());
        let new = seal_originals(
            &policy,
            b"o2",
            &BTreeMap::from([("t2".into(), "bob@x.org".into())]),
        )
        .unwrap();
        // b keeps what it was given, and nothing sealed after.
        assert!(open_originals(&b_secrets, b"o2", &new).is_err());
        let a_after = policy.open_grant(&a, &ka).unwrap().unwrap();
        assert_eq!(
            open_originals(&a_after, b"o1", &old).unwrap()["t1"],
            "anna@x.org"
        );
        assert_eq!(
            open_originals(&a_after, b"o2", &new).unwrap()["t2"],
            "bob@x.org"
        );
        // The wrong context does not open.
        assert!(open_originals(&a_after, b"o1", &new).is_err());
    }

    #[test]
    fn a_newer_or_damaged_policy_is_refused() {
        let a = DeviceId::random();
        let (policy, _) = Policy::new(&a, [], &Rules::default(), 1);
        let mut v: serde_json::Value = serde_json::from_slice(&policy.to_json()).unwrap();
        v["format"] = 2.into();
        let e = Policy::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("update"), "{e}");
        v["format"] = 1.into();
        v["pseudonym_key"] = "abcd".into();
        assert!(Policy::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
        assert!(Policy::from_json(b"[]").is_err());
    }
}
