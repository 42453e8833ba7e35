//! What a device keeps on its own disk: the transactional index (`index`, the only
//! place that names SQLite), the ciphertext cache of sealed packs waiting for upload
//! (`cache`), and the lock that keeps two commands off one home at once (`lock`).

pub mod index;
pub mod lock;
pub mod queue;

pub use index::{
    DeadPack, DeviceRow, Index, IndexError, IndexTx, LocalFile, LocalKind, LocalSpecial,
    MountLocal, SeenVector, SpecialKind, META_LAST_CONTENT_SEQ, RACY_CTIME,
};
pub use lock::HomeLock;
pub use queue::PackQueue;
