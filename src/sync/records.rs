//! The plaintext of the sealed records in the vault: log segments, snapshots and device
//! records. Each is JSON inside an envelope (crypto::envelope) whose associated data
//! names the device and sequence number, so the JSON itself never reaches the backend.

use serde::{Deserialize, Serialize};

use super::SyncError;
use crate::crypto::blob::PACK_HEADER;
use crate::crypto::envelope::{open_record, seal_record, RecordKind};
use crate::crypto::layout::sealed_len;
use crate::crypto::SubKeys;
use crate::model::{DeviceId, Entry, Seq, Version};
use crate::store::SeenVector;

pub const RECORD_FORMAT: u32 = 1;

/// A batch of versions one device published at once (or, as a snapshot, every version
/// of that device still standing up to `seq`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogRecord {
    pub format: u32,
    pub device: DeviceId,
    pub seq: Seq,
    pub created_ms: i64,
    /// The device's version counter when it wrote this: a device rebuilding its index
    /// from the vault resumes above it even if its newest versions were superseded.
    #[serde(default)]
    pub counter: u64,
    pub versions: Vec<Version>,
    /// How far this device had applied every log (its own included) when it began
    /// the round this record closes: its owner's word that no version it makes
    /// later names a blob that was dead in that view (see `sync::vault::gc`).
    /// Absent from records written before space was reclaimed, and read as "has
    /// seen nothing", which holds every pack back: older readers ignore it, so the
    /// record format stays 1.
    #[serde(default, skip_serializing_if = "SeenVector::is_empty")]
    pub seen: SeenVector,
    /// Snapshots only: what their device had read of every other log when it took
    /// the heads, which leave out versions superseded by what it had read. A
    /// device going on from the snapshot is behind that until it has read as much.
    #[serde(default, skip_serializing_if = "SeenVector::is_empty")]
    pub built_from: SeenVector,
    /// Its writer takes a version offered again with its bytes in a new place as a
    /// move (`store::index::reclaim::is_relocation`). Versions before this one
    /// ignore such a version, and would keep reading the old place after its owner
    /// reclaimed it: no device repacks or seals again while one of them is around.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reads_moves: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRecord {
    pub format: u32,
    pub id: DeviceId,
    pub name: String,
    pub created_ms: i64,
}

fn log_context(kind: RecordKind, device: &DeviceId, seq: Seq) -> Vec<u8> {
    let tag = if kind == RecordKind::Snapshot {
        "snapshot"
    } else {
        "segment"
    };
    format!("{tag}\0{device}\0{}", seq.0).into_bytes()
}

pub fn seal_log(keys: &SubKeys, kind: RecordKind, record: &LogRecord) -> Vec<u8> {
    let plain = serde_json::to_vec(record).unwrap_or_else(|_| unreachable!("records serialise"));
    seal_record(
        keys,
        kind,
        &log_context(kind, &record.device, record.seq),
        &plain,
    )
}

/// Opens the record stored as `device`'s `seq`; anything else under that key —
/// another device's record, an older one copied forward — fails here.
pub fn open_log(
    keys: &SubKeys,
    kind: RecordKind,
    device: &DeviceId,
    seq: Seq,
    sealed: &[u8],
) -> Result<LogRecord, SyncError> {
    let plain = open_record(keys, kind, &log_context(kind, device, seq), sealed)?;
    let rec: LogRecord = serde_json::from_slice(&plain)
        .map_err(|e| SyncError::Damaged(format!("unreadable log record: {e}")))?;
    if rec.format != RECORD_FORMAT || &rec.device != device || rec.seq != seq {
        return Err(SyncError::Damaged(
            "log record does not match its key".into(),
        ));
    }
    if rec
        .versions
        .iter()
        .any(|v| &v.device != device || v.counter() == 0)
    {
        return Err(SyncError::Damaged(
            "log record names versions of another device".into(),
        ));
    }
    if let Some(v) = rec.versions.iter().find(|v| !content_is_sane(v)) {
        return Err(SyncError::Damaged(format!(
            "log record places the content of {} impossibly",
            v.path
        )));
    }
    Ok(rec)
}

/// Offsets and lengths that later arithmetic and allocation can trust.
fn content_is_sane(v: &Version) -> bool {
    const MAX_SIZE: u64 = 1 << 40;
    match &v.entry {
        Entry::File { content, .. } => {
            content.size <= MAX_SIZE
                && content.length == sealed_len(content.size)
                && content.offset >= PACK_HEADER.len() as u64
                && content.offset.checked_add(content.length).is_some()
        }
        _ => true,
    }
}

fn device_context(id: &DeviceId) -> Vec<u8> {
    format!("device\0{id}").into_bytes()
}

pub fn seal_device(keys: &SubKeys, record: &DeviceRecord) -> Vec<u8> {
    let plain = serde_json::to_vec(record).unwrap_or_else(|_| unreachable!("records serialise"));
    seal_record(
        keys,
        RecordKind::Device,
        &device_context(&record.id),
        &plain,
    )
}

pub fn open_device(
    keys: &SubKeys,
    id: &DeviceId,
    sealed: &[u8],
) -> Result<DeviceRecord, SyncError> {
    let plain = open_record(keys, RecordKind::Device, &device_context(id), sealed)?;
    let rec: DeviceRecord = serde_json::from_slice(&plain)
        .map_err(|e| SyncError::Damaged(format!("unreadable device record: {e}")))?;
    if &rec.id != id {
        return Err(SyncError::Damaged(
            "device record does not match its key".into(),
        ));
    }
    Ok(rec)
}
