//! The rules in force: which built-in detectors run, and the owner's own rules —
//! regular expressions, and JSON pointers into memory files whose values are
//! always sensitive. Written as `<home>/anonymize.toml`, which the owner may edit:
//!
//! ```toml
//! detectors = ["email", "phone", "card", "iban", "secret", "ip"]
//!
//! [[pattern]]
//! name = "ticket"          # the kind its pseudonyms carry: ⟦ticket:…⟧
//! regex = "TCK-[0-9]{6}"
//!
//! [[pointer]]
//! name = "person"
//! pointer = "/context/person"
//! ```

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::detect::Detector;

/// Longest kind name a pseudonym carries.
const KIND_MAX: usize = 24;
/// A regular expression of the owner's may not grow past this when compiled: the
/// rules run over every memory written, on every device.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A kind name: what a pseudonym says its value was (`email`, `person`).
pub fn is_kind_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= KIND_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Why a rules file was refused: one sentence naming the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(String);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    detectors: Vec<String>,
    #[serde(default, rename = "pattern", skip_serializing_if = "Vec::is_empty")]
    patterns: Vec<PatternRule>,
    #[serde(default, rename = "pointer", skip_serializing_if = "Vec::is_empty")]
    pointers: Vec<PointerRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternRule {
    name: String,
    regex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointerRule {
    name: String,
    pointer: String,
}

/// The rules, checked and compiled.
#[derive(Clone, Default)]
pub struct Rules {
    file: RulesFile,
    detectors: Vec<Detector>,
    patterns: Vec<(String, Regex)>,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Rules").field(&self.file).finish()
    }
}

impl PartialEq for Rules {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file
    }
}

impl Rules {
    /// The built-in detectors `detectors`, and no rules of the owner's.
    pub fn with_detectors(mut detectors: Vec<Detector>) -> Self {
        detectors.sort();
        detectors.dedup();
        Self {
            file: RulesFile {
                detectors: detectors.iter().map(|d| d.name().to_owned()).collect(),
                ..RulesFile::default()
            },
            detectors,
            patterns: Vec::new(),
        }
    }

    /// Reads a rules file, refusing anything it cannot apply exactly as written.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let file: RulesFile = toml::from_str(text)
            .map_err(|e| RulesError(format!("the rules file is not valid: {}", e.message())))?;
        Self::checked(file)
    }

    fn checked(file: RulesFile) -> Result<Self, RulesError> {
        let mut detectors = Vec::new();
        for name in &file.detectors {
            let d = Detector::from_name(name).ok_or_else(|| {
                RulesError(format!(
                    "'{name}' is not a detector (there are: {})",
                    Detector::ALL.map(Detector::name).join(", ")
                ))
            })?;
            detectors.push(d);
        }
        detectors.sort();
        detectors.dedup();
        let mut patterns = Vec::new();
        for rule in &file.patterns {
            check_kind(&rule.name)?;
            let re = regex::RegexBuilder::new(&rule.regex)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    RulesError(format!(
                        "the pattern '{}' is not a regular expression this tool takes ({})",
                        rule.name,
                        e.to_string().lines().last().unwrap_or("invalid")
                    ))
                })?;
            patterns.push((rule.name.clone(), re));
        }
        for rule in &file.pointers {
            check_kind(&rule.name)?;
            if !rule.pointer.starts_with('/') {
                return Err(RulesError(format!(
                    "the pointer '{}' must start with '/' (a JSON pointer such as /context/person)",
                    rule.name
                )));
            }
        }
        Ok(Self {
            file,
            detectors,
            patterns,
        })
    }

    /// The rules as a rules file says them, with a header explaining it.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(&self.file).unwrap_or_else(|_| unreachable!("rules serialise"));
        format!(
            "# Anonymization rules of this vault (ghostie-fs anonymize rules).\n\
             # Edited here on a trusted device, they reach every device at its next sync.\n\
             # Detectors: {}.\n{body}",
            Detector::ALL.map(Detector::name).join(", ")
        )
    }

    /// As JSON, for the sealed copy in the vault and for `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.file).unwrap_or_else(|_| unreachable!("rules serialise"))
    }

    pub fn from_json(value: &serde_json::Value) -> Result<Self, RulesError> {
        let file: RulesFile = serde_json::from_value(value.clone())
            .map_err(|e| RulesError(format!("the vault's rules are not readable ({e})")))?;
        Self::checked(file)
    }

    /// The same rules with `detectors` as the built-in detectors in force.
    pub fn with_detectors_replaced(&self, mut detectors: Vec<Detector>) -> Self {
        detectors.sort();
        detectors.dedup();
        let mut out = self.clone();
        out.file.detectors = detectors.iter().map(|d| d.name().to_owned()).collect();
        out.detectors = detectors;
        out
    }

    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    pub fn patterns(&self) -> impl Iterator<Item = (&str, &Regex)> {
        self.patterns.iter().map(|(k, r)| (k.as_str(), r))
    }

    /// The owner's rules, as one line each, for `anonymize rules`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!(
            "detectors: {}",
            if self.file.detectors.is_empty() {
                "none".to_owned()
            } else {
                self.file.detectors.join(", ")
            }
        )];
        out.extend(
            self.file
                .patterns
                .iter()
                .map(|p| format!("pattern {}: {}", p.name, p.regex)),
        );
        out.extend(
            self.file
                .pointers
                .iter()
                .map(|p| format!("pointer {}: {}", p.name, p.pointer)),
        );
        out
    }

    /// Whether these rules can find anything at all.
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty() && self.patterns.is_empty() && self.file.pointers.is_empty()
    }

    /// The string values the pointer rules name in `text` (a JSON document), each
    /// with its kind: longest first, so a longer value wins over a part of it on
    /// every device alike.
    pub fn pointed_values(&self, text: &str) -> Vec<(String, String)> {
        if self.file.pointers.is_empty() {
            return Vec::new();
        }
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for rule in &self.file.pointers {
            let mut take = |v: &serde_json::Value| {
                if let Some(s) = v.as_str().filter(|s| s.chars().count() >= 2) {
                    out.push((s.to_owned(), rule.name.clone()));
                }
            };
            match doc.pointer(&rule.pointer) {
                Some(serde_json::Value::Array(items)) => items.iter().for_each(&mut take),
                Some(v) => take(v),
                None => {}
            }
        }
        out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }
}

