//! Test helpers: devices are real processes of the real binary, each with its own home,
//! over one vault folder.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

pub const PASSPHRASE: &str = "correct horse battery staple";

pub mod fake_dropbox;
pub mod fake_gdrive;
pub mod fake_github;
pub mod fake_http;
pub mod gdrive_vault;
pub mod proxy;

pub use gdrive_vault::*;

/// Where the tests' vaults live: a local folder, or the real S3 server that
/// scripts/test.sh starts, when GHOSTIE_TEST_BACKEND=s3. Every test that takes its
/// vault from [`TempVault::new`] runs over either, unchanged.
pub fn s3_selected() -> bool {
    selected_backend() == "s3"
}

/// Whether this run's vaults are gists of a fake GitHub (GHOSTIE_TEST_BACKEND=gist):
/// each vault starts its own fake on loopback, one account per test.
pub fn gist_selected() -> bool {
    selected_backend() == "gist"
}

/// Whether this run's vaults are app folders of a fake Dropbox
/// (GHOSTIE_TEST_BACKEND=dropbox): each vault starts its own fake on loopback.
pub fn dropbox_selected() -> bool {
    selected_backend() == "dropbox"
}

fn selected_backend() -> &'static str {
    match std::env::var("GHOSTIE_TEST_BACKEND").as_deref() {
        Ok("s3") => "s3",
        Ok("gist") => "gist",
        Ok("dropbox") => "dropbox",
        Ok("gdrive") => "gdrive",
        Ok("local") | Err(_) => "local",
        Ok(other) => panic!("GHOSTIE_TEST_BACKEND={other}: use local, s3, gist, dropbox or gdrive"),
    }
}

/// The app every device of a Dropbox run uses, and the refresh token of its login
/// (GHOSTIE_DROPBOX_REFRESH_TOKEN), the same in each vault's fake.
pub const DROPBOX_APP_KEY: &str = "ghostietestapp01";
pub const DROPBOX_APP_NAME: &str = "ghostie-fs-test";
pub const DROPBOX_REFRESH_TOKEN: &str = "ghostie-test-refresh-token-0000000000000001";

/// The token every device of a gist run holds (GH_ENTERPRISE_TOKEN: the fake is not
/// api.github.com), and the account it belongs to in each vault's fake.
pub const GIST_TOKEN: &str = "ghp_ghostie0test0owner0token00000000000001";
pub const GIST_ACCOUNT: &str = "ghost-owner";

/// The test S3 server's endpoint and bucket; None (with a note) when the run has none.
pub fn s3_server() -> Option<(String, String)> {
    let Ok(endpoint) = std::env::var("GHOSTIE_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("GHOSTIE_REQUIRE_S3").is_none() && !s3_selected(),
            "an S3 test run needs the server scripts/test.sh starts (GHOSTIE_TEST_S3_ENDPOINT)"
        );
        eprintln!("no S3 server (GHOSTIE_TEST_S3_ENDPOINT unset): run scripts/test.sh");
        return None;
    };
    let bucket = std::env::var("GHOSTIE_TEST_S3_BUCKET").expect("GHOSTIE_TEST_S3_BUCKET");
    Some((endpoint, bucket))
}

fn s3_store_at(endpoint: &str, bucket: &str) -> ghostie_fs::backend::S3Store {
    ghostie_fs::backend::S3Store::open(&ghostie_fs::backend::S3Options {
        bucket: bucket.to_owned(),
        endpoint: Some(endpoint.to_owned()),
        region: std::env::var("GHOSTIE_TEST_S3_REGION").ok(),
        path_style: true,
        profile: None,
    })
    .expect("open the test bucket")
}

/// A key prefix no other test, test binary or run uses.
pub fn unique_prefix(tag: &str) -> String {
    use rand::Rng;
    format!(
        "{tag}-{}-{:08x}",
        std::process::id(),
        rand::thread_rng().gen::<u32>()
    )
}

/// A vault standing in for the cloud: a folder, or a prefix of the test bucket
/// reached through a relay the test can cut.
pub struct TempVault {
    pub dir: tempfile::TempDir,
    s3: Option<S3Vault>,
    gist: Option<GistVault>,
    dropbox: Option<DropboxVault>,
    gdrive: Option<GdriveVault>,
    /// Where a local vault's stall control file lives (see [`TempVault::stall`]).
    ctl: tempfile::TempDir,
}

pub struct S3Vault {
    pub relay: proxy::Relay,
    /// The server itself, without the relay.
    pub endpoint: String,
    pub bucket: String,
    /// Everything of this vault lives under `{base}/`.
    pub base: String,
    pub store: ghostie_fs::backend::S3Store,
}

/// A vault in the gists of a fake GitHub account, reached through a relay the test
/// can cut or stall (raw URLs included: the fake names itself by the relay).
pub struct GistVault {
    pub fake: fake_github::FakeGithub,
    pub relay: proxy::Relay,
    /// The vault as the test reads it, straight from the fake.
    pub store: ghostie_fs::backend::GistStore,
}

/// A vault in the app folder of a fake Dropbox, reached through a relay per host
/// (api, content, notify) that the test can cut or stall.
pub struct DropboxVault {
    pub fake: fake_dropbox::FakeDropbox,
    pub relays: [proxy::Relay; 3],
    /// The vault as the test reads it, straight from the fake.
    pub store: ghostie_fs::backend::DropboxStore,
}

impl DropboxVault {
    /// The URLs a device is set up with: the relays.
    pub fn urls(&self) -> ghostie_fs::backend::dropbox::DropboxUrls {
        ghostie_fs::backend::dropbox::DropboxUrls {
            api: self.relays[0].url(),
            content: self.relays[1].url(),
            notify: self.relays[2].url(),
        }
    }
}

