//! How often a mount publishes while writes keep coming. Some providers count every
//! write (GitHub: 500 content-creating requests an hour), so a mount spaces its
//! publishes by the backend's gap; a few may come back to back, so a single edit
//! after a quiet time still goes out at once.

use std::time::{Duration, Instant};

/// Publishes that may go out back to back after a quiet time.
const BURST: f64 = 3.0;

#[derive(Debug)]
pub struct PublishPacer {
    gap: Duration,
    /// Publishes allowed now (refilled one per gap, up to BURST).
    allowance: f64,
    at: Instant,
}

impl PublishPacer {
    pub fn new(gap: Duration, now: Instant) -> Self {
        Self {
            gap,
            allowance: BURST,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.gap.is_zero() {
            return;
        }
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / self.gap.as_secs_f64();
        self.allowance = (self.allowance + earned).min(BURST);
        self.at = now;
    }

    /// The earliest a publish may start.
    pub fn next_allowed(&mut self, now: Instant) -> Instant {
        if self.gap.is_zero() {
            return now;
        }
        self.refill(now);
        if self.allowance >= 1.0 {
            now
        } else {
            now + self.gap.mul_f64(1.0 - self.allowance)
        }
    }

    /// A publish starts now.
    pub fn spend(&mut self, now: Instant) {
        if self.gap.is_zero() {
            return;
        }
        self.refill(now);
        self.allowance = (self.allowance - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_gap_never_waits() {
        let now = Instant::now();
        let mut p = PublishPacer::new(Duration::ZERO, now);
        for _ in 0..100 {
            assert_eq!(p.next_allowed(now), now);
            p.spend(now);
        }
    }

    #[test]
    fn a_steady_writer_publishes_once_a_gap_after_a_short_burst() {
        let gap = Duration::from_secs(20);
        let start = Instant::now();
        let mut p = PublishPacer::new(gap, start);
        let mut now = start;
        let mut publishes = 0;
        // A writer that would publish every half second, for an hour.
        while now < start + Duration::from_secs(3600) {
            let at = p.next_allowed(now);
            if at <= now {
                p.spend(now);
                publishes += 1;
            }
            now += Duration::from_millis(500);
        }
        assert!(publishes <= 3600 / 20 + BURST as u64 + 1, "{publishes}");
        assert!(publishes >= 3600 / 20 - 1, "{publishes}");
    }

    #[test]
    fn one_edit_after_a_quiet_time_goes_out_at_once() {
        let gap = Duration::from_secs(20);
        let start = Instant::now();
        let mut p = PublishPacer::new(gap, start);
        for _ in 0..3 {
            p.spend(start);
        }
        assert!(p.next_allowed(start) > start);
        let later = start + Duration::from_secs(120);
        assert_eq!(p.next_allowed(later), later);
    }
}
