//! An OAuth 2.0 token endpoint, for refreshing a short-lived access token with a
//! refresh token (RFC 6749 §6). Dropbox and Google both work this way; each may send
//! a new refresh token with the answer, which then replaces the old one.

use zeroize::Zeroizing;

/// What a token endpoint grants.
pub struct TokenGrant {
    pub access_token: Zeroizing<String>,
    /// Seconds the access token lives, when the endpoint says.
    pub expires_in: Option<u64>,
    /// A new refresh token, when the endpoint rotates them.
    pub refresh_token: Option<Zeroizing<String>>,
    /// Seconds the refresh token lives, when the endpoint says (Google, for an
    /// app in "testing" status: a week).
    pub refresh_expires_in: Option<u64>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("expires_in", &self.expires_in)
            .field("rotated", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// `invalid_grant`: the refresh token expired or was revoked; only a new login helps.
    #[error("the provider no longer accepts this login (it expired or was revoked)")]
    LoginExpired,
    /// `invalid_client`: the provider knows no such client (a wrong app key).
    #[error("the provider does not know this app (client id)")]
    UnknownClient,
    #[error("the token endpoint {url} does not answer ({reason})")]
    Unreachable { url: String, reason: String },
    #[error("the token endpoint answered {status}: {error}")]
    Refused { status: u16, error: String },
    #[error("the server at {url} does not answer as an OAuth token endpoint does ({reason})")]
    NotOAuth { url: String, reason: String },
}

/// Trades a refresh token for a new access token.
pub fn refresh(
    token_url: &str,
    client_id: &str,
    client_secret: Option<&str>,
    refresh_token: &str,
) -> Result<TokenGrant, OAuthError> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client_id),
    ];
    if let Some(secret) = client_secret {
        form.push(("client_secret", secret));
    }
    token_request(token_url, &form)
}

/// Trades the code a user brought back from the provider's consent page for
/// tokens (RFC 6749 §4.1.3), proving with `verifier` that this is the client that
/// asked for it (PKCE, RFC 7636).
pub fn exchange_code(
    token_url: &str,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> Result<TokenGrant, OAuthError> {
    token_request(
        token_url,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ],
    )
}

/// As [`exchange_code`], for a client with a secret and a redirect address
/// (Google's installed apps: the loopback address the code came back to).
pub fn exchange_code_with_secret(
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<TokenGrant, OAuthError> {
    token_request(
        token_url,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ],
    )
}