/// Access tokens for the tests' own store on a fake Dropbox: refreshed from the
/// test login's refresh token, as the product does.
pub struct TestDropboxLogin {
    token_url: String,
    current: std::sync::Mutex<Option<String>>,
}

impl TestDropboxLogin {
    pub fn new(api_url: &str) -> Self {
        Self {
            token_url: format!("{api_url}/oauth2/token"),
            current: std::sync::Mutex::new(None),
        }
    }
}

impl ghostie_fs::backend::AccessTokens for TestDropboxLogin {
    fn access_token(
        &self,
        refused: Option<&str>,
    ) -> ghostie_fs::backend::BackendResult<ghostie_fs::backend::Token> {
        let mut current = self.current.lock().unwrap();
        if let Some(t) = current.as_ref() {
            if refused != Some(t.as_str()) {
                return Ok(zeroize::Zeroizing::new(t.clone()));
            }
        }
        let grant = ghostie_fs::backend::oauth::refresh(
            &self.token_url,
            DROPBOX_APP_KEY,
            None,
            DROPBOX_REFRESH_TOKEN,
        )
        .map_err(|e| ghostie_fs::backend::BackendError::Refused(e.to_string()))?;
        *current = Some(grant.access_token.to_string());
        Ok(grant.access_token)
    }
}

/// A store on `fake`'s app folder as the tests' own login sees it.
pub fn dropbox_store(fake: &fake_dropbox::FakeDropbox) -> ghostie_fs::backend::DropboxStore {
    let urls = ghostie_fs::backend::dropbox::DropboxUrls {
        api: fake.api_url(),
        content: fake.content_url(),
        notify: fake.notify_url(),
    };
    ghostie_fs::backend::DropboxStore::new(
        urls,
        std::sync::Arc::new(TestDropboxLogin::new(&fake.api_url())),
    )
    .expect("a store on the fake Dropbox")
}

impl TempVault {
    /// A vault on the backend this run tests (GHOSTIE_TEST_BACKEND).
    pub fn new() -> Self {
        if s3_selected() {
            Self::s3().expect("an S3 server")
        } else if gist_selected() {
            Self::gist()
        } else if dropbox_selected() {
            Self::dropbox()
        } else if gdrive_selected() {
            Self::gdrive()
        } else {
            Self::local()
        }
    }

