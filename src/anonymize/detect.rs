//! The built-in detectors of sensitive values in a memory's text: email addresses,
//! phone numbers, card numbers (Luhn and a card network's prefix), IBANs (their
//! country's length and the mod-97 check), API keys and tokens (well-known prefixes,
//! and long high-entropy strings), IP addresses. Hand-written scanners rather than
//! regular expressions: each needs a check a pattern cannot express (a checksum, an
//! entropy, a date that must not be taken for a phone number), and they run over
//! every memory written, so they stay linear and allocation-free until they find
//! something.

use std::net::{Ipv4Addr, Ipv6Addr};

/// What a detector looks for. The names are the ones `anonymize on --detectors`
/// takes and pseudonyms carry (`⟦email:7f3a9c⟧`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    Email,
    Phone,
    Card,
    Iban,
    Secret,
    Ip,
}

impl Detector {
    pub const ALL: [Detector; 6] = [
        Detector::Secret,
        Detector::Card,
        Detector::Iban,
        Detector::Email,
        Detector::Phone,
        Detector::Ip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Card => "card",
            Detector::Iban => "iban",
            Detector::Secret => "secret",
            Detector::Ip => "ip",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// One sensitive value found: `text[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub start: usize,
    pub end: usize,
    pub detector: Detector,
}

/// Every sensitive value `text` holds, by the detectors in `enabled`, in order and
/// never overlapping: where two detectors claim the same bytes, the first of
/// [`Detector::ALL`] wins (a token that is also a long number is a secret first).
pub fn find(text: &str, enabled: &[Detector]) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    let seen = Summary::of(text.as_bytes());
    for detector in Detector::ALL {
        if !enabled.contains(&detector) || !seen.may_hold(detector) {
            continue;
        }
        for (start, end) in scan(detector, text) {
            let overlaps = found.iter().any(|f| start < f.end && f.start < end);
            if !overlaps {
                found.push(Finding {
                    start,
                    end,
                    detector,
                });
            }
        }
    }
    found.sort_by_key(|f| f.start);
    found
}

/// What one pass over a text saw: the bytes every detector needs at least one of,
/// and the longest run a key could be. A detector whose bytes are not there is not
/// run (prose without a digit costs this pass and nothing more).
struct Summary {
    kinds: u8,
    longest_token: usize,
}

const DIGIT: u8 = 1;
const AT: u8 = 2;
const COLON: u8 = 4;
const UPPER: u8 = 8;

/// Each byte's kind for [`Summary`].
const KIND: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_digit() {
            DIGIT
        } else if c == b'@' {
            AT
        } else if c == b':' {
            COLON
        } else if c.is_ascii_uppercase() {
            UPPER
        } else {
            0
        };
        b += 1;
    }
    table
};

impl Summary {
    fn of(bytes: &[u8]) -> Self {
        let mut kinds = 0u8;
        let mut longest_token = 0usize;
        let mut run = 0usize;
        for &b in bytes {
            kinds |= KIND[usize::from(b)];
            run = if TOKEN_BYTE.has(b) { run + 1 } else { 0 };
            longest_token = longest_token.max(run);
        }
        Self {
            kinds,
            longest_token,
        }
    }

    fn may_hold(&self, detector: Detector) -> bool {
        let has = |k: u8| self.kinds & k != 0;
        match detector {
            Detector::Email => has(AT),
            Detector::Phone | Detector::Card => has(DIGIT),
            Detector::Iban => has(UPPER) && has(DIGIT),
            // The shortest key any rule takes (see `secrets`).
            Detector::Secret => self.longest_token >= 20,
            Detector::Ip => has(DIGIT) || has(COLON),
        }
    }
}

fn scan(detector: Detector, text: &str) -> Vec<(usize, usize)> {
    match detector {
        Detector::Email => emails(text),
        Detector::Phone => phones(text),
        Detector::Card => cards(text),
        Detector::Iban => ibans(text),
        Detector::Secret => secrets(text),
        Detector::Ip => ips(text),
    }
}

/// A set of bytes as a table: one lookup per byte of every memory scanned.
struct Bytes([bool; 256]);

