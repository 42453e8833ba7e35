//! Where the vault's objects live. Every backend is a flat key → bytes store with the
//! same few verbs; it stores opaque bytes and knows nothing about keys or formats.
//! Cross-cutting behaviour (request metering, fault injection, later retries) lives in
//! decorators over [`ObjectStore`], never inside one backend.

pub mod counting;
pub mod deadline;
pub mod dropbox;
pub mod fault;
pub mod gdrive;
pub mod gist;
pub mod github;
pub mod local;
pub mod memory;
pub mod oauth;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;
pub mod stall;
/// The conformance suite every backend passes (public for the integration tests of
/// backends whose server is a fake there).
#[doc(hidden)]
pub mod tests;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

pub use counting::{CountingStore, RequestCounts};
pub use dropbox::{AccessTokens, DropboxStore};
pub use gdrive::GdriveStore;
pub use gist::GistStore;

pub use deadline::DeadlineStore;
pub use fault::FaultStore;
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use retry::{RetryPolicy, RetryStore};
#[cfg(feature = "s3")]
pub use s3::{S3Options, S3Store};
pub use stall::StallStore;

use crate::config::BackendConfig;

/// Errors any store can return. `NotFound` and `AlreadyExists` are modelled because
/// callers act on them; everything else is opaque with a `temporary` flag that a retry
/// decorator can trust.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("object {key} does not exist")]
    NotFound { key: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    #[error("{message}")]
    Io {
        message: String,
        temporary: bool,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// The backend answered but will not serve this configuration (credentials,
    /// bucket, region, or not the kind of server configured): a retry cannot help.
    #[error("{0}")]
    Refused(String),
    /// The provider refused the login itself (revoked, expired for good): only the
    /// user can help, by logging in again.
    #[error("{0}")]
    LoginRefused(String),
}

impl BackendError {
    /// A local file to upload could not be read.
    pub fn unreadable(path: &Path, source: std::io::Error) -> Self {
        BackendError::Io {
            message: format!("cannot read {}: {source}", path.display()),
            temporary: false,
            source,
        }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            BackendError::Io {
                temporary: true,
                ..
            }
        )
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// The four verbs of the original sketch, plus what a real store offers cheaply:
/// ranged reads, create-only writes and listing one level deep.
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Stores `data` under `key`, replacing what is there; atomic for readers.
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()>;
    /// Stores `data` only if `key` does not exist yet.
    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()>;
    /// Stores the contents of a local file, without holding it all in memory where the
    /// backend allows.
    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        let data = std::fs::read(path).map_err(|e| BackendError::unreadable(path, e))?;
        self.put(key, &data)
    }
    fn get(&self, key: &str) -> BackendResult<Vec<u8>>;
    /// Bytes `range` of the object; shorter than asked if the object ends first.
    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>>;
    /// Every key under `prefix` that sorts after `start_after`, in order.
    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>>;
    /// The "folders" one level below `prefix` (which ends in `/`), each ending in `/`.
    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>>;
    /// Every key under `prefix` with its size where the listing tells it (for
    /// reports of space; None where the provider's listing has no sizes).
    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        Ok(self
            .list(prefix, None)?
            .into_iter()
            .map(|k| (k, None))
            .collect())
    }
    fn delete(&self, key: &str) -> BackendResult<()>;
    /// A short description for `status`: kind and location, never credentials.
    fn describe(&self) -> String;
    /// What a provider that counts requests tells of its account and limits, for
    /// `status`; `look` lets it ask the provider (a few requests), else it says
    /// only what it saw so far. None for stores with nothing of the kind.
    fn provider_status(&self, look: bool) -> Option<ProviderStatus> {
        let _ = look;
        None
    }
    /// Waits up to about `max` for another writer to change something in the
    /// store, where the provider can tell (Dropbox's longpoll): `Some(Ok(true))` as
    /// soon as something changed. None for stores that cannot tell; their readers
    /// poll.
    fn wait_for_change(&self, max: std::time::Duration) -> Option<BackendResult<bool>> {
        let _ = max;
        None
    }
}

