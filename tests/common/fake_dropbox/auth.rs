//! Who may call: the apps (each with App-folder access, so each its own
//! namespace), the test account's grants to them, and the OAuth 2 code flow a CLI
//! uses without a redirect: the user opens `/oauth2/authorize`, approves, copies
//! the code shown, and the product trades it at `/oauth2/token` with its PKCE
//! verifier (no app secret), for a short-lived access token and a refresh token.
//!
//! Tokens follow Dropbox's documented rules: an access token lives 14,400 s on
//! the fake's clock; a refresh token lives until revoked and is not rotated by a
//! refresh; revoking a refresh token revokes every access token issued from it;
//! `auth/token/revoke` revokes the token that calls it and its refresh token. A
//! code works once, for ten minutes of the fake's clock (Dropbox does not publish
//! the figure; it is short).
//!
//! The token endpoint's errors are Dropbox's, which are not quite RFC 6749's: 400
//! for all, and `invalid_client` written as one string
//! (`{"error": "invalid_client: Invalid client_id or client_secret"}`), as seen
//! from the live service.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::super::fake_http::{Head, Response};
use super::tree::sha256;
use super::wire::{self, base64url, form_pairs, random_string};
use super::{Call, Shared, State};

pub const ACCESS_LIFETIME_SECS: u64 = 14_400;
const CODE_LIFETIME_MS: u64 = 10 * 60 * 1_000;
pub const ACCOUNT_ID: &str = "dbid:AACghostie0test0account0000000000000001";
const UID: &str = "90210042";
const EMAIL: &str = "ghost.tester@example.com";
/// The scopes an App-folder app gets by default.
const SCOPES: &str =
    "account_info.read files.content.read files.content.write files.metadata.read files.metadata.write";

struct App {
    name: String,
    secret: String,
    ns: u64,
}

struct Code {
    app: String,
    challenge: String,
    expires_ms: u64,
}

struct Refresh {
    app: String,
    revoked: bool,
}

struct Access {
    app: String,
    refresh: Option<String>,
    expires_ms: u64,
    revoked: bool,
}

/// The app and namespace a request acts for.
pub struct Caller {
    pub ns: u64,
    pub token: String,
}

#[derive(Default)]
pub struct Auth {
    apps: HashMap<String, App>,
    codes: HashMap<String, Code>,
    refresh: HashMap<String, Refresh>,
    access: HashMap<String, Access>,
}

impl Auth {
    /// Registers an app whose folder is namespace `ns`.
    pub fn add_app(&mut self, key: &str, name: &str, ns: u64) {
        let app = App {
            name: name.to_owned(),
            secret: random_string(15),
            ns,
        };
        self.apps.insert(key.to_owned(), app);
    }

    pub fn ns_of(&self, key: &str) -> Option<u64> {
        self.apps.get(key).map(|a| a.ns)
    }

    /// A refresh token for `key`, as if the account had approved the app.
    pub fn grant(&mut self, key: &str) -> Option<String> {
        self.apps.get(key)?;
        let token = random_string(64);
        let r = Refresh {
            app: key.to_owned(),
            revoked: false,
        };
        self.refresh.insert(token.clone(), r);
        Some(token)
    }

    /// A refresh token of the test's choosing (the same in every fake of a run).
    pub fn grant_as(&mut self, key: &str, token: &str) -> Option<()> {
        self.apps.get(key)?;
        let r = Refresh {
            app: key.to_owned(),
            revoked: false,
        };
        self.refresh.insert(token.to_owned(), r);
        Some(())
    }