impl Bytes {
    /// Digits (and letters, with `letters`), plus `extra`.
    const fn of(digits: bool, letters: bool, hex: bool, extra: &[u8]) -> Self {
        let mut set = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            set[b] = (digits && c.is_ascii_digit())
                || (letters && c.is_ascii_alphabetic())
                || (hex && c.is_ascii_hexdigit());
            b += 1;
        }
        let mut i = 0;
        while i < extra.len() {
            set[extra[i] as usize] = true;
            i += 1;
        }
        Self(set)
    }

    fn has(&self, b: u8) -> bool {
        self.0[usize::from(b)]
    }
}

const PHONE_PART: Bytes = Bytes::of(true, false, false, b" -.()/+");
const CARD_PART: Bytes = Bytes::of(true, false, false, b" -");
const TOKEN_BYTE: Bytes = Bytes::of(true, true, false, b"_-./+");
const IPV4_PART: Bytes = Bytes::of(true, false, false, b".");
const IPV6_PART: Bytes = Bytes::of(false, false, true, b":");

/// Runs of bytes for which `inside` holds, as (start, end), found lazily: the
/// detectors run over every memory written, and most runs are words they skip.
fn runs<'a>(
    text: &'a str,
    inside: impl Fn(u8) -> bool + 'a,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    runs_around(text, |_| true, inside)
}

/// The runs of `inside` bytes that hold at least one `anchor` byte (itself an
/// `inside` byte): the scan jumps from anchor to anchor, so text without any (a
/// sentence without digits, for the number detectors) costs one quick pass.
fn runs_around<'a>(
    text: &'a str,
    anchor: impl Fn(u8) -> bool + 'a,
    inside: impl Fn(u8) -> bool + 'a,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let bytes = text.as_bytes();
    let mut from = 0;
    std::iter::from_fn(move || {
        let found = from
            + bytes[from..]
                .iter()
                .position(|b| anchor(*b) && inside(*b))?;
        let mut start = found;
        while start > from && inside(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = found + 1;
        while end < bytes.len() && inside(bytes[end]) {
            end += 1;
        }
        from = end;
        Some((start, end))
    })
}

/// Whether byte `i` (if any) belongs to a word or a longer number: a value glued to
/// it is part of something else (an id, a version, a word).
fn glued(bytes: &[u8], i: usize) -> bool {
    i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_')
}

/// The number inside a run of digits and separators: from the first byte that may
/// begin one to the last digit, unless it is glued to a word or a longer number.
fn number_in(
    bytes: &[u8],
    (mut start, mut end): (usize, usize),
    may_begin: impl Fn(u8) -> bool,
) -> Option<(usize, usize)> {
    while start < end && !may_begin(bytes[start]) {
        start += 1;
    }
    while end > start && !bytes[end - 1].is_ascii_digit() {
        end -= 1;
    }
    let inside_something = (start > 0 && glued(bytes, start - 1)) || glued(bytes, end);
    (start < end && !inside_something).then_some((start, end))
}

fn emails(text: &str) -> Vec<(usize, usize)> {
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (at, _) in text.match_indices('@') {
        let mut start = at;
        while start > 0 && local(bytes[start - 1]) {
            start -= 1;
        }
        // A dot may not start the address (a sentence's full stop before it).
        while start < at && bytes[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && domain(bytes[end]) {
            end += 1;
        }
        // A full stop after the address ends the sentence, not the domain.
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let host = &text[at + 1..end];
        let labels: Vec<&str> = host.split('.').collect();
        let tld_ok = labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_alphabetic()));
        let labels_ok = labels.len() >= 2
            && labels
                .iter()
                .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
        if start < at && tld_ok && labels_ok {
            out.push((start, end));
        }
    }
    out
}

/// Whether a run of digits and separators reads as a date or a time (2024-06-28,
/// 28.06.2024, 12:30:00), which is never a phone number.
fn looks_like_date(candidate: &str) -> bool {
    let groups: Vec<&str> = candidate
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let seps: String = candidate
        .chars()
        .filter(|c| !c.is_ascii_digit() && *c != ' ')
        .collect();
    let same_sep = seps.chars().all(|c| seps.starts_with(c));
    same_sep
        && matches!(seps.chars().next(), Some('-' | '/' | '.' | ':'))
        && (lens == [4, 2, 2] || lens == [2, 2, 4] || lens == [2, 2, 2] || lens == [4, 2, 2, 2])
}

