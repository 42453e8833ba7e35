//! ghostie-fs keeps an assistant's memory folder the same on every device, through a
//! storage provider that cannot read a byte of it.
//!
//! ```text
//!  cli (main.rs, cli/) ── commands; one sentence per error
//!      │
//!      ├──► folder  push / pull / sync over a plain folder: scan it, apply the namespace
//!      └──► fs      the mount: MountFs (inodes, open files, reads, writes) and the one
//!             │     file that binds fuser; a worker uploads and polls beside it
//!             ▼
//!          sync::Vault ── the one engine API. Front-ends say "this path now holds X,
//!             │           seen as Y" (rules: DESIGN §6, pure), seal contents, ask what
//!             │           is shown (namespace: the pure merge), poll and publish.
//!             │           pack (one writer), upload (one path), repair (a crash's
//!             │           damage found before upload), fetch, reader, records; a home
//!             │           opened to look (status) needs no lock and no backend
//!             ▼
//!          store ── index (SQLite: heads, folder records, upload queue, the mount's
//!             │     own local rows), queue folder, the home's lock (names its holder)
//!             ▼
//!     credentials (provider tokens and a remembered master key: the OS keyring, or
//!                  files sealed under the vault's key; the GitHub token check)
//!     crypto (keyring, HKDF sub-keys, chunked AES-256-GCM blobs, envelopes)
//!     backend (ObjectStore: local, s3, memory, gist (not yet offered by setup);
//!              decorators: retry, counting, fault, stall, deadline; the GitHub API
//!              client and an OAuth token endpoint, for credentials)
//!
//!  model (ids, version vectors, versions) and config (~/.ghostie) are used by all;
//!  anonymize (the detectors of sensitive values; pure, used by none yet) by none.
//! ```
//!
//! Dependencies point down only (scripts/test.sh checks it). The front-ends never use
//! each other and never reach past the `Vault`: not its index, not its pack writer, not
//! a version vector. No one waits on the network while holding the mount's state or
//! the engine's index. The backend stores opaque bytes; crypto knows nothing about
//! where bytes go.

#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod anonymize;
pub mod backend;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod folder;
pub mod fs;
pub mod model;
pub mod store;
pub mod sync;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Crash-test hook: when `GHOSTIE_FAILPOINT` names this point (optionally `name@N` for
/// its N-th passage), the process kills itself with SIGKILL right here, exactly as a
/// power cut or `kill -9` would. Costs one environment lookup when unset.
pub fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("GHOSTIE_FAILPOINT") else {
        return;
    };
    let (point, nth) = match spec.split_once('@') {
        Some((p, n)) => (p.to_owned(), n.parse::<u64>().unwrap_or(1)),
        None => (spec, 1),
    };
    if point == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        // SAFETY: kill(2) on our own pid with a valid signal number.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
