//! The device's side of things: the `~/.ghostie` layout, `sync/config.json` (small and
//! human-readable, never a secret in it) and `sync/device_id`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::DeviceId;

pub const CONFIG_FORMAT: u32 = 1;
pub const DEFAULT_PREFIX: &str = "ghostie";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("this home is not set up")]
    NotSetUp,
    #[error("{path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where each thing of one device lives (DESIGN §3).
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn memories(&self) -> PathBuf {
        self.root.join("memories")
    }
    pub fn sync_dir(&self) -> PathBuf {
        self.root.join("sync")
    }
    pub fn config_path(&self) -> PathBuf {
        self.sync_dir().join("config.json")
    }
    pub fn device_id_path(&self) -> PathBuf {
        self.sync_dir().join("device_id")
    }
    pub fn state_db(&self) -> PathBuf {
        self.sync_dir().join("state.db")
    }
    pub fn queue_dir(&self) -> PathBuf {
        self.sync_dir().join("queue")
    }
    /// Where homes made before 0.2 kept the upload queue (see `store::queue`).
    pub fn old_queue_dir(&self) -> PathBuf {
        self.sync_dir().join("cache")
    }
    pub fn staging_dir(&self) -> PathBuf {
        self.sync_dir().join("staging")
    }
    pub fn conflicts_dir(&self) -> PathBuf {
        self.sync_dir().join("conflicts")
    }
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    pub fn master_key_path(&self) -> PathBuf {
        self.keys_dir().join("master.key")
    }

    pub fn is_set_up(&self) -> bool {
        self.config_path().exists() || self.master_key_path().exists()
    }

    /// Creates the private folders (0700) a set-up home needs.
    pub fn create_dirs(&self) -> Result<(), ConfigError> {
        for dir in [
            self.root.clone(),
            self.sync_dir(),
            self.queue_dir(),
            self.staging_dir(),
            self.conflicts_dir(),
            self.keys_dir(),
        ] {
            create_private_dir(&dir)?;
        }
        let memories = self.memories();
        match fs::metadata(&memories) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(ConfigError::Invalid(format!(
                "{} is a file, not a folder",
                memories.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&memories).map_err(io_at(&memories))
            }
            Err(e) => Err(io_at(&memories)(e)),
        }
    }

    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let path = self.config_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ConfigError::NotSetUp),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let config: Config = serde_json::from_slice(&bytes).map_err(|e| ConfigError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if config.format != CONFIG_FORMAT {
            return Err(ConfigError::Corrupt {
                path,
                reason: format!("format {} is not one this version reads", config.format),
            });
        }
        Ok(config)
    }

    pub fn save_config(&self, config: &Config) -> Result<(), ConfigError> {
        let mut bytes =
            serde_json::to_vec_pretty(config).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        write_atomic(&self.config_path(), &bytes, 0o600)
    }

    pub fn load_device_id(&self) -> Result<DeviceId, ConfigError> {
        let path = self.device_id_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ConfigError::NotSetUp),
            Err(e) => return Err(io_at(&path)(e)),
        };
        DeviceId::parse(text.trim()).ok_or_else(|| ConfigError::Corrupt {
            path,
            reason: "it does not hold a device id".into(),
        })
    }

    pub fn save_device_id(&self, id: &DeviceId) -> Result<(), ConfigError> {
        write_atomic(&self.device_id_path(), format!("{id}\n").as_bytes(), 0o600)
    }
}

pub fn create_private_dir(dir: &Path) -> Result<(), ConfigError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ConfigError::Invalid(format!(
            "{} is a file, not a folder",
            dir.display()
        ))),
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_at(dir)),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash leaves
/// either the old or the new file, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ConfigError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_at(path))
}

/// Which backend holds the vault, and how to reach it (no credentials).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendConfig {
    Local {
        path: PathBuf,
    },
    /// AWS S3 or an S3-compatible server. Credentials come from the standard AWS
    /// chain at run time and are never written here.
    S3 {
        bucket: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        #[serde(default)]
        path_style: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// Secret gists of the owner's GitHub account. The token comes from the
    /// environment or the credential store at run time and is never written here.
    Gist {
        api_url: String,
    },
    /// The app folder of the owner's Dropbox. The login comes from the credential
    /// store (or the environment) at run time and is never written here.
    Dropbox {
        #[serde(flatten)]
        urls: DropboxUrls,
    },
    /// The hidden app data folder of the owner's Google Drive. The login comes
    /// from the credential store (or the environment) at run time and is never
    /// written here.
    Gdrive {
        #[serde(flatten)]
        urls: GdriveUrls,
    },
}

pub const GDRIVE_API_URL: &str = "https://www.googleapis.com";
pub const GDRIVE_UPLOAD_URL: &str = "https://www.googleapis.com";
pub const GOOGLE_OAUTH_URL: &str = "https://oauth2.googleapis.com";

/// Where Google's Drive API, its upload endpoint and its OAuth endpoints are
/// (each can be pointed elsewhere, for the tests' fake). The API lives under
/// `<api>/drive/v3`, uploads under `<upload>/upload/drive/v3`, tokens at
/// `<oauth>/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GdriveUrls {
    #[serde(rename = "api_url")]
    pub api: String,
    #[serde(rename = "upload_url")]
    pub upload: String,
    #[serde(rename = "oauth_url")]
    pub oauth: String,
}