    /// The app folder of a fresh fake Dropbox, logged in to as the test app.
    pub fn dropbox() -> Self {
        let fake = fake_dropbox::FakeDropbox::start();
        fake.add_app(DROPBOX_APP_KEY, DROPBOX_APP_NAME);
        fake.grant_as(DROPBOX_APP_KEY, DROPBOX_REFRESH_TOKEN);
        let relays = [
            proxy::Relay::start(&fake.api_addr()),
            proxy::Relay::start(&fake.content_addr()),
            proxy::Relay::start(&fake.notify_addr()),
        ];
        let store = dropbox_store(&fake);
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            s3: None,
            gist: None,
            dropbox: Some(DropboxVault {
                fake,
                relays,
                store,
            }),
            gdrive: None,
            ctl: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn is_dropbox(&self) -> bool {
        self.dropbox.is_some()
    }

    pub fn dropbox_parts(&self) -> Option<&DropboxVault> {
        self.dropbox.as_ref()
    }

    /// Gists of a fresh fake GitHub account.
    pub fn gist() -> Self {
        let fake = fake_github::FakeGithub::start();
        fake.add_classic_token(GIST_TOKEN, GIST_ACCOUNT, &["gist"], None);
        let relay = proxy::Relay::start(fake.url().trim_start_matches("http://"));
        fake.serve_as(&relay.url());
        let store = ghostie_fs::backend::GistStore::new(
            &fake.url(),
            zeroize::Zeroizing::new(GIST_TOKEN.to_owned()),
        )
        .expect("a store on the fake GitHub");
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            s3: None,
            dropbox: None,
            gdrive: None,
            gist: Some(GistVault { fake, relay, store }),
            ctl: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn is_gist(&self) -> bool {
        self.gist.is_some()
    }

    /// The environment a device's setup needs to reach this vault: the GitHub
    /// token for a gist vault, nothing for others.
    pub fn token_env(&self) -> Vec<(String, String)> {
        if self.dropbox.is_some() {
            return dropbox_env();
        }
        if self.gdrive.is_some() {
            return gdrive_env();
        }
        match &self.gist {
            Some(_) => vec![("GH_ENTERPRISE_TOKEN".into(), GIST_TOKEN.into())],
            None => Vec::new(),
        }
    }

    /// For a gist vault, keeps the token in the home at `home` (`login github`), as
    /// a user does once, so that a service started without it in its environment
    /// has it; `prepare` sets the command's environment. Nothing for other vaults.
    pub fn keep_token(&self, home: &Path, prepare: impl FnOnce(&mut std::process::Command)) {
        if let Some(d) = &self.dropbox {
            return dropbox_login(d, home, prepare);
        }
        if let Some(d) = &self.gdrive {
            return gdrive_login(d, home, prepare);
        }
        let Some(g) = &self.gist else { return };
        use std::io::Write;
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ghostie-fs"));
        c.arg("--home")
            .arg(home)
            .args([
                "login",
                "github",
                "--api-url",
                &g.relay.url(),
                "--token-stdin",
            ])
            .env_remove("GH_ENTERPRISE_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        prepare(&mut c);
        let mut child = c.spawn().expect("run login");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{GIST_TOKEN}\n").as_bytes())
            .expect("type the token");
        let out = child.wait_with_output().expect("login");
        assert!(out.status.success(), "login: {}", stderr(&out));
    }

    pub fn gist_parts(&self) -> Option<&GistVault> {
        self.gist.as_ref()
    }

    /// Whether the vault is somewhere other than a local folder.
    pub fn is_remote(&self) -> bool {
        self.s3.is_some() || self.gist.is_some() || self.dropbox.is_some() || self.gdrive.is_some()
    }

    /// The relays in front of a remote vault's server (one per host).
    fn relays(&self) -> Vec<&proxy::Relay> {
        if let Some(d) = &self.gdrive {
            return vec![&d.relay];
        }
        match (&self.s3, &self.gist, &self.dropbox) {
            (Some(s), _, _) => vec![&s.relay],
            (_, Some(g), _) => vec![&g.relay],
            (_, _, Some(d)) => d.relays.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// A local folder, whatever the run: for tests of the local backend itself.
    pub fn local() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            s3: None,
            gist: None,
            dropbox: None,
            gdrive: None,
            ctl: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A fresh prefix of the test bucket, reached through a relay.
    pub fn s3() -> Option<Self> {
        let (endpoint, _) = s3_server()?;
        Self::s3_at(&endpoint)
    }

    /// The same on the S3 server at `endpoint` (same keys, same bucket name).
    pub fn s3_at(endpoint: &str) -> Option<Self> {
        let (_, bucket) = s3_server()?;
        let upstream = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let relay = proxy::Relay::start(&upstream);
        let store = s3_store_at(endpoint, &bucket);
        Some(Self {
            dir: tempfile::tempdir().expect("temp dir"),
            ctl: tempfile::tempdir().expect("temp dir"),
            gist: None,
            dropbox: None,
            gdrive: None,
            s3: Some(S3Vault {
                relay,
                endpoint: endpoint.to_owned(),
                bucket,
                base: unique_prefix("v"),
                store,
            }),
        })
    }

    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }

    pub fn s3_parts(&self) -> Option<&S3Vault> {
        self.s3.as_ref()
    }

    /// The local vault's folder (local vaults only).
    pub fn path(&self) -> &Path {
        assert!(!self.is_remote(), "a remote vault has no folder");
        self.dir.path()
    }

    /// The vault's key prefix as setup's --prefix.
    pub fn prefix(&self) -> String {
        match &self.s3 {
            Some(s) => format!("{}/ghostie", s.base),
            None => "ghostie".into(),
        }
    }

    /// The whole `setup` command line that sets device `name` up on this vault.
    pub fn setup_command(&self, name: &str) -> Vec<String> {
        let mut args = vec!["setup".to_owned()];
        args.extend(self.setup_args());
        args.extend(["--device".to_owned(), name.to_owned()]);
        args
    }

    /// The setup arguments that join this vault.
    pub fn setup_args(&self) -> Vec<String> {
        if let Some(d) = &self.gdrive {
            return Self::gdrive_setup_args(d);
        }
        if let Some(d) = &self.dropbox {
            let urls = d.urls();
            return vec![
                "--backend".into(),
                "dropbox".into(),
                "--api-url".into(),
                urls.api,
                "--content-url".into(),
                urls.content,
                "--notify-url".into(),
                urls.notify,
            ];
        }
        if let Some(g) = &self.gist {
            return vec![
                "--backend".into(),
                "gist".into(),
                "--api-url".into(),
                g.relay.url(),
            ];
        }
        match &self.s3 {
            None => vec![
                "--backend".into(),
                "local".into(),
                "--path".into(),
                self.dir.path().to_string_lossy().into_owned(),
            ],
            Some(s) => vec![
                "--backend".into(),
                "s3".into(),
                "--bucket".into(),
                s.bucket.clone(),
                "--endpoint".into(),
                s.relay.url(),
                "--path-style".into(),
                "--prefix".into(),
                self.prefix(),
            ],
        }
    }

    /// The store under this vault, as the library opens it (no retries, no meter).
    pub fn store(&self) -> ghostie_fs::backend::SharedStore {
        if let Some(d) = &self.dropbox {
            return std::sync::Arc::new(dropbox_store(&d.fake));
        }
        if let Some(d) = &self.gdrive {
            return std::sync::Arc::new(gdrive_store(&d.fake));
        }
        if let Some(g) = &self.gist {
            return std::sync::Arc::new(
                ghostie_fs::backend::GistStore::new(
                    &g.fake.url(),
                    zeroize::Zeroizing::new(GIST_TOKEN.to_owned()),
                )
                .expect("a store on the fake GitHub"),
            );
        }
        match &self.s3 {
            None => std::sync::Arc::new(
                ghostie_fs::backend::LocalStore::open(self.dir.path()).expect("open vault"),
            ),
            Some(s) => std::sync::Arc::new(s3_store_at(&s.endpoint, &s.bucket)),
        }
    }

    /// Every object's key, relative to the vault (so "ghostie/…" on every backend).
    pub fn keys(&self) -> Vec<String> {
        if let Some(d) = &self.dropbox {
            use ghostie_fs::backend::ObjectStore;
            return d.store.list("ghostie/", None).expect("list the vault");
        }
        if let Some(d) = &self.gdrive {
            use ghostie_fs::backend::ObjectStore;
            return d.store.list("ghostie/", None).expect("list the vault");
        }
        if let Some(g) = &self.gist {
            use ghostie_fs::backend::ObjectStore;
            return g.store.list("ghostie/", None).expect("list the vault");
        }
        match &self.s3 {
            None => {
                let mut out = BTreeMap::new();
                walk_files(self.dir.path(), self.dir.path(), &mut out);
                out.into_keys().collect()
            }
            Some(s) => {
                use ghostie_fs::backend::ObjectStore;
                let base = format!("{}/", s.base);
                s.store
                    .list(&base, None)
                    .expect("list the vault")
                    .into_iter()
                    .map(|k| k[base.len()..].to_owned())
                    .collect()
            }
        }
    }

    pub fn keys_under(&self, part: &str) -> Vec<String> {
        self.keys()
            .into_iter()
            .filter(|k| k.contains(part))
            .collect()
    }

    fn full_key(&self, key: &str) -> String {
        match &self.s3 {
            Some(s) => format!("{}/{key}", s.base),
            None => key.to_owned(),
        }
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        if let Some(d) = &self.dropbox {
            use ghostie_fs::backend::ObjectStore;
            return d.store.get(key).expect("get object");
        }
        if let Some(d) = &self.gdrive {
            use ghostie_fs::backend::ObjectStore;
            return d.store.get(key).expect("get object");
        }
        if let Some(g) = &self.gist {
            use ghostie_fs::backend::ObjectStore;
            return g.store.get(key).expect("get object");
        }
        match &self.s3 {
            None => fs::read(self.dir.path().join(key)).expect("read object"),
            Some(s) => {
                use ghostie_fs::backend::ObjectStore;
                s.store.get(&self.full_key(key)).expect("get object")
            }
        }
    }

    pub fn put(&self, key: &str, data: &[u8]) {
        if let Some(d) = &self.dropbox {
            use ghostie_fs::backend::ObjectStore;
            return d.store.put(key, data).expect("put object");
        }
        if let Some(d) = &self.gdrive {
            use ghostie_fs::backend::ObjectStore;
            return d.store.put(key, data).expect("put object");
        }
        if let Some(g) = &self.gist {
            use ghostie_fs::backend::ObjectStore;
            return g.store.put(key, data).expect("put object");
        }
        match &self.s3 {
            None => fs::write(self.dir.path().join(key), data).expect("write object"),
            Some(s) => {
                use ghostie_fs::backend::ObjectStore;
                s.store.put(&self.full_key(key), data).expect("put object")
            }
        }
    }

    /// Removes an object, as a backend that lost it (or hides it) would.
    pub fn delete(&self, key: &str) {
        use ghostie_fs::backend::ObjectStore;
        if let Some(d) = &self.dropbox {
            return d.store.delete(key).expect("delete object");
        }
        if let Some(d) = &self.gdrive {
            return d.store.delete(key).expect("delete object");
        }
        if let Some(g) = &self.gist {
            return g.store.delete(key).expect("delete object");
        }
        match &self.s3 {
            None => fs::remove_file(self.dir.path().join(key)).expect("remove object"),
            Some(s) => s.store.delete(&self.full_key(key)).expect("delete object"),
        }
    }

    /// Every object with its bytes.
    pub fn objects(&self) -> Vec<(String, Vec<u8>)> {
        self.keys()
            .into_iter()
            .map(|k| {
                let data = self.get(&k);
                (k, data)
            })
            .collect()
    }

    /// Takes the backend away from every device: the folder moves, or the network
    /// to the S3 server is cut.
    pub fn go_offline(&self) {
        let relays = self.relays();
        if relays.is_empty() {
            fs::rename(self.dir.path(), self.dir.path().with_extension("away"))
                .expect("move the vault away");
        }
        relays.iter().for_each(|r| r.cut());
    }

    fn stall_file(&self) -> PathBuf {
        self.ctl.path().join("stall")
    }

    /// The environment a device's process needs for [`Self::stall`] to reach it: a
    /// folder vault stalls in the process itself (`GHOSTIE_STALL_FILE`), an S3 vault
    /// in the loopback relay in front of the server.
    pub fn stall_env(&self) -> Vec<(String, String)> {
        match self.relays().first() {
            Some(_) => Vec::new(),
            None => vec![(
                "GHOSTIE_STALL_FILE".into(),
                self.stall_file().to_string_lossy().into_owned(),
            )],
        }
    }

    /// From now on every request to the backend waits, unanswered, until
    /// [`Self::unstall`].
    pub fn stall(&self) {
        let relays = self.relays();
        if relays.is_empty() {
            fs::write(self.stall_file(), b"").expect("stall");
        }
        relays.iter().for_each(|r| r.stall());
    }

    pub fn unstall(&self) {
        let relays = self.relays();
        if relays.is_empty() {
            let _ = fs::remove_file(self.stall_file());
        }
        relays.iter().for_each(|r| r.unstall());
    }

    /// Requests that have waited in a stall so far.
    pub fn stalled_requests(&self) -> usize {
        let relays = self.relays();
        if relays.is_empty() {
            return fs::read_to_string(self.stall_file().with_extension("held"))
                .map(|t| t.lines().count())
                .unwrap_or(0);
        }
        relays.iter().map(|r| r.held()).sum()
    }

    pub fn come_back(&self) {
        let relays = self.relays();
        if relays.is_empty() {
            fs::rename(self.dir.path().with_extension("away"), self.dir.path())
                .expect("move the vault back");
        }
        relays.iter().for_each(|r| r.restore());
    }
}

/// The environment that logs a device in to a Dropbox run's fakes.
pub fn dropbox_env() -> Vec<(String, String)> {
    vec![
        (
            "GHOSTIE_DROPBOX_REFRESH_TOKEN".into(),
            DROPBOX_REFRESH_TOKEN.into(),
        ),
        ("GHOSTIE_DROPBOX_APP_KEY".into(), DROPBOX_APP_KEY.into()),
    ]
}

/// `login dropbox` for the home at `home`, as a user does it: the page the command
/// prints is approved (the fake stands in for the browser), and the code it shows
/// is pasted back.
pub fn dropbox_login(
    d: &DropboxVault,
    home: &Path,
    prepare: impl FnOnce(&mut std::process::Command),
) {
    let args = [
        "login",
        "dropbox",
        "--app-key",
        DROPBOX_APP_KEY,
        "--api-url",
        &d.relays[0].url(),
        "--code-stdin",
    ];
    let (out, printed) = with_dropbox_consent(d, home, &args, prepare);
    assert!(
        out.status.success(),
        "login dropbox: {printed}{}",
        stderr(&out)
    );
}

/// Runs `args` (a command that logs in to Dropbox: it prints the consent page and
/// reads the code) for the home at `home`, approving the page as the user would;
/// returns how it ended and what it printed.
pub fn with_dropbox_consent(
    d: &DropboxVault,
    home: &Path,
    args: &[&str],
    prepare: impl FnOnce(&mut std::process::Command),
) -> (Output, String) {
    use std::io::{BufRead, Write};
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ghostie-fs"));
    c.arg("--home")
        .arg(home)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    prepare(&mut c);
    c.env_remove("GHOSTIE_DROPBOX_REFRESH_TOKEN")
        .env_remove("GHOSTIE_DROPBOX_APP_KEY");
    let mut child = c.spawn().expect("run the command");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    let mut url = String::new();
    while !url.starts_with("http") {
        url.clear();
        let n = stdout
            .read_line(&mut url)
            .expect("the consent page's address");
        printed.push_str(&url);
        assert!(n > 0, "{args:?} printed no address to open: {printed}");
    }
    let code = d
        .fake
        .approve(url.trim())
        .unwrap_or_else(|e| panic!("the fake Dropbox refused the page {url}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{code}\n").as_bytes())
        .expect("paste the code");
    std::io::Read::read_to_string(&mut stdout, &mut printed).expect("the output");
    let out = child.wait_with_output().expect("the command");
    (out, printed)
}

fn walk_files(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
    for e in fs::read_dir(dir).expect("read dir") {
        let e = e.expect("entry");
        let p = e.path();
        if e.file_type().expect("type").is_dir() {
            walk_files(root, &p, out);
        } else {
            let key = p
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            out.insert(key, p);
        }
    }
}

/// One device: a home of its own, driven through the CLI.
pub struct TempHome {
    pub dir: tempfile::TempDir,
    pub name: String,
    /// The user's folders outside the home (XDG state and runtime), so that no test
    /// touches the developer's own: a remembered key's unlock key goes here, and the
    /// empty runtime folder holds no D-Bus session, hence no OS keyring.
    pub outside: tempfile::TempDir,
    /// The GitHub token this device's commands hold (GH_ENTERPRISE_TOKEN), when its
    /// vault is a gist one: set by [`TempHome::joined`], changed by tests of bad
    /// tokens.
    pub github_token: std::sync::Mutex<Option<String>>,
    /// Whether this device's commands hold the test login's Dropbox refresh token
    /// in their environment: set by [`TempHome::joined`] on a Dropbox vault, and
    /// always in a Dropbox run.
    pub dropbox_env: std::sync::atomic::AtomicBool,
    /// The same for the test login of a Google Drive vault.
    pub gdrive_env: std::sync::atomic::AtomicBool,
}

impl TempHome {
    pub fn new(name: &str) -> Self {
        let outside = tempfile::tempdir().expect("temp dir");
        for sub in ["state", "run"] {
            std::fs::create_dir(outside.path().join(sub)).expect("user folder");
        }
        std::fs::set_permissions(
            outside.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            name: name.to_owned(),
            outside,
            github_token: std::sync::Mutex::new(None),
            dropbox_env: std::sync::atomic::AtomicBool::new(dropbox_selected()),
            gdrive_env: std::sync::atomic::AtomicBool::new(gdrive_selected()),
        }
    }

    /// Gives this device's commands the test's Dropbox login in their environment,
    /// or takes it away (they then use what `login dropbox` stored).
    pub fn set_dropbox_env(&self, on: bool) {
        self.dropbox_env
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Gives this device's commands the test's Google login in their environment,
    /// or takes it away (they then use what `login google` stored).
    pub fn set_gdrive_env(&self, on: bool) {
        self.gdrive_env
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_github_token(&self, token: Option<&str>) {
        *self.github_token.lock().unwrap() = token.map(str::to_owned);
    }

    pub fn state_dir(&self) -> PathBuf {
        self.outside.path().join("state")
    }

    /// The environment every command of this device runs with, apart from the
    /// passphrase: isolated from the developer's keyring, tokens and state.
    pub fn isolated_env(&self) -> Vec<(&'static str, Option<std::ffi::OsString>)> {
        vec![
            ("GHOSTIE_HOME", None),
            // A developer's log filter would add lines every test counts.
            ("GHOSTIE_LOG", None),
            ("RUST_LOG", None),
            ("GHOSTIE_FAILPOINT", None),
            ("GHOSTIE_CREDENTIAL_STORE", None),
            ("GH_TOKEN", None),
            ("GITHUB_TOKEN", None),
            (
                "GH_ENTERPRISE_TOKEN",
                self.github_token
                    .lock()
                    .unwrap()
                    .clone()
                    .or_else(|| gist_selected().then(|| GIST_TOKEN.to_owned()))
                    .map(Into::into),
            ),
            ("GITHUB_ENTERPRISE_TOKEN", None),
            (
                "GHOSTIE_DROPBOX_REFRESH_TOKEN",
                self.dropbox_env
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then(|| DROPBOX_REFRESH_TOKEN.into()),
            ),
            (
                "GHOSTIE_DROPBOX_APP_KEY",
                self.dropbox_env
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then(|| DROPBOX_APP_KEY.into()),
            ),
            ("GHOSTIE_DROPBOX_TOKEN", None),
            (
                "GHOSTIE_GDRIVE_REFRESH_TOKEN",
                self.gdrive_env
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then(|| GDRIVE_REFRESH_TOKEN.into()),
            ),
            (
                "GHOSTIE_GDRIVE_CLIENT_ID",
                self.gdrive_env
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then(|| GDRIVE_CLIENT_ID.into()),
            ),
            (
                "GHOSTIE_GDRIVE_CLIENT_SECRET",
                self.gdrive_env
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then(|| GDRIVE_CLIENT_SECRET.into()),
            ),
            ("GHOSTIE_GDRIVE_TOKEN", None),
            ("DBUS_SESSION_BUS_ADDRESS", None),
            // Every request of a test goes to loopback: no proxy may carry it
            // (and the fakes' tokens) elsewhere, and the AWS SDK's chains never
            // ask a metadata service or a container endpoint.
            ("HTTP_PROXY", None),
            ("HTTPS_PROXY", None),
            ("ALL_PROXY", None),
            ("http_proxy", None),
            ("https_proxy", None),
            ("all_proxy", None),
            ("AWS_EC2_METADATA_DISABLED", Some("true".into())),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", None),
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", None),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", None),
            ("XDG_STATE_HOME", Some(self.state_dir().into_os_string())),
            (
                "XDG_RUNTIME_DIR",
                Some(self.outside.path().join("run").into_os_string()),
            ),
        ]
    }

    /// A home set up on `vault` (creating it if it holds none).
    pub fn joined(name: &str, vault: &TempVault) -> Self {
        let h = Self::new(name);
        if vault.is_gist() {
            h.set_github_token(Some(GIST_TOKEN));
        }
        if vault.is_dropbox() {
            h.set_dropbox_env(true);
        }
        if vault.is_gdrive() {
            h.set_gdrive_env(true);
        }
        let args = vault.setup_command(name);
        h.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        // As a user would: the token kept, so commands started without it in their
        // environment (a service, a scheduled job) still have it.
        vault.keep_token(h.home(), |c| {
            c.envs_isolated(&h).env("GHOSTIE_PASSPHRASE", PASSPHRASE);
        });
        h
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }
    pub fn memories(&self) -> PathBuf {
        self.dir.path().join("memories")
    }
    pub fn file(&self, rel: &str) -> PathBuf {
        self.memories().join(rel)
    }

    /// The same as a plain process command, for a test that runs one in the background.
    pub fn background(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("ghostie-fs"))
            .arg("--home")
            .arg(self.home())
            .args(args)
            .env("GHOSTIE_PASSPHRASE", PASSPHRASE)
            .envs_isolated(self)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ghostie-fs")
    }

    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("ghostie-fs").expect("binary");
        c.arg("--home").arg(self.home());
        c.env("GHOSTIE_PASSPHRASE", PASSPHRASE);
        for (k, v) in self.isolated_env() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.env_remove("GHOSTIE_NEW_PASSPHRASE");
        c.timeout(std::time::Duration::from_secs(300));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run ghostie-fs")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            self.name,
            args,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "panic: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) {
        let p = self.file(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.file(rel)).ok()
    }

    pub fn tree(&self) -> Tree {
        tree_of(&self.memories())
    }

    pub fn names(&self) -> Vec<String> {
        self.tree().into_keys().collect()
    }
}

/// What a folder holds, as compared across devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
        mtime: i64,
    },
    Dir {
        mode: u32,
    },
    Link(String),
}

pub type Tree = BTreeMap<String, Node>;

pub fn tree_of(root: &Path) -> Tree {
    read_tree(root, false)
}

/// The tree of a mount that is still taking other devices' changes: a name listed a
/// moment ago may be gone when it is read (a conflict sibling goes when a newer version
/// supersedes both), so such a name is left out instead of failing the read. The
/// callers compare these trees until they settle.
pub fn live_tree_of(root: &Path) -> Tree {
    read_tree(root, true)
}

fn read_tree(root: &Path, live: bool) -> Tree {
    let mut out = Tree::new();
    fn gone(e: &std::io::Error) -> bool {
        e.kind() == std::io::ErrorKind::NotFound
    }
    fn go(root: &Path, dir: &Path, live: bool, out: &mut Tree) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = match fs::symlink_metadata(&p) {
                Err(err) if live && gone(&err) => continue,
                m => m.unwrap(),
            };
            if m.file_type().is_symlink() {
                let target = match fs::read_link(&p) {
                    Err(err) if live && gone(&err) => continue,
                    t => t.unwrap(),
                };
                out.insert(rel, Node::Link(target.to_string_lossy().into_owned()));
            } else if m.is_dir() {
                out.insert(
                    rel,
                    Node::Dir {
                        mode: m.permissions().mode() & 0o7777,
                    },
                );
                go(root, &p, live, out);
            } else {
                let data = match fs::read(&p) {
                    Err(err) if live && gone(&err) => continue,
                    d => d.unwrap(),
                };
                out.insert(
                    rel,
                    Node::File {
                        data,
                        mode: m.permissions().mode() & 0o7777,
                        mtime: m.mtime(),
                    },
                );
            }
        }
    }
    go(root, root, live, &mut out);
    out
}

