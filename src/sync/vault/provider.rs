//! What a provider's backend signs in with (a GitHub token, a Dropbox login), found
//! where the owner put it: the environment first, else this home's credential
//! store. Backends never read secrets themselves, so this is the one place the
//! engine hands one down.

use std::sync::Mutex;

use super::*;
use crate::backend::dropbox::AccessTokens;
use crate::backend::{BackendError, Credential, Token};
use crate::config::BackendConfig;
use crate::credentials::oauth::{OAuthClient, REFRESH_MARGIN_SECS};
use crate::credentials::{
    self, dropbox, google, CredentialError, CredentialKey, Credentials, Place, Provider, Secret,
};

/// What `backend` signs in with, if it needs anything. `pass` opens a store sealed
/// under the vault's key; without it (a look) only what needs no passphrase is
/// tried, and a credential that cannot be had without one is `None`.
pub(super) fn credential_for(
    home: &Home,
    backend: &BackendConfig,
    pass: Option<&dyn PassphraseSource>,
) -> SyncResult<Option<Credential>> {
    let (provider, api_url) = match backend {
        BackendConfig::Gist { api_url } => (Provider::Github, api_url.clone()),
        BackendConfig::Dropbox { urls } => (Provider::Dropbox, urls.api.clone()),
        BackendConfig::Gdrive { urls } => (Provider::Google, urls.api.clone()),
        _ => return Ok(None),
    };
    let bare_token_var = match provider {
        Provider::Dropbox => Some(dropbox::ACCESS_TOKEN_VAR),
        Provider::Google => Some(google::ACCESS_TOKEN_VAR),
        Provider::Github => None,
    };
    if let Some(token) = bare_token_var
        .and_then(|var| std::env::var(var).ok())
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Some(Credential::Token(Zeroizing::new(
            token.trim().to_owned(),
        ))));
    }
    if let Some((var, secret)) = credentials::env_secret(provider, &api_url) {
        return Ok(Some(match provider {
            Provider::Github => Credential::Token(Zeroizing::new(secret.expose().to_owned())),
            Provider::Dropbox => {
                let app_key = std::env::var(dropbox::APP_KEY_VAR)
                    .ok()
                    .filter(|k| !k.trim().is_empty())
                    .ok_or_else(|| {
                        SyncError::Invalid(format!(
                            "{var} holds a Dropbox refresh token, but {} does not name its app key",
                            dropbox::APP_KEY_VAR
                        ))
                    })?;
                Credential::Refreshing(Arc::new(RefreshingLogin::new(
                    provider,
                    LoginSource::Environment {
                        client: OAuthClient {
                            token_url: dropbox::token_url(&api_url),
                            client_id: app_key.trim().to_owned(),
                            client_secret: None,
                        },
                        refresh_token: secret,
                        var,
                    },
                )))
            }
            Provider::Google => {
                let named = |name: &str| {
                    std::env::var(name)
                        .ok()
                        .map(|v| v.trim().to_owned())
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| {
                            SyncError::Invalid(format!(
                                "{var} holds a Google refresh token, but {name} is not set: give {} and {} of the OAuth client it was made with",
                                google::CLIENT_ID_VAR,
                                google::CLIENT_SECRET_VAR
                            ))
                        })
                };
                let client_id = named(google::CLIENT_ID_VAR)?;
                let client_secret = named(google::CLIENT_SECRET_VAR)?;
                Credential::Refreshing(Arc::new(RefreshingLogin::new(
                    provider,
                    LoginSource::Environment {
                        client: OAuthClient {
                            token_url: google_token_url(backend),
                            client_id,
                            client_secret: Some(Secret::new(Zeroizing::new(client_secret))),
                        },
                        refresh_token: secret,
                        var,
                    },
                )))
            }
        }));
    }
    let store = Credentials::open(home)?;
    let Some(info) = store.info(provider) else {
        return Ok(None);
    };
    if info.api_url.trim_end_matches('/') != api_url.trim_end_matches('/') {
        return Err(SyncError::Invalid(format!(
            "the stored {} login is for {}, and this vault lives at {api_url}: run 'ghostie-fs login {} --api-url {api_url}'",
            provider.title(),
            info.api_url,
            provider.name(),
        )));
    }
    let client_id = info.client_id.clone();
    let key = match store.place() {
        Some(Place::File) => {
            let ask = || -> credentials::CredentialResult<Zeroizing<String>> {
                match pass {
                    Some(p) => p
                        .existing()
                        .map_err(|e| CredentialError::Passphrase(e.to_string())),
                    None => Err(CredentialError::Passphrase(
                        "a look asks for no passphrase".into(),
                    )),
                }
            };
            match CredentialKey::unlock(home, None, &ask) {
                Ok(key) => Some(key),
                Err(_) if pass.is_none() => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        _ => None,
    };
    match provider {
        Provider::Github => Ok(store
            .secret(provider, key.as_ref())?
            .map(|s| Credential::Token(Zeroizing::new(s.expose().to_owned())))),
        Provider::Dropbox | Provider::Google => {
            let Some(client_id) = client_id else {
                return Err(SyncError::Invalid(format!(
                    "the stored {} login names no OAuth client: run 'ghostie-fs login {}' again",
                    provider.title(),
                    provider.name()
                )));
            };
            let token_url = match provider {
                Provider::Google => google_token_url(backend),
                _ => dropbox::token_url(&api_url),
            };
            Ok(Some(Credential::Refreshing(Arc::new(
                RefreshingLogin::new(
                    provider,
                    LoginSource::Stored {
                        home: home.clone(),
                        key,
                        client: OAuthClient {
                            token_url,
                            client_id,
                            // Kept with the tokens.
                            client_secret: None,
                        },
                    },
                ),
            ))))
        }
    }
}

/// Google's token endpoint for a Drive backend.
fn google_token_url(backend: &BackendConfig) -> String {
    match backend {
        BackendConfig::Gdrive { urls } => google::token_url(&urls.oauth),
        _ => google::token_url(crate::config::GOOGLE_OAUTH_URL),
    }
}

/// What a login made during setup signs in with, before it is stored.
pub(super) fn credential_of_login(
    login: &super::setup::NewLogin,
    backend: &BackendConfig,
) -> Credential {
    let token_url = match login.provider {
        Provider::Google => google_token_url(backend),
        _ => dropbox::token_url(&login.info.api_url),
    };
    let client = OAuthClient {
        token_url,
        client_id: login.info.client_id.clone().unwrap_or_default(),
        client_secret: login.client_secret.clone(),
    };
    let held = RefreshingLogin::new(
        login.provider,
        LoginSource::Environment {
            client,
            refresh_token: login.refresh_token.clone(),
            var: "",
        },
    );
    if let Some((access, at)) = &login.access {
        *lock(&held.current) = Some((Zeroizing::new(access.expose().to_owned()), *at));
    }
    Credential::Refreshing(Arc::new(held))
}

/// Where a refreshing login's refresh token is.
enum LoginSource {
    /// In the environment: renewed access tokens live in this process only.
    Environment {
        client: OAuthClient,
        refresh_token: Secret,
        /// The variable it came from (empty: a login not yet stored).
        var: &'static str,
    },
    /// In the home's credential store, where renewed access tokens are kept too,
    /// so the next command starts with one.
    Stored {
        home: Home,
        key: Option<CredentialKey>,
        client: OAuthClient,
    },
}

/// Access tokens for a store whose provider's tokens expire (Dropbox, Google),
/// renewed before they lapse or when the provider refuses one; one renewal at a
/// time, shared by every request.
pub(super) struct RefreshingLogin {
    provider: Provider,
    source: LoginSource,
    current: Mutex<Option<(Token, u64)>>,
}

impl RefreshingLogin {
    fn new(provider: Provider, source: LoginSource) -> Self {
        Self {
            provider,
            source,
            current: Mutex::new(None),
        }
    }

    fn renew(&self, refused: Option<&str>) -> Result<(Token, u64), CredentialError> {
        match &self.source {
            LoginSource::Environment {
                client,
                refresh_token,
                var,
            } => {
                let grant = crate::backend::oauth::refresh(
                    &client.token_url,
                    &client.client_id,
                    client.client_secret.as_ref().map(Secret::expose),
                    refresh_token.expose(),
                )
                .map_err(|e| match e {
                    crate::backend::oauth::OAuthError::LoginExpired
                    | crate::backend::oauth::OAuthError::UnknownClient if var.is_empty() => {
                        CredentialError::LoginExpired(self.provider.name())
                    }
                    crate::backend::oauth::OAuthError::LoginExpired
                    | crate::backend::oauth::OAuthError::UnknownClient => CredentialError::Invalid(
                        format!(
                            "{} no longer takes the refresh token in {var}: make a new one, or run 'ghostie-fs login {}'",
                            self.provider.title(),
                            self.provider.name()
                        ),
                    ),
                    e @ crate::backend::oauth::OAuthError::Unreachable { .. } => {
                        CredentialError::Unreachable(e.to_string())
                    }
                    other => CredentialError::Provider(other.to_string()),
                })?;
                let at = crate::credentials::unix_now() + grant.expires_in.unwrap_or(3_600);
                Ok((grant.access_token, at))
            }
            LoginSource::Stored { home, key, client } => {
                let mut store = Credentials::open(home)?;
                let (secret, at) =
                    store.access_token(self.provider, client, key.as_ref(), refused)?;
                Ok((Zeroizing::new(secret.expose().to_owned()), at))
            }
        }
    }
}

impl AccessTokens for RefreshingLogin {
    fn access_token(&self, refused: Option<&str>) -> Result<Token, BackendError> {
        let mut current = lock(&self.current);
        if let Some((token, at)) = current.as_ref() {
            let lapsing = *at <= crate::credentials::unix_now() + REFRESH_MARGIN_SECS;
            if !lapsing && refused != Some(token.as_str()) {
                return Ok(token.clone());
            }
        }
        let (token, at) = self.renew(refused).map_err(|e| match e {
            CredentialError::Unreachable(why) => crate::backend::dropbox::api::temporary(why),
            e @ (CredentialError::LoginExpired(_) | CredentialError::Invalid(_)) => {
                BackendError::LoginRefused(e.to_string())
            }
            other => BackendError::Refused(other.to_string()),
        })?;
        *current = Some((token.clone(), at));
        Ok(token)
    }
}

/// A passphrase source that asks once: the token sealed under the vault's key and
/// the vault itself are opened with the same answer, never two prompts.
pub(super) struct AskOnce {
    inner: Box<dyn PassphraseSource>,
    answer: Mutex<Option<Zeroizing<String>>>,
}

impl AskOnce {
    pub(super) fn new(inner: Box<dyn PassphraseSource>) -> Self {
        Self {
            inner,
            answer: Mutex::new(None),
        }
    }
}

impl PassphraseSource for AskOnce {
    fn existing(&self) -> SyncResult<Zeroizing<String>> {
        let mut answer = lock(&self.answer);
        if let Some(a) = answer.as_ref() {
            return Ok(a.clone());
        }
        let a = self.inner.existing()?;
        *answer = Some(a.clone());
        Ok(a)
    }
    fn new_passphrase(&self) -> SyncResult<Zeroizing<String>> {
        self.inner.new_passphrase()
    }
    fn is_interactive(&self) -> bool {
        self.inner.is_interactive()
    }
}
