//! `login`, `logout`, `remember`, `forget`, and the credentials part of `status`.
//! Tokens are read without echo, checked against the provider before anything is
//! stored, and never printed: only the account, the scopes and the expiry are.

use std::io::{BufRead, IsTerminal};

use zeroize::Zeroizing;

use ghostie_fs::config::Home;
use ghostie_fs::credentials::github::{self, GithubError};
use ghostie_fs::credentials::{
    self, env_secret, CredentialError, CredentialKey, Credentials, Place, Provider, Remembered,
    Secret, StoredInfo, EXPIRY_WARNING_SECS,
};
use ghostie_fs::folder::format_time;
use ghostie_fs::sync::PassphraseSource;

use super::errors::{capitalise, CliError, EXIT_FAILURE, EXIT_REFUSED, EXIT_USAGE};
use super::passphrase::CliPassphrase;
use super::{Cli, LoginArgs, LogoutArgs, RememberArgs};

type CmdResult = Result<u8, CliError>;

macro_rules! say {
    ($cli:expr, $($arg:tt)*) => {
        if !$cli.quiet {
            println!($($arg)*);
        }
    };
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a setup on `provider` at `api_url` has a login to use already: one of
/// `vars` in the environment, or a login stored in the home for that API.
pub(super) fn has_login(home: &Home, provider: Provider, api_url: &str, vars: &[&str]) -> bool {
    let env = |var: &&str| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
    if vars.iter().any(env) {
        return true;
    }
    Credentials::open(home)
        .ok()
        .and_then(|c| c.info(provider).cloned())
        .is_some_and(|i| i.api_url.trim_end_matches('/') == api_url.trim_end_matches('/'))
}

pub(super) fn when(secs: u64) -> String {
    format_time(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
}

fn provider_of(name: &str) -> Result<Provider, CliError> {
    Provider::from_name(name).ok_or_else(|| {
        let known: Vec<_> = Provider::ALL.iter().map(|p| p.name()).collect();
        CliError::new(
            EXIT_USAGE,
            format!(
                "Unknown provider '{name}' (this version supports: {}).",
                known.join(", ")
            ),
        )
    })
}

/// The passphrase as the credentials layer asks for it: one given without asking,
/// and how to ask otherwise.
fn given(pass: &CliPassphrase) -> Option<Zeroizing<String>> {
    if pass.given() {
        pass.existing().ok()
    } else {
        None
    }
}

fn ask(pass: &CliPassphrase) -> impl Fn() -> credentials::CredentialResult<Zeroizing<String>> + '_ {
    move || {
        pass.existing()
            .map_err(|e| CredentialError::Passphrase(e.to_string()))
    }
}

/// The key of the sealed credentials file, for a home that keeps secrets there.
pub(super) fn key_if_needed(
    home: &Home,
    place: Place,
    pass: &CliPassphrase,
) -> Result<Option<CredentialKey>, CliError> {
    if place != Place::File {
        return Ok(None);
    }
    if !home.config_path().exists() {
        return Err(CliError::new(
            EXIT_FAILURE,
            "This device has no OS keyring, so its tokens are sealed under the vault's key: \
             run 'ghostie-fs setup' first (a token in GH_TOKEN works meanwhile).",
        ));
    }
    let key = CredentialKey::unlock(home, given(pass), &ask(pass))?;
    Ok(Some(key))
}

fn read_token(args: &LoginArgs) -> Result<Secret, CliError> {
    let text = if args.token_stdin && std::io::stdin().is_terminal() {
        // Typed or pasted by hand after all: not echoed.
        let typed = rpassword::prompt_password("Token: ")
            .map_err(|e| CliError::new(EXIT_FAILURE, format!("Cannot read the token: {e}.")))?;
        Zeroizing::new(typed.trim().to_owned())
    } else if args.token_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            CliError::new(EXIT_FAILURE, format!("Cannot read standard input: {e}."))
        })?;
        Zeroizing::new(line.trim().to_owned())
    } else if std::io::stdin().is_terminal() {
        let typed = rpassword::prompt_password(format!(
            "Paste a GitHub token with the '{}' scope (make one at https://github.com/settings/tokens/new?scopes=gist&description=ghostie-fs): ",
            github::NEEDED_SCOPE
        ))
        .map_err(|e| CliError::new(EXIT_FAILURE, format!("Cannot read the token: {e}.")))?;
        Zeroizing::new(typed.trim().to_owned())
    } else {
        return Err(CliError::new(
            EXIT_USAGE,
            "No token given: use --token-stdin, set GH_TOKEN, or run on a terminal; nothing was stored.",
        ));
    };
    if text.is_empty() {
        return Err(CliError::new(
            EXIT_USAGE,
            "No token was given (the input was empty); nothing was stored.",
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CliError::new(
            EXIT_REFUSED,
            "That is not a token (it holds spaces or control characters); nothing was stored.",
        ));
    }
    Ok(Secret::new(text))
}