/// The tree without modification times (for devices that wrote their own copies).
pub fn contents_of(t: &Tree) -> BTreeMap<String, Option<Vec<u8>>> {
    t.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                match v {
                    Node::File { data, .. } => Some(data.clone()),
                    _ => None,
                },
            )
        })
        .collect()
}

/// Applies a device's isolated environment to a plain process command.
pub trait EnvsIsolated {
    fn envs_isolated(&mut self, h: &TempHome) -> &mut Self;
}

impl EnvsIsolated for std::process::Command {
    fn envs_isolated(&mut self, h: &TempHome) -> &mut Self {
        for (k, v) in h.isolated_env() {
            match v {
                Some(v) => self.env(k, v),
                None => self.env_remove(k),
            };
        }
        self
    }
}

/// One line on stderr, starting with ❌, no panic, the given exit code.
pub fn one_sentence(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {err} stdout: {}",
        stdout(out)
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {err:?}");
    assert!(lines[0].starts_with("❌ "), "{err}");
    assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A memory-like JSON document of about `size` bytes.
pub fn memory_json(i: usize, size: usize) -> Vec<u8> {
    let mut s = format!(
        "{{\"timestamp\":\"2025-06-28T14:{:02}:{:02}.000Z\",\"category\":\"note\",\"content\":\"",
        i / 60 % 60,
        i % 60
    );
    let words = [
        "ghost", "memory", "network", "topology", "laptop", "phone", "walk", "coffee",
    ];
    let mut k = i;
    while s.len() < size.saturating_sub(3) {
        s.push_str(words[k % words.len()]);
        s.push(' ');
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    s.push_str("\"}\n");
    s.into_bytes()
}

/// A fixed passphrase for devices driven through the library in one process.
pub struct TestPass;

impl ghostie_fs::sync::PassphraseSource for TestPass {
    fn existing(&self) -> ghostie_fs::sync::SyncResult<zeroize::Zeroizing<String>> {
        Ok(zeroize::Zeroizing::new("library test passphrase".into()))
    }
    fn new_passphrase(&self) -> ghostie_fs::sync::SyncResult<zeroize::Zeroizing<String>> {
        self.existing()
    }
}

/// Sets up a device called `name` under `dir` over `store`, and opens its vault.
pub fn library_device(
    dir: &Path,
    name: &str,
    store: ghostie_fs::backend::SharedStore,
) -> ghostie_fs::sync::Vault {
    library_device_at(dir, name, store, "ghostie")
}

/// The same, for a vault under `prefix` (an S3 test vault's).
pub fn library_device_at(
    dir: &Path,
    name: &str,
    store: ghostie_fs::backend::SharedStore,
    prefix: &str,
) -> ghostie_fs::sync::Vault {
    use ghostie_fs::config::{BackendConfig, Home};
    use ghostie_fs::sync::{setup_vault, SetupRequest, Vault};
    let home = Home::new(dir.join(name));
    let req = SetupRequest {
        home: home.clone(),
        backend: BackendConfig::Local {
            path: "/unused".into(),
        },
        prefix: prefix.into(),
        device_name: name.into(),
        force: false,
    };
    setup_vault(&req, store.clone(), &TestPass).expect("setup");
    Vault::open_with_store(home, store, Box::new(TestPass)).expect("open")
}

/// Copies a folder tree (fixtures, prepared homes).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `secs` pass; true if it held.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A mount of a home, running in its own background process; unmounted on drop.
pub struct Mount {
    pub at: PathBuf,
    home: PathBuf,
    name: String,
}

impl Mount {
    /// The mount process's id, from the status file it keeps.
    pub fn pid(&self) -> u32 {
        self.status()["pid"].as_u64().expect("pid") as u32
    }

    pub fn status(&self) -> serde_json::Value {
        let bytes = fs::read(self.home.join("sync/mount-status.json")).expect("mount status");
        serde_json::from_slice(&bytes).expect("status JSON")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.at.join(rel)
    }

    /// Waits until the queue of this mount is empty (everything published).
    pub fn drained(&self, secs: u64) -> bool {
        eventually(secs, || {
            let s = self.status();
            s["pending_uploads"].as_u64() == Some(0) && s["open_dirty"].as_u64() == Some(0)
        })
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.home.join("sync/mount.log")).unwrap_or_default()
    }
}

pub fn force_unmount(at: &Path) {
    for tool in ["fusermount3", "fusermount"] {
        let ok = std::process::Command::new(tool)
            .arg("-uz")
            .arg(at)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return;
        }
    }
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(at)
        .output();
}