fn phones(text: &str) -> Vec<(usize, usize)> {
    let part = |b: u8| PHONE_PART.has(b);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for run in runs_around(text, |b| b.is_ascii_digit(), part) {
        let Some((start, end)) =
            number_in(bytes, run, |b| b.is_ascii_digit() || b"+(".contains(&b))
        else {
            continue;
        };
        let candidate = &text[start..end];
        let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
        let international = candidate.starts_with('+');
        let separated = candidate.bytes().any(|b| b" -.()/".contains(&b));
        let plus_only_first = candidate.bytes().skip(1).all(|b| b != b'+');
        let ok = plus_only_first
            && if international {
                (8..=15).contains(&digits)
            } else {
                // A national number is written in groups; a bare run of digits is
                // just a number (an amount, an id).
                separated && (9..=12).contains(&digits)
            };
        if ok && !looks_like_date(candidate) && !looks_like_ip(candidate) {
            out.push((start, end));
        }
    }
    out
}

fn looks_like_ip(candidate: &str) -> bool {
    candidate.parse::<Ipv4Addr>().is_ok()
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Whether the number starts as a card network's numbers do, at a length it issues.
fn card_network(digits: &[u8]) -> bool {
    let prefix = |n: usize| {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    let len = digits.len();
    let visa = digits.first() == Some(&4) && matches!(len, 13 | 16 | 19);
    let mastercard =
        len == 16 && ((51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4)));
    let amex = len == 15 && matches!(prefix(2), 34 | 37);
    let discover = (16..=19).contains(&len)
        && (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)));
    let jcb = (16..=19).contains(&len) && (3528..=3589).contains(&prefix(4));
    let diners = len == 14 && (prefix(2) == 36 || (300..=305).contains(&prefix(3)));
    let unionpay = (16..=19).contains(&len) && prefix(2) == 62;
    let maestro = (12..=19).contains(&len) && matches!(prefix(4), 5018 | 5020 | 5038 | 6304 | 6759);
    visa || mastercard || amex || discover || jcb || diners || unionpay || maestro
}

fn cards(text: &str) -> Vec<(usize, usize)> {
    let part = |b: u8| CARD_PART.has(b);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for run in runs_around(text, |b| b.is_ascii_digit(), part) {
        let Some((start, end)) = number_in(bytes, run, |b| b.is_ascii_digit()) else {
            continue;
        };
        let candidate = &text[start..end];
        // One separator between groups at most, never two kinds.
        if candidate.contains("  ")
            || candidate.contains("--")
            || (candidate.contains(' ') && candidate.contains('-'))
        {
            continue;
        }
        let digits: Vec<u8> = candidate
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect();
        if (12..=19).contains(&digits.len()) && luhn(&digits) && card_network(&digits) {
            out.push((start, end));
        }
    }
    out
}

