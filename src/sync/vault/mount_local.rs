//! What the mount keeps of a path on this device alone: never a version, never
//! uploaded, so another device never sees it and a read never makes a version.
//!
//! - **Access times.** A read or a utimens moves a file's atime (relatime rules, in
//!   the mount); the time is kept here so a remount shows it again.
//! - **Fifos and sockets.** They are ways for programs on one machine to meet, with no
//!   bytes of their own to sync: each lives here, with its mode and times.
//! - **Hard links.** In the vault each name of a multiply linked file is a file of its
//!   own (the same content, sealed once); the rows here say which paths this device
//!   shows as one inode.
//!
//! The front-end hands whole rows back: the engine does not interpret them beyond
//! storing them, in one transaction per call.

use std::collections::HashMap;

use super::*;
pub use crate::store::{LocalSpecial, MountLocal, SpecialKind};

/// As `RECORDS_PER_CHECKPOINT` in `record.rs`: relaxed commits between two copies
/// of the index's log into the database.
const LOCAL_WRITES_PER_CHECKPOINT: u32 = 100;

impl Vault {
    /// Every path the mount keeps something of on this device.
    pub fn mount_local(&self) -> SyncResult<HashMap<String, MountLocal>> {
        Ok(self.index().mount_local()?)
    }

    /// Sets each path's row (an empty [`MountLocal`] removes it), in one transaction.
    pub fn set_mount_local(&self, rows: &[(String, MountLocal)]) -> SyncResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.index().transaction(|tx| {
            for (path, row) in rows {
                tx.set_mount_local(path, row)?;
            }
            Ok(())
        })?;
        // These commits grow the index's log like any other (see `Vault::record`).
        if self.relaxed.load(Ordering::Acquire)
            && self.records_since_checkpoint.fetch_add(1, Ordering::AcqRel) + 1
                >= LOCAL_WRITES_PER_CHECKPOINT
        {
            match self.checkpoint_queue() {
                Ok(()) => self.records_since_checkpoint.store(0, Ordering::Release),
                Err(e) => tracing::warn!("index checkpoint failed, retried later: {e}"),
            }
        }
        Ok(())
    }
}