impl Drop for Mount {
    fn drop(&mut self) {
        let out = assert_cmd::Command::cargo_bin("ghostie-fs")
            .expect("binary")
            .arg("--home")
            .arg(&self.home)
            .args(["unmount", "--no-wait"])
            .env_remove("GHOSTIE_HOME")
            .timeout(std::time::Duration::from_secs(60))
            .output();
        let clean = out.map(|o| o.status.success()).unwrap_or(false);
        if !clean {
            force_unmount(&self.at);
        }
        let _ = &self.name;
    }
}

impl TempHome {
    /// Mounts this home's memories folder with the default settings.
    pub fn mount(&self) -> Mount {
        self.mount_with(&[], &[])
    }

    /// The mount a test started by hand, unmounted on drop like any other.
    pub fn adopt_mount(&self) -> Mount {
        Mount {
            at: self.memories(),
            home: self.home().to_path_buf(),
            name: self.name.clone(),
        }
    }

    pub fn mount_with(&self, args: &[&str], env: &[(&str, &str)]) -> Mount {
        let mut c = self.cmd();
        c.arg("mount").args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("run mount");
        assert!(
            out.status.success(),
            "{}: mount failed: {}{}",
            self.name,
            stdout(&out),
            stderr(&out)
        );
        Mount {
            at: self.memories(),
            home: self.home().to_path_buf(),
            name: self.name.clone(),
        }
    }
}

