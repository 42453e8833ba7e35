//! Pseudonyms: a memory's sensitive values replaced by stable tokens
//! (`⟦email:7f3a9c01d2⟧`), and the tokens replaced by their values again where the
//! values are known.
//!
//! A token is a keyed hash of its kind and value, so the same value gives the same
//! token in every memory and on every device of one vault (search works on an
//! untrusted device) and a different one in another vault. Ten hex digits (40 bits)
//! keep two values of a vault from sharing a token: among a million values the odds
//! of any collision are under one in two thousand.
//!
//! Exactness is the rule: a value is replaced only where its bytes stand, and
//! [`restore`] puts exactly those bytes back, so a memory read through a trusted
//! device is byte for byte what was written. In a JSON document only the insides
//! of string literals are looked at, and no value spanning an escape is taken, so
//! the pseudonymized document is still valid JSON with the same shape.

use std::collections::BTreeMap;

use ring::hmac;

use super::detect::{find, Detector};
use super::rules::Rules;

/// Hex digits of a token's hash.
const TOKEN_HEX: usize = 10;
const OPEN: &str = "⟦";
const CLOSE: &str = "⟧";

/// The vault's key for pseudonyms: every device of the vault holds it (untrusted
/// ones make pseudonyms for what they write too), no other vault does.
pub struct PseudonymKey(hmac::Key);

impl PseudonymKey {
    pub fn new(secret: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The token standing for `value` found as `kind`.
    pub fn token(&self, kind: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(kind.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        let tag = ctx.sign();
        let hash = hex::encode(&tag.as_ref()[..TOKEN_HEX / 2]);
        format!("{OPEN}{kind}:{hash}{CLOSE}")
    }
}

/// A memory with its sensitive values replaced, and what each token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pseudonymized {
    pub view: Vec<u8>,
    /// Token → the exact bytes it replaced.
    pub originals: BTreeMap<String, String>,
}

/// `content` with every sensitive value the rules find replaced by its token;
/// `None` when nothing was found (or the content is not text), so the caller keeps
/// the bytes it has.
pub fn pseudonymize(content: &[u8], rules: &Rules, key: &PseudonymKey) -> Option<Pseudonymized> {
    let text = std::str::from_utf8(content).ok()?;
    let spans = sensitive_spans(text, rules);
    if spans.is_empty() {
        return None;
    }
    let mut view = String::with_capacity(text.len());
    let mut originals = BTreeMap::new();
    let mut at = 0;
    for (start, end, kind) in spans {
        let value = &text[start..end];
        let token = key.token(&kind, value);
        view.push_str(&text[at..start]);
        view.push_str(&token);
        originals.insert(token, value.to_owned());
        at = end;
    }
    view.push_str(&text[at..]);
    Some(Pseudonymized {
        view: view.into_bytes(),
        originals,
    })
}

/// `view` with every token `lookup` knows replaced by its value; unknown tokens
/// stay as they are.
pub fn restore<'a>(view: &[u8], lookup: impl Fn(&str) -> Option<&'a str>) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(view) else {
        return view.to_vec();
    };
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in token_spans(text) {
        if let Some(value) = lookup(&text[start..end]) {
            out.push_str(&text[at..start]);
            out.push_str(value);
            at = end;
        }
    }
    if at == 0 {
        return view.to_vec();
    }
    out.push_str(&text[at..]);
    out.into_bytes()
}

