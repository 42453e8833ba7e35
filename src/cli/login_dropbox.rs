//! `login dropbox` and `logout dropbox`: OAuth with PKCE for the owner's own app.
//! The consent page's address is printed; the user approves and pastes back the
//! code Dropbox shows; the refresh token is checked (whose account) and stored.
//! Nothing secret is printed.

use std::io::{BufRead, IsTerminal, Write};

use zeroize::Zeroizing;

use ghostie_fs::config::Home;
use ghostie_fs::credentials::dropbox::{self, APP_KEY_VAR};
use ghostie_fs::credentials::oauth::{OAuthClient, OAuthError};
use ghostie_fs::credentials::{
    env_secret, CredentialKey, Credentials, Place, Provider, Secret, StoredInfo,
};
use ghostie_fs::sync::NewLogin;

use super::errors::{CliError, EXIT_FAILURE, EXIT_REFUSED, EXIT_USAGE};
use super::login::{key_if_needed, now};
use super::passphrase::CliPassphrase;
use super::{Cli, LoginArgs};

type CmdResult = Result<u8, CliError>;

const APP_HELP: &str = "make an app with 'App folder' access at https://www.dropbox.com/developers/apps (README: 'Dropbox as a backend')";

/// The app key given, or from the environment; refused when it cannot be one.
fn app_key(given: Option<&str>) -> Result<String, CliError> {
    let given = given
        .map(str::to_owned)
        .or_else(|| std::env::var(APP_KEY_VAR).ok())
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty());
    let Some(key) = given else {
        return Err(CliError::new(
            EXIT_USAGE,
            format!("Dropbox needs your app's key: give --app-key KEY ({APP_HELP})."),
        ));
    };
    if !key.chars().all(|c| c.is_ascii_alphanumeric()) || key.len() > 64 {
        return Err(CliError::new(
            EXIT_USAGE,
            "That is not a Dropbox app key (letters and digits, as the App Console shows it under 'App key').",
        ));
    }
    Ok(key)
}

