//! `rekey --rewrite`: everything the vault still needs is sealed again under the
//! current key, and then the older keys are dropped from the keyring, so that a
//! leaked older key opens nothing the vault still needs. What it may still open
//! until gc deletes it: superseded packs and older log objects of the devices; and
//! for good, a removed device's own objects (only it may delete them), which hold
//! only what it wrote or could read anyway.
//!
//! One writer per key stays true: each device seals again what it owns, its
//! versions' contents (published again as the same versions in a new place, as a
//! repack does), its device record and its log (a new segment and a snapshot under
//! the current key; gc then deletes what came before). The device that runs
//! `rekey --rewrite` does its part at once and takes over the files of removed
//! devices (a new version of each, same contents, sealed under the current key:
//! their own logs can never be sealed again). The others do theirs at their next
//! collection (`sync`, or a running mount within the hour). The older keys are
//! dropped when nothing in the vault needs them any more: `rekey --rewrite` run
//! again says who it still waits for, or drops them.

use std::collections::BTreeSet;

use super::*;
use crate::crypto::envelope::record_epoch;
use crate::crypto::OlderKey;
use crate::sync::records::{open_device, seal_device};

/// What a rewrite did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RewriteReport {
    /// Contents of this device sealed again under the current key.
    pub resealed: usize,
    /// Files of removed devices taken over (sealed again, as this device's).
    pub adopted: usize,
    /// Devices whose data is still sealed under an older key, by name.
    pub waiting_for: Vec<String>,
    /// The key epochs dropped from the keyring (empty while something needs them).
    pub dropped: Vec<u32>,
    /// Devices on a version that would not follow a file sealed again: nothing is
    /// sealed again until they are updated.
    pub needs_update: Vec<String>,
}

/// Meta key: the `rewrite_below` this device has done its part for.
pub(super) const META_RESEALED_BELOW: &str = "resealed_below";

impl Vault {
    /// This device's part of a rewrite, if one is asked for and not done yet:
    /// returns (contents sealed again, files taken over).
    pub(super) fn reseal_own(&self) -> SyncResult<(usize, usize)> {
        let below = self.unlocked()?.rewrite_below;
        if below == 0 {
            return Ok((0, 0));
        }
        let me = self.device.clone();
        let older = self.devices_not_reading_moves()?;
        if !older.is_empty() {
            tracing::warn!(
                "nothing is sealed again under the new key while {} runs a version that would not follow it; update it",
                older.join(", ")
            );
            return Ok((0, 0));
        }
        let takes_over = self.unlocked()?.rewrite_by == me.as_str();
        let log_done = self.index().meta_u64(META_RESEALED_BELOW)? >= u64::from(below);
        let removed: BTreeSet<String> = self
            .removed_devices()?
            .iter()
            .map(|r| r.device.clone())
            .collect();
        let heads = self.index().all_heads()?;
        let mut resealed = Vec::new();
        let mut adopted = Vec::new();
        for h in heads {
            let v = h.version;
            let old_content = match &v.entry {
                Entry::File { content, .. } if content.key_epoch < below => Some(content.clone()),
                _ => None,
            };
            let ours = v.device == me || (takes_over && removed.contains(v.device.as_str()));
            let sealed_again = match &old_content {
                Some(c) if ours => match self.seal_again_under_current(c) {
                    Ok(n) => Some(n),
                    // One unreadable file does not stop the rest; verify names it,
                    // and the older keys stay until it is sealed again.
                    Err(e) => {
                        tracing::warn!("{} was not sealed again under the new key: {e}", v.path);
                        continue;
                    }
                },
                _ => None,
            };
            let with_content = |mut nv: Version| {
                if let (Entry::File { content, .. }, Some(n)) = (&mut nv.entry, &sealed_again) {
                    *content = n.clone();
                }
                nv
            };
            if v.device == me {
                if sealed_again.is_some() {
                    resealed.push((v.clone(), with_content(v.clone())));
                }
            } else if takes_over && removed.contains(v.device.as_str()) {
                // Every head of a removed device, whatever it is: its log is about to
                // become unreadable, and a deletion it made must not come undone.
                adopted.push(with_content(v.clone()));
            }
        }
        let own_packs: Vec<crate::model::ObjectId> = resealed
            .iter()
            .map(|(_, n)| n)
            .chain(adopted.iter())
            .filter_map(|v| match &v.entry {
                Entry::File { content, .. } if content.owner == me => Some(content.pack.clone()),
                _ => None,
            })
            .collect();
        let mut writer = self.writer();
        writer.close_open();
        writer
            .sync()
            .map_err(SyncError::io(self.queue.dir().to_path_buf()))?;
        let register = writer.to_register(own_packs);
        let counts = (resealed.len(), adopted.len());
        self.index().transaction(|tx| {
            for p in &register {
                tx.add_pending_pack(p)?;
            }
            for (old, new) in &resealed {
                tx.relocate_own(old, new)?;
            }
            let mut counter = tx.meta_u64(META_COUNTER)?;
            for v in &adopted {
                counter = counter.max(v.vector.get(&me)) + 1;
                let mut vector = v.vector.clone();
                vector.set(&me, counter);
                let mine = Version {
                    path: v.path.clone(),
                    device: me.clone(),
                    vector,
                    mtime_ns: v.mtime_ns,
                    entry: v.entry.clone(),
                };
                tx.offer_version(&mine, None, false)?;
            }
            tx.set_meta(META_COUNTER, &counter.to_string())
        })?;
        writer.registered(&register);
        drop(writer);
        if log_done {
            if counts != (0, 0) {
                self.publish(&crate::sync::NoProgress)?;
            }
            return Ok(counts);
        }
        self.reseal_device_record()?;
        self.reseal_anonymize_records()?;
        // A segment under the current key even if nothing changed, and a snapshot
        // at it: everything before it can go, and nothing of this log needs an
        // older key.
        self.force_segment.store(true, Ordering::Release);
        self.publish_with_forced()?;
        let published = Seq(self.index().meta_u64(META_LAST_PUBLISHED)?);
        // With changes waiting, the snapshot (and this part) comes at the next try.
        if published.0 > 0 && self.index().unpublished_count()? == 0 {
            self.write_snapshot(published)?;
            self.index()
                .transaction(|tx| tx.set_meta(META_RESEALED_BELOW, &below.to_string()))?;
        }
        Ok(counts)
    }

