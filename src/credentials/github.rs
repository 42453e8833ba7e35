//! GitHub tokens: checked against the API before they are stored, revoked at logout.
//! The client itself is the backend's (`backend::github`), shared with the Gist store.

pub use crate::backend::github::{
    check_api_url, excess_scopes, is_github_com, parse_expiry, GithubError, TokenInfo,
    DEFAULT_API_URL, NEEDED_SCOPE,
};

use super::Secret;
use crate::backend::github::GithubApi;

/// Who the token belongs to and what it may do, from `GET /user`.
pub fn check(api_url: &str, token: &Secret) -> Result<TokenInfo, GithubError> {
    GithubApi::new(api_url)?.check_token(token.expose())
}

/// Revokes the token at GitHub.
pub fn revoke(api_url: &str, token: &Secret) -> Result<(), GithubError> {
    GithubApi::new(api_url)?.revoke(token.expose())
}