/// A provider's account and request budget, as `status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProviderStatus {
    /// Whose service this is, for people ("GitHub", "Dropbox").
    #[serde(default)]
    pub provider: Option<String>,
    pub account: Option<String>,
    /// Containers in use (gists).
    pub containers: Option<usize>,
    /// The provider's count of this hour's requests, and its limit.
    pub requests_used: Option<u64>,
    pub requests_limit: Option<u64>,
    /// When the hourly budget resets (Unix seconds).
    pub resets_at: Option<u64>,
    /// Writes this process made in the last hour (of the provider's 500 a hour).
    pub writes_last_hour: Option<usize>,
    /// Until when a rate limit holds the store back (Unix seconds), while one does.
    pub waiting_until: Option<u64>,
    /// Bytes the account uses, and may use (Dropbox).
    #[serde(default)]
    pub space_used: Option<u64>,
    #[serde(default)]
    pub space_allocated: Option<u64>,
}

pub type SharedStore = Arc<dyn ObjectStore>;

/// The "folders" one level below `prefix` among `keys` (sorted, all under
/// `prefix`), for stores that list keys and not folders.
pub(crate) fn dirs_below(prefix: &str, keys: Vec<String>) -> Vec<String> {
    let mut dirs: Vec<String> = keys
        .into_iter()
        .filter_map(|k| {
            let rest = k.strip_prefix(prefix)?;
            let (dir, _) = rest.split_once('/')?;
            Some(format!("{prefix}{dir}/"))
        })
        .collect();
    dirs.dedup();
    dirs
}

/// The bytes of `range` from an answer to a ranged download: a server that
/// ignored the range (`whole`) sent the whole object; one that honoured it may
/// still send more than asked.
pub(crate) fn part_of_answer(range: Option<Range<u64>>, whole: bool, bytes: &[u8]) -> Vec<u8> {
    match range {
        Some(r) if whole => {
            let end = usize::try_from(r.end)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let start = usize::try_from(r.start).unwrap_or(usize::MAX);
            bytes.get(start..end).unwrap_or_default().to_vec()
        }
        Some(r) => {
            let len = usize::try_from(r.end - r.start).unwrap_or(usize::MAX);
            bytes[..len.min(bytes.len())].to_vec()
        }
        None => bytes.to_vec(),
    }
}

/// A shared store is a store, so decorators can wrap one.
impl<S: ObjectStore + ?Sized> ObjectStore for Arc<S> {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        (**self).put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        (**self).put_if_absent(key, data)
    }
    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        (**self).put_file(key, path)
    }
    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        (**self).get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        (**self).get_range(key, range)
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        (**self).list(prefix, start_after)
    }
    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        (**self).list_dirs(prefix)
    }
    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        (**self).list_sized(prefix)
    }
    fn delete(&self, key: &str) -> BackendResult<()> {
        (**self).delete(key)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn provider_status(&self, look: bool) -> Option<ProviderStatus> {
        (**self).provider_status(look)
    }
    fn wait_for_change(&self, max: std::time::Duration) -> Option<BackendResult<bool>> {
        (**self).wait_for_change(max)
    }
}

/// The provider's token, for the backends that need one (Gist); the layers above
/// find it (environment, credential store) so that a backend never reads secrets.
pub type Token = zeroize::Zeroizing<String>;

/// What a provider's backend signs in with.
#[derive(Clone)]
pub enum Credential {
    /// A token that stays good (GitHub).
    Token(Token),
    /// Short-lived access tokens, renewed as they lapse (Dropbox).
    Refreshing(Arc<dyn AccessTokens>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Token(_) => "Credential::Token(..)",
            Credential::Refreshing(_) => "Credential::Refreshing(..)",
        })
    }
}

/// Opens the store a config names, retrying temporary failures as `policy` says.
pub fn open(
    config: &BackendConfig,
    policy: RetryPolicy,
    credential: Option<Credential>,
) -> BackendResult<SharedStore> {
    let store = metered_store(config, credential)?;
    Ok(Arc::new(RetryStore::new(store, policy)))
}

