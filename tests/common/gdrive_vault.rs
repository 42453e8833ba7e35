//! Vaults in the app data folder of a fake Google Drive (GHOSTIE_TEST_BACKEND=gdrive):
//! each vault starts its own fake on loopback, behind one relay (the fake plays
//! every Google host on one port), logged in to as the test's OAuth client.

use std::path::Path;
use std::process::Output;

use super::{fake_gdrive, proxy, stderr, TempVault};

/// The OAuth client every device of a Drive run uses, and the refresh token of
/// its login (GHOSTIE_GDRIVE_REFRESH_TOKEN), the same in each vault's fake.
pub const GDRIVE_CLIENT_ID: &str = "1234-ghostietest.apps.googleusercontent.com";
pub const GDRIVE_CLIENT_SECRET: &str = "GOCSPX-ghostie-test-client-secret";
pub const GDRIVE_REFRESH_TOKEN: &str = "1//0ghostie-test-refresh-token-000000000000000001";

pub fn gdrive_selected() -> bool {
    std::env::var("GHOSTIE_TEST_BACKEND").as_deref() == Ok("gdrive")
}

/// A vault in a fake Drive's app data folder.
pub struct GdriveVault {
    pub fake: fake_gdrive::FakeGdrive,
    pub relay: proxy::Relay,
    /// The vault as the test reads it, straight from the fake.
    pub store: ghostie_fs::backend::GdriveStore,
}

impl GdriveVault {
    /// The URLs a device uses: every role through the relay.
    pub fn urls(&self) -> ghostie_fs::config::GdriveUrls {
        let url = self.relay.url();
        ghostie_fs::config::GdriveUrls {
            api: url.clone(),
            upload: url.clone(),
            oauth: url,
        }
    }
}

/// Access tokens for the tests' own store on a fake Drive: refreshed from the
/// test login at the fake's token endpoint.
pub struct TestGoogleLogin {
    token_url: String,
    current: std::sync::Mutex<Option<ghostie_fs::backend::Token>>,
}

impl TestGoogleLogin {
    pub fn new(fake_url: &str) -> Self {
        Self {
            token_url: format!("{fake_url}/token"),
            current: std::sync::Mutex::new(None),
        }
    }
}

impl ghostie_fs::backend::AccessTokens for TestGoogleLogin {
    fn access_token(
        &self,
        refused: Option<&str>,
    ) -> Result<ghostie_fs::backend::Token, ghostie_fs::backend::BackendError> {
        let mut current = self.current.lock().unwrap();
        if let Some(t) = current.as_ref() {
            if refused != Some(t.as_str()) {
                return Ok(t.clone());
            }
        }
        let grant = ghostie_fs::backend::oauth::refresh(
            &self.token_url,
            GDRIVE_CLIENT_ID,
            Some(GDRIVE_CLIENT_SECRET),
            GDRIVE_REFRESH_TOKEN,
        )
        .map_err(|e| ghostie_fs::backend::BackendError::Refused(e.to_string()))?;
        *current = Some(grant.access_token.clone());
        Ok(grant.access_token)
    }
}

/// A store on the fake itself (no relay), logged in as the test client.
pub fn gdrive_store(fake: &fake_gdrive::FakeGdrive) -> ghostie_fs::backend::GdriveStore {
    let url = fake.url();
    let urls = ghostie_fs::config::GdriveUrls {
        api: url.clone(),
        upload: url.clone(),
        oauth: url.clone(),
    };
    ghostie_fs::backend::GdriveStore::new(urls, std::sync::Arc::new(TestGoogleLogin::new(&url)))
        .expect("a store on the fake Drive")
}

/// The environment that logs a device in to a Drive run's fakes.
pub fn gdrive_env() -> Vec<(String, String)> {
    vec![
        (
            "GHOSTIE_GDRIVE_REFRESH_TOKEN".into(),
            GDRIVE_REFRESH_TOKEN.into(),
        ),
        ("GHOSTIE_GDRIVE_CLIENT_ID".into(), GDRIVE_CLIENT_ID.into()),
        (
            "GHOSTIE_GDRIVE_CLIENT_SECRET".into(),
            GDRIVE_CLIENT_SECRET.into(),
        ),
    ]
}

