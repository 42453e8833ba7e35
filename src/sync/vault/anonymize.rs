//! Anonymization in the engine (README "Anonymization"): the vault's policy read
//! and written, contents pseudonymized before they are sealed, the originals sealed
//! to the sensitive key and queued beside the packs, and contents restored for a
//! trusted device as they are read.
//!
//! In the vault every content is the pseudonymized view, whoever wrote it: an
//! untrusted device never receives a byte of an original it could decrypt. The
//! originals of each push travel in an object of their own
//! (`{device}/originals/{id}.enc`), sealed to the sensitive public key, which every
//! device can seal to and only trusted devices open. They are queued on disk before
//! the versions naming their tokens are recorded and uploaded before the segment that
//! publishes them, so a trusted device that reads a token can always find its value.
//!
//! With no policy in the vault none of this runs: a vault that never used the
//! feature is read and written exactly as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::PathBuf;

use super::*;
use crate::anonymize::bundle;
use crate::anonymize::{
    policy, pseudonymize, restore, tokens_in, Policy, PseudonymKey, Rules, SensitiveSecrets,
};
use crate::crypto::envelope::{open_record, record_epoch, seal_record, RecordKind};
use crate::crypto::sealed_box::{BoxPublic, BoxSecret};
use crate::model::ObjectId;

const POLICY_CONTEXT: &[u8] = b"anonymize policy";
/// The journal of originals a mount appends to, in the originals queue.
const JOURNAL: &str = "journal";
/// The sensitive key epoch up to which this device's folder was last brought to
/// the restored view.
const META_RESTORED_AT: &str = "anonymize_restored_at";
/// Set once this device has seen a policy in the vault.
pub(super) const META_SEEN: &str = "anonymize_seen";

fn exchange_context(device: &DeviceId) -> Vec<u8> {
    format!("exchange key\0{device}").into_bytes()
}

pub(super) fn originals_context(device: &DeviceId, id: &ObjectId) -> Vec<u8> {
    format!("originals\0{device}\0{id}").into_bytes()
}

/// What this process knows of the vault's anonymization.
pub struct Anonymizer {
    pub(super) policy: Policy,
    pub(super) rules: Rules,
    pub(super) key: PseudonymKey,
    /// On a trusted device holding its grant: every sensitive secret it may use.
    pub(super) secrets: Option<SensitiveSecrets>,
    /// Token → original, from every originals object read so far.
    pub(super) dictionary: Mutex<HashMap<String, String>>,
    /// Originals objects already read (by key).
    pub(super) read: Mutex<HashSet<String>>,
    /// Whether every device's originals were listed in this process: a token still
    /// unknown after that has no original this device can open. Held while the
    /// listing runs, so that a reader on another thread waits for it.
    pub(super) listed: Mutex<bool>,
    /// Originals of what this process pseudonymized, not yet queued.
    pending: Mutex<BTreeMap<String, String>>,
}

impl Anonymizer {
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
    /// Whether this device opens originals (trusted, and its grant has arrived).
    pub fn restores(&self) -> bool {
        self.secrets.is_some()
    }
}

/// Renames the journal of originals to a `.part` file of its own, uploaded with
/// the rest of the queue.
fn set_journal_aside(dir: &std::path::Path) -> SyncResult<()> {
    let path = dir.join(JOURNAL);
    let aside = dir.join(format!(
        "journal-{}.part",
        ObjectId::new(crate::now_ms() as u64)
    ));
    fs::rename(&path, &aside).map_err(SyncError::io(&path))?;
    Ok(())
}

/// This device's exchange key pair, made on first need: its secret never leaves
/// `keys/exchange.key` (0600).
pub(super) fn exchange_secret(home: &Home) -> SyncResult<BoxSecret> {
    let path = home.keys_dir().join("exchange.key");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    SyncError::Damaged(format!("{} is not an exchange key", path.display()))
                })?;
            Ok(BoxSecret::from_bytes(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = BoxSecret::random();
            let text = zeroize::Zeroizing::new(hex::encode(secret.to_bytes().as_ref()));
            crate::config::write_atomic(&path, text.as_bytes(), 0o600)?;
            Ok(secret)
        }
        Err(e) => Err(SyncError::io(path)(e)),
    }
}

