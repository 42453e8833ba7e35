//! `login google` and `logout google`: the owner's own OAuth client, by the
//! loopback flow (a browser on this machine) or the device flow (`--device`: a
//! code typed on another device). The refresh token is checked (whose account,
//! and that the app data folder answers) and stored with the client's secret.
//! Nothing secret is printed.

use std::io::Write;
use std::time::Duration;

use zeroize::Zeroizing;

use ghostie_fs::config::{GdriveUrls, Home, GOOGLE_OAUTH_URL};
use ghostie_fs::credentials::google::{self, DeviceLogin, LoginError, LoopbackLogin};
use ghostie_fs::credentials::oauth::OAuthError;
use ghostie_fs::credentials::{
    env_secret, CredentialKey, Credentials, Place, Provider, Secret, StoredInfo,
};
use ghostie_fs::sync::NewLogin;

use super::errors::{CliError, EXIT_FAILURE, EXIT_REFUSED, EXIT_USAGE};
use super::login::{key_if_needed, now};

use super::passphrase::CliPassphrase;
use super::{Cli, LoginArgs};

type CmdResult = Result<u8, CliError>;

const CLIENT_HELP: &str =
    "make an OAuth client in Google Cloud's console (README: 'Google Drive as a backend')";
/// How long the loopback flow waits for the browser.
const BROWSER_PATIENCE: Duration = Duration::from_secs(5 * 60);

/// The OAuth client to log in with: given, or from the environment.
pub struct Client {
    pub id: String,
    pub secret: Secret,
}