/// A file of `len` bytes that differs at every offset (so a wrong range shows).
pub fn patterned(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs a shell command line, asserting success; returns stdout.
pub fn sh(cwd: &Path, script: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "`{script}` failed in {}:\n{}{}",
        cwd.display(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// An S3 server of the test's own (the same SeaweedFS as scripts/test.sh starts,
/// through the same script), so the test can stop it and start it again on the same
/// ports and data. Stopped on drop.
pub struct OwnS3Server {
    data: tempfile::TempDir,
    pub endpoint: String,
    base: String,
    pid: Option<i32>,
}

impl OwnS3Server {
    /// None (with a note) when the run has no S3 server of its own.
    pub fn start() -> Option<Self> {
        s3_server()?;
        let data = tempfile::tempdir().expect("temp dir");
        let (pid, endpoint, base) = Self::launch(data.path(), "");
        Some(Self {
            data,
            endpoint,
            base,
            pid: Some(pid),
        })
    }

    fn launch(data: &Path, base: &str) -> (i32, String, String) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(
                "source scripts/lib/packages.sh && source scripts/lib/s3-server.sh && \
                 s3_server_start \"$1\" \"$2\" >&2 && \
                 echo \"$s3_pid $GHOSTIE_TEST_S3_ENDPOINT $s3_base\"",
            )
            .arg("start")
            .arg(data)
            .arg(base)
            .current_dir(root)
            .output()
            .expect("run s3-server.sh");
        assert!(
            out.status.success(),
            "the test's own S3 server did not start: {}",
            stderr(&out)
        );
        let line = stdout(&out);
        let mut parts = line.split_whitespace();
        let pid = parts.next().and_then(|p| p.parse().ok()).expect("pid");
        let endpoint = parts.next().expect("endpoint").to_owned();
        let base = parts.next().expect("port base").to_owned();
        (pid, endpoint, base)
    }

    /// Stops the server (as a crash or an outage would: no warning to clients).
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: signalling the server process this helper started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // Gone, or a zombie nobody reaped yet (its ports are closed either way).
            let gone = || {
                fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|stat| {
                        stat.rsplit(')')
                            .next()
                            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                    })
                    .unwrap_or(true)
            };
            assert!(eventually(30, gone), "the S3 server did not stop");
        }
    }

    /// Starts it again on the same ports, with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let (pid, endpoint, _) = Self::launch(self.data.path(), &self.base);
        assert_eq!(endpoint, self.endpoint);
        self.pid = Some(pid);
    }

    /// A vault on this server (a prefix of its bucket, behind a relay).
    pub fn vault(&self) -> TempVault {
        TempVault::s3_at(&self.endpoint).expect("an S3 vault")
    }
}

