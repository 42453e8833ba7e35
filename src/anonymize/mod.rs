//! Optional anonymization (issue 18): sensitive values in memories, found by
//! detectors, shown to untrusted devices as stable pseudonyms. This part holds the
//! detectors; the pseudonyms, the rules file and the sensitive key come next.
//!
//! - `detect`: the built-in detectors (email, phone, card, IBAN, secret, IP), pure
//!   functions over a memory's text.

pub mod detect;

#[cfg(test)]
mod tests;

pub use detect::{find, Detector, Finding};