/// The tokens `view` holds, each once.
pub fn tokens_in(view: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(view) else {
        return Vec::new();
    };
    let mut out: Vec<String> = token_spans(text)
        .into_iter()
        .map(|(s, e)| text[s..e].to_owned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Where tokens stand in `text`: `⟦kind:hex⟧` with a kind of rule-name
/// characters and exactly [`TOKEN_HEX`] lowercase hex digits.
fn token_spans(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(OPEN) {
        let start = from + found;
        let inner = start + OPEN.len();
        from = inner;
        let Some(close) = text[inner..].find(CLOSE) else {
            break;
        };
        let body = &text[inner..inner + close];
        let Some((kind, hash)) = body.split_once(':') else {
            continue;
        };
        if super::rules::is_kind_name(kind)
            && hash.len() == TOKEN_HEX
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            let end = inner + close + CLOSE.len();
            out.push((start, end));
            from = end;
        }
    }
    out
}

/// The spans of `text` to replace, with the kind each is, in order and never
/// overlapping each other or a token already there.
fn sensitive_spans(text: &str, rules: &Rules) -> Vec<(usize, usize, String)> {
    let regions: Vec<(usize, usize)> = match json_string_insides(text) {
        Some(insides) => insides,
        None => vec![(0, text.len())],
    };
    let pointed = rules.pointed_values(text);
    let tokens = token_spans(text);
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    for (start, end) in regions {
        let inside = &text[start..end];
        if inside.is_empty() {
            continue;
        }
        let mut found: Vec<(usize, usize, String)> = Vec::new();
        // A value a JSON pointer names comes first, wherever it stands (a name
        // is as sensitive in a sentence as in its own field), whatever a detector
        // would make of its parts.
        for (value, kind) in &pointed {
            for (s, _) in inside.match_indices(value.as_str()) {
                found.push((s, s + value.len(), kind.clone()));
            }
        }
        for (kind, re) in rules.patterns() {
            for m in re.find_iter(inside) {
                if !m.is_empty() {
                    found.push((m.start(), m.end(), kind.to_owned()));
                }
            }
        }
        let detectors: &[Detector] = rules.detectors();
        for f in find(inside, detectors) {
            found.push((f.start, f.end, f.detector.name().to_owned()));
        }
        for (s, e, kind) in found {
            let (s, e) = (start + s, start + e);
            let clash = spans.iter().any(|(a, b, _)| s < *b && *a < e)
                || tokens.iter().any(|(a, b)| s < *b && *a < e);
            // A value across an escape would lose the escape's meaning once moved
            // into a token and back: left alone.
            if !clash && !text[s..e].contains('\\') {
                spans.push((s, e, kind));
            }
        }
    }
    spans.sort_by_key(|(s, _, _)| *s);
    spans
}

/// For a JSON document, the byte ranges inside its string literals (quotes left
/// out); `None` when `text` is not JSON.
fn json_string_insides(text: &str) -> Option<Vec<(usize, usize)>> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return None;
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            let start = i + 1;
            i = start;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            out.push((start, i.min(bytes.len())));
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PseudonymKey {
        PseudonymKey::new(&[n; 32])
    }

    fn all() -> Rules {
        Rules::with_detectors(Detector::ALL.to_vec())
    }

    #[test]
    fn a_json_memory_stays_json_and_comes_back_byte_for_byte() {
        let memory =
            br#"{"note":"mail anna@example.org or call +44 20 7946 0958","n":4111111111111111,
  "card":"4111 1111 1111 1111", "esc":"a \"quoted\" bob@example.com"}"#;
        let p = pseudonymize(memory, &all(), &key(1)).unwrap();
        let view = String::from_utf8(p.view.clone()).unwrap();
        serde_json::from_str::<serde_json::Value>(&view).unwrap();
        assert!(!view.contains("anna@example.org"), "{view}");
        assert!(!view.contains("7946"), "{view}");
        assert!(!view.contains("4111 1111"), "{view}");
        // Numbers outside strings are not text: left as they are.
        assert!(view.contains("4111111111111111"), "{view}");
        assert!(!view.contains("bob@example.com"), "{view}");
        assert_eq!(p.originals.len(), 4, "{:?}", p.originals);
        let back = restore(&p.view, |t| p.originals.get(t).map(String::as_str));
        assert_eq!(back, memory.to_vec());
    }

    #[test]
    fn the_same_value_gives_the_same_token_in_one_vault_and_another_in_the_next() {
        let a = pseudonymize(b"to anna@example.org", &all(), &key(1)).unwrap();
        let b = pseudonymize(b"{\"x\":\"anna@example.org\"}", &all(), &key(1)).unwrap();
        let other = pseudonymize(b"to anna@example.org", &all(), &key(2)).unwrap();
        let token = |p: &Pseudonymized| p.originals.keys().next().unwrap().clone();
        assert_eq!(token(&a), token(&b));
        assert_ne!(token(&a), token(&other));
        assert!(token(&a).starts_with("⟦email:") && token(&a).ends_with('⟧'));
        assert_eq!(tokens_in(&a.view), vec![token(&a)]);
    }

    #[test]
    fn tokens_already_there_are_kept_and_unknown_tokens_survive_a_restore() {
        let first = pseudonymize(b"anna@example.org and 10.1.2.3", &all(), &key(1)).unwrap();
        // An untrusted device keeps the tokens and adds a value of its own.
        let mut edited = first.view.clone();
        edited.extend_from_slice(b" and bob@example.net");
        let second = pseudonymize(&edited, &all(), &key(1)).unwrap();
        assert_eq!(second.originals.len(), 1, "{:?}", second.originals);
        let mut known = first.originals.clone();
        known.extend(second.originals.clone());
        let back = restore(&second.view, |t| known.get(t).map(String::as_str));
        assert_eq!(back, b"anna@example.org and 10.1.2.3 and bob@example.net");
        let partial = restore(&second.view, |t| first.originals.get(t).map(String::as_str));
        assert!(String::from_utf8(partial).unwrap().contains("⟦email:"));
    }

    #[test]
    fn nothing_found_and_binary_content_are_left_alone() {
        assert!(pseudonymize(
            b"{\"mood\":\"calm\",\"day\":\"2025-06-28\"}",
            &all(),
            &key(1)
        )
        .is_none());
        assert!(pseudonymize(&[0xff, 0xfe, b'a', b'@'], &all(), &key(1)).is_none());
        assert!(pseudonymize(b"anna@example.org", &Rules::default(), &key(1)).is_none());
        assert_eq!(restore(b"\xff\xfe", |_| Some("x")), b"\xff\xfe".to_vec());
        // Look-alikes of tokens are not tokens.
        for fake in [
            "⟦email:123⟧",
            "⟦Email:0123456789⟧",
            "⟦email:012345678g⟧",
            "⟦email0123456789⟧",
        ] {
            assert!(tokens_in(fake.as_bytes()).is_empty(), "{fake}");
        }
    }

    #[test]
    fn patterns_and_pointers_of_the_rules_are_applied() {
        let rules = Rules::parse(
            r#"
detectors = ["email"]
[[pattern]]
name = "ticket"
regex = "TCK-[0-9]{4}"
[[pointer]]
name = "person"
pointer = "/context/person"
"#,
        )
        .unwrap();
        let memory = br#"{"context":{"person":"Anna Smith"},"log":"Anna Smith opened TCK-1234","n":"TCK-12"}"#;
        let p = pseudonymize(memory, &rules, &key(1)).unwrap();
        let view = String::from_utf8(p.view.clone()).unwrap();
        assert!(!view.contains("Anna Smith"), "{view}");
        assert!(view.contains("⟦person:"), "{view}");
        assert!(view.contains("⟦ticket:"), "{view}");
        assert!(view.contains("TCK-12\""), "{view}");
        let back = restore(&p.view, |t| p.originals.get(t).map(String::as_str));
        assert_eq!(back, memory.to_vec());
    }
}
