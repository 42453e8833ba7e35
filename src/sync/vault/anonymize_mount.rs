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
use crate::anonymize::{pseudonymize, restore, tokens_in};
use crate::crypto::blob::hash_bytes;

/// What the mount learned of a content: the size it shows, and the pseudonyms a
/// read restores in it (exactly those, so the bytes keep that size whatever this
/// device learns later; none: shown as stored).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Learned {
    size: u64,
    tokens: Arc<[String]>,
    /// Every pseudonym of the view is restored: what a later start may take as
    /// it is (one whose value this device could not open then is learned again).
    #[serde(default)]
    complete: bool,
}

/// Where a trusted mount keeps what it learned between runs (a cache: lost or
/// damaged, it is learned again). Sizes and pseudonyms, never a value.
const LEARNED_FILE: &str = "learned-sizes.json";

impl Learned {
    fn restores(&self, token: &str) -> bool {
        self.tokens
            .binary_search_by(|t| t.as_str().cmp(token))
            .is_ok()
    }
}

/// `view` with the pseudonyms `learned` names replaced by their values.
fn restore_learned(a: &Anonymizer, learned: &Learned, view: &[u8]) -> Vec<u8> {
    let dict = lock(&a.dictionary);
    restore(view, |t| {
        if learned.restores(t) {
            dict.get(t).map(String::as_str)
        } else {
            None
        }
    })
}

/// What `view` shows once every pseudonym whose value `a` knows is restored.
fn learn(a: &Anonymizer, view: &[u8]) -> Learned {
    let mut tokens: Vec<String> = {
        let dict = lock(&a.dictionary);
        tokens_in(view)
            .into_iter()
            .filter(|t| dict.contains_key(t))
            .collect()
    };
    tokens.sort();
    let complete = tokens.len() == tokens_in(view).len();
    let mut learned = Learned {
        size: view.len() as u64,
        tokens: tokens.into(),
        complete,
    };
    if !learned.tokens.is_empty() {
        learned.size = restore_learned(a, &learned, view).len() as u64;
    }
    learned
}

