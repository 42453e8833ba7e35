//! Google logins for Drive's app data folder, with the owner's own OAuth client
//! (README: "Google Drive as a backend"). Two ways, as Google allows installed
//! apps:
//!
//! - the loopback flow (a "Desktop app" client): the consent page's address is
//!   shown, the browser comes back to a one-time listener on 127.0.0.1 with the
//!   code, and PKCE proves the code was asked for here;
//! - the device flow (a "TVs and Limited Input devices" client), for a phone or a
//!   server without a browser: a short code is typed at google.com/device on any
//!   other device while this one waits.
//!
//! Either asks only for `drive.appdata` and brings a refresh token, which is
//! what is stored (with the client's secret); access tokens live an hour and are
//! renewed without the user. A client in "testing" status gets refresh tokens
//! that Google ends after seven days: the expiry is stored and shown.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::Secret;
use crate::backend::gdrive::GdriveStore;
use crate::backend::oauth::{self, DeviceStart, OAuthError, TokenGrant};
use crate::backend::{BackendResult, FixedToken, Token};
use crate::config::GdriveUrls;

/// A refresh token in the environment (a server, CI), with its client beside it.
pub const REFRESH_TOKEN_VAR: &str = "GHOSTIE_GDRIVE_REFRESH_TOKEN";
pub const CLIENT_ID_VAR: &str = "GHOSTIE_GDRIVE_CLIENT_ID";
pub const CLIENT_SECRET_VAR: &str = "GHOSTIE_GDRIVE_CLIENT_SECRET";
/// An access token alone (from Google's OAuth playground): good for an hour,
/// for a quick try or a live test; nothing renews it.
pub const ACCESS_TOKEN_VAR: &str = "GHOSTIE_GDRIVE_TOKEN";
/// The narrowest scope Drive offers: the app's own hidden folder, nothing else.
pub const SCOPE: &str = "https://www.googleapis.com/auth/drive.appdata";
/// Google's consent page (on accounts.google.com, not the OAuth host).
pub const AUTHORIZE_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";

pub fn token_url(oauth_url: &str) -> String {
    format!("{}/token", oauth_url.trim_end_matches('/'))
}

fn device_url(oauth_url: &str) -> String {
    format!("{}/device/code", oauth_url.trim_end_matches('/'))
}

fn revoke_url(oauth_url: &str) -> String {
    format!("{}/revoke", oauth_url.trim_end_matches('/'))
}

/// The consent page: Google's own for Google's OAuth host, else the one beside
/// the given host (the tests' fake).
fn authorize_root(oauth_url: &str) -> String {
    if oauth_url.trim_end_matches('/') == crate::config::GOOGLE_OAUTH_URL {
        AUTHORIZE_URL.into()
    } else {
        format!("{}/o/oauth2/v2/auth", oauth_url.trim_end_matches('/'))
    }
}

/// A loopback login under way: the page to open, the listener the browser comes
/// back to, and what proves the answer belongs to this request.
pub struct LoopbackLogin {
    pub url: String,
    listener: TcpListener,
    redirect_uri: String,
    state: String,
    verifier: Zeroizing<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    #[error("cannot listen on this machine's loopback address for Google's answer ({0})")]
    Listen(std::io::Error),
    #[error("no answer came from the browser within {0} minutes")]
    TimedOut(u64),
    #[error("access was not allowed ({0})")]
    Denied(String),
    #[error("the code expired before it was used")]
    Expired,
    #[error(transparent)]
    OAuth(#[from] OAuthError),
}

impl LoopbackLogin {
    /// Opens the listener and makes the consent page's address for `client_id`.
    pub fn start(oauth_url: &str, client_id: &str) -> Result<Self, LoginError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(LoginError::Listen)?;
        let port = listener.local_addr().map_err(LoginError::Listen)?.port();
        let redirect_uri = format!("http://127.0.0.1:{port}");
        let (verifier, challenge) = oauth::pkce_pair();
        let state = super::random_hex(16);
        let url = oauth::authorize_url(
            &authorize_root(oauth_url),
            &[
                ("client_id", client_id),
                ("redirect_uri", &redirect_uri),
                ("response_type", "code"),
                ("scope", SCOPE),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("access_type", "offline"),
                // A refresh token every time, even where one was granted before.
                ("prompt", "consent"),
                ("state", &state),
            ],
        );
        Ok(Self {
            url,
            listener,
            redirect_uri,
            state,
            verifier,
        })
    }

