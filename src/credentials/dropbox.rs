//! Dropbox logins: OAuth 2 with PKCE and no app secret, for the owner's own app
//! with the "App folder" permission. Dropbox has no device flow: the user opens the
//! consent page, approves, and pastes back the code it shows. `token_access_type=
//! offline` brings a refresh token, which is what is stored; access tokens live
//! about four hours and are renewed from it without the user.

use zeroize::Zeroizing;

use super::Secret;
use crate::backend::dropbox::DropboxStore;
use crate::backend::oauth::{self, OAuthError, TokenGrant};
use crate::backend::{BackendResult, FixedToken, Token};
use crate::config::DropboxUrls;

/// A refresh token in the environment (a server, CI), with the app key beside it.
pub const REFRESH_TOKEN_VAR: &str = "GHOSTIE_DROPBOX_REFRESH_TOKEN";
pub const APP_KEY_VAR: &str = "GHOSTIE_DROPBOX_APP_KEY";
/// An access token alone (one the App Console generates): good for four hours,
/// for a quick try or a live test; nothing renews it.
pub const ACCESS_TOKEN_VAR: &str = "GHOSTIE_DROPBOX_TOKEN";
/// Dropbox's consent page (on www.dropbox.com, not the API's host).
pub const AUTHORIZE_URL: &str = "https://www.dropbox.com/oauth2/authorize";

/// The token endpoint of the API at `api_url`.
pub fn token_url(api_url: &str) -> String {
    format!("{}/oauth2/token", api_url.trim_end_matches('/'))
}

/// The consent page: Dropbox's own for Dropbox's API, else the one beside the
/// given API (the tests' fake).
fn authorize_root(api_url: &str) -> String {
    if api_url.trim_end_matches('/') == crate::config::DROPBOX_API_URL {
        AUTHORIZE_URL.into()
    } else {
        format!("{}/oauth2/authorize", api_url.trim_end_matches('/'))
    }
}

/// A login under way: the page to open, and the verifier that proves the code
/// brought back was asked for here.
pub struct LoginStart {
    pub url: String,
    verifier: Zeroizing<String>,
}

/// Makes the consent page's address for `app_key`.
pub fn start_login(api_url: &str, app_key: &str) -> LoginStart {
    let (verifier, challenge) = oauth::pkce_pair();
    let url = oauth::authorize_url(
        &authorize_root(api_url),
        &[
            ("client_id", app_key),
            ("response_type", "code"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("token_access_type", "offline"),
        ],
    );
    LoginStart { url, verifier }
}

/// Trades the pasted code for tokens.
pub fn finish_login(
    start: &LoginStart,
    api_url: &str,
    app_key: &str,
    code: &str,
) -> Result<TokenGrant, OAuthError> {
    oauth::exchange_code(&token_url(api_url), app_key, code.trim(), &start.verifier)
}

/// Whose Dropbox an access token opens ("Name <email>").
pub fn account(api_url: &str, access: &Secret) -> BackendResult<String> {
    let urls = DropboxUrls {
        api: api_url.trim_end_matches('/').to_owned(),
        ..DropboxUrls::default()
    };
    let token: Token = Zeroizing::new(access.expose().to_owned());
    DropboxStore::new(
        urls,
        std::sync::Arc::new(FixedToken::new(token, "Dropbox", "dropbox")),
    )?
    .account()
}

/// Revokes an access token and the refresh token behind it, at Dropbox.
pub fn revoke(api_url: &str, access: &Secret) -> BackendResult<()> {
    let urls = DropboxUrls {
        api: api_url.trim_end_matches('/').to_owned(),
        ..DropboxUrls::default()
    };
    let token: Token = Zeroizing::new(access.expose().to_owned());
    DropboxStore::new(
        urls,
        std::sync::Arc::new(FixedToken::new(token, "Dropbox", "dropbox")),
    )?
    .revoke_login()
}
