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
/// `None` when nothing was found, so the caller keeps the bytes it has. Bytes that
/// are not UTF-8 (a file in another encoding) stay as they are, and the text
/// between them is looked at as text.
pub fn pseudonymize(content: &[u8], rules: &Rules, key: &PseudonymKey) -> Option<Pseudonymized> {
    let mut view: Vec<u8> = Vec::with_capacity(content.len() + 64);
    let mut originals = BTreeMap::new();
    for chunk in content.utf8_chunks() {
        let text = chunk.valid();
        let mut at = 0;
        for (start, end, kind) in sensitive_spans(text, rules) {
            let value = &text[start..end];
            let token = key.token(&kind, value);
            view.extend_from_slice(&text.as_bytes()[at..start]);
            view.extend_from_slice(token.as_bytes());
            originals.insert(token, value.to_owned());
            at = end;
        }
        view.extend_from_slice(&text.as_bytes()[at..]);
        view.extend_from_slice(chunk.invalid());
    }
    (!originals.is_empty()).then_some(Pseudonymized { view, originals })
}

/// `view` with every token `lookup` knows replaced by its value; unknown tokens
/// stay as they are.
pub fn restore<'a>(view: &[u8], lookup: impl Fn(&str) -> Option<&'a str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(view.len());
    let mut at = 0;
    for (start, end) in token_spans(view) {
        let token = std::str::from_utf8(&view[start..end]).unwrap_or_default();
        if let Some(value) = lookup(token) {
            out.extend_from_slice(&view[at..start]);
            out.extend_from_slice(value.as_bytes());
            at = end;
        }
    }
    out.extend_from_slice(&view[at..]);
    out
}

/// The tokens `view` holds, each once.
pub fn tokens_in(view: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = token_spans(view)
        .into_iter()
        .filter_map(|(s, e)| std::str::from_utf8(&view[s..e]).ok().map(str::to_owned))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The kind a token names (`email` of `⟦email:…⟧`).
pub fn kind_of(token: &str) -> Option<&str> {
    token.strip_prefix(OPEN)?.split_once(':').map(|(k, _)| k)
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Where tokens stand in `bytes`: `⟦kind:hex⟧` with a kind of rule-name
/// characters and exactly [`TOKEN_HEX`] lowercase hex digits.
fn token_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let (open, close) = (OPEN.as_bytes(), CLOSE.as_bytes());
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = find_bytes(&bytes[from..], open) {
        let start = from + found;
        let inner = start + open.len();
        from = inner;
        // A token is short: its close comes within the longest kind and hash.
        let window = &bytes[inner..bytes.len().min(inner + 64)];
        let Some(close_at) = find_bytes(window, close) else {
            continue;
        };
        let Ok(body) = std::str::from_utf8(&window[..close_at]) else {
            continue;
        };
        let Some((kind, hash)) = body.split_once(':') else {
            continue;
        };
        if super::rules::is_kind_name(kind)
            && hash.len() == TOKEN_HEX
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            let end = inner + close_at + close.len();
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
    let tokens = token_spans(text.as_bytes());
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
    // From one quote to the next, skipping what an escape protects (the text is
    // valid JSON: a quote outside a string opens one).
    while let Some(open) = memchr::memchr(b'"', &bytes[i..]) {
        let start = i + open + 1;
        i = start;
        loop {
            match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                Some(at) if bytes[i + at] == b'\\' => i = (i + at + 2).min(bytes.len()),
                Some(at) => {
                    i += at;
                    break;
                }
                None => {
                    i = bytes.len();
                    break;
                }
            }
        }
        let end = i.min(bytes.len());
        out.push((start, end));
        i = (end + 1).min(bytes.len());
        if end >= bytes.len() {
            break;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PseudonymKey {
        PseudonymKey::new(&[n; 32])
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
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
    fn string_insides_skip_what_escapes_protect() {
        let text = r#"{"a\"b": "x\\", "c": ["d\"\\\"e", ""], "f": 1}"#;
        let insides: Vec<&str> = json_string_insides(text)
            .unwrap()
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(insides, [r#"a\"b"#, r#"x\\"#, "c", r#"d\"\\\"e"#, "", "f"]);
        assert!(json_string_insides("{\"a\": ").is_none());
        assert!(json_string_insides("plain text").is_none());
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
        // Text in another encoding: the values between its bytes are still found,
        // and the bytes come back exactly.
        let latin1 = b"Caf\xe9: anna@example.org \xff".to_vec();
        let p = pseudonymize(&latin1, &all(), &key(1)).unwrap();
        assert!(!contains(&p.view, b"anna@example.org"));
        assert!(p.view.starts_with(b"Caf\xe9: ") && p.view.ends_with(b" \xff"));
        let back = restore(&p.view, |t| p.originals.get(t).map(String::as_str));
        assert_eq!(back, latin1);
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
