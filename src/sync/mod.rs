//! The sync engine: versions, their merge into a namespace (`namespace`), the rules
//! for this device's own changes (`rules`), the log and snapshots, packs, publish and
//! poll. [`Vault`] is the one facade both front-ends (folder sync, mount) use; neither
//! has sync logic of its own, and neither reaches the index or the pack writer.

mod fetch;
pub mod layout;
pub mod namespace;
mod pack;
pub mod progress;
pub mod reader;
pub mod records;
pub mod rules;
mod vault;

/// The layers' errors a [`SyncError`] carries, for callers that tell them apart.
pub use crate::backend::{describe as describe_backend, BackendError, ProviderStatus};
/// Who holds a home, as `status` shows it (see [`Vault::holder`]).
pub use crate::store::lock::Holder;
pub use crate::store::IndexError;
/// What the engine keeps of a plain folder and of the vault's devices, for the
/// front-ends to read and hand back.
pub use crate::store::{DeviceRow, LocalFile, LocalKind, RACY_CTIME};
pub use fetch::{FetchedContent, PACK_GONE, STREAM_FROM};
pub use layout::Layout;
pub use namespace::{Namespace, Shown};
pub use pack::{anonymize_cost, seal_speed};
pub use pack::{OWN_PACK_FROM, PACK_TARGET};
pub use progress::{NoProgress, Progress};
pub use reader::ContentReader;
pub use rules::{After, Change, LocalChange, Seen};
/// What the mount keeps on this device only (see `Vault::mount_local`).
pub use vault::{
    gc_auto_timing, GcOptions, GcReport, LocalSpecial, MountLocal, RepackReport, SpecialKind,
    DEFAULT_GRACE, REPACK_AT_LEAST, REPACK_DEAD_SHARE, REPACK_LIMIT,
};
pub use vault::{
    kept_name, setup, setup_vault, setup_with_login, Conflict, ConflictSibling, Keep, NewLogin,
    PassphraseSource, PollReport, PublishReport, RekeyReport, Retake, RewriteReport, SetupOutcome,
    SetupRequest, TrustReport, Vault, ANONYMIZE_MAX,
};

use crate::config::ConfigError;
use crate::crypto::CryptoError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("{0}")]
    Damaged(String),
    #[error("{0}")]
    Crypto(CryptoError),
    #[error("cannot use {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Passphrase(String),
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
    #[error("{0}")]
    Invalid(String),
}

impl SyncError {
    /// A read failed because the bytes are not where the reader looked any more:
    /// their pack was reclaimed, or they were sealed under a key the vault has
    /// dropped since their owner sealed them again. A newer place may hold them
    /// (`Vault::moved_to`).
    pub fn may_have_moved(&self) -> bool {
        matches!(self, SyncError::Damaged(why) if why == PACK_GONE)
            || matches!(self, SyncError::Crypto(CryptoError::DroppedKey(_)))
    }
}

impl From<CryptoError> for SyncError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::WrongPassphrase => SyncError::WrongPassphrase,
            CryptoError::Damaged(m) => SyncError::Damaged(m),
            other => SyncError::Crypto(other),
        }
    }
}

impl SyncError {
    pub fn io(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> SyncError {
        let path = path.into();
        move |source| SyncError::Io { path, source }
    }
}

pub type SyncResult<T> = Result<T, SyncError>;