impl Drop for OwnS3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one device wrote during the minute: the last content of each path.
type Written = std::collections::BTreeMap<String, Vec<u8>>;

/// One device's minute: new files of its own, overwrites of files both devices share,
/// and reads of the other's files (each read must be whole).
fn a_minute_of_work(me: &str, other: &str, at: &Path, secs: u64) -> (Written, usize) {
    let mut written = Written::new();
    let mut reads = 0;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut i = 0usize;
    while std::time::Instant::now() < end {
        let own = format!("{me}/n{i}.json");
        let body = format!(
            "{{\"device\":\"{me}\",\"n\":{i},\"pad\":\"{}\"}}",
            "x".repeat(i % 700)
        );
        std::fs::write(at.join(&own), &body).unwrap();
        written.insert(own, body.into_bytes());
        if i % 4 == 0 {
            let shared = format!("shared/s{}.json", (i / 4) % 8);
            let body = format!("{{\"by\":\"{me}\",\"n\":{i}}}").into_bytes();
            std::fs::write(at.join(&shared), &body).unwrap();
            written.insert(shared, body);
        }
        if i % 3 == 0 {
            // Whatever of the other's files this mount shows must read whole.
            let theirs = at.join(other);
            if let Ok(entries) = std::fs::read_dir(&theirs) {
                for e in entries.flatten().take(5) {
                    let data = std::fs::read(e.path()).unwrap();
                    let text = String::from_utf8(data).unwrap();
                    assert!(
                        text.starts_with(&format!("{{\"device\":\"{other}\""))
                            && text.ends_with('}'),
                        "{me} read a torn {}: {text}",
                        e.path().display()
                    );
                    reads += 1;
                }
            }
        }
        i += 1;
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    (written, reads)
}

/// Two devices mounted on one vault write and read at once for `secs` seconds;
/// both end with the same namespace, and every file written is there, as itself or
/// as a conflict sibling.
pub fn two_mounts_write_and_read_at_once(vault: &TempVault, secs: u64) {
    const WAIT: u64 = 90;
    let laptop = TempHome::joined("laptop", vault);
    let desktop = TempHome::joined("desktop", vault);
    let ml = laptop.mount_with(&["--poll", "1"], &[]);
    let md = desktop.mount_with(&["--poll", "1"], &[]);
    for m in [&ml, &md] {
        for d in ["laptop", "desktop", "shared"] {
            let _ = std::fs::create_dir(m.path(d));
        }
    }
    let (at_l, at_d) = (ml.at.clone(), md.at.clone());
    let l = std::thread::spawn(move || a_minute_of_work("laptop", "desktop", &at_l, secs));
    let d = std::thread::spawn(move || a_minute_of_work("desktop", "laptop", &at_d, secs));
    let (by_laptop, laptop_reads) = l.join().unwrap();
    let (by_desktop, desktop_reads) = d.join().unwrap();
    assert!(
        laptop_reads > 0 && desktop_reads > 0,
        "the devices never saw each other's files"
    );

    assert!(
        ml.drained(WAIT) && md.drained(WAIT),
        "uploads did not finish"
    );
    assert!(
        eventually(WAIT, || contents_of(&live_tree_of(&ml.at))
            == contents_of(&live_tree_of(&md.at))),
        "the two mounts did not converge"
    );
    let end = contents_of(&tree_of(&ml.at));
    for (who, written) in [("laptop", &by_laptop), ("desktop", &by_desktop)] {
        for (path, body) in written {
            if path.starts_with("shared/") {
                // Both wrote these: the path (or a sibling of it) must be there.
                assert!(
                    end.keys()
                        .any(|k| k == path || k.starts_with(&format!("{path}.conflict-"))),
                    "{path} by {who} is gone"
                );
            } else {
                assert_eq!(end.get(path), Some(&Some(body.clone())), "{path} by {who}");
            }
        }
    }
    // Nothing appeared that nobody wrote.
    for path in end.keys() {
        let base = path.split(".conflict-").next().unwrap_or(path);
        assert!(
            ["laptop", "desktop", "shared"].contains(&base)
                || by_laptop.contains_key(base)
                || by_desktop.contains_key(base),
            "{path} came from nowhere"
        );
    }
    eprintln!(
        "{} files by laptop, {} by desktop, {} paths at the end",
        by_laptop.len(),
        by_desktop.len(),
        end.len()
    );
}