fn github_error(e: GithubError, stored: bool) -> CliError {
    let tail = if stored { "" } else { "; nothing was stored" };
    match e {
        GithubError::BadToken => CliError::new(
            EXIT_REFUSED,
            format!("GitHub refused this token (it is wrong, expired or revoked){tail}."),
        ),
        other => CliError::new(
            EXIT_FAILURE,
            format!("{}{tail}.", capitalise(&other.to_string())),
        ),
    }
}

/// Checks a GitHub token: refused when it cannot reach gists; warnings for more power
/// than needed and a near expiry.
fn check_github(
    api_url: &str,
    token: &Secret,
) -> Result<(github::TokenInfo, Vec<String>), CliError> {
    let info = github::check(api_url, token).map_err(|e| github_error(e, false))?;
    let mut warnings = Vec::new();
    match &info.scopes {
        Some(scopes) => {
            if !info.reaches_gists {
                return Err(CliError::new(
                    EXIT_REFUSED,
                    format!(
                        "This token lacks the '{}' scope that ghostie-fs needs; nothing was stored.",
                        github::NEEDED_SCOPE
                    ),
                ));
            }
            let extra = github::excess_scopes(scopes);
            if !extra.is_empty() {
                warnings.push(format!(
                    "This token can do more than ghostie-fs needs ({}): a token with only the '{}' scope is enough.",
                    extra.join(", "),
                    github::NEEDED_SCOPE
                ));
            }
        }
        None if !info.reaches_gists => {
            return Err(CliError::new(
                EXIT_REFUSED,
                "This fine-grained token cannot reach gists: give it the Gists permission (read and write); nothing was stored.",
            ));
        }
        None => {}
    }
    if let Some(w) = expiry_warning(info.expires.as_deref()) {
        warnings.push(w);
    }
    Ok((info, warnings))
}

fn expiry_warning(expires: Option<&str>) -> Option<String> {
    let text = expires?;
    let at = github::parse_expiry(text)?;
    let now = now();
    if at <= now {
        Some(format!(
            "This token expired on {text}: make a new one and run 'ghostie-fs login github' again."
        ))
    } else if at - now <= EXPIRY_WARNING_SECS {
        Some(format!(
            "This token expires on {text}: make a new one and run 'ghostie-fs login github' again before then."
        ))
    } else {
        None
    }
}

/// An `--api-url` as given, refused in one sentence when it cannot be GitHub's API.
pub fn checked_api_url(text: &str) -> Result<String, CliError> {
    checked_url(text)
}

/// A provider's URL as given (HTTPS, or plain HTTP to this machine; no user
/// info, query or fragment), refused in one sentence otherwise.
pub fn checked_url(text: &str) -> Result<String, CliError> {
    github::check_api_url(text)
        .map_err(|e| CliError::new(EXIT_USAGE, format!("{}.", capitalise(&e))))
}

