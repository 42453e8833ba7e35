//! The library's progress reports as an indicatif bar on a terminal; nothing otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use ghostie_fs::sync::progress::{Progress, Unit};

/// Work smaller than this finishes before a bar would help.
const MIN_BYTES: u64 = 8 * 1024 * 1024;
const MIN_FILES: u64 = 500;

pub struct BarProgress {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl BarProgress {
    pub fn new(quiet: bool) -> Self {
        Self {
            enabled: !quiet && std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }
}

impl Progress for BarProgress {
    fn start(&self, what: &str, total: u64, unit: Unit) {
        let big = match unit {
            Unit::Bytes => total >= MIN_BYTES,
            Unit::Files => total >= MIN_FILES,
        };
        if !self.enabled || !big {
            return;
        }
        let template = match unit {
            Unit::Bytes => "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            Unit::Files => "{msg:12} [{bar:30}] {pos}/{len} {per_sec} {eta}",
        };
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(n);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        }
    }
}