impl Vault {
    fn policy_key(&self) -> String {
        format!("{}global/anonymize.enc", self.layout.root())
    }

    fn exchange_key_of(&self, device: &DeviceId) -> String {
        format!("{}{device}/exchange.enc", self.layout.root())
    }

    pub(super) fn originals_prefix(&self, device: &DeviceId) -> String {
        format!("{}{device}/originals/", self.layout.root())
    }

    fn originals_queue(&self) -> PathBuf {
        self.home.sync_dir().join("originals")
    }

    /// The vault's policy as the backend holds it now; `None` where anonymization
    /// was never turned on.
    pub fn read_policy(&self) -> SyncResult<Option<Policy>> {
        let sealed = match self.store.get(&self.policy_key()) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let plain = open_record(self.keys()?, RecordKind::Device, POLICY_CONTEXT, &sealed)
            .map_err(|e| SyncError::Damaged(format!("the vault's anonymization policy: {e}")))?;
        Policy::from_json(&plain)
            .map(Some)
            .map_err(|e| SyncError::Damaged(e.to_string()))
    }

    pub(super) fn write_policy(&self, policy: &Policy) -> SyncResult<()> {
        let sealed = seal_record(
            self.keys()?,
            RecordKind::Device,
            POLICY_CONTEXT,
            &policy.to_json(),
        );
        self.store.put(&self.policy_key(), &sealed)?;
        *lock(&self.anonymizer) = None;
        Ok(())
    }

    /// For `rekey --rewrite`: the policy and this device's exchange key sealed again
    /// under the current key, so the older keys can go.
    pub(super) fn reseal_anonymize_records(&self) -> SyncResult<()> {
        let current = self.keys()?.epoch();
        let records = [
            (self.policy_key(), POLICY_CONTEXT.to_vec()),
            (
                self.exchange_key_of(&self.device),
                exchange_context(&self.device),
            ),
        ];
        for (key, context) in records {
            let bytes = match self.store.get(&key) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            if record_epoch(&bytes).unwrap_or(0) >= current {
                continue;
            }
            let plain = open_record(self.keys()?, RecordKind::Device, &context, &bytes)?;
            let sealed = seal_record(self.keys()?, RecordKind::Device, &context, &plain);
            self.store.put(&key, &sealed)?;
        }
        Ok(())
    }

    /// The anonymization records of `device` sealed with the vault's keys (what a
    /// rewrite must find under the current key before older keys go).
    pub(super) fn anonymize_record_keys(&self, device: &DeviceId) -> Vec<String> {
        vec![self.exchange_key_of(device)]
    }

    /// A device's published exchange key, if it has published one.
    pub(super) fn exchange_public(&self, device: &DeviceId) -> SyncResult<Option<BoxPublic>> {
        let sealed = match self.store.get(&self.exchange_key_of(device)) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let plain = open_record(
            self.keys()?,
            RecordKind::Device,
            &exchange_context(device),
            &sealed,
        )?;
        let text = String::from_utf8_lossy(&plain);
        Ok(BoxPublic::from_hex(text.trim()))
    }

    /// Publishes this device's exchange key unless the vault already holds it.
    pub(super) fn publish_exchange_key(&self, secret: &BoxSecret) -> SyncResult<()> {
        if self.exchange_public(&self.device)? == Some(secret.public()) {
            return Ok(());
        }
        let sealed = seal_record(
            self.keys()?,
            RecordKind::Device,
            &exchange_context(&self.device),
            secret.public().to_hex().as_bytes(),
        );
        self.store
            .put(&self.exchange_key_of(&self.device), &sealed)?;
        Ok(())
    }

    /// What this process applies: `None` where the vault has no policy. Read once;
    /// on the way, this device publishes its exchange key, and a trusted device
    /// holding the key hands it to trusted devices still waiting for it. Sealing
    /// asks this way and fails closed: nothing is sealed while the backend cannot
    /// say whether anonymization is on.
    pub fn anonymizer(&self) -> SyncResult<Option<Arc<Anonymizer>>> {
        if let Some(a) = lock(&self.anonymizer).clone() {
            return Ok(a);
        }
        let loaded = match self.read_policy()? {
            None => None,
            Some(policy) => {
                if self.index().meta(META_SEEN)?.is_none() {
                    self.index().transaction(|tx| tx.set_meta(META_SEEN, "1"))?;
                }
                Some(Arc::new(self.load_anonymizer(policy)?))
            }
        };
        *lock(&self.anonymizer) = Some(loaded.clone());
        Ok(loaded)
    }