pub fn login(cli: &Cli, home: Home, pass: &CliPassphrase, args: &LoginArgs) -> CmdResult {
    if args.status {
        return login_status(&home, args.json);
    }
    let Some(name) = &args.provider else {
        return Err(CliError::new(
            EXIT_USAGE,
            "Name a provider ('ghostie-fs login github'), or use --status to list what is stored.",
        ));
    };
    let provider = provider_of(name)?;
    let api_url = match &args.api_url {
        Some(u) => checked_api_url(u)?,
        None => provider.default_api_url().to_owned(),
    };
    if provider == Provider::Dropbox {
        if args.token_stdin {
            return Err(CliError::new(
                EXIT_USAGE,
                "Dropbox logs in through its own page, not with a pasted token: run 'ghostie-fs login dropbox --app-key KEY'.",
            ));
        }
        return super::login_dropbox::login(cli, home, pass, args, &api_url);
    }
    if provider == Provider::Google {
        if args.token_stdin {
            return Err(CliError::new(
                EXIT_USAGE,
                "Google logs in through its own page, not with a pasted token: run 'ghostie-fs login google --client-id ID --client-secret SECRET'.",
            ));
        }
        return super::login_google::login(cli, home, pass, args, &api_url);
    }
    if args.client_id.is_some()
        || args.client_secret.is_some()
        || args.device
        || args.oauth_url.is_some()
    {
        return Err(CliError::new(
            EXIT_USAGE,
            "--client-id, --client-secret, --device and --oauth-url are for 'ghostie-fs login google'.",
        ));
    }
    if args.app_key.is_some() || args.code_stdin {
        return Err(CliError::new(
            EXIT_USAGE,
            "--app-key and --code-stdin are for 'ghostie-fs login dropbox'.",
        ));
    }
    let env = env_secret(provider, &api_url);
    if !args.token_stdin {
        if let Some((var, token)) = &env {
            // The environment wins and is never stored: check it, say whose it is.
            let (info, warnings) = check_github(&api_url, token).map_err(|e| CliError {
                sentence: format!(
                    "{} (the token in {var}; unset it, or use --token-stdin to store another).",
                    e.sentence.trim_end_matches('.')
                ),
                ..e
            })?;
            for w in &warnings {
                eprintln!("⚠️  {w}");
            }
            say!(
                cli,
                "✅ {var} holds a token of GitHub account '{}': ghostie-fs uses it while it is set, and stores nothing.",
                info.account
            );
            return Ok(0);
        }
    }
    let token = read_token(args)?;
    let mut store = Credentials::open(&home)?;
    let place = store.decide()?;
    let key = key_if_needed(&home, place, pass)?;
    let (info, warnings) = check_github(&api_url, &token)?;
    let replaced = store.info(provider).map(|i| i.account.clone());
    let stored = StoredInfo {
        account: info.account.clone(),
        scopes: info.scopes.clone(),
        expires: info.expires.clone(),
        expires_at: info.expires.as_deref().and_then(github::parse_expiry),
        api_url: api_url.clone(),
        stored_at: now(),
        client_id: None,
        oauth_url: None,
    };
    let place = store.store(provider, stored, &token, key.as_ref())?;
    for w in &warnings {
        eprintln!("⚠️  {w}");
    }
    if let Some((var, _)) = &env {
        eprintln!("⚠️  {var} is set: while it is, ghostie-fs uses it instead of the stored token.");
    }
    let verb = if replaced.is_some() {
        "replaced"
    } else {
        "kept"
    };
    say!(
        cli,
        "✅ Logged in to GitHub as '{}'; the token is {verb} in {}.",
        info.account,
        place.describe()
    );
    Ok(0)
}

fn login_status(home: &Home, json: bool) -> CmdResult {
    let store = Credentials::open(home)?;
    let env = env_in_use(&store);
    if json {
        println!("{}", credentials_json(home)?);
        return Ok(0);
    }
    let mut any = false;
    for (provider, info) in store.list() {
        any = true;
        let place = store.place().map(Place::describe).unwrap_or_default();
        println!("{provider}: account '{}', kept in {place}", info.account);
        if let (Some(client), "google") = (&info.client_id, provider) {
            println!("   OAuth client: {client}");
            if info.expires.is_some() {
                println!(
                    "   the login ends {} (a client in \"testing\" status; publish it to keep logins)",
                    expiry_text(info)
                );
            }
            println!("   access: renewed as needed from the stored login");
            continue;
        }
        if let Some(app) = &info.client_id {
            println!("   app key: {app} (its folder in your Dropbox is Apps/<the app's name>)");
            println!("   access: renewed as needed from the stored login");
            continue;
        }
        match &info.scopes {
            Some(s) if s.is_empty() => println!("   scopes: none"),
            Some(s) => println!("   scopes: {}", s.join(", ")),
            None => println!("   scopes: not listed (a fine-grained token)"),
        }
        println!("   expires: {}", expiry_text(info));
        if info.api_url != github::DEFAULT_API_URL {
            println!("   API: {}", info.api_url);
        }
    }
    for (provider, var) in &env {
        any = true;
        println!(
            "{provider}: from the environment ({var}), not stored; it wins over a stored token"
        );
    }
    if !any {
        println!("No credentials stored. Log in with 'ghostie-fs login github' or 'ghostie-fs login dropbox --app-key KEY'.");
    }
    if let Some(r) = store.remembered() {
        println!("{}", remembered_text(store.place(), r));
    }
    Ok(0)
}

fn expiry_text(info: &StoredInfo) -> String {
    match (&info.expires, info.expires_at) {
        (None, _) => "never".into(),
        (Some(text), Some(at)) if at <= now() => format!("{text} (expired)"),
        (Some(text), Some(at)) if at - now() <= EXPIRY_WARNING_SECS => {
            format!(
                "{text} ⚠️ in {} days: make a new token soon",
                (at - now()) / 86_400
            )
        }
        (Some(text), _) => text.clone(),
    }
}