fn check_kind(name: &str) -> Result<(), RulesError> {
    if is_kind_name(name) {
        Ok(())
    } else {
        Err(RulesError(format!(
            "the rule name '{name}' must be 1 to {KIND_MAX} lowercase letters, digits, '_' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_file_reads_back_as_written() {
        let rules = Rules::parse(
            "detectors = [\"phone\", \"email\"]\n[[pattern]]\nname = \"ticket\"\nregex = \"TCK-[0-9]+\"\n\
             [[pointer]]\nname = \"person\"\npointer = \"/context/person\"\n",
        )
        .unwrap();
        assert_eq!(rules.detectors(), &[Detector::Email, Detector::Phone]);
        let again = Rules::parse(&rules.to_toml()).unwrap();
        assert_eq!(again, rules);
        assert_eq!(Rules::from_json(&rules.to_json()).unwrap(), rules);
        assert_eq!(rules.describe().len(), 3);
        assert!(!rules.is_empty());
        assert!(Rules::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        let cases = [
            ("detectors = [\"mail\"]", "'mail' is not a detector"),
            ("[[pattern]]\nname = \"Ticket\"\nregex = \"x\"", "'Ticket'"),
            ("[[pattern]]\nname = \"t\"\nregex = \"(\"", "pattern 't'"),
            (
                "[[pointer]]\nname = \"p\"\npointer = \"context\"",
                "pointer 'p'",
            ),
            ("detector = [\"email\"]", "not valid"),
            (
                "[[pattern]]\nname = \"big\"\nregex = \"\\\\w{1000}\\\\w{1000}\"",
                "pattern 'big'",
            ),
        ];
        for (text, says) in cases {
            let e = Rules::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn pointers_name_strings_and_arrays_of_strings() {
        let rules = Rules::parse(
            "[[pointer]]\nname = \"person\"\npointer = \"/people\"\n[[pointer]]\nname = \"place\"\npointer = \"/at/city\"\n",
        )
        .unwrap();
        let values =
            rules.pointed_values(r#"{"people":["Anna","Anna Smith",3,"x"],"at":{"city":"Lyon"}}"#);
        let names: Vec<&str> = values.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(names, ["Anna Smith", "Anna", "Lyon"]);
        assert!(rules.pointed_values("not json").is_empty());
    }
}