/// What a device authorization endpoint hands out (RFC 8628 §3.2).
#[derive(Debug)]
pub struct DeviceStart {
    pub device_code: Zeroizing<String>,
    pub user_code: String,
    pub verification_url: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// Asks `device_url` for a code the user types on another device.
pub fn device_start(
    device_url: &str,
    client_id: &str,
    scope: &str,
) -> Result<DeviceStart, OAuthError> {
    let json = form_request(device_url, &[("client_id", client_id), ("scope", scope)])?;
    let text = |name: &str| {
        json.get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (Some(device_code), Some(user_code)) = (text("device_code"), text("user_code")) else {
        return Err(OAuthError::NotOAuth {
            url: device_url.to_owned(),
            reason: "its answer holds no device code".into(),
        });
    };
    Ok(DeviceStart {
        device_code: Zeroizing::new(device_code),
        user_code,
        verification_url: text("verification_url")
            .or_else(|| text("verification_uri"))
            .unwrap_or_default(),
        expires_in: json
            .get("expires_in")
            .and_then(|v| v.as_u64())
            .unwrap_or(1_800),
        interval: json.get("interval").and_then(|v| v.as_u64()).unwrap_or(5),
    })
}

/// One poll of the token endpoint for a device code (RFC 8628 §3.4): while the
/// user has not answered, `Refused` with `authorization_pending` or `slow_down`.
pub fn device_poll(
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    device_code: &str,
) -> Result<TokenGrant, OAuthError> {
    token_request(
        token_url,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("device_code", device_code),
        ],
    )
}

/// Revokes `token` at a revocation endpoint (RFC 7009), as Google's takes it.
pub fn revoke(revoke_url: &str, token: &str) -> Result<(), OAuthError> {
    form_request(revoke_url, &[("token", token)]).map(|_| ())
}

/// The query parameters of a request target (`/path?a=b`), decoded.
pub fn query_params(target: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://localhost{target}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The provider's consent page at `root` with `params` in its query (RFC 6749
/// §4.1.1); `root` as given when it is not a URL.
pub fn authorize_url(root: &str, params: &[(&str, &str)]) -> String {
    let Ok(mut url) = reqwest::Url::parse(root) else {
        return root.to_owned();
    };
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

/// A PKCE verifier (RFC 7636 §4.1: 43 to 128 unreserved characters) and its S256
/// challenge.
pub fn pkce_pair() -> (zeroize::Zeroizing<String>, String) {
    use base64::Engine;
    use rand::RngCore;
    use sha2::Digest;
    let mut bytes = [0u8; 48];
    rand::thread_rng().fill_bytes(&mut bytes);
    let verifier = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn token_request(token_url: &str, form: &[(&str, &str)]) -> Result<TokenGrant, OAuthError> {
    let json = form_request(token_url, form)?;
    let text = |name: &str| {
        json.get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(|s| Zeroizing::new(s.to_owned()))
    };
    let Some(access_token) = text("access_token") else {
        return Err(OAuthError::NotOAuth {
            url: token_url.to_owned(),
            reason: "its answer holds no access token".into(),
        });
    };
    Ok(TokenGrant {
        access_token,
        expires_in: json.get("expires_in").and_then(|v| v.as_u64()),
        refresh_token: text("refresh_token"),
        refresh_expires_in: json
            .get("refresh_token_expires_in")
            .and_then(|v| v.as_u64()),
    })
}

/// Posts `form` to an OAuth endpoint; its JSON answer on success.
fn form_request(token_url: &str, form: &[(&str, &str)]) -> Result<serde_json::Value, OAuthError> {
    let unreachable = |reason: &str| OAuthError::Unreachable {
        url: token_url.to_owned(),
        reason: reason.to_owned(),
    };
    let client = super::github::provider_client().map_err(|_| unreachable("no HTTP client"))?;
    let response = client
        .post(token_url)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(form)
        .send()
        .map_err(|e| {
            // Never the error's own text: it could quote the request.
            unreachable(if e.is_timeout() {
                "no answer in time"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "the connection broke"
            })
        })?;
    let status = response.status().as_u16();
    let body = Zeroizing::new(
        response
            .text()
            .map_err(|_| unreachable("the answer broke off"))?,
    );
    // The endpoint's own trouble, or throttling: a later try may succeed.
    if status >= 500 || status == 429 {
        return Err(unreachable(&format!("it answered {status}")));
    }
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
        return Err(OAuthError::NotOAuth {
            url: token_url.to_owned(),
            reason: format!("it answered {status} without JSON"),
        });
    };
    // Google's front end may turn a token request away for rate with its API's
    // error envelope ({"error": {"errors": [{"reason": "rateLimitExceeded"}]}}).
    let rate_reason = json
        .get("error")
        .and_then(|e| e.get("errors")?.get(0)?.get("reason")?.as_str())
        .is_some_and(|r| r.ends_with("RateLimitExceeded") || r == "rateLimitExceeded");
    if rate_reason {
        return Err(unreachable(&format!(
            "it answered {status}: too many requests"
        )));
    }
    if !(200..300).contains(&status) {
        let error = json
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no error code")
            .to_owned();
        if error.split(':').next().map(str::trim) == Some("invalid_grant") {
            return Err(OAuthError::LoginExpired);
        }
        // Dropbox writes `invalid_client: Invalid client_id or client_secret`.
        if error.split(':').next().map(str::trim) == Some("invalid_client") {
            return Err(OAuthError::UnknownClient);
        }
        return Err(OAuthError::Refused { status, error });
    }
    Ok(json)
}