fn remembered_text(place: Option<Place>, r: &credentials::RememberedInfo) -> String {
    let where_ = place.map(Place::describe).unwrap_or_default();
    match r.until {
        Some(u) if u <= now() => format!(
            "Unlock: the key remembered in {where_} expired at {}; the passphrase is needed",
            when(u)
        ),
        Some(u) => format!(
            "Unlock: this device's key is remembered in {where_} until {}",
            when(u)
        ),
        None => {
            format!("Unlock: this device's key is remembered in {where_} until 'ghostie-fs forget'")
        }
    }
}

/// Each provider's token variable that is set, for the API its stored credential
/// names (or the provider's default).
fn env_in_use(store: &Credentials) -> Vec<(&'static str, &'static str)> {
    Provider::ALL
        .iter()
        .filter_map(|p| {
            let api = store
                .info(*p)
                .map(|i| i.api_url.clone())
                .unwrap_or_else(|| p.default_api_url().to_owned());
            env_secret(*p, &api).map(|(var, _)| (p.name(), var))
        })
        .collect()
}

/// The credentials part of `status --json` and `login --status --json`: never a
/// secret; a record that cannot be read is said, not fatal.
pub fn credentials_json(home: &Home) -> Result<serde_json::Value, CliError> {
    let store = match Credentials::open(home) {
        Ok(s) => s,
        Err(e) => return Ok(serde_json::json!({ "error": e.to_string() })),
    };
    let list: Vec<_> = store
        .list()
        .map(|(provider, info)| {
            serde_json::json!({
                "provider": provider,
                "account": info.account,
                "kept_in": store.place().map(Place::name),
                "scopes": info.scopes,
                "expires": info.expires,
                "expires_soon": info.expires_at.is_some_and(|at| at <= now() + EXPIRY_WARNING_SECS),
                "api_url": info.api_url,
                "app_key": info.client_id,
                "stored_at": when(info.stored_at),
            })
        })
        .collect();
    let env: Vec<_> = env_in_use(&store)
        .into_iter()
        .map(|(provider, var)| serde_json::json!({"provider": provider, "variable": var}))
        .collect();
    let remembered = store.remembered().map(|r| {
        serde_json::json!({
            "kept_in": store.place().map(Place::name),
            "since": when(r.since),
            "until": r.until.map(when),
            "expired": r.until.is_some_and(|u| u <= now()),
        })
    });
    Ok(serde_json::json!({
        "store": store.place().map(Place::name),
        "credentials": list,
        "environment": env,
        "remembered": remembered,
    }))
}

/// The credentials lines of `status`: what is stored, what expires soon.
pub fn status_lines(home: &Home) -> Vec<String> {
    let Ok(store) = Credentials::open(home) else {
        return vec!["Credentials: keys/credentials.json cannot be read".into()];
    };
    let mut lines = Vec::new();
    for (provider, info) in store.list() {
        let place = store.place().map(Place::describe).unwrap_or_default();
        lines.push(match &info.client_id {
            Some(client) if provider == "google" => format!(
                "Credentials: {provider} ('{}', OAuth client {client}, in {place}), renewed as needed{}",
                info.account,
                match info.expires {
                    Some(_) => format!(
                        "; the login ends {} (a client in \"testing\" status)",
                        expiry_text(info)
                    ),
                    None => String::new(),
                }
            ),
            Some(app) => format!(
                "Credentials: {provider} ('{}', app key {app}, in {place}), renewed as needed",
                info.account
            ),
            None => format!(
                "Credentials: {provider} ('{}', in {place}), expires {}",
                info.account,
                expiry_text(info)
            ),
        });
    }
    for (provider, var) in env_in_use(&store) {
        lines.push(format!("Credentials: {provider} from {var} (environment)"));
    }
    if let Some(r) = store.remembered() {
        lines.push(remembered_text(store.place(), r));
    }
    lines
}

