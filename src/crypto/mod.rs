//! Everything that touches key material: the passphrase-wrapped master key
//! (`keyring`), the per-purpose sub-keys (`keys`), the chunked blob format that
//! packs are made of (`blob`, with its pure offset maths in `layout`), and the
//! sealed envelope that log segments, snapshots and device records travel in
//! (`envelope`). Nothing here knows about backends or files.

pub mod aead;
pub mod blob;
pub mod envelope;
pub mod keyring;
pub mod keys;
pub mod layout;
pub mod sealed_box;

pub use self::keyring::{KdfParams, OlderKey, RemovedDevice, VaultSecrets, WrappedKey};
pub use keys::{MasterKey, SubKeys};

/// Errors of the crypto layer. `Damaged` is what tampering, truncation and swapping
/// all look like from here: the check failed, and no unchecked byte is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("damaged data: {0}")]
    Damaged(String),
    #[error("unsupported format: {0}")]
    Unsupported(String),
    #[error("invalid key record: {0}")]
    InvalidRecord(String),
    /// Sealed under a key epoch newer than any this device holds: the vault was
    /// rekeyed elsewhere and this device must unlock with the passphrase again.
    #[error("sealed under a newer key (epoch {0}) than this device holds: the vault's key was changed on another device; unlock again with the passphrase")]
    NewerKey(u32),
    /// Sealed under a key epoch the keyring no longer keeps (`rekey --rewrite`
    /// dropped it once nothing needed it).
    #[error("sealed under key epoch {0}, which this vault no longer keeps")]
    DroppedKey(u32),
}
