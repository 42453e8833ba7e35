//! Anonymization through the mount.
//!
//! The vault holds every content as its view, as it does for push (see
//! `anonymize.rs`). What the mount adds is sizes: a file must show its size before
//! anything reads it, and the size a trusted device shows is that of the restored
//! bytes, which only the bytes tell. So a trusted mount learns the restored size of
//! every content before the tree shows it (at mount start, and after each poll,
//! fetching what it does not know yet), and a write notes the size of what it
//! wrote. The tree then shows those sizes, and a read restores exactly the contents
//! whose size it learned, so the bytes always match the size the kernel was told.
//!
//! An untrusted device learns no original, but keeps the values it wrote itself in
//! this process: what it wrote reads back as written until the mount ends, and as
//! the vault's view (pseudonyms) after a remount.
//!
//! Nothing here waits on the network but [`Vault::refresh_anonymization`] and
//! [`Vault::resolve_shown_sizes`], which the mount calls without its state.

use super::anonymize::{Anonymizer, META_SEEN};
use super::*;
use crate::anonymize::{pseudonymize, restore};
use crate::crypto::blob::hash_bytes;

impl Vault {
    /// Reads the vault's policy again and says whether what this device shows may
    /// have changed since the last call (anonymization turned on or off, rules
    /// changed, the sensitive key received or rotated). Sizes learned under the
    /// policy as it was are forgotten then. A backend that does not answer changes
    /// nothing.
    pub fn refresh_anonymization(&self) -> SyncResult<bool> {
        let policy = match self.read_policy() {
            Ok(p) => p,
            Err(SyncError::Backend(e)) if e.is_temporary() => {
                tracing::debug!("anonymization not checked now: {e}");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let known = lock(&self.anonymizer).clone();
        let same = match (&known, &policy) {
            (Some(None), None) => true,
            (Some(Some(a)), Some(p)) => a.policy.to_json() == p.to_json(),
            _ => false,
        };
        if same {
            return Ok(false);
        }
        let loaded = match policy {
            None => None,
            Some(policy) => {
                if self.index().meta(META_SEEN)?.is_none() {
                    self.index().transaction(|tx| tx.set_meta(META_SEEN, "1"))?;
                }
                Some(Arc::new(self.load_anonymizer(policy)?))
            }
        };
        *lock(&self.anonymizer) = Some(loaded);
        lock(&self.shown_sizes).clear();
        Ok(true)
    }

    /// The policy as last read, without the network: `Ok(None)` where anonymization
    /// is off; an error where this device has seen it in use but this process has
    /// not read the policy yet (nothing is sealed then: fail closed).
    fn anonymizer_known(&self) -> SyncResult<Option<Arc<Anonymizer>>> {
        match lock(&self.anonymizer).clone() {
            Some(a) => Ok(a),
            None if self.index().meta(META_SEEN)?.is_some() => Err(SyncError::Invalid(
                "the vault's anonymization rules have not been read yet (the backend did not answer)"
                    .into(),
            )),
            None => Ok(None),
        }
    }

    /// Whether what the mount writes must go through [`Vault::mount_view`].
    pub fn anonymizes_writes(&self) -> SyncResult<bool> {
        Ok(self.anonymizer_known()?.is_some_and(|a| a.policy.enabled))
    }

    /// The view the vault stores of `content` written through the mount, when it
    /// holds sensitive values; their originals are queued (durably) before this
    /// returns, so the version may be recorded next. No network.
    pub fn mount_view(&self, content: &[u8]) -> SyncResult<Option<Vec<u8>>> {
        let Some(a) = self.anonymizer_known()? else {
            return Ok(None);
        };
        if !a.policy.enabled || content.len() as u64 > ANONYMIZE_MAX {
            return Ok(None);
        }
        let Some(p) = pseudonymize(content, &a.rules, &a.key) else {
            return Ok(None);
        };
        self.note_originals(&a, p.originals);
        self.queue_originals()?;
        // This device shows its own values and those it can open.
        let shown = {
            let dict = lock(&a.dictionary);
            restore(&p.view, |t| dict.get(t).map(String::as_str)).len() as u64
        };
        lock(&self.shown_sizes).insert(hash_bytes(&p.view), shown);
        Ok(Some(p.view))
    }

    /// The size this device shows for `content`, where it differs from the view's
    /// or was learned: what the mount's tree shows.
    pub fn shown_sizes(&self) -> impl Fn(&ContentRef) -> Option<u64> + Send + Sync + 'static {
        let sizes = self.shown_sizes.clone();
        move |c: &ContentRef| lock(&sizes).get(&c.sha256).copied()
    }

    /// Whether a file of `content` shown with `shown_size` bytes (any, with
    /// `None`) shows its restored bytes: the size was learned for it. A size
    /// learned after the tree showed this version waits until it shows the new one.
    pub fn shown_bytes_due(&self, content: &ContentRef, shown_size: Option<u64>) -> bool {
        let learned = lock(&self.shown_sizes).get(&content.sha256).copied();
        learned.is_some_and(|l| shown_size.is_none_or(|s| s == l))
    }

    /// `view` (the checked bytes of `content`) as this device shows a file of
    /// `shown_size` bytes: restored where the size was learned for it, else `None`
    /// (the view is what is shown). No network: the values were read as the size
    /// was learned.
    pub fn shown_bytes(
        &self,
        content: &ContentRef,
        shown_size: Option<u64>,
        view: &[u8],
    ) -> Option<Vec<u8>> {
        if !self.shown_bytes_due(content, shown_size) {
            return None;
        }
        let a = lock(&self.anonymizer).clone().flatten()?;
        let dict = lock(&a.dictionary);
        let out = restore(view, |t| dict.get(t).map(String::as_str));
        let shown_size = shown_size.unwrap_or(out.len() as u64);
        if out.len() as u64 != shown_size {
            tracing::warn!(
                "a file restored to {} bytes where {shown_size} were shown: its values changed",
                out.len()
            );
        }
        Some(out)
    }

    /// Whether this process restores originals (trusted, holding the sensitive
    /// key, as last read). No network.
    pub fn restores_originals(&self) -> bool {
        lock(&self.anonymizer)
            .clone()
            .flatten()
            .is_some_and(|a| a.restores())
    }

    /// For a trusted mount: learns the size each of `contents` shows once
    /// restored, fetching those it does not know yet (a vault that does not use
    /// anonymization, or an untrusted device, fetches nothing). Returns how many
    /// were fetched.
    pub fn resolve_shown_sizes(&self, contents: &[ContentRef]) -> SyncResult<usize> {
        let Some(a) = lock(&self.anonymizer).clone().flatten() else {
            return Ok(0);
        };
        if !a.restores() {
            return Ok(0);
        }
        let wanted: Vec<ContentRef> = {
            let sizes = lock(&self.shown_sizes);
            let mut seen = std::collections::HashSet::new();
            contents
                .iter()
                .filter(|c| c.size <= ANONYMIZE_MAX && !sizes.contains_key(&c.sha256))
                .filter(|c| seen.insert(c.sha256))
                .cloned()
                .collect()
        };
        if wanted.is_empty() {
            return Ok(0);
        }
        // Values other devices sealed since the last listing: one listing for
        // the batch, where a token is not known yet.
        *lock(&a.listed) = false;
        let measure = |_: usize, fetched: SyncResult<Vec<u8>>| -> SyncResult<u64> {
            Ok(self.restored(fetched?)?.len() as u64)
        };
        let mut learned = Vec::with_capacity(wanted.len());
        self.fetch_and_process(&wanted, &measure, |i, size| {
            learned.push((wanted[i].sha256, size?));
            Ok(())
        })?;
        lock(&self.shown_sizes).extend(learned);
        Ok(wanted.len())
    }
}