/// The code the user pastes: from standard input when asked or when it is not a
/// terminal, else asked for on the terminal.
fn read_code(code_stdin: bool) -> Result<Zeroizing<String>, CliError> {
    let stdin = std::io::stdin();
    if !code_stdin && stdin.is_terminal() {
        eprint!("Paste the code Dropbox shows: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::new(EXIT_FAILURE, format!("Cannot read the code: {e}.")))?;
    let code = Zeroizing::new(line.trim().to_owned());
    if code.is_empty() {
        return Err(CliError::new(
            EXIT_USAGE,
            "No code was given: open the page, allow access, and paste the code Dropbox shows; nothing was stored.",
        ));
    }
    Ok(code)
}

fn oauth_error(e: OAuthError, app_key: &str) -> CliError {
    match e {
        OAuthError::LoginExpired => CliError::new(
            EXIT_REFUSED,
            "Dropbox did not take that code (it is mistyped, was used already, or expired): run 'ghostie-fs login dropbox' again and paste the new code; nothing was stored.",
        ),
        OAuthError::UnknownClient => CliError::new(
            EXIT_REFUSED,
            format!("Dropbox does not know the app key '{app_key}': copy it from your app's page in the App Console; nothing was stored."),
        ),
        other => CliError::new(
            EXIT_FAILURE,
            format!("Cannot finish the Dropbox login: {other}; nothing was stored."),
        ),
    }
}

/// The consent page printed, the code read, traded for tokens and checked: a
/// login ready to store.
fn obtain(api_url: &str, app_key: &str, code_stdin: bool) -> Result<NewLogin, CliError> {
    let start = dropbox::start_login(api_url, app_key);
    println!("Open this page, sign in to Dropbox and allow access for your app:");
    println!("{}", start.url);
    let _ = std::io::stdout().flush();
    let code = read_code(code_stdin)?;
    let grant = dropbox::finish_login(&start, api_url, app_key, &code)
        .map_err(|e| oauth_error(e, app_key))?;
    let Some(refresh) = grant.refresh_token.clone() else {
        return Err(CliError::new(
            EXIT_FAILURE,
            "Dropbox granted no refresh token, so the login would end in four hours; nothing was stored.",
        ));
    };
    let access = Secret::new(grant.access_token.clone());
    let account = dropbox::account(api_url, &access).map_err(|e| {
        CliError::new(
            EXIT_FAILURE,
            format!("Dropbox granted a login but does not say whose ({e}); nothing was stored."),
        )
    })?;
    let expires_at = now() + grant.expires_in.unwrap_or(14_400);
    Ok(NewLogin {
        provider: Provider::Dropbox,
        info: StoredInfo {
            account,
            scopes: None,
            expires: None,
            expires_at: None,
            api_url: api_url.to_owned(),
            stored_at: now(),
            client_id: Some(app_key.to_owned()),
            oauth_url: None,
        },
        refresh_token: Secret::new(refresh),
        access: Some((access, expires_at)),
        client_secret: None,
    })
}

pub fn login(
    cli: &Cli,
    home: Home,
    pass: &CliPassphrase,
    args: &LoginArgs,
    api_url: &str,
) -> CmdResult {
    let app_key = app_key(args.app_key.as_deref())?;
    let mut store = Credentials::open(&home)?;
    let place = store.decide()?;
    if place == Place::File && !home.config_path().exists() {
        return Err(CliError::new(
            EXIT_FAILURE,
            "This device has no OS keyring, so a login is sealed under the vault's key: log in as you set up, with 'ghostie-fs setup --backend dropbox --app-key KEY'.",
        ));
    }
    // The passphrase before the browser: a wrong one must not waste a code.
    let key = key_if_needed(&home, place, pass)?;
    let login = obtain(api_url, &app_key, args.code_stdin)?;
    let account = login.info.account.clone();
    let access = login.access.as_ref().map(|(s, at)| (s, *at));
    let place = store.store_tokens(
        Provider::Dropbox,
        login.info.clone(),
        &login.refresh_token,
        access,
        None,
        key.as_ref(),
    )?;
    if let Some((var, _)) = env_secret(Provider::Dropbox, api_url) {
        eprintln!("⚠️  {var} is set: while it is, ghostie-fs uses it instead of this login.");
    }
    if !cli.quiet {
        println!(
            "✅ Logged in to Dropbox as '{account}'; the login is kept in {}.",
            place.describe()
        );
    }
    Ok(0)
}

/// Whether a setup on Dropbox at `api_url` has a login to use already.
pub fn has_login(home: &Home, api_url: &str) -> bool {
    super::login::has_login(
        home,
        Provider::Dropbox,
        api_url,
        &[dropbox::ACCESS_TOKEN_VAR, dropbox::REFRESH_TOKEN_VAR],
    )
}

/// The login a setup on Dropbox makes when the home has none: with the app key
/// given (or from the environment); None when a login is there already.
pub fn login_for_setup(
    home: &Home,
    api_url: &str,
    app_key_given: Option<&str>,
    code_stdin: bool,
) -> Result<Option<NewLogin>, CliError> {
    if has_login(home, api_url) {
        return Ok(None);
    }
    let app_key = app_key(app_key_given).map_err(|_| {
        CliError::new(
            EXIT_USAGE,
            format!("There is no Dropbox login here: give --app-key KEY to log in as you set up ({APP_HELP})."),
        )
    })?;
    obtain(api_url, &app_key, code_stdin).map(Some)
}

/// Revokes at Dropbox a login that was never stored (its setup failed), so no
/// usable refresh token is left behind.
pub fn revoke_unused(login: &NewLogin) {
    if let Some((access, _)) = &login.access {
        if let Err(e) = dropbox::revoke(&login.info.api_url, access) {
            eprintln!(
                "⚠️  Could not revoke the unused login at Dropbox ({e}); remove the app's access at https://www.dropbox.com/account/connected_apps."
            );
        }
    }
}

/// Revokes the stored login at Dropbox; whether it was.
pub fn revoke_stored(
    store: &mut Credentials,
    info: &StoredInfo,
    key: Option<&CredentialKey>,
) -> Result<bool, CliError> {
    let Some(client_id) = info.client_id.clone() else {
        return Ok(false);
    };
    let client = OAuthClient {
        token_url: dropbox::token_url(&info.api_url),
        client_id,
        client_secret: None,
    };
    let revoked = store
        .access_token(Provider::Dropbox, &client, key, None)
        .map_err(|e| e.to_string())
        .and_then(|(access, _)| dropbox::revoke(&info.api_url, &access).map_err(|e| e.to_string()));
    match revoked {
        Ok(()) => Ok(true),
        Err(e) => {
            eprintln!(
                "⚠️  Could not revoke the login at Dropbox ({e}); remove the app's access at https://www.dropbox.com/account/connected_apps."
            );
            Ok(false)
        }
    }
}
