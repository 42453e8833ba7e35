//! Dropbox logins: OAuth 2 with PKCE and no app secret, for the owner's own app
//! with the "App folder" permission. Dropbox has no device flow: the user opens the
//! consent page, approves, and pastes back the code it shows. `token_access_type=
//! offline` brings a refresh token, which is what is stored; access tokens live
//! about four hours and are renewed from it without the user.

use zeroize::Zeroizing;

use super::Secret;
use crate::backend::dropbox::{AccessTokens, DropboxStore, DropboxUrls};
use crate::backend::oauth::{self, OAuthError, TokenGrant};
use crate::backend::{BackendError, BackendResult, Token};

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
    if api_url.trim_end_matches('/') == crate::backend::dropbox::api::DEFAULT_API_URL {
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
    let mut url = match reqwest::Url::parse(&authorize_root(api_url)) {
        Ok(u) => u,
        Err(_) => {
            return LoginStart {
                url: authorize_root(api_url),
                verifier,
            }
        }
    };
    url.query_pairs_mut()
        .append_pair("client_id", app_key)
        .append_pair("response_type", "code")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("token_access_type", "offline");
    LoginStart {
        url: url.to_string(),
        verifier,
    }
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

/// One access token handed out as it is (a login being checked).
struct Given(Token);

impl AccessTokens for Given {
    fn access_token(&self, refused: Option<&str>) -> BackendResult<Token> {
        if refused.is_some() {
            return Err(BackendError::Refused(
                "Dropbox called a token it had just granted expired".into(),
            ));
        }
        Ok(self.0.clone())
    }
}

/// Whose Dropbox an access token opens ("Name <email>").
pub fn account(api_url: &str, access: &Secret) -> BackendResult<String> {
    let urls = DropboxUrls {
        api: api_url.trim_end_matches('/').to_owned(),
        ..DropboxUrls::default()
    };
    let token: Token = Zeroizing::new(access.expose().to_owned());
    DropboxStore::new(urls, std::sync::Arc::new(Given(token)))?.account()
}

/// Revokes an access token and the refresh token behind it, at Dropbox.
pub fn revoke(api_url: &str, access: &Secret) -> BackendResult<()> {
    let urls = DropboxUrls {
        api: api_url.trim_end_matches('/').to_owned(),
        ..DropboxUrls::default()
    };
    let token: Token = Zeroizing::new(access.expose().to_owned());
    DropboxStore::new(urls, std::sync::Arc::new(Given(token)))?.revoke_login()
}