/// The length of an IBAN in each country that issues them (ISO 13616 registry).
fn iban_length(country: &str) -> Option<usize> {
    const LENGTHS: &[(&str, usize)] = &[
        ("AD", 24),
        ("AE", 23),
        ("AL", 28),
        ("AT", 20),
        ("AZ", 28),
        ("BA", 20),
        ("BE", 16),
        ("BG", 22),
        ("BH", 22),
        ("BR", 29),
        ("BY", 28),
        ("CH", 21),
        ("CR", 22),
        ("CY", 28),
        ("CZ", 24),
        ("DE", 22),
        ("DK", 18),
        ("DO", 28),
        ("EE", 20),
        ("EG", 29),
        ("ES", 24),
        ("FI", 18),
        ("FO", 18),
        ("FR", 27),
        ("GB", 22),
        ("GE", 22),
        ("GI", 23),
        ("GL", 18),
        ("GR", 27),
        ("GT", 28),
        ("HR", 21),
        ("HU", 28),
        ("IE", 22),
        ("IL", 23),
        ("IQ", 23),
        ("IS", 26),
        ("IT", 27),
        ("JO", 30),
        ("KW", 30),
        ("KZ", 20),
        ("LB", 28),
        ("LC", 32),
        ("LI", 21),
        ("LT", 20),
        ("LU", 20),
        ("LV", 21),
        ("MC", 27),
        ("MD", 24),
        ("ME", 22),
        ("MK", 19),
        ("MR", 27),
        ("MT", 31),
        ("MU", 30),
        ("NL", 18),
        ("NO", 15),
        ("PK", 24),
        ("PL", 28),
        ("PS", 29),
        ("PT", 25),
        ("QA", 29),
        ("RO", 24),
        ("RS", 22),
        ("SA", 24),
        ("SC", 31),
        ("SE", 24),
        ("SI", 19),
        ("SK", 24),
        ("SM", 27),
        ("ST", 25),
        ("SV", 28),
        ("TL", 23),
        ("TN", 24),
        ("TR", 26),
        ("UA", 29),
        ("VA", 22),
        ("VG", 24),
        ("XK", 20),
    ];
    LENGTHS.iter().find(|(c, _)| *c == country).map(|(_, n)| *n)
}