    /// As [`Vault::anonymizer`], except that a backend that does not answer now is
    /// no reason to fail where this device never saw anonymization in use: a push
    /// or pull of a vault that never used it rides out an outage as before. Once
    /// seen, nothing is sealed or restored while the policy cannot be read.
    pub(super) fn anonymizer_to_read(&self) -> SyncResult<Option<Arc<Anonymizer>>> {
        match self.anonymizer() {
            Err(SyncError::Backend(e))
                if e.is_temporary() && self.index().meta(META_SEEN)?.is_none() =>
            {
                tracing::debug!("anonymization not checked now: {e}");
                Ok(None)
            }
            other => other,
        }
    }

    /// Whether this vault uses anonymization, as the backend says or, when it does
    /// not answer, as this device last saw it.
    pub fn uses_anonymization(&self) -> SyncResult<bool> {
        match self.read_policy() {
            Ok(p) => Ok(p.is_some()),
            Err(SyncError::Backend(e)) if e.is_temporary() => {
                Ok(self.index().meta(META_SEEN)?.is_some())
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn load_anonymizer(&self, mut policy: Policy) -> SyncResult<Anonymizer> {
        let exchange = exchange_secret(&self.home)?;
        self.publish_exchange_key(&exchange)?;
        let as_read = policy.to_json();
        let mut changed = false;
        let secrets = match policy.open_grant(&self.device, &exchange) {
            Ok(secrets) => secrets,
            // Made for an exchange key this device no longer has (its keys folder
            // was restored or lost): given up, so a trusted device makes it again
            // for the key published now.
            Err(e) => {
                tracing::warn!("{e}: asking the trusted devices for a new grant");
                policy.drop_grant(&self.device);
                changed = true;
                None
            }
        };
        if let Some(secrets) = &secrets {
            for device in policy.ungranted() {
                if let Some(public) = self.exchange_public(&device)? {
                    match policy.grant(&device, &public, secrets) {
                        Ok(()) => changed = true,
                        Err(e) => tracing::warn!("no grant for {device}: {e}"),
                    }
                }
            }
        }
        // Written only over the policy as it was read: a change made meanwhile by
        // another device (an untrust) wins, and this is done again next time.
        if changed && self.read_policy()?.map(|p| p.to_json()) == Some(as_read) {
            self.write_policy(&policy)?;
        }
        let rules = policy
            .rules()
            .map_err(|e| SyncError::Damaged(e.to_string()))?;
        let key =
            PseudonymKey::new(&policy.pseudonym_key().ok_or_else(|| {
                SyncError::Damaged("the vault's pseudonym key is damaged".into())
            })?);
        Ok(Anonymizer {
            policy,
            rules,
            key,
            secrets,
            dictionary: Mutex::new(HashMap::new()),
            read: Mutex::new(HashSet::new()),
            listed: Mutex::new(false),
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    /// The view of `content` the vault stores, when anonymization is on and it
    /// holds sensitive values (their originals are kept for [`Vault::queue_originals`]).
    pub fn pseudonymized(&self, content: &[u8]) -> SyncResult<Option<Vec<u8>>> {
        let Some(a) = self.anonymizer_to_read()? else {
            return Ok(None);
        };
        if !a.policy.enabled {
            return Ok(None);
        }
        let Some(p) = pseudonymize(content, &a.rules, &a.key) else {
            return Ok(None);
        };
        lock(&a.pending).extend(p.originals);
        Ok(Some(p.view))
    }

    /// Keeps originals pseudonymized outside [`Vault::pseudonymized`] for the next
    /// [`Vault::queue_originals`].
    /// Only values this device does not know to be in the vault already are kept:
    /// sealing a file again uploads no original twice.
    pub(super) fn note_originals(&self, a: &Anonymizer, originals: BTreeMap<String, String>) {
        let known = lock(&a.dictionary);
        let fresh: Vec<(String, String)> = originals
            .into_iter()
            .filter(|(token, _)| !known.contains_key(token))
            .collect();
        drop(known);
        lock(&a.pending).extend(fresh);
    }

    /// The hash of the view the vault would hold of `content` (with anonymization
    /// on and values in it), without keeping anything: what a folder compares with
    /// a version's hash to know that it already holds that version.
    pub fn view_hash(&self, content: &[u8]) -> SyncResult<Option<ContentHash>> {
        let Some(a) = self.anonymizer_to_read()? else {
            return Ok(None);
        };
        Ok(pseudonymize(content, &a.rules, &a.key)
            .map(|p| crate::crypto::blob::hash_bytes(&p.view)))
    }

    /// Seals the originals pseudonymized so far to the sensitive key and queues
    /// them on disk (durably), to be uploaded before the segment naming their
    /// tokens. Called before the versions are recorded.
    pub fn queue_originals(&self) -> SyncResult<()> {
        let Some(a) = lock(&self.anonymizer).clone().flatten() else {
            return Ok(());
        };
        let originals = std::mem::take(&mut *lock(&a.pending));
        if originals.is_empty() {
            return Ok(());
        }
        let id = ObjectId::new(crate::now_ms() as u64);
        let sealed =
            policy::seal_originals(&a.policy, &originals_context(&self.device, &id), &originals)
                .map_err(|e| SyncError::Damaged(format!("the vault's sensitive key: {e}")))?;
        let dir = self.originals_queue();
        crate::config::create_private_dir(&dir)?;
        let path = dir.join(format!("{id}.enc"));
        if self.relaxed.load(Ordering::Acquire) {
            // The mount: appended to the journal, as durable as the version about
            // to be recorded (a crash of this process loses neither; both reach
            // the disk together, see `sync_originals_queue`). A file per close
            // would cost more than the rest of the close.
            self.append_to_journal(&bundle::entry(&id, &sealed))?;
        } else {
            crate::config::write_atomic(&path, &sealed, 0o600)?;
            fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(SyncError::io(&dir))?;
        }
        // This device knows them already: no need to read them back.
        lock(&a.dictionary).extend(originals);
        Ok(())
    }

    /// Appends one entry to the journal of originals; a failed append sets the
    /// journal aside (its whole entries stay readable) and the next starts anew.
    fn append_to_journal(&self, entry: &[u8]) -> SyncResult<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.originals_queue();
        let path = dir.join(JOURNAL);
        let mut journal = lock(&self.originals_journal);
        if journal.is_none() {
            // A journal an earlier process left may end in an entry a crash cut
            // short: set aside whole (its whole entries are read), never appended to.
            if fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
                set_journal_aside(&dir)?;
            }
            let file = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)
                .map_err(SyncError::io(&path))?;
            *journal = Some(file);
        }
        let Some(file) = journal.as_mut() else {
            return Ok(());
        };
        let before = file.metadata().map_err(SyncError::io(&path))?.len();
        self.originals_unsynced.store(true, Ordering::Release);
        if let Err(e) = file.write_all(entry) {
            // What was written of the entry goes, so that the next one follows
            // whole entries; failing that, the journal is set aside.
            if file.set_len(before).is_err() {
                *journal = None;
                set_journal_aside(&dir)?;
            }
            return Err(SyncError::io(path)(e));
        }
        Ok(())
    }

    /// Puts the originals queued under relaxed durability on disk, before the
    /// index makes the versions naming them durable.
    pub(super) fn sync_originals_queue(&self) -> SyncResult<()> {
        if !self.originals_unsynced.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let dir = self.originals_queue();
        // Held throughout: the journal is not set aside (renamed) between the
        // listing and its sync.
        let _journal = lock(&self.originals_journal);
        let synced = (|| -> std::io::Result<()> {
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                match fs::File::open(&path) {
                    Ok(f) => f.sync_all()?,
                    // Uploaded meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            fs::File::open(&dir)?.sync_all()
        })();
        if let Err(e) = synced {
            self.originals_unsynced.store(true, Ordering::Release);
            return Err(SyncError::io(dir)(e));
        }
        Ok(())
    }

    /// Uploads the queued originals (before any segment is published): the
    /// objects a push queued and the journal a mount appended to, as one object.
    pub(super) fn upload_originals(&self) -> SyncResult<()> {
        let dir = self.originals_queue();
        // What the mount appends from now on goes to a new journal.
        {
            let mut journal = lock(&self.originals_journal);
            if fs::metadata(dir.join(JOURNAL)).is_ok_and(|m| m.len() > 0) {
                *journal = None;
                set_journal_aside(&dir)?;
            }
        }
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SyncError::io(dir)(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| (n.ends_with(".enc") || n.ends_with(".part")) && !n.contains(".tmp"))
            .collect();
        names.sort();
        let mut objects: Vec<(ObjectId, Vec<u8>)> = Vec::new();
        let mut single = true;
        let mut consumed = Vec::with_capacity(names.len());
        for name in &names {
            let path = dir.join(name);
            let bytes = fs::read(&path).map_err(SyncError::io(&path))?;
            if let Some(id) = name.strip_suffix(".enc").and_then(ObjectId::parse) {
                objects.push((id, bytes));
            } else if name.ends_with(".part") {
                single = false;
                let entries = bundle::journal_entries(&bytes);
                let whole: usize = entries.iter().map(|(_, o)| bundle::entry_len(o)).sum();
                if whole < bytes.len() {
                    tracing::warn!(
                        "{}: {} bytes after its last whole entry (cut short by a crash) left out",
                        path.display(),
                        bytes.len() - whole
                    );
                }
                objects.extend(
                    entries
                        .into_iter()
                        .map(|(id, object)| (id, object.to_vec())),
                );
            } else {
                continue;
            }
            consumed.push(path);
        }
        if consumed.is_empty() {
            return Ok(());
        }
        if !objects.is_empty() {
            let (id, bytes) = match objects.as_slice() {
                // One push's object, as it was queued.
                [(id, bytes)] if single => (id.clone(), bytes.clone()),
                _ => (
                    ObjectId::new(crate::now_ms() as u64),
                    bundle::bundle(&objects),
                ),
            };
            let key = format!("{}{id}.enc", self.originals_prefix(&self.device));
            self.store.put(&key, &bytes)?;
        }
        for path in consumed {
            fs::remove_file(&path).map_err(SyncError::io(&path))?;
        }
        Ok(())
    }

    /// `view` as this device shows it: on a trusted device, every token whose
    /// original it can open replaced by it; elsewhere, as it is.
    pub fn restored(&self, view: Vec<u8>) -> SyncResult<Vec<u8>> {
        Ok(self.restored_if(view)?.0)
    }

    /// [`Vault::restored`], and whether anything was restored.
    pub fn restored_if(&self, view: Vec<u8>) -> SyncResult<(Vec<u8>, bool)> {
        let Some(a) = self.anonymizer_to_read()? else {
            return Ok((view, false));
        };
        let Some(secrets) = &a.secrets else {
            return Ok((view, false));
        };
        let tokens = tokens_in(&view);
        if tokens.is_empty() {
            return Ok((view, false));
        }
        let unknown = {
            let dict = lock(&a.dictionary);
            tokens.iter().any(|t| !dict.contains_key(t))
        };
        if unknown {
            let mut listed = lock(&a.listed);
            if !*listed {
                self.read_originals(&a, secrets)?;
                *listed = true;
            }
        }
        let dict = lock(&a.dictionary);
        let out = restore(&view, |t| dict.get(t).map(String::as_str));
        let changed = out != view;
        Ok((out, changed))
    }

    /// Whether the folder must be read again for tokens this device can now
    /// restore: it received the sensitive key (or a new one) since it last looked.
    pub fn restore_recheck_due(&self) -> SyncResult<bool> {
        let Some(a) = self.anonymizer_to_read()? else {
            return Ok(false);
        };
        if a.secrets.is_none() {
            return Ok(false);
        }
        let want = a.policy.epoch.to_string();
        Ok(self.index().meta(META_RESTORED_AT)?.as_deref() != Some(want.as_str()))
    }

    /// Records that the folder shows every value this device can restore.
    pub fn note_restore_checked(&self) -> SyncResult<()> {
        let Some(a) = self.anonymizer_to_read()? else {
            return Ok(());
        };
        let epoch = a.policy.epoch.to_string();
        self.index()
            .transaction(|tx| tx.set_meta(META_RESTORED_AT, &epoch))?;
        Ok(())
    }
}
