//! Keys as Dropbox paths. Dropbox compares paths without case, so two keys that
//! differ only in case would be one file there: every upper-case letter is written
//! as `~` and its lower-case form (`~` itself as `~~`), which keeps paths distinct
//! and all in lower case, so `path_lower` in a listing is the path as written.

use crate::backend::{BackendError, BackendResult};

/// The path of `key` inside the app folder.
pub fn path_of(key: &str) -> BackendResult<String> {
    if key.is_empty() || key.starts_with('/') || key.ends_with('/') || key.contains("//") {
        return Err(BackendError::Invalid(format!(
            "the key {key:?} cannot be a Dropbox path"
        )));
    }
    let mut path = String::with_capacity(key.len() + 1);
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~~"),
            c if c.is_uppercase() => {
                path.push('~');
                path.extend(c.to_lowercase());
            }
            c => path.push(c),
        }
    }
    Ok(path)
}

/// The key a path of a listing (`path_lower`) stands for; None for what no key of
/// this store could have made (a file the owner put in the app folder by hand).
pub fn key_of(path_lower: &str) -> Option<String> {
    let rest = path_lower.strip_prefix('/')?;
    let mut key = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next()? {
                '~' => key.push('~'),
                next => key.extend(next.to_uppercase()),
            }
        } else {
            key.push(c);
        }
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_differ_in_case_stay_apart_and_come_back() {
        for key in ["ghostie/global/keyring.json", "Vault/A~b/x", "a/ÉtÉ"] {
            let path = path_of(key).unwrap();
            assert_eq!(path, path.to_lowercase(), "{path}");
            assert_eq!(key_of(&path).as_deref(), Some(key));
        }
        assert_ne!(path_of("v/A").unwrap(), path_of("v/a").unwrap());
        assert!(path_of("").is_err());
        assert!(path_of("a//b").is_err());
        assert_eq!(key_of("/dangling~"), None);
    }
}