impl Vault {
    /// Reads the vault's policy again and says whether what this device shows may
    /// have changed since the last call (anonymization turned on or off, rules
    /// changed, the sensitive key received or rotated). A backend that does not
    /// answer changes nothing.
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
        // The values read so far stay true (a pseudonym is its value's own), and
        // so do the sizes learned with them: the tree and the reads keep agreeing
        // while the view is rebuilt. A device untrusted meanwhile keeps showing
        // what it already held, as its folder would; it opens nothing new.
        if let (Some(Some(old)), Some(new)) = (&known, &loaded) {
            let values = lock(&old.dictionary).clone();
            lock(&new.dictionary).extend(values);
            let read = lock(&old.read).clone();
            lock(&new.read).extend(read);
        }
        *lock(&self.anonymizer) = Some(loaded);
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
        // This device shows what was written: the values just replaced, and no
        // pseudonym that was written as such.
        let mut tokens: Vec<String> = p.originals.keys().cloned().collect();
        tokens.sort();
        let learned = Learned {
            size: content.len() as u64,
            tokens: tokens.into(),
            complete: true,
        };
        self.note_originals(&a, p.originals);
        self.queue_originals()?;
        lock(&self.shown_sizes).insert(hash_bytes(&p.view), learned);
        self.learned_unsaved.store(true, Ordering::Release);
        Ok(Some(p.view))
    }

    /// The size this device shows for `content`, where it differs from the view's
    /// or was learned: what the mount's tree shows.
    pub fn shown_sizes(&self) -> impl Fn(&ContentRef) -> Option<u64> + Send + Sync + 'static {
        let sizes = self.shown_sizes.clone();
        move |c: &ContentRef| lock(&sizes).get(&c.sha256).map(|l| l.size)
    }

    /// Whether a file of `content` shown with `shown_size` bytes (any, with
    /// `None`) shows its restored bytes: the size was learned for it. A size
    /// learned after the tree showed this version waits until it shows the new one.
    pub fn shown_bytes_due(&self, content: &ContentRef, shown_size: Option<u64>) -> bool {
        lock(&self.shown_sizes)
            .get(&content.sha256)
            .is_some_and(|l| !l.tokens.is_empty() && shown_size.is_none_or(|s| s == l.size))
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
        let learned = lock(&self.shown_sizes).get(&content.sha256).cloned()?;
        if learned.tokens.is_empty() || shown_size.is_some_and(|s| s != learned.size) {
            // Learned after the tree showed this version: the view until it shows
            // the new size.
            return None;
        }
        let a = lock(&self.anonymizer).clone().flatten()?;
        Some(restore_learned(&a, &learned, view))
    }

    /// For a trusted mount starting: what an earlier run learned, kept where this
    /// device still opens every value it restores (the originals are read once
    /// for that, not the memories).
    pub fn load_learned_sizes(&self) -> SyncResult<usize> {
        let Some(a) = lock(&self.anonymizer).clone().flatten() else {
            return Ok(0);
        };
        let path = self.home.sync_dir().join(LEARNED_FILE);
        let Some(secrets) = &a.secrets else {
            // No longer trusted: what it learned (sizes) goes too.
            let _ = std::fs::remove_file(&path);
            return Ok(0);
        };
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(0);
        };
        let Ok(kept) = serde_json::from_slice::<Vec<(ContentHash, Learned)>>(&bytes) else {
            tracing::warn!("{} is damaged: sizes are learned again", path.display());
            return Ok(0);
        };
        let unknown = {
            let dict = lock(&a.dictionary);
            kept.iter()
                .flat_map(|(_, l)| l.tokens.iter())
                .any(|t| !dict.contains_key(t))
        };
        if unknown {
            self.read_originals(&a, secrets)?;
        }
        let dict = lock(&a.dictionary);
        let mut sizes = lock(&self.shown_sizes);
        let mut loaded = 0;
        for (hash, mut learned) in kept {
            let mut tokens = learned.tokens.to_vec();
            tokens.sort();
            tokens.dedup();
            learned.tokens = tokens.into();
            if learned.complete && learned.tokens.iter().all(|t| dict.contains_key(t)) {
                sizes.insert(hash, learned);
                loaded += 1;
            }
        }
        Ok(loaded)
    }

    /// Whether the mount learned sizes not kept for its next start yet.
    pub fn learned_sizes_unsaved(&self) -> bool {
        self.learned_unsaved.load(Ordering::Acquire)
    }

    /// Keeps what this trusted mount learned of `contents` (what it shows now) for
    /// its next start, and forgets the rest.
    pub fn save_learned_sizes(&self, contents: &[ContentRef]) -> SyncResult<()> {
        if !self.restores_originals() || !self.learned_unsaved.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let kept: Vec<(ContentHash, Learned)> = {
            let sizes = lock(&self.shown_sizes);
            let mut seen = std::collections::HashSet::new();
            contents
                .iter()
                .filter(|c| seen.insert(c.sha256))
                .filter_map(|c| Some((c.sha256, sizes.get(&c.sha256)?.clone())))
                .filter(|(_, l)| l.complete)
                .collect()
        };
        let bytes = serde_json::to_vec(&kept)
            .map_err(|e| SyncError::Damaged(format!("learned sizes: {e}")))?;
        let saved =
            crate::config::write_atomic(&self.home.sync_dir().join(LEARNED_FILE), &bytes, 0o600);
        if saved.is_err() {
            self.learned_unsaved.store(true, Ordering::Release);
        }
        Ok(saved?)
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
    /// were fetched. A content that cannot be read is shown as stored, and tried
    /// again when the tree is rebuilt; only a backend that does not answer fails
    /// the whole.
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
        let measure = |_: usize, fetched: SyncResult<Vec<u8>>| -> SyncResult<Learned> {
            let view = fetched?;
            // Reads every originals object not read yet where a value is unknown.
            self.restored(view.clone())?;
            Ok(learn(&a, &view))
        };
        let mut learned = Vec::with_capacity(wanted.len());
        self.fetch_and_process(&wanted, &measure, |i, result| {
            match result {
                Ok(l) => learned.push((wanted[i].sha256, l)),
                // Shown as stored; tried again when the tree is rebuilt.
                Err(e) => tracing::warn!("cannot learn what a file shows restored: {e}"),
            }
            Ok(())
        })?;
        if !learned.is_empty() {
            lock(&self.shown_sizes).extend(learned);
            self.learned_unsaved.store(true, Ordering::Release);
        }
        Ok(wanted.len())
    }
}
