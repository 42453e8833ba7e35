//! Optional anonymization (issue 18): sensitive values in memories, found by
//! detectors and the owner's rules, shown to untrusted devices as stable
//! pseudonyms, and restored on trusted devices from originals sealed to a key only
//! they hold. Pure parts, no I/O: the engine (`sync`) applies them.
//!
//! - `detect`: the built-in detectors (email, phone, card, IBAN, secret, IP).
//! - `rules`: the rules in force (`anonymize.toml`): detectors, patterns, pointers.
//! - `pseudonym`: replacing values by tokens and tokens by values, exactly.
//! - `policy`: the vault's policy object: rules, pseudonym key, trusted devices,
//!   the sensitive key pair and each trusted device's grant of it; the sealing of
//!   originals.
//! - `bundle`: several originals objects uploaded as one.

pub mod bundle;
pub mod detect;
pub mod policy;
pub mod pseudonym;
pub mod rules;

#[cfg(test)]
mod tests;

pub use detect::{find, Detector, Finding};
pub use policy::{Policy, PolicyError, SensitiveSecrets};
pub use pseudonym::{pseudonymize, restore, tokens_in, PseudonymKey, Pseudonymized};
pub use rules::{Rules, RulesError};
