//! Google's OAuth for installed apps, as far as the product meets it: clients
//! (Desktop or "TVs and Limited Input", in testing or in production), the
//! loopback authorization-code flow with PKCE, the device flow, refresh, revoke,
//! and the bearer check in front of every Drive call.
//!
//! What bites, each as Google does it:
//! - access tokens live an hour (`expires_in: 3599`) on the fake's clock;
//! - a testing client's refresh tokens die seven days after they were issued;
//! - a refresh token comes only with `access_type=offline` in the consent URL,
//!   and refreshing does not rotate it;
//! - the device flow is for Limited Input clients only and grants only the
//!   narrow scopes (drive.appdata, drive.file, sign-in), never full `drive`;
//! - polling faster than `interval` is `slow_down`; codes expire;
//! - a Desktop client's secret is required at `/token` even with PKCE.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::super::fake_http::{Head, Response};
use super::wire;

pub const APPDATA: &str = "https://www.googleapis.com/auth/drive.appdata";
pub const DRIVE: &str = "https://www.googleapis.com/auth/drive";
const DRIVE_FILE: &str = "https://www.googleapis.com/auth/drive.file";
/// Scopes Google lets the device flow ask for (its documented list, cut to what
/// a Drive app could want).
const DEVICE_SCOPES: &[&str] = &[
    APPDATA,
    DRIVE_FILE,
    "openid",
    "email",
    "profile",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
];
const KNOWN_SCOPES: &[&str] = &[APPDATA, DRIVE, DRIVE_FILE];
const HOUR_MS: u64 = 3_600_000;
const TESTING_REFRESH_MS: u64 = 7 * 24 * HOUR_MS;
const CODE_MS: u64 = 10 * 60_000;
const DEVICE_MS: u64 = 1_800_000;
const DEVICE_INTERVAL_S: u64 = 5;

/// The kind of OAuth client the Cloud console made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Desktop,
    /// "TVs and Limited Input devices": the only kind the device flow takes.
    LimitedInput,
}

struct Client {
    secret: String,
    kind: ClientKind,
    /// Publishing status "testing": refresh tokens last seven days.
    testing: bool,
}

struct Refresh {
    client_id: String,
    issued_ms: u64,
    scopes: Vec<String>,
}

struct Access {
    refresh: Option<String>,
    expires_ms: u64,
    scopes: Vec<String>,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scopes: Vec<String>,
    offline: bool,
    expires_ms: u64,
}

#[derive(PartialEq, Eq)]
enum DeviceState {
    Pending,
    Approved,
    Denied,
}

struct Device {
    client_id: String,
    user_code: String,
    scopes: Vec<String>,
    expires_ms: u64,
    last_poll_ms: Option<u64>,
    state: DeviceState,
}

#[derive(Default)]
pub struct Auth {
    clients: HashMap<String, Client>,
    refresh: HashMap<String, Refresh>,
    access: HashMap<String, Access>,
    codes: HashMap<String, Code>,
    devices: HashMap<String, Device>,
    user_codes: HashMap<String, String>,
    /// Tokens revoked: Google says "expired or revoked" of both alike.
    revoked: HashSet<String>,
}

/// Who a Drive call is from: the scopes its token carries.
pub struct Caller {
    pub scopes: Vec<String>,
}

impl Caller {
    pub fn sees_app_data(&self) -> bool {
        self.scopes.iter().any(|s| s == APPDATA || s == DRIVE)
    }

    pub fn sees_drive(&self) -> bool {
        self.scopes.iter().any(|s| s == DRIVE)
    }
}

impl Auth {
    pub fn add_client(&mut self, id: &str, secret: &str, kind: ClientKind, testing: bool) {
        self.clients.insert(
            id.to_owned(),
            Client {
                secret: secret.to_owned(),
                kind,
                testing,
            },
        );
    }

    pub fn grant_as(&mut self, client_id: &str, token: &str, now: u64) -> Result<(), String> {
        if !self.clients.contains_key(client_id) {
            return Err(format!("no client {client_id}"));
        }
        self.refresh.insert(
            token.to_owned(),
            Refresh {
                client_id: client_id.to_owned(),
                issued_ms: now,
                scopes: vec![APPDATA.to_owned()],
            },
        );
        Ok(())
    }

