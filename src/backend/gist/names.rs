//! What GitHub sees of a vault's layout: gist descriptions and file names.
//!
//! A key `{prefix}/{group}/{rest}` lives in a gist of its group, found by the
//! description `ghostie-fs v1 {code} {group} {n}`: `code` stands for the prefix (a
//! name the owner may have chosen) without showing it, `group` is `global` or a
//! device's random id, `n` counts the group's gists. The file name is `rest` with
//! `/` as `~` (a gist file name cannot hold `/`).

use sha2::{Digest, Sha256};

use crate::backend::{BackendError, BackendResult};

const DESCRIPTION: &str = "ghostie-fs v1";

/// The parts of a key: prefix, group and the file's place inside the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts<'a> {
    pub prefix: &'a str,
    pub group: &'a str,
    pub rest: &'a str,
}

pub fn split_key(key: &str) -> BackendResult<KeyParts<'_>> {
    let mut parts = key.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(prefix), Some(group), Some(rest))
            if !prefix.is_empty() && !group.is_empty() && !rest.is_empty() =>
        {
            Ok(KeyParts {
                prefix,
                group,
                rest,
            })
        }
        _ => Err(BackendError::Invalid(format!(
            "the key {key} has no group for a gist"
        ))),
    }
}

/// The prefix's stand-in in descriptions: the same on every device, telling
/// nothing of the name.
pub fn prefix_code(prefix: &str) -> String {
    let digest = Sha256::digest(format!("ghostie-fs gist prefix\0{prefix}").as_bytes());
    hex::encode(&digest[..8])
}

pub fn description(code: &str, group: &str, index: u32) -> String {
    format!("{DESCRIPTION} {code} {group} {index}")
}

/// `(code, group, index)` of a description this store wrote, None for any other gist.
pub fn parse_description(text: &str) -> Option<(String, String, u32)> {
    let rest = text.strip_prefix(DESCRIPTION)?.strip_prefix(' ')?;
    let mut words = rest.split(' ');
    let (code, group, index) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || code.is_empty() || group.is_empty() {
        return None;
    }
    Some((code.to_owned(), group.to_owned(), index.parse().ok()?))
}

pub fn file_name(rest: &str) -> String {
    rest.replace('/', "~")
}

pub fn rest_of(file_name: &str) -> String {
    file_name.replace('~', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_round_trip_and_hide_the_prefix() {
        let code = prefix_code("my-private-vault");
        let d = description(&code, "0193abcd", 2);
        assert!(!d.contains("my-private-vault"));
        assert_eq!(parse_description(&d), Some((code, "0193abcd".into(), 2)));
        assert_eq!(parse_description("ghostie-fs v1 x"), None);
        assert_eq!(parse_description("notes for later"), None);
    }

    #[test]
    fn keys_split_into_prefix_group_and_file() {
        let k = split_key("ghostie/dev1/log/0001.enc").unwrap();
        assert_eq!(
            (k.prefix, k.group, k.rest),
            ("ghostie", "dev1", "log/0001.enc")
        );
        assert_eq!(rest_of(&file_name(k.rest)), k.rest);
        assert!(split_key("ghostie/dev1").is_err());
        assert!(split_key("/a/b").is_err());
    }
}