    /// The bytes of `c`, sealed again under the current key into this device's
    /// queue.
    fn seal_again_under_current(&self, c: &ContentRef) -> SyncResult<ContentRef> {
        // Through a staging file (0600, unlinked at once): a large file is not
        // held in memory, and its plaintext leaves no name behind.
        let dir = self.home.staging_dir();
        std::fs::create_dir_all(&dir).map_err(SyncError::io(&dir))?;
        let path = dir.join(format!("reseal-{}", crate::crypto::keyring::random_id()));
        let mut staged = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(SyncError::io(&path))?
        };
        let _ = std::fs::remove_file(&path);
        self.stream_content(c, &mut staged)?;
        use std::io::Seek;
        staged
            .seek(std::io::SeekFrom::Start(0))
            .map_err(SyncError::io(&path))?;
        self.seal(staged, c.size, Some(c.sha256))
    }

    fn publish_with_forced(&self) -> SyncResult<()> {
        if self.publish(&crate::sync::NoProgress)?.segments > 0 {
            self.force_segment.store(false, Ordering::Release);
            return Ok(());
        }
        // Nothing queued: the forced segment is written as an acknowledgement.
        self.acknowledge()?;
        Ok(())
    }

    fn reseal_device_record(&self) -> SyncResult<()> {
        let key = self.layout.device_record(&self.device);
        let bytes = self.store.get(&key)?;
        if record_epoch(&bytes).unwrap_or(0) >= self.keys()?.epoch() {
            return Ok(());
        }
        let record = open_device(self.keys()?, &self.device, &bytes)?;
        self.store.put(&key, &seal_device(self.keys()?, &record))?;
        Ok(())
    }

    /// The devices (by name) of which something the vault still needs is sealed
    /// under an epoch below `below`: a head's contents, the device record, the
    /// newest snapshot or a segment after it. Removed devices are not asked: what
    /// of theirs still counts was taken over.
    fn still_sealed_below(&self, below: u32) -> SyncResult<Vec<String>> {
        let names = self.name_map()?;
        let removed: BTreeSet<String> = self
            .removed_devices()?
            .iter()
            .map(|r| r.device.clone())
            .collect();
        // A head is sealed again by the device whose version it is (a removed
        // device's, by the one that asked for the rewrite).
        let mut old: BTreeSet<DeviceId> = BTreeSet::new();
        let mut old_heads: BTreeSet<DeviceId> = BTreeSet::new();
        for h in self.index().all_heads()? {
            if let Entry::File { content, .. } = &h.version.entry {
                if content.key_epoch < below {
                    old_heads.insert(h.version.device.clone());
                }
            }
        }
        let epoch_of = |key: &str| -> SyncResult<Option<u32>> {
            match self.store.get_range(key, 0..16) {
                Ok(head) => Ok(record_epoch(&head)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.into()),
            }
        };
        for dir in self.store.list_dirs(&self.layout.root())? {
            let Some(d) = self.layout.device_of_dir(&dir) else {
                continue;
            };
            if removed.contains(d.as_str()) || old.contains(&d) {
                continue;
            }
            let mut keys = vec![self.layout.device_record(&d)];
            keys.extend(self.anonymize_record_keys(&d));
            let snap_prefix = self.layout.snapshot_prefix(&d);
            let newest = self
                .store
                .list(&snap_prefix, None)?
                .iter()
                .filter_map(|k| Layout::seq_of(&snap_prefix, k))
                .max();
            if let Some(s) = newest {
                keys.push(self.layout.snapshot(&d, s));
            }
            let log_prefix = self.layout.log_prefix(&d);
            for k in self.store.list(&log_prefix, None)? {
                if Layout::seq_of(&log_prefix, &k).is_some_and(|s| newest.is_none_or(|n| s > n)) {
                    keys.push(k);
                }
            }
            for k in keys {
                if epoch_of(&k)?.is_some_and(|e| e < below) {
                    old.insert(d.clone());
                    break;
                }
            }
        }
        let mut out: Vec<String> = old
            .into_iter()
            .chain(old_heads)
            .map(|d| names.get(&d).cloned().unwrap_or_else(|| d.to_string()))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `rekey --rewrite` after the rotation: this device's part, then the older
    /// keys dropped if nothing needs them any more.
    pub fn rewrite(&self) -> SyncResult<RewriteReport> {
        let mut report = RewriteReport::default();
        let below = self.unlocked()?.rewrite_below;
        if below == 0 {
            return Ok(report);
        }
        self.poll(&crate::sync::NoProgress)?;
        report.needs_update = self.devices_not_reading_moves()?;
        let (resealed, adopted) = self.reseal_own()?;
        report.resealed = resealed;
        report.adopted = adopted;
        // What this device superseded and its own older log go now (the grace
        // period and the others' word still hold for packs).
        self.collect_garbage(&GcOptions::default())?;
        report.waiting_for = self.still_sealed_below(below)?;
        if report.waiting_for.is_empty() {
            report.dropped = self.drop_older_keys(below)?;
        }
        Ok(report)
    }

    /// Writes the keyring again without the keys of epochs below `below`.
    fn drop_older_keys(&self, below: u32) -> SyncResult<Vec<u32>> {
        let _no_publishing = lock(&self.publishing);
        let local = read_master_key(&self.home)?;
        let ring = WrappedKey::from_json(&self.store.get(&self.layout.keyring())?)
            .map_err(|e| SyncError::Damaged(format!("the vault's keyring is damaged ({e})")))?;
        check_not_rolled_back(&local, &ring)?;
        let pass = self.passphrase.existing()?;
        let master = ring.unwrap_key(pass.as_bytes())?;
        let (_, mut secrets) = Unlocked::of(&ring, &master)?;
        let dropped: Vec<u32> = secrets
            .older_epochs()
            .into_iter()
            .filter(|e| *e < below)
            .collect();
        let kept: Vec<OlderKey> = secrets
            .older_keys
            .drain(..)
            .filter(|k| k.epoch >= below)
            .collect();
        secrets.older_keys = kept;
        secrets.rewrite_below = 0;
        secrets.rewrite_by.clear();
        self.replace_keyring(
            &local,
            &ring,
            NewKeyring {
                master: &master,
                pass: &pass,
                epoch: ring.epoch,
                secrets: &secrets,
            },
        )?;
        tracing::info!(?dropped, "older keys dropped from the keyring");
        Ok(dropped)
    }
}