    pub fn revoke(&mut self, token: &str) -> bool {
        let known = self.refresh.remove(token).is_some() || self.access.remove(token).is_some();
        if known {
            self.revoked.insert(token.to_owned());
            // Revoking a refresh token ends every access token minted from it.
            self.access
                .retain(|_, a| a.refresh.as_deref() != Some(token));
        }
        known
    }

    /// The loopback flow's consent: checks the URL as Google's consent page does.
    pub fn approve(&mut self, query: &str, now: u64) -> Result<String, String> {
        let p = wire::params(query);
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        let client_id = get("client_id");
        let client = self
            .clients
            .get(client_id)
            .ok_or("Error 401: invalid_client (The OAuth client was not found.)")?;
        if client.kind != ClientKind::Desktop {
            return Err(
                "Error 400: invalid_request (this client type cannot use a redirect URI)".into(),
            );
        }
        let redirect_uri = get("redirect_uri");
        if !is_loopback(redirect_uri) {
            return Err(format!("Error 400: redirect_uri_mismatch ({redirect_uri})"));
        }
        if get("response_type") != "code" {
            return Err("Error 400: invalid_request (response_type must be code)".into());
        }
        let scopes: Vec<String> = get("scope")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !scopes.iter().any(|s| s == APPDATA) {
            return Err(format!("the consent does not ask for {APPDATA}"));
        }
        if let Some(s) = scopes
            .iter()
            .find(|s| s.contains("googleapis.com/auth/") && !KNOWN_SCOPES.contains(&s.as_str()))
        {
            return Err(format!("Error 400: invalid_scope ({s})"));
        }
        let challenge = get("code_challenge");
        if challenge.len() < 43 || get("code_challenge_method") != "S256" {
            return Err(
                "PKCE: a code_challenge with code_challenge_method=S256 is required".into(),
            );
        }
        let code = format!("4/0A{}", wire::random_string(60));
        self.codes.insert(
            code.clone(),
            Code {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                challenge: challenge.to_owned(),
                scopes,
                offline: get("access_type") == "offline",
                expires_ms: now + CODE_MS,
            },
        );
        Ok(code)
    }

    pub fn approve_device(
        &mut self,
        user_code: &str,
        approve: bool,
        now: u64,
    ) -> Result<(), String> {
        let device_code = self
            .user_codes
            .get(user_code)
            .ok_or_else(|| format!("no such code {user_code}"))?;
        let d = self.devices.get_mut(device_code).ok_or("gone")?;
        if d.expires_ms <= now {
            return Err("that code has expired".into());
        }
        d.state = if approve {
            DeviceState::Approved
        } else {
            DeviceState::Denied
        };
        Ok(())
    }