fn metered_store(
    config: &BackendConfig,
    credential: Option<Credential>,
) -> BackendResult<SharedStore> {
    Ok(match config {
        BackendConfig::Local { path } => metered(LocalStore::open(path)?),
        BackendConfig::S3 { .. } => metered(open_s3(config)?),
        BackendConfig::Gist { api_url } => {
            metered(GistStore::new(api_url, github_token(credential)?)?)
        }
        BackendConfig::Dropbox { urls } => {
            metered(DropboxStore::new(urls.clone(), dropbox_login(credential)?)?)
        }
        BackendConfig::Gdrive { urls } => {
            metered(GdriveStore::new(urls.clone(), google_login(credential)?)?)
        }
    })
}

fn github_token(credential: Option<Credential>) -> BackendResult<Token> {
    match credential {
        Some(Credential::Token(t)) => Ok(t),
        _ => Err(BackendError::Refused(
            "there is no GitHub token: run 'ghostie-fs login github' or set GH_TOKEN".into(),
        )),
    }
}

fn dropbox_login(credential: Option<Credential>) -> BackendResult<Arc<dyn AccessTokens>> {
    match credential {
        Some(Credential::Refreshing(tokens)) => Ok(tokens),
        // An access token alone (one made in the App Console): good until it lapses.
        Some(Credential::Token(t)) => Ok(Arc::new(FixedToken::new(t, "Dropbox", "dropbox"))),
        None => Err(BackendError::Refused(
            "there is no Dropbox login here: run 'ghostie-fs login dropbox'".into(),
        )),
    }
}

fn google_login(credential: Option<Credential>) -> BackendResult<Arc<dyn AccessTokens>> {
    match credential {
        Some(Credential::Refreshing(tokens)) => Ok(tokens),
        // An access token alone (from Google's OAuth playground, for a live test):
        // good for the hour it lives.
        Some(Credential::Token(t)) => Ok(Arc::new(FixedToken::new(t, "Google", "google"))),
        None => Err(BackendError::Refused(
            "there is no Google login here: run 'ghostie-fs login google'".into(),
        )),
    }
}

/// An access token handed out as it is; when it lapses, only a login helps.
pub struct FixedToken {
    token: Token,
    /// The provider, for people ("Dropbox"), and its `login` command's name.
    title: &'static str,
    login: &'static str,
}

impl FixedToken {
    pub fn new(token: Token, title: &'static str, login: &'static str) -> Self {
        Self {
            token,
            title,
            login,
        }
    }
}

impl AccessTokens for FixedToken {
    fn access_token(&self, refused: Option<&str>) -> BackendResult<Token> {
        if refused.is_some() {
            return Err(BackendError::LoginRefused(format!(
                "the {} access token given in the environment expired: set a new one, or unset it and run 'ghostie-fs login {}' to stay logged in",
                self.title, self.login
            )));
        }
        Ok(self.token.clone())
    }
}

/// Opens the store a config names for a look that must not wait (`status`): no
/// retries, and every request, opening the store included, gives up after
/// `patience`. Never fails: a store that cannot be opened (a vault folder on a disk
/// that is not plugged in) fails each request with the reason.
pub fn open_to_look(
    config: &BackendConfig,
    patience: std::time::Duration,
    credential: Option<Credential>,
) -> SharedStore {
    let config = config.clone();
    let described = describe(&config);
    Arc::new(DeadlineStore::new(patience, described, move || {
        metered_store(&config, credential.clone())
    }))
}

/// The description the store a config names gives of itself, without opening it.
pub fn describe(config: &BackendConfig) -> String {
    match config {
        BackendConfig::Local { path } => LocalStore::describe_path(path),
        BackendConfig::S3 {
            bucket, endpoint, ..
        } => describe_s3(bucket, endpoint.as_deref()),
        BackendConfig::Gist { api_url } => gist::describe_api(api_url),
        BackendConfig::Dropbox { urls } => dropbox::describe_api(urls),
        BackendConfig::Gdrive { urls } => gdrive::describe_api(urls),
    }
}

