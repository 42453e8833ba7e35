//! Other devices' changes reaching the mount: the worker polls the vault with no lock
//! of the mount's held, then brings the tree in step under the state lock, briefly,
//! and returns what the kernel must forget.

use std::collections::BTreeSet;

use super::mount_fs::{return_freed_memory, MountFs};
use super::tree::{Invalidation, Kind};
use crate::model::Entry;
use crate::sync::{NoProgress, PollReport, PublishReport, SyncError};

impl MountFs {
    /// Before `apply_remote`, without the state: learns the size the files it
    /// will show have on this device (see `mount_fs::resolve_sizes`). False when
    /// the backend did not answer (tried again at the next poll).
    pub(super) fn learn_sizes(&self, changed: Option<&BTreeSet<String>>) -> bool {
        if !self.vault.restores_originals() {
            return true;
        }
        let ns = match changed {
            Some(paths) => {
                let scope: Vec<String> = paths.iter().cloned().collect();
                self.vault.namespace_of(&scope)
            }
            None => self.vault.namespace(),
        };
        match ns {
            Ok(ns) => super::mount_fs::resolve_sizes(&self.vault, &ns),
            Err(e) => {
                tracing::warn!("cannot read the index: {e}");
                false
            }
        }
    }

    /// Applies a poll's result to the tree; returns what the kernel must forget.
    /// A few changed files are refreshed one by one; anything that may move folders
    /// (or too many paths to look at singly) rebuilds the tree from the whole
    /// namespace.
    pub(super) fn apply_remote(
        &self,
        changed: Option<&BTreeSet<String>>,
    ) -> Result<Vec<Invalidation>, SyncError> {
        // The namespace is read under the state lock (the index is local): a close
        // recorded between reading and applying would otherwise be undone here.
        let mut st = self.state();
        let specials = st.tree.local_only_paths();
        if let Some(paths) = changed {
            let scope: Vec<String> = paths.iter().cloned().collect();
            let ns = self.vault.namespace_of(&scope)?;
            let is_dir = |p: &String| {
                ns.get(p)
                    .is_some_and(|s| matches!(s.version.entry, Entry::Dir { .. }))
                    || st
                        .tree
                        .ino_of(p)
                        .and_then(|i| st.tree.get(i))
                        .is_some_and(|n| n.kind == Kind::Dir)
            };
            if !scope.iter().any(is_dir) {
                let staged = Self::staged_paths(&st);
                let mut inval = st.tree.refresh(&scope, &ns, &|p| staged.contains(p));
                inval.extend(self.after_remote(&mut st, &specials));
                return Ok(inval);
            }
        }
        let ns = self.vault.namespace()?;
        let staged = Self::staged_paths(&st);
        let mut inval = st.tree.apply(&ns, &|p| staged.contains(p));
        inval.extend(self.after_remote(&mut st, &specials));
        drop(st);
        drop(ns);
        return_freed_memory();
        Ok(inval)
    }

    /// Uploads what is queued and publishes it; no lock of the mount's is held.
    pub fn publish_queue(&self) -> Result<PublishReport, SyncError> {
        self.vault.publish(&NoProgress)
    }

    /// Looks for other devices' changes; no lock of the mount's is held.
    pub fn poll_vault(&self) -> Result<PollReport, SyncError> {
        self.vault.poll(&NoProgress)
    }

    /// Waits up to about `max` for the backend to tell of a change by another
    /// writer; None when it cannot tell (the poller's interval is all there is).
    /// No lock of the mount's is held.
    pub fn wait_for_remote_change(
        &self,
        max: std::time::Duration,
    ) -> Option<Result<bool, SyncError>> {
        self.vault.wait_for_change(max)
    }

    /// One round of what the worker does, for tests that drive the filesystem
    /// without one: publish what is queued, poll, apply what changed.
    pub fn sync_once(&self) -> Result<Vec<Invalidation>, SyncError> {
        let published = self.publish_queue()?;
        let polled = self.poll_vault()?;
        if published.repaired {
            self.learn_sizes(None);
            return self.apply_remote(None);
        }
        if self.vault.refresh_anonymization()? {
            self.learn_sizes(None);
            return self.apply_remote(None);
        }
        if polled.new_versions == 0 {
            return Ok(Vec::new());
        }
        self.learn_sizes(polled.changed_paths.as_ref());
        self.apply_remote(polled.changed_paths.as_ref())
    }
}