/// ISO 7064 mod 97-10 over the IBAN with its first four characters moved to the end.
fn iban_checksum_ok(compact: &str) -> bool {
    let rearranged = compact[4..].bytes().chain(compact[..4].bytes());
    let mut remainder: u32 = 0;
    for b in rearranged {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

fn ibans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        // Capitals are rare in prose: jump from one to the next.
        match bytes[i..].iter().position(u8::is_ascii_uppercase) {
            Some(skip) => i += skip,
            None => break,
        }
        if i + 4 > bytes.len() {
            break;
        }
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let head = &bytes[i..i + 4];
        let shaped = head[0].is_ascii_uppercase()
            && head[1].is_ascii_uppercase()
            && head[2].is_ascii_digit()
            && head[3].is_ascii_digit();
        let Some(want) = (starts_word && shaped)
            .then(|| iban_length(&text[i..i + 2]))
            .flatten()
        else {
            i += 1;
            continue;
        };
        // Take characters (spaces between groups allowed) until the country's length.
        let mut compact = String::with_capacity(want);
        let mut end = i;
        while end < bytes.len() && compact.len() < want {
            let b = bytes[end];
            if b.is_ascii_uppercase() || b.is_ascii_digit() {
                compact.push(char::from(b));
            } else if !(b == b' '
                && end + 1 < bytes.len()
                && bytes[end + 1].is_ascii_alphanumeric())
            {
                break;
            }
            end += 1;
        }
        let ends_word = end >= bytes.len() || !bytes[end].is_ascii_alphanumeric();
        if compact.len() == want && ends_word && iban_checksum_ok(&compact) {
            out.push((i, end));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Prefixes that name a provider's key or token on sight, with the fewest
/// characters that follow them in a real one.
const KEY_PREFIXES: &[(&str, usize)] = &[
    ("ghp_", 30),
    ("gho_", 30),
    ("ghu_", 30),
    ("ghs_", 30),
    ("ghr_", 30),
    ("github_pat_", 40),
    ("glpat-", 20),
    ("sk-ant-", 32),
    ("sk-proj-", 32),
    ("sk_live_", 20),
    ("sk_test_", 20),
    ("rk_live_", 20),
    ("pk_live_", 20),
    ("xoxb-", 20),
    ("xoxp-", 20),
    ("xoxa-", 20),
    ("xoxr-", 20),
    ("xoxs-", 20),
    ("AIza", 35),
    ("ya29.", 30),
    ("npm_", 36),
    ("pypi-", 50),
    ("hf_", 30),
    ("shpat_", 32),
    ("dop_v1_", 40),
];

/// A token that says what it is by its prefix.
fn prefixed_key(token: &str) -> bool {
    let known = KEY_PREFIXES.iter().any(|(prefix, least)| {
        token
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.len() >= *least)
    });
    // Bare "sk-" (OpenAI) is also how words begin ("sk-learn"): only a long run of
    // letters and digits after it counts.
    let openai = token
        .strip_prefix("sk-")
        .is_some_and(|rest| rest.len() >= 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    // AWS access key ids: exactly sixteen capitals and digits after AKIA or ASIA.
    let aws = ["AKIA", "ASIA"].iter().any(|p| {
        token.strip_prefix(p).is_some_and(|rest| {
            rest.len() == 16
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                && rest.bytes().any(|b| b.is_ascii_digit())
        })
    });
    known || openai || aws
}

/// Bits of information per character of `token`.
fn entropy(token: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in token.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = token.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

fn secrets(text: &str) -> Vec<(usize, usize)> {
    let token_byte = |b: u8| TOKEN_BYTE.has(b);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (start, mut end) in runs(text, token_byte) {
        // A sentence's full stop or a trailing comma is not part of the token.
        while end > start && matches!(bytes[end - 1], b'.' | b'-' | b'/') {
            end -= 1;
        }
        let token = &text[start..end];
        // Shorter than the shortest key any rule below takes (an AWS key id).
        if token.len() < 20 {
            continue;
        }
        let prefixed = prefixed_key(token);
        let jwt = token.starts_with("eyJ")
            && token.split('.').count() == 3
            && token.split('.').all(|part| part.len() >= 8);
        if prefixed || jwt || high_entropy(token) {
            out.push((start, end));
        }
    }
    out
}

/// A long string of mixed letters and digits with no structure a reader would
/// recognise: a key. Paths, URLs, hex digests and UUIDs (ids, not secrets) are not.
fn high_entropy(token: &str) -> bool {
    if token.len() < 24 || token.contains('/') || token.contains("..") {
        return false;
    }
    let hex = token.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if hex {
        return false;
    }
    let upper = token.bytes().any(|b| b.is_ascii_uppercase());
    let lower = token.bytes().any(|b| b.is_ascii_lowercase());
    let digit = token.bytes().any(|b| b.is_ascii_digit());
    // Words joined by dashes or underscores (a slug, a file name) are not keys.
    let longest_letters = token
        .split(|c: char| !c.is_ascii_alphabetic())
        .map(str::len)
        .max()
        .unwrap_or(0);
    // Random characters from ~64 come close to log2 of the length (all distinct) for
    // short tokens and to 6 bits for long ones; text a person wrote (a file name, an
    // identifier) repeats itself and falls well short.
    let most = (token.len().min(64) as f64).log2();
    upper && lower && digit && longest_letters < 16 && entropy(token) >= 0.85 * most
}

fn ips(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    // IPv4: four numbers and three dots, not part of a longer dotted run (a version).
    for (start, mut end) in runs_around(text, |b| b.is_ascii_digit(), |b| IPV4_PART.has(b)) {
        // A full stop after the address ends the sentence.
        if end > start && bytes[end - 1] == b'.' {
            end -= 1;
        }
        let candidate = &text[start..end];
        if (start > 0 && glued(bytes, start - 1)) || glued(bytes, end) {
            continue;
        }
        let parts: Vec<&str> = candidate.split('.').collect();
        let canonical = parts.len() == 4
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && (p.len() == 1 || !p.starts_with('0')));
        if canonical && candidate.parse::<Ipv4Addr>().is_ok() {
            out.push((start, end));
        }
    }
    // IPv6: hex groups and colons that parse as an address, with at least two colons
    // and either eight groups or a "::" (never a time such as 12:30:45).
    for (start, end) in runs_around(text, |b| b == b':', |b| IPV6_PART.has(b)) {
        let candidate = &text[start..end];
        let colons = candidate.bytes().filter(|b| *b == b':').count();
        let groups = candidate.split(':').filter(|g| !g.is_empty()).count();
        if colons < 2 || (start > 0 && glued(bytes, start - 1)) || glued(bytes, end) {
            continue;
        }
        if (groups == 8 || candidate.contains("::")) && candidate.parse::<Ipv6Addr>().is_ok() {
            out.push((start, end));
        }
    }
    out
}
