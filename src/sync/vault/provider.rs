//! The token a provider's backend needs (Gist), found where the owner put it: the
//! environment first, else this home's credential store. Backends never read
//! secrets themselves, so this is the one place the engine hands one down.

use std::sync::Mutex;

use super::*;
use crate::backend::Token;
use crate::config::BackendConfig;
use crate::credentials::{self, CredentialError, CredentialKey, Credentials, Place, Provider};

/// The token `backend` needs, if it needs one. `pass` opens a store sealed under
/// the vault's key; without it (a look) only what needs no passphrase is tried, and
/// a token that cannot be had without one is `None`.
pub(super) fn token_for(
    home: &Home,
    backend: &BackendConfig,
    pass: Option<&dyn PassphraseSource>,
) -> SyncResult<Option<Token>> {
    let BackendConfig::Gist { api_url } = backend else {
        return Ok(None);
    };
    let provider = Provider::Github;
    if let Some((_, secret)) = credentials::env_secret(provider, api_url) {
        return Ok(Some(Zeroizing::new(secret.expose().to_owned())));
    }
    let store = Credentials::open(home)?;
    let Some(info) = store.info(provider) else {
        return Ok(None);
    };
    if info.api_url.trim_end_matches('/') != api_url.trim_end_matches('/') {
        return Err(SyncError::Invalid(format!(
            "the stored GitHub token is for {}, and this vault lives at {api_url}: run 'ghostie-fs login github --api-url {api_url}'",
            info.api_url
        )));
    }
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
    Ok(store
        .secret(provider, key.as_ref())?
        .map(|s| Zeroizing::new(s.expose().to_owned())))
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