    /// Every refresh token of the app `key`.
    pub fn refresh_tokens_of(&self, key: &str) -> Vec<String> {
        self.refresh
            .iter()
            .filter(|(_, r)| r.app == key)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Revokes a refresh token and every access token issued from it.
    pub fn revoke_refresh(&mut self, token: &str) {
        if let Some(r) = self.refresh.get_mut(token) {
            r.revoked = true;
        }
        for a in self.access.values_mut() {
            if a.refresh.as_deref() == Some(token) {
                a.revoked = true;
            }
        }
    }

    fn issue_access(&mut self, app: &str, refresh: Option<&str>, now_ms: u64) -> String {
        let token = format!("sl.{}", random_string(136));
        let a = Access {
            app: app.to_owned(),
            refresh: refresh.map(str::to_owned),
            expires_ms: now_ms + ACCESS_LIFETIME_SECS * 1_000,
            revoked: false,
        };
        self.access.insert(token.clone(), a);
        token
    }

    /// What the authorize page makes of its query: the app and the PKCE
    /// challenge, or the complaint the page shows.
    ///
    /// Besides what Dropbox itself checks (a known `client_id`, `response_type`,
    /// a `redirect_uri` only if registered, and none is), the page insists on
    /// what the product needs of the flow: PKCE with S256 (Dropbox also takes
    /// `plain`, which would hand the code's secret to whoever sees the URL) and
    /// `token_access_type=offline` (without it Dropbox issues no refresh token).
    fn check_authorize(&self, query: &str) -> Result<(String, String), String> {
        let pairs = form_pairs(query);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let client_id = get("client_id").ok_or("Missing client_id.")?;
        if !self.apps.contains_key(client_id) {
            return Err(format!(r#"Invalid client_id: "{client_id}"."#));
        }
        match get("response_type") {
            Some("code") => {}
            Some(other) => return Err(format!(r#"Invalid response_type: "{other}"."#)),
            None => return Err("Missing response_type.".into()),
        }
        if let Some(uri) = get("redirect_uri") {
            return Err(format!(
                r#"Invalid redirect_uri: "{uri}". It must exactly match one of the redirect URIs you've pre-configured for your app (including the path)."#
            ));
        }
        let challenge = get("code_challenge").ok_or("Missing code_challenge.")?;
        let unreserved = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
        if !(43..=128).contains(&challenge.len()) || !challenge.chars().all(unreserved) {
            return Err(
                "Invalid code_challenge: must be 43 to 128 characters of [A-Za-z0-9-._~].".into(),
            );
        }
        match get("code_challenge_method") {
            Some("S256") => {}
            other => {
                return Err(format!(
                    "code_challenge_method must be S256, not {}.",
                    other.unwrap_or("missing (plain)")
                ))
            }
        }
        match get("token_access_type") {
            Some("offline") => {}
            other => {
                return Err(format!(
                    "token_access_type must be offline for a refresh token, not {}.",
                    other.unwrap_or("missing")
                ))
            }
        }
        Ok((client_id.to_owned(), challenge.to_owned()))
    }

    /// The code the page shows once the user allows the app.
    pub fn approve(&mut self, query: &str, now_ms: u64) -> Result<String, String> {
        let (app, challenge) = self.check_authorize(query)?;
        let code = random_string(43);
        let c = Code {
            app,
            challenge,
            expires_ms: now_ms + CODE_LIFETIME_MS,
        };
        self.codes.insert(code.clone(), c);
        Ok(code)
    }

    /// The caller of an API request, from `Authorization: Bearer …`.
    pub fn authenticate(
        &self,
        head: &Head,
        endpoint: &str,
        now_ms: u64,
    ) -> Result<Caller, Response> {
        let Some(value) = head.header("authorization") else {
            return Err(wire::bad_input(
                endpoint,
                r#"Must provide HTTP header "Authorization" or URL parameter "authorization"."#,
            ));
        };
        let token = value
            .split_once(' ')
            .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
            .map(|(_, t)| t.trim());
        let Some(token) = token else {
            return Err(wire::bad_input(
                endpoint,
                &format!(
                    r#"Invalid authorization value in HTTP header "Authorization": "{value}".  Expecting "Bearer <oauth2-access-token>"."#
                ),
            ));
        };
        match self.access.get(token) {
            Some(a) if a.revoked => Err(wire::auth_error("invalid_access_token")),
            Some(a) if now_ms >= a.expires_ms => Err(wire::auth_error("expired_access_token")),
            Some(a) => match self.apps.get(&a.app) {
                Some(app) => Ok(Caller {
                    ns: app.ns,
                    token: token.to_owned(),
                }),
                None => Err(wire::auth_error("invalid_access_token")),
            },
            None => Err(wire::auth_error("invalid_access_token")),
        }
    }

    /// `POST /oauth2/token`.
    fn token(&mut self, head: &Head, body: &[u8], now_ms: u64) -> Response {
        let form = head.header("content-type").is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        let mut params = form_pairs(&head.query);
        if form {
            params.extend(form_pairs(&String::from_utf8_lossy(body)));
        }
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let (client_id, secret) = match head.header("authorization").and_then(basic) {
            Some((id, secret)) => (Some(id), Some(secret)),
            None => (get("client_id"), get("client_secret")),
        };
        let Some(client_id) = client_id else {
            return oauth_error(
                "invalid_request",
                "No auth function available for given request",
            );
        };
        let known = self
            .apps
            .get(&client_id)
            .is_some_and(|app| secret.as_ref().is_none_or(|s| *s == app.secret));
        if !known {
            let body = json!({ "error": "invalid_client: Invalid client_id or client_secret" });
            return wire::json(400, &body);
        }
        match get("grant_type").as_deref() {
            Some("authorization_code") => {
                let Some(code) = get("code") else {
                    return oauth_error("invalid_request", "No auth code provided");
                };
                let valid = self
                    .codes
                    .get(&code)
                    .filter(|c| c.app == client_id && now_ms < c.expires_ms);
                let Some(c) = valid else {
                    return oauth_error("invalid_grant", "code doesn't exist or has expired");
                };
                if get("redirect_uri").is_some() {
                    return oauth_error("invalid_grant", "redirect_uri mismatch");
                }
                let verifier = get("code_verifier").unwrap_or_default();
                if base64url(&sha256(verifier.as_bytes())) != c.challenge {
                    return oauth_error("invalid_grant", "invalid code verifier");
                }
                self.codes.remove(&code);
                let refresh = random_string(64);
                let r = Refresh {
                    app: client_id.clone(),
                    revoked: false,
                };
                self.refresh.insert(refresh.clone(), r);
                let access = self.issue_access(&client_id, Some(&refresh), now_ms);
                wire::json(
                    200,
                    &json!({
                        "access_token": access,
                        "token_type": "bearer",
                        "expires_in": ACCESS_LIFETIME_SECS,
                        "refresh_token": refresh,
                        "scope": SCOPES,
                        "uid": UID,
                        "account_id": ACCOUNT_ID,
                    }),
                )
            }
            Some("refresh_token") => {
                let Some(refresh) = get("refresh_token") else {
                    return oauth_error("invalid_request", "No refresh_token provided");
                };
                let live = self
                    .refresh
                    .get(&refresh)
                    .is_some_and(|r| !r.revoked && r.app == client_id);
                if !live {
                    return oauth_error("invalid_grant", "refresh token is invalid or revoked");
                }
                let access = self.issue_access(&client_id, Some(&refresh), now_ms);
                wire::json(
                    200,
                    &json!({
                        "access_token": access,
                        "token_type": "bearer",
                        "expires_in": ACCESS_LIFETIME_SECS,
                    }),
                )
            }
            Some(other) => oauth_error(
                "unsupported_grant_type",
                &format!("grant_type must be authorization_code or refresh_token, not {other}"),
            ),
            None => oauth_error("invalid_request", "Missing grant_type"),
        }
    }
}

/// The token endpoint's error document.
fn oauth_error(error: &str, description: &str) -> Response {
    wire::json(
        400,
        &json!({ "error": error, "error_description": description }),
    )
}

/// `Basic base64(id:secret)`.
fn basic(value: &str) -> Option<(String, String)> {
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let text = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// `POST /oauth2/token` (the api host plays api.dropboxapi.com's part here).
pub fn token_endpoint(shared: &Shared, head: &Head, body: &[u8]) -> Response {
    if head.method != "POST" {
        return wire::text(405, "Method Not Allowed");
    }
    let mut state = shared.state();
    let now = state.now_ms();
    state.auth.token(head, body, now)
}

/// `GET /oauth2/authorize` as the signed-in user's browser sees it after
/// pressing Allow: the code to copy, or the page's complaint about the URL.
pub fn authorize_page(shared: &Shared, head: &Head) -> Response {
    if head.method != "GET" {
        return wire::text(405, "Method Not Allowed");
    }
    let mut state = shared.state();
    let now = state.now_ms();
    match state.auth.approve(&head.query, now) {
        Ok(code) => {
            let app = form_pairs(&head.query)
                .into_iter()
                .find(|(k, _)| k == "client_id")
                .and_then(|(_, id)| state.auth.apps.get(&id).map(|a| a.name.clone()))
                .unwrap_or_default();
            html(
                200,
                &format!(
                    "<h1>Access code generated</h1><p>Enter this code into {} to finish \
                     the process.</p><input id=\"code\" readonly value=\"{code}\">",
                    escape(&app)
                ),
            )
        }
        Err(complaint) => html(
            400,
            &format!(
                "<h1>Error (400)</h1><p>It seems the app you were using submitted a bad \
                 request. If you would like to report this error to the app's developer, \
                 include the information below.</p><p>More details for developers</p>\
                 <p id=\"complaint\">{}</p>",
                escape(&complaint)
            ),
        ),
    }
}

fn html(status: u16, body: &str) -> Response {
    wire::response(status)
        .with("content-type", "text/html; charset=utf-8")
        .with_body(format!("<!DOCTYPE html><html><body>{body}</body></html>").into_bytes())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `auth/token/revoke`: the calling token, its refresh token and every other
/// access token of that refresh token.
pub fn revoke_token(call: Call) -> Result<Response, Response> {
    let mut state = call.shared.state();
    let refresh = state.auth.access.get_mut(&call.caller.token).and_then(|a| {
        a.revoked = true;
        a.refresh.clone()
    });
    if let Some(r) = refresh {
        state.auth.revoke_refresh(&r);
    }
    Ok(wire::json(200, &Value::Null))
}

pub fn current_account() -> Result<Response, Response> {
    Ok(wire::json(
        200,
        &json!({
            "account_id": ACCOUNT_ID,
            "name": {
                "given_name": "Ghost",
                "surname": "Tester",
                "familiar_name": "Ghost",
                "display_name": "Ghost Tester",
                "abbreviated_name": "GT",
            },
            "email": EMAIL,
            "email_verified": true,
            "disabled": false,
            "country": "GB",
            "locale": "en",
            "referral_link": "https://www.dropbox.com/referrals/ghostie",
            "is_paired": false,
            "account_type": { ".tag": "basic" },
            "root_info": {
                ".tag": "user",
                "root_namespace_id": "3235641",
                "home_namespace_id": "3235641",
            },
        }),
    ))
}

pub fn space_usage(state: &State) -> Result<Response, Response> {
    Ok(wire::json(
        200,
        &json!({
            "used": state.used(),
            "allocation": { ".tag": "individual", "allocated": state.allocation },
        }),
    ))
}