/// "s3://bucket", or "s3://bucket at URL" for a server other than AWS.
pub fn describe_s3(bucket: &str, endpoint: Option<&str>) -> String {
    match endpoint {
        Some(e) => format!("s3://{bucket} at {e}"),
        None => format!("s3://{bucket}"),
    }
}

/// The store itself, or, for tests and benchmarks, behind a meter counting requests
/// (`GHOSTIE_METER_FILE`) and a stall that stops it answering (`GHOSTIE_STALL_FILE`).
fn metered<S: ObjectStore + 'static>(store: S) -> SharedStore {
    let store: SharedStore = match std::env::var_os("GHOSTIE_STALL_FILE") {
        Some(control) => Arc::new(StallStore::new(store, control.into())),
        None => Arc::new(store),
    };
    match std::env::var_os("GHOSTIE_METER_FILE") {
        Some(report) => Arc::new(CountingStore::new(store).reporting_to(report.into())),
        None => store,
    }
}

/// Opens the store a config names and checks that this device can reach it (and,
/// for a folder, write to it).
pub fn open_for_setup(
    config: &BackendConfig,
    credential: Option<Credential>,
) -> BackendResult<SharedStore> {
    match config {
        BackendConfig::Local { path } => {
            let store = LocalStore::open(path)?;
            store.check_writable()?;
            Ok(Arc::new(store))
        }
        BackendConfig::S3 { .. } => {
            let store = RetryStore::new(open_s3_for_setup(config)?, RetryPolicy::commands());
            // Answers only with the right credentials, bucket and endpoint.
            store.list_dirs("")?;
            Ok(Arc::new(store))
        }
        BackendConfig::Gist { api_url } => {
            let store = GistStore::new(api_url, github_token(credential)?)?;
            // Whose token, and whether it may write gists: said now, not at the
            // first upload.
            let account = store.account()?;
            tracing::info!("the vault lives in the gists of GitHub account {account}");
            Ok(Arc::new(RetryStore::new(store, RetryPolicy::commands())))
        }
        BackendConfig::Dropbox { urls } => {
            let store = DropboxStore::new(urls.clone(), dropbox_login(credential)?)?;
            // Whose Dropbox, and whether the login works: said now.
            let account = store.account()?;
            tracing::info!("the vault lives in the app folder of Dropbox account {account}");
            Ok(Arc::new(RetryStore::new(store, RetryPolicy::commands())))
        }
        BackendConfig::Gdrive { urls } => {
            let store = GdriveStore::new(urls.clone(), google_login(credential)?)?;
            // Whose Drive, and whether the login may use the app data folder: said now.
            let account = store.account()?;
            store.list_dirs("")?;
            tracing::info!(
                "the vault lives in the app data folder of the Google Drive of {account}"
            );
            Ok(Arc::new(RetryStore::new(store, RetryPolicy::commands())))
        }
    }
}

#[cfg(not(feature = "s3"))]
fn open_s3(_: &BackendConfig) -> BackendResult<MemoryStore> {
    Err(BackendError::Invalid(
        "this ghostie-fs was built without S3 (cargo's 's3' feature); build it with default features to use an S3 vault".into(),
    ))
}

#[cfg(not(feature = "s3"))]
fn open_s3_for_setup(config: &BackendConfig) -> BackendResult<MemoryStore> {
    open_s3(config)
}

#[cfg(feature = "s3")]
fn open_s3(config: &BackendConfig) -> BackendResult<S3Store> {
    S3Store::open(&s3_options(config)?)
}

#[cfg(feature = "s3")]
fn open_s3_for_setup(config: &BackendConfig) -> BackendResult<S3Store> {
    S3Store::open_for_setup(&s3_options(config)?)
}

#[cfg(feature = "s3")]
fn s3_options(config: &BackendConfig) -> BackendResult<S3Options> {
    let BackendConfig::S3 {
        bucket,
        endpoint,
        region,
        path_style,
        profile,
    } = config
    else {
        return Err(BackendError::Invalid("not an S3 backend".into()));
    };
    Ok(S3Options {
        bucket: bucket.clone(),
        endpoint: endpoint.clone(),
        region: region.clone(),
        path_style: *path_style,
        profile: profile.clone(),
    })
}