impl TempVault {
    /// The app data folder of a fresh fake Drive, logged in to as the test client.
    pub fn gdrive() -> Self {
        let fake = fake_gdrive::FakeGdrive::start();
        fake.add_client(
            GDRIVE_CLIENT_ID,
            GDRIVE_CLIENT_SECRET,
            fake_gdrive::ClientKind::Desktop,
            false,
        );
        fake.grant_as(GDRIVE_CLIENT_ID, GDRIVE_REFRESH_TOKEN);
        let relay = proxy::Relay::start(&fake.addr());
        let store = gdrive_store(&fake);
        let mut v = Self::local();
        v.gdrive = Some(GdriveVault { fake, relay, store });
        v
    }

    pub fn is_gdrive(&self) -> bool {
        self.gdrive.is_some()
    }

    pub fn gdrive_parts(&self) -> Option<&GdriveVault> {
        self.gdrive.as_ref()
    }

    pub(super) fn gdrive_setup_args(d: &GdriveVault) -> Vec<String> {
        let urls = d.urls();
        vec![
            "--backend".into(),
            "gdrive".into(),
            "--api-url".into(),
            urls.api,
            "--upload-url".into(),
            urls.upload,
            "--oauth-url".into(),
            urls.oauth,
        ]
    }
}

/// `login google` for the home at `home`, as a user does it: the page the
/// command prints is approved (the fake stands in for the browser), and the
/// browser's redirect is sent to the command's loopback listener.
pub fn gdrive_login(
    d: &GdriveVault,
    home: &Path,
    prepare: impl FnOnce(&mut std::process::Command),
) {
    let url = d.relay.url();
    let args = [
        "login",
        "google",
        "--client-id",
        GDRIVE_CLIENT_ID,
        "--client-secret",
        GDRIVE_CLIENT_SECRET,
        "--api-url",
        &url,
        "--oauth-url",
        &url,
    ];
    let (out, printed) = with_google_consent(d, home, &args, prepare);
    assert!(
        out.status.success(),
        "login google: {printed}{}",
        stderr(&out)
    );
}

/// Runs `args` (a command that logs in to Google by the loopback flow: it prints
/// the consent page and waits for the browser) for the home at `home`, approving
/// the page as the user would; returns how it ended and what it printed.
pub fn with_google_consent(
    d: &GdriveVault,
    home: &Path,
    args: &[&str],
    prepare: impl FnOnce(&mut std::process::Command),
) -> (Output, String) {
    use std::io::BufRead;
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ghostie-fs"));
    c.arg("--home")
        .arg(home)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    prepare(&mut c);
    c.env_remove("GHOSTIE_GDRIVE_REFRESH_TOKEN")
        .env_remove("GHOSTIE_GDRIVE_CLIENT_ID")
        .env_remove("GHOSTIE_GDRIVE_CLIENT_SECRET");
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
        if n == 0 {
            let out = child.wait_with_output().expect("the command");
            return (out, printed);
        }
    }
    match d.fake.approve(url.trim()) {
        Ok(code) => browser_returns(url.trim(), &format!("code={code}")),
        Err(e) => panic!("the fake Google refused the page {url}: {e}"),
    }
    std::io::Read::read_to_string(&mut stdout, &mut printed).expect("the output");
    let out = child.wait_with_output().expect("the command");
    (out, printed)
}

/// What the browser does after the consent: a GET of the redirect address with
/// `answer` and the page's `state`.
pub fn browser_returns(consent_url: &str, answer: &str) {
    let query = consent_url.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    };
    let redirect = param("redirect_uri").expect("a redirect_uri in the consent page");
    let state = param("state").unwrap_or_default();
    let target = format!("{redirect}/?{answer}&state={state}");
    let addr = redirect.trim_start_matches("http://").to_owned();
    let path = target
        .trim_start_matches("http://")
        .trim_start_matches(&addr)
        .to_owned();
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&addr).expect("the login's loopback listener");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("the browser's request");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