pub fn logout(cli: &Cli, home: Home, pass: &CliPassphrase, args: &LogoutArgs) -> CmdResult {
    let provider = provider_of(&args.provider)?;
    let mut store = Credentials::open(&home)?;
    let api = store
        .info(provider)
        .map(|i| i.api_url.clone())
        .unwrap_or_else(|| provider.default_api_url().to_owned());
    let env = env_secret(provider, &api);
    let Some(info) = store.info(provider).cloned() else {
        say!(cli, "No {} credential is stored here.", provider.name());
        if let Some((var, _)) = env {
            eprintln!("⚠️  {var} is set: unset it to stop ghostie-fs using that token.");
        }
        return Ok(0);
    };
    let key = match store.place() {
        Some(place) => key_if_needed(&home, place, pass)?,
        None => None,
    };
    let mut revoked = false;
    if provider == Provider::Google {
        if !args.keep_at_provider {
            revoked = super::login_google::revoke_stored(&store, &info, key.as_ref())?;
        }
        store.remove(provider, key.as_ref())?;
        let tail = if revoked {
            "removed here and revoked at Google"
        } else {
            "removed here"
        };
        say!(
            cli,
            "✅ Logged out of Google Drive ('{}'): the login is {tail}.",
            info.account
        );
        return Ok(0);
    }
    if provider == Provider::Dropbox {
        if !args.keep_at_provider {
            revoked = super::login_dropbox::revoke_stored(&mut store, &info, key.as_ref())?;
        }
        store.remove(provider, key.as_ref())?;
        let tail = if revoked {
            "removed here and revoked at Dropbox"
        } else {
            "removed here"
        };
        say!(
            cli,
            "✅ Logged out of Dropbox ('{}'): the login is {tail}.",
            info.account
        );
        return Ok(0);
    }
    if !args.keep_at_provider {
        match store.secret(provider, key.as_ref())? {
            Some(token) => match github::revoke(&info.api_url, &token) {
                Ok(()) => revoked = true,
                Err(e) => eprintln!(
                    "⚠️  Could not revoke the token at GitHub ({e}); revoke it at https://github.com/settings/tokens."
                ),
            },
            None => eprintln!("⚠️  The stored token was already gone from its store."),
        }
    }
    store.remove(provider, key.as_ref())?;
    let tail = if revoked {
        "removed here and revoked at GitHub"
    } else {
        "removed here"
    };
    say!(
        cli,
        "✅ Logged out of GitHub ('{}'): the token is {tail}.",
        info.account
    );
    if let Some((var, _)) = env {
        eprintln!("⚠️  {var} is still set: unset it to stop ghostie-fs using that token.");
    }
    Ok(0)
}

/// "90s", "30m", "12h", "7d", "2w" in seconds.
fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(unit_secs).filter(|s| *s > 0)
}

pub fn remember(cli: &Cli, home: Home, pass: &CliPassphrase, args: &RememberArgs) -> CmdResult {
    let until = match &args.duration {
        None => None,
        Some(text) => {
            let secs = parse_duration(text).ok_or_else(|| {
                CliError::new(
                    EXIT_USAGE,
                    format!("'{text}' is not a duration: use e.g. 90m, 12h, 30d or 2w."),
                )
            })?;
            Some(now().saturating_add(secs))
        }
    };
    // The passphrase is asked even when a key is remembered already: remembering
    // is a decision the owner makes, not one a remembered key can renew by itself.
    let given = given(pass);
    let passphrase = match given {
        Some(p) => p,
        None => pass.existing()?,
    };
    let (master, vault_id) = credentials::unlock_master(&home, Some(passphrase), &ask(pass))?;
    let place = credentials::remember(&home, &vault_id, &master, until)?;
    let how_long = match until {
        Some(u) => format!("until {}", when(u)),
        None => "until 'ghostie-fs forget'".into(),
    };
    say!(
        cli,
        "✅ This device's key is kept in {} {how_long}: push, pull, sync, mount and status need no passphrase here.",
        place.describe()
    );
    if place == Place::File {
        say!(
            cli,
            "   Its unlock key is outside the home, in {}: a copy of the home alone cannot use it.",
            credentials::unlock_key_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        );
    }
    Ok(0)
}

pub fn forget(cli: &Cli, home: Home) -> CmdResult {
    if credentials::forget(&home)? {
        say!(
            cli,
            "✅ Forgotten: commands on this device ask for the passphrase again."
        );
    } else {
        say!(cli, "Nothing was remembered on this device.");
    }
    Ok(0)
}

/// Whether this device's remembered key can be had now, so a background mount's
/// child can unlock without a passphrase handed over.
pub fn remembered_usable(home: &Home) -> bool {
    let Ok(config) = home.load_config() else {
        return false;
    };
    matches!(
        credentials::remembered_key(home, &config.vault_id),
        Ok(Remembered::Key(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("12h"), Some(43_200));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("2w"), Some(1_209_600));
        assert_eq!(parse_duration("2 days"), Some(172_800));
        assert_eq!(parse_duration("0d"), None);
        assert_eq!(parse_duration("12"), None);
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("5y"), None);
    }
}