fn given_or_env(given: Option<&str>, var: &str) -> Option<String> {
    given
        .map(str::to_owned)
        .or_else(|| std::env::var(var).ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

pub fn client(id: Option<&str>, secret: Option<&str>) -> Result<Client, CliError> {
    let id = given_or_env(id, google::CLIENT_ID_VAR).ok_or_else(|| {
        CliError::new(
            EXIT_USAGE,
            format!("Google needs your OAuth client: give --client-id ID --client-secret SECRET ({CLIENT_HELP})."),
        )
    })?;
    let secret = given_or_env(secret, google::CLIENT_SECRET_VAR).ok_or_else(|| {
        CliError::new(
            EXIT_USAGE,
            format!("Google needs your OAuth client's secret too: give --client-secret SECRET ({CLIENT_HELP})."),
        )
    })?;
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) || id.len() > 200 {
        return Err(CliError::new(
            EXIT_USAGE,
            "That is not a Google OAuth client id (it looks like 1234-abc.apps.googleusercontent.com).",
        ));
    }
    Ok(Client {
        id,
        secret: Secret::new(Zeroizing::new(secret)),
    })
}

fn login_error(e: LoginError, client_id: &str, device: bool) -> CliError {
    let sentence = match e {
        LoginError::OAuth(OAuthError::UnknownClient) if device => {
            return CliError::new(
                EXIT_REFUSED,
                format!("Google refused the OAuth client '{client_id}' for a login by code: the device flow needs a client of the \"TVs and Limited Input devices\" type (a \"Desktop app\" client logs in without --device); nothing was stored."),
            )
        }
        LoginError::OAuth(OAuthError::UnknownClient) => {
            return CliError::new(
                EXIT_REFUSED,
                format!("Google does not know the OAuth client '{client_id}' or its secret: copy both from the client's page in Google Cloud's console; nothing was stored."),
            )
        }
        LoginError::OAuth(OAuthError::LoginExpired) => {
            return CliError::new(
                EXIT_REFUSED,
                "Google did not take the code (it expired or was used already): run 'ghostie-fs login google' again; nothing was stored.",
            )
        }
        LoginError::Denied(why) => {
            return CliError::new(
                EXIT_REFUSED,
                format!("Google says access was not allowed ({why}); nothing was stored."),
            )
        }
        other => other.to_string(),
    };
    CliError::new(
        EXIT_FAILURE,
        format!("Cannot finish the Google login: {sentence}; nothing was stored."),
    )
}

/// The consent done (in a browser here, or by a code on another device), the
/// tokens checked: a login ready to store.
pub fn obtain(urls: &GdriveUrls, client: &Client, device: bool) -> Result<NewLogin, CliError> {
    let grant = if device {
        let login = DeviceLogin::start(&urls.oauth, &client.id)
            .map_err(|e| login_error(e, &client.id, device))?;
        println!(
            "On a phone or computer, open {} and enter the code {}",
            login.verification_url, login.user_code
        );
        let _ = std::io::stdout().flush();
        login
            .finish(&urls.oauth, &client.id, &client.secret)
            .map_err(|e| login_error(e, &client.id, device))?
    } else {
        let login = LoopbackLogin::start(&urls.oauth, &client.id)
            .map_err(|e| login_error(e, &client.id, device))?;
        println!(
            "Open this page in a browser on this machine, sign in to Google and allow access:"
        );
        println!("{}", login.url);
        let _ = std::io::stdout().flush();
        login
            .finish(&urls.oauth, &client.id, &client.secret, BROWSER_PATIENCE)
            .map_err(|e| login_error(e, &client.id, device))?
    };
    let Some(refresh) = grant.refresh_token.clone() else {
        return Err(CliError::new(
            EXIT_FAILURE,
            "Google granted no refresh token, so the login would end in an hour; nothing was stored.",
        ));
    };
    let access = Secret::new(grant.access_token.clone());
    let account = google::account(urls, &access).map_err(|e| {
        CliError::new(
            EXIT_FAILURE,
            format!("Google granted a login, but Drive's app data folder does not answer to it ({e}); nothing was stored."),
        )
    })?;
    let expires_at = now() + grant.expires_in.unwrap_or(3_600);
    // A client in "testing" status: Google ends the login after a week.
    let login_ends = grant.refresh_expires_in.map(|s| now() + s);
    Ok(NewLogin {
        provider: Provider::Google,
        info: StoredInfo {
            account,
            scopes: Some(vec![google::SCOPE.to_owned()]),
            expires: login_ends.map(super::login::when),
            expires_at: login_ends,
            api_url: urls.api.clone(),
            stored_at: now(),
            client_id: Some(client.id.clone()),
            oauth_url: (urls.oauth != GOOGLE_OAUTH_URL).then(|| urls.oauth.clone()),
        },
        refresh_token: Secret::new(refresh),
        access: Some((access, expires_at)),
        client_secret: Some(client.secret.clone()),
    })
}

/// The URLs `login google` talks to.
fn urls_of(args: &LoginArgs, api_url: &str) -> Result<GdriveUrls, CliError> {
    let oauth = match &args.oauth_url {
        Some(u) => super::login::checked_url(u)?,
        None => GOOGLE_OAUTH_URL.to_owned(),
    };
    Ok(GdriveUrls {
        api: api_url.to_owned(),
        upload: api_url.to_owned(),
        oauth,
    })
}

pub fn login(
    cli: &Cli,
    home: Home,
    pass: &CliPassphrase,
    args: &LoginArgs,
    api_url: &str,
) -> CmdResult {
    let client = client(args.client_id.as_deref(), args.client_secret.as_deref())?;
    let urls = urls_of(args, api_url)?;
    let mut store = Credentials::open(&home)?;
    let place = store.decide()?;
    if place == Place::File && !home.config_path().exists() {
        return Err(CliError::new(
            EXIT_FAILURE,
            "This device has no OS keyring, so a login is sealed under the vault's key: log in as you set up, with 'ghostie-fs setup --backend gdrive --client-id ID --client-secret SECRET'.",
        ));
    }
    // The passphrase before the browser: a wrong one must not waste a consent.
    let key = key_if_needed(&home, place, pass)?;
    let login = obtain(&urls, &client, args.device)?;
    let account = login.info.account.clone();
    let access = login.access.as_ref().map(|(s, at)| (s, *at));
    let place = store.store_tokens(
        Provider::Google,
        login.info.clone(),
        &login.refresh_token,
        access,
        login.client_secret.as_ref(),
        key.as_ref(),
    )?;
    let bare = std::env::var(google::ACCESS_TOKEN_VAR).is_ok_and(|v| !v.trim().is_empty());
    let env_var = match env_secret(Provider::Google, api_url) {
        _ if bare => Some(google::ACCESS_TOKEN_VAR),
        Some((var, _)) => Some(var),
        None => None,
    };
    if let Some(var) = env_var {
        eprintln!("⚠️  {var} is set: while it is, ghostie-fs uses it instead of this login.");
    }
    if !cli.quiet {
        println!(
            "✅ Logged in to Google Drive as '{account}'; the login is kept in {}.",
            place.describe()
        );
        if login.info.expires_at.is_some() {
            println!("   Your OAuth client is in \"testing\" status, so Google ends this login in 7 days; publish the client to keep it (README: 'Google Drive as a backend').");
        }
    }
    Ok(0)
}

/// Whether a setup on Drive at `api_url` has a login to use already.
fn has_login(home: &Home, api_url: &str) -> bool {
    super::login::has_login(
        home,
        Provider::Google,
        api_url,
        &[google::ACCESS_TOKEN_VAR, google::REFRESH_TOKEN_VAR],
    )
}

/// The login a setup on Drive makes when the home has none; None when a login
/// is there already.
pub fn login_for_setup(
    home: &Home,
    urls: &GdriveUrls,
    client_id: Option<&str>,
    client_secret: Option<&str>,
    device: bool,
) -> Result<Option<NewLogin>, CliError> {
    if has_login(home, &urls.api) {
        return Ok(None);
    }
    let client = client(client_id, client_secret).map_err(|_| {
        CliError::new(
            EXIT_USAGE,
            format!("There is no Google login here: give --client-id ID --client-secret SECRET to log in as you set up ({CLIENT_HELP})."),
        )
    })?;
    obtain(urls, &client, device).map(Some)
}

fn oauth_url_of(info: &StoredInfo) -> String {
    info.oauth_url
        .clone()
        .unwrap_or_else(|| GOOGLE_OAUTH_URL.to_owned())
}

/// Revokes at Google a login that was never stored (its setup failed).
pub fn revoke_unused(login: &NewLogin) {
    if let Err(e) = google::revoke(&oauth_url_of(&login.info), &login.refresh_token) {
        eprintln!(
            "⚠️  Could not revoke the unused login at Google ({e}); remove the app's access at https://myaccount.google.com/connections."
        );
    }
}

/// Revokes the stored login at Google; whether it was.
pub fn revoke_stored(
    store: &Credentials,
    info: &StoredInfo,
    key: Option<&CredentialKey>,
) -> Result<bool, CliError> {
    let revoked = store
        .refresh_token(Provider::Google, key)
        .map_err(|e| e.to_string())
        .and_then(|token| match token {
            Some(t) => google::revoke(&oauth_url_of(info), &t).map_err(|e| e.to_string()),
            None => Err("the stored login was already gone from its store".into()),
        });
    match revoked {
        Ok(()) => Ok(true),
        Err(e) => {
            eprintln!(
                "⚠️  Could not revoke the login at Google ({e}); remove the app's access at https://myaccount.google.com/connections."
            );
            Ok(false)
        }
    }
}
