//! How long work reports progress without the library knowing about terminals: the CLI
//! implements this with a progress bar, tests and scripts with nothing.

pub trait Progress: Sync {
    /// A new phase of `total` steps (bytes or files, as `unit` says).
    fn start(&self, what: &str, total: u64, unit: Unit);
    fn advance(&self, n: u64);
    fn finish(&self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Files,
    Bytes,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64, _: Unit) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