impl Default for GdriveUrls {
    fn default() -> Self {
        Self {
            api: GDRIVE_API_URL.into(),
            upload: GDRIVE_UPLOAD_URL.into(),
            oauth: GOOGLE_OAUTH_URL.into(),
        }
    }
}

pub const DROPBOX_API_URL: &str = "https://api.dropboxapi.com";
pub const DROPBOX_CONTENT_URL: &str = "https://content.dropboxapi.com";
pub const DROPBOX_NOTIFY_URL: &str = "https://notify.dropboxapi.com";

/// The three hosts of Dropbox's API (each can be pointed elsewhere, for the tests'
/// fake).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropboxUrls {
    #[serde(rename = "api_url")]
    pub api: String,
    #[serde(rename = "content_url")]
    pub content: String,
    #[serde(rename = "notify_url")]
    pub notify: String,
}

impl Default for DropboxUrls {
    fn default() -> Self {
        Self {
            api: DROPBOX_API_URL.into(),
            content: DROPBOX_CONTENT_URL.into(),
            notify: DROPBOX_NOTIFY_URL.into(),
        }
    }
}

impl BackendConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Local { .. } => "local",
            BackendConfig::S3 { .. } => "s3",
            BackendConfig::Gist { .. } => "gist",
            BackendConfig::Dropbox { .. } => "dropbox",
            BackendConfig::Gdrive { .. } => "gdrive",
        }
    }

    /// How often a mount looks for other devices' changes unless told otherwise. A
    /// look costs one listing per device; a folder's listing is free, a cloud's is
    /// billed (README: "How often a mount looks").
    pub fn default_poll(&self) -> std::time::Duration {
        match self {
            BackendConfig::Local { .. } => std::time::Duration::from_secs(1),
            BackendConfig::S3 { .. } => std::time::Duration::from_secs(10),
            // An idle look costs a 304, which GitHub does not count.
            BackendConfig::Gist { .. } => std::time::Duration::from_secs(10),
            // An idle look is one list_folder/continue; a mount also holds a
            // longpoll open, which tells of a change at once.
            BackendConfig::Dropbox { .. } => std::time::Duration::from_secs(10),
            // An idle look is one changes.list; Drive has no change notification
            // a device behind a NAT could receive.
            BackendConfig::Gdrive { .. } => std::time::Duration::from_secs(10),
        }
    }

    /// The shortest time between a mount's publishes while writes keep coming. A
    /// publish is a few content-creating requests, and GitHub allows 500 of those
    /// an hour: one publish every 20 s is 180 an hour, about 360 requests with their
    /// log segments (README: "Gist as a backend").
    pub fn publish_gap(&self) -> std::time::Duration {
        match self {
            BackendConfig::Local { .. }
            | BackendConfig::S3 { .. }
            | BackendConfig::Dropbox { .. }
            | BackendConfig::Gdrive { .. } => std::time::Duration::ZERO,
            BackendConfig::Gist { .. } => std::time::Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    pub format: u32,
    pub backend: BackendConfig,
    pub prefix: String,
    pub device_name: String,
    pub vault_id: String,
}

/// Makes a host or user-chosen name safe as a file-name suffix (`x.conflict-NAME`).
pub fn filename_safe(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(48).collect();
    if out.is_empty() {
        "device".into()
    } else {
        out
    }
}

/// Checks a prefix: one or more path segments of safe characters.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('/').all(|s| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe() {
        assert_eq!(filename_safe("Pixel 9 Pro/XL"), "pixel-9-pro-xl");
        assert_eq!(filename_safe("  "), "device");
        assert_eq!(filename_safe("laptop"), "laptop");
        assert_eq!(filename_safe("../x"), "x");
    }

    #[test]
    fn a_cloud_is_polled_less_often_than_a_folder() {
        let local = BackendConfig::Local { path: "/v".into() };
        let s3 = BackendConfig::S3 {
            bucket: "b".into(),
            endpoint: None,
            region: None,
            path_style: false,
            profile: None,
        };
        assert_eq!(local.default_poll(), std::time::Duration::from_secs(1));
        assert_eq!(s3.default_poll(), std::time::Duration::from_secs(10));
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("ghostie"));
        assert!(valid_prefix("a/b"));
        assert!(!valid_prefix("a//b"));
        assert!(!valid_prefix("../x"));
        assert!(!valid_prefix(""));
    }

    #[test]
    fn config_roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        assert!(matches!(home.load_config(), Err(ConfigError::NotSetUp)));
        home.create_dirs().unwrap();
        let c = Config {
            format: CONFIG_FORMAT,
            backend: BackendConfig::Local {
                path: "/srv/vault".into(),
            },
            prefix: "ghostie".into(),
            device_name: "laptop".into(),
            vault_id: "v".into(),
        };
        home.save_config(&c).unwrap();
        assert_eq!(home.load_config().unwrap(), c);
        fs::write(home.config_path(), b"{not json").unwrap();
        assert!(matches!(
            home.load_config(),
            Err(ConfigError::Corrupt { .. })
        ));
    }
}
