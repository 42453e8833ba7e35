//! Short-lived access tokens with a refresh token (Dropbox, Google): the stored
//! secret is the token set; an access token is handed out while it has time left,
//! otherwise the refresh token buys a new one. A refresh token the provider rotates
//! is stored back before the new access token is used, so a crash right after can
//! never leave only a refresh token the provider has already retired.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{now, CredentialError, CredentialKey, CredentialResult, Credentials, Provider, Secret};
use crate::backend::oauth;
pub use crate::backend::oauth::OAuthError;

/// An access token with less than this left is refreshed first: a request that
/// starts with one must not have it expire in flight.
pub const REFRESH_MARGIN_SECS: u64 = 60;

/// Where and as whom to refresh.
pub struct OAuthClient {
    pub token_url: String,
    pub client_id: String,
    /// Only for providers whose installed-app clients have one (Google).
    pub client_secret: Option<Secret>,
}

/// What an OAuth provider's stored secret holds.
#[derive(Serialize, Deserialize)]
struct TokenSet {
    refresh_token: String,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    access_expires_at: Option<u64>,
    /// The OAuth client's secret, for providers whose installed-app clients have
    /// one (Google): kept with the tokens, never in a config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

impl Drop for TokenSet {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.refresh_token);
        if let Some(a) = &mut self.access_token {
            zeroize::Zeroize::zeroize(a);
        }
        if let Some(s) = &mut self.client_secret {
            zeroize::Zeroize::zeroize(s);
        }
    }
}

fn encode(set: &TokenSet) -> CredentialResult<Secret> {
    serde_json::to_string(set)
        .map(|s| Secret::new(Zeroizing::new(s)))
        .map_err(|e| CredentialError::Invalid(format!("cannot write a token set: {e}")))
}

fn decode(provider: Provider, secret: &Secret) -> CredentialResult<TokenSet> {
    serde_json::from_str(secret.expose()).map_err(|_| {
        CredentialError::Invalid(format!(
            "the stored {} login is not a token set; run 'ghostie-fs login {}' again",
            provider.name(),
            provider.name()
        ))
    })
}

impl Credentials {
    /// Stores a login's tokens (see [`Credentials::store`] for `info` and `key`),
    /// and the client's secret where it has one.
    pub fn store_tokens(
        &mut self,
        provider: Provider,
        info: super::StoredInfo,
        refresh_token: &Secret,
        access: Option<(&Secret, u64)>,
        client_secret: Option<&Secret>,
        key: Option<&CredentialKey>,
    ) -> CredentialResult<super::Place> {
        let set = TokenSet {
            refresh_token: refresh_token.expose().to_owned(),
            access_token: access.map(|(a, _)| a.expose().to_owned()),
            access_expires_at: access.map(|(_, at)| at),
            client_secret: client_secret.map(|s| s.expose().to_owned()),
        };
        let secret = encode(&set)?;
        self.store(provider, info, &secret, key)
    }

    /// The stored refresh token of `provider` (for revoking it at logout).
    pub fn refresh_token(
        &self,
        provider: Provider,
        key: Option<&CredentialKey>,
    ) -> CredentialResult<Option<Secret>> {
        let Some(secret) = self.secret(provider, key)? else {
            return Ok(None);
        };
        let set = decode(provider, &secret)?;
        Ok(Some(Secret::new(Zeroizing::new(set.refresh_token.clone()))))
    }

    /// An access token good for at least [`REFRESH_MARGIN_SECS`], and when it
    /// lapses (Unix seconds): the stored one, unless it is `refused` (the provider
    /// just called it expired), or a new one from the token endpoint, stored at once
    /// with the refresh token the endpoint may have rotated.
    pub fn access_token(
        &mut self,
        provider: Provider,
        client: &OAuthClient,
        key: Option<&CredentialKey>,
        refused: Option<&str>,
    ) -> CredentialResult<(Secret, u64)> {
        let Some(secret) = self.secret(provider, key)? else {
            return Err(CredentialError::Invalid(format!(
                "no {} login is stored: run 'ghostie-fs login {}'",
                provider.name(),
                provider.name()
            )));
        };
        let set = decode(provider, &secret)?;
        if let (Some(access), Some(at)) = (&set.access_token, set.access_expires_at) {
            if at > now() + REFRESH_MARGIN_SECS && refused != Some(access.as_str()) {
                return Ok((Secret::new(Zeroizing::new(access.clone())), at));
            }
        }
        let client_secret = client
            .client_secret
            .as_ref()
            .map(|s| s.expose().to_owned())
            .or_else(|| set.client_secret.clone())
            .map(Zeroizing::new);
        let grant = oauth::refresh(
            &client.token_url,
            &client.client_id,
            client_secret.as_deref().map(String::as_str),
            &set.refresh_token,
        )
        .map_err(|e| match e {
            OAuthError::LoginExpired | OAuthError::UnknownClient => {
                CredentialError::LoginExpired(provider.name())
            }
            e @ OAuthError::Unreachable { .. } => CredentialError::Unreachable(e.to_string()),
            other => CredentialError::Provider(other.to_string()),
        })?;
        let expires_at = now() + grant.expires_in.unwrap_or(3600);
        let renewed = TokenSet {
            refresh_token: match &grant.refresh_token {
                Some(rotated) => rotated.to_string(),
                None => set.refresh_token.clone(),
            },
            access_token: Some(grant.access_token.to_string()),
            access_expires_at: Some(expires_at),
            client_secret: set.client_secret.clone(),
        };
        let info = self.info(provider).cloned().ok_or_else(|| {
            CredentialError::Invalid(format!("the {} login vanished", provider.name()))
        })?;
        self.store(provider, info, &encode(&renewed)?, key)?;
        Ok((Secret::new(grant.access_token), expires_at))
    }
}