    /// The bearer check in front of every Drive call.
    pub fn authenticate(&self, head: &Head, now: u64) -> Result<Caller, Response> {
        let Some(header) = head.header("authorization") else {
            return Err(unauthenticated(
                "required",
                "Login Required.",
                "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            ));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or("");
        match self.access.get(token) {
            Some(a) if a.expires_ms > now => Ok(Caller {
                scopes: a.scopes.clone(),
            }),
            _ => Err(unauthenticated(
                "authError",
                "Invalid Credentials",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )),
        }
    }

    fn mint_access(&mut self, refresh: Option<String>, scopes: Vec<String>, now: u64) -> String {
        let token = format!("ya29.{}", wire::random_string(120));
        self.access.insert(
            token.clone(),
            Access {
                refresh,
                expires_ms: now + HOUR_MS,
                scopes,
            },
        );
        token
    }

    fn mint_refresh(&mut self, client_id: &str, scopes: Vec<String>, now: u64) -> String {
        let token = format!("1//0{}", wire::random_string(100));
        self.refresh.insert(
            token.clone(),
            Refresh {
                client_id: client_id.to_owned(),
                issued_ms: now,
                scopes,
            },
        );
        token
    }

    /// The client of a `/token` or `/device/code` call, its secret checked
    /// unless `secret_needed` is false.
    fn client(
        &self,
        p: &HashMap<String, String>,
        secret_needed: bool,
    ) -> Result<&Client, Response> {
        let id = p.get("client_id").map(String::as_str).unwrap_or("");
        let Some(c) = self.clients.get(id) else {
            return Err(wire::oauth_error(
                401,
                "invalid_client",
                "The OAuth client was not found.",
            ));
        };
        if secret_needed && p.get("client_secret") != Some(&c.secret) {
            return Err(wire::oauth_error(401, "invalid_client", "Unauthorized"));
        }
        Ok(c)
    }

    /// `POST /token`.
    pub fn token(&mut self, form: &HashMap<String, String>, now: u64) -> Response {
        self.token_inner(form, now).unwrap_or_else(|e| e)
    }

    fn token_inner(&mut self, p: &HashMap<String, String>, now: u64) -> Result<Response, Response> {
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        let grant = get("grant_type");
        match grant {
            "refresh_token" => {
                let client = self.client(p, true)?;
                let testing = client.testing;
                let token = get("refresh_token");
                let r = self
                    .refresh
                    .get(token)
                    .filter(|r| r.client_id == get("client_id"))
                    .ok_or_else(expired_or_revoked)?;
                if testing && r.issued_ms + TESTING_REFRESH_MS <= now {
                    return Err(expired_or_revoked());
                }
                let scopes = r.scopes.clone();
                let access = self.mint_access(Some(token.to_owned()), scopes.clone(), now);
                Ok(token_answer(&access, None, &scopes, false))
            }
            "authorization_code" => {
                let client = self.client(p, true)?;
                let testing = client.testing;
                let code = self
                    .codes
                    .remove(get("code"))
                    .filter(|c| c.expires_ms > now && c.client_id == get("client_id"))
                    .ok_or_else(|| {
                        wire::oauth_error(400, "invalid_grant", "Malformed auth code.")
                    })?;
                if code.redirect_uri != get("redirect_uri") {
                    return Err(wire::oauth_error(
                        400,
                        "redirect_uri_mismatch",
                        "Bad Request",
                    ));
                }
                let verifier = get("code_verifier");
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(verifier.as_bytes()));
                if verifier.is_empty() || computed != code.challenge {
                    return Err(wire::oauth_error(
                        400,
                        "invalid_grant",
                        "Invalid code verifier.",
                    ));
                }
                let refresh = code
                    .offline
                    .then(|| self.mint_refresh(&code.client_id, code.scopes.clone(), now));
                let access = self.mint_access(refresh.clone(), code.scopes.clone(), now);
                Ok(token_answer(
                    &access,
                    refresh.as_deref(),
                    &code.scopes,
                    testing,
                ))
            }
            "urn:ietf:params:oauth:grant-type:device_code" => {
                let client = self.client(p, true)?;
                let testing = client.testing;
                let device_code = get("device_code");
                let Some(d) = self.devices.get_mut(device_code) else {
                    return Err(wire::oauth_error(
                        400,
                        "invalid_grant",
                        "Malformed device code.",
                    ));
                };
                if d.client_id != get("client_id") {
                    return Err(wire::oauth_error(401, "invalid_client", "Unauthorized"));
                }
                if d.expires_ms <= now {
                    return Err(wire::oauth_error(400, "expired_token", "Bad Request"));
                }
                let too_soon = d
                    .last_poll_ms
                    .is_some_and(|last| now < last + DEVICE_INTERVAL_S * 1_000);
                d.last_poll_ms = Some(now);
                match d.state {
                    DeviceState::Denied => {
                        Err(wire::oauth_error(403, "access_denied", "Forbidden"))
                    }
                    _ if too_soon => Err(wire::oauth_error(403, "slow_down", "Forbidden")),
                    DeviceState::Pending => Err(wire::oauth_error(
                        428,
                        "authorization_pending",
                        "Precondition Required",
                    )),
                    DeviceState::Approved => {
                        let d = self
                            .devices
                            .remove(device_code)
                            .ok_or_else(expired_or_revoked)?;
                        self.user_codes.remove(&d.user_code);
                        let refresh = self.mint_refresh(&d.client_id, d.scopes.clone(), now);
                        let access = self.mint_access(Some(refresh.clone()), d.scopes.clone(), now);
                        Ok(token_answer(&access, Some(&refresh), &d.scopes, testing))
                    }
                }
            }
            _ => Err(wire::oauth_error(
                400,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {grant}"),
            )),
        }
    }

    /// `POST /device/code`.
    pub fn device_code(&mut self, p: &HashMap<String, String>, now: u64) -> Response {
        let client = match self.client(p, false) {
            Ok(c) => c,
            Err(e) => return e,
        };
        if client.kind != ClientKind::LimitedInput {
            return wire::oauth_error(401, "invalid_client", "Invalid client type.");
        }
        let scopes: Vec<String> = p
            .get("scope")
            .map(String::as_str)
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if scopes.is_empty() {
            return wire::oauth_error(400, "invalid_scope", "Missing required parameter: scope");
        }
        if let Some(bad) = scopes.iter().find(|s| !DEVICE_SCOPES.contains(&s.as_str())) {
            return wire::oauth_error(
                400,
                "invalid_scope",
                &format!("Invalid device flow scope: {bad}"),
            );
        }
        let device_code = format!("AH-1Ng{}", wire::random_string(80));
        let raw = wire::random_string(8)
            .to_uppercase()
            .replace(['-', '_'], "X");
        let user_code = format!("{}-{}", &raw[..4], &raw[4..]);
        self.user_codes
            .insert(user_code.clone(), device_code.clone());
        self.devices.insert(
            device_code.clone(),
            Device {
                client_id: p["client_id"].clone(),
                user_code: user_code.clone(),
                scopes,
                expires_ms: now + DEVICE_MS,
                last_poll_ms: None,
                state: DeviceState::Pending,
            },
        );
        wire::json(
            200,
            &serde_json::json!({
                "device_code": device_code,
                "user_code": user_code,
                "expires_in": DEVICE_MS / 1_000,
                "interval": DEVICE_INTERVAL_S,
                "verification_url": "https://www.google.com/device",
            }),
        )
    }

    /// `POST /revoke?token=…` (or the token in a form body).
    pub fn revoke_endpoint(&mut self, token: &str) -> Response {
        if self.revoke(token) {
            wire::json(200, &serde_json::json!({}))
        } else {
            wire::oauth_error(400, "invalid_token", "Token expired or revoked")
        }
    }
}

fn expired_or_revoked() -> Response {
    wire::oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
}

fn token_answer(access: &str, refresh: Option<&str>, scopes: &[String], testing: bool) -> Response {
    let mut v = serde_json::json!({
        "access_token": access,
        "expires_in": 3599,
        "scope": scopes.join(" "),
        "token_type": "Bearer",
    });
    if let Some(r) = refresh {
        v["refresh_token"] = r.into();
        if testing {
            v["refresh_token_expires_in"] = (TESTING_REFRESH_MS / 1_000 - 1).into();
        }
    }
    wire::json(200, &v)
}

fn unauthenticated(reason: &str, short: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": {
        "code": 401,
        "message": message,
        "errors": [{ "message": short, "domain": "global", "reason": reason,
                     "location": "Authorization", "locationType": "header" }],
        "status": "UNAUTHENTICATED",
    }});
    wire::json(401, &body).with(
        "www-authenticate",
        r#"Bearer realm="https://accounts.google.com/", error="invalid_token""#,
    )
}

/// `http://127.0.0.1:PORT[/…]`, `http://[::1]:PORT` or `http://localhost:PORT`:
/// what Google takes as a Desktop client's redirect.
fn is_loopback(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => (authority, ""),
    };
    matches!(host, "127.0.0.1" | "[::1]" | "localhost")
        && (port.is_empty() || port.parse::<u16>().is_ok())
}

/// The consent page at `GET /o/oauth2/v2/auth`: a browser shows it; a test
/// consents through `FakeGdrive::approve`.
pub fn consent_page() -> Response {
    wire::response(200)
        .with("content-type", "text/html; charset=utf-8")
        .with_body(
            b"<html><body><h1>Sign in with Google</h1><p>ghostie-fs wants to see, create and \
              delete its own configuration data in your Google Drive.</p></body></html>"
                .to_vec(),
        )
}