    /// Waits up to `patience` for the browser to come back, then trades the code
    /// for tokens.
    pub fn finish(
        self,
        oauth_url: &str,
        client_id: &str,
        client_secret: &Secret,
        patience: Duration,
    ) -> Result<TokenGrant, LoginError> {
        let code = self.wait_for_code(patience)?;
        Ok(oauth::exchange_code_with_secret(
            &token_url(oauth_url),
            client_id,
            client_secret.expose(),
            &code,
            &self.verifier,
            &self.redirect_uri,
        )?)
    }

    /// The code of the first request that carries this login's `state`; other
    /// requests (a browser asking for a favicon) are answered and ignored.
    fn wait_for_code(&self, patience: Duration) -> Result<Zeroizing<String>, LoginError> {
        let until = Instant::now() + patience;
        self.listener
            .set_nonblocking(true)
            .map_err(LoginError::Listen)?;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(answer) = self.answer(stream) {
                        return answer;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= until {
                        return Err(LoginError::TimedOut(patience.as_secs() / 60));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(LoginError::Listen(e)),
            }
        }
    }

    /// Reads one request; Some(the outcome) when it is Google's redirect.
    fn answer(&self, stream: TcpStream) -> Option<Result<Zeroizing<String>, LoginError>> {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut first = String::new();
        reader.read_line(&mut first).ok()?;
        // The rest of the head, unread, would only be refused by a reset.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let target = first.split_whitespace().nth(1).unwrap_or("/");
        let params = oauth::query_params(target);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let outcome = if get("state").as_deref() != Some(self.state.as_str()) {
            None
        } else if let Some(code) = get("code") {
            Some(Ok(Zeroizing::new(code)))
        } else {
            let why = get("error").unwrap_or_else(|| "no code came back".into());
            Some(Err(LoginError::Denied(
                why.chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(80)
                    .collect(),
            )))
        };
        let page = match &outcome {
            Some(Ok(_)) => "ghostie-fs is logged in to Google Drive. You can close this tab.",
            Some(Err(_)) => "ghostie-fs was not allowed access. You can close this tab.",
            None => "ghostie-fs is waiting for Google's answer.",
        };
        let mut stream = stream;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        outcome
    }
}

/// A device login under way: what the user types, and where.
pub struct DeviceLogin {
    pub user_code: String,
    pub verification_url: String,
    start: DeviceStart,
}

impl DeviceLogin {
    pub fn start(oauth_url: &str, client_id: &str) -> Result<Self, LoginError> {
        let start = oauth::device_start(&device_url(oauth_url), client_id, SCOPE)?;
        Ok(Self {
            user_code: start.user_code.clone(),
            verification_url: start.verification_url.clone(),
            start,
        })
    }

    /// Polls at the pace Google asks until the user answers or the code expires.
    pub fn finish(
        self,
        oauth_url: &str,
        client_id: &str,
        client_secret: &Secret,
    ) -> Result<TokenGrant, LoginError> {
        let until = Instant::now() + Duration::from_secs(self.start.expires_in);
        let mut interval = Duration::from_secs(self.start.interval.max(1));
        loop {
            std::thread::sleep(interval);
            match oauth::device_poll(
                &token_url(oauth_url),
                client_id,
                client_secret.expose(),
                &self.start.device_code,
            ) {
                Ok(grant) => return Ok(grant),
                Err(OAuthError::Refused { error, .. }) => match error.as_str() {
                    "authorization_pending" => {}
                    "slow_down" => interval += Duration::from_secs(5),
                    "access_denied" => return Err(LoginError::Denied(error)),
                    "expired_token" => return Err(LoginError::Expired),
                    _ => return Err(OAuthError::Refused { status: 400, error }.into()),
                },
                // A poll that failed on the way is tried again at the next turn.
                Err(OAuthError::Unreachable { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= until {
                return Err(LoginError::Expired);
            }
        }
    }
}

fn store_with(urls: &GdriveUrls, access: &Secret) -> BackendResult<GdriveStore> {
    let token: Token = Zeroizing::new(access.expose().to_owned());
    GdriveStore::new(
        urls.clone(),
        std::sync::Arc::new(FixedToken::new(token, "Google", "google")),
    )
}

/// Whose Drive an access token opens ("Name <email>"), and that it may use the
/// app data folder.
pub fn account(urls: &GdriveUrls, access: &Secret) -> BackendResult<String> {
    let store = store_with(urls, access)?;
    let account = store.account()?;
    crate::backend::ObjectStore::list_dirs(&store, "")?;
    Ok(account)
}

/// Revokes a refresh token (and every access token made from it) at Google.
pub fn revoke(oauth_url: &str, token: &Secret) -> Result<(), OAuthError> {
    oauth::revoke(&revoke_url(oauth_url), token.expose())
}
