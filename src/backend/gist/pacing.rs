//! GitHub's secondary limits on content-creating requests (every POST, PATCH and
//! DELETE): 80 a minute and 500 an hour per account. The store keeps under both on
//! its own, below them by a margin left for the owner's other tools, so a busy
//! device waits a little before a request rather than being refused and made to
//! wait out GitHub's penalty.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

/// Content-creating requests this store makes in any minute (GitHub allows 80).
pub const WRITES_PER_MINUTE: usize = 60;
/// Content-creating requests this store makes in any hour (GitHub allows 500).
pub const WRITES_PER_HOUR: usize = 450;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// When the last hour's content-creating requests were made.
#[derive(Debug, Default)]
pub struct WriteBudget {
    made: VecDeque<SystemTime>,
}

impl WriteBudget {
    /// How long to wait at `now` before the next content-creating request keeps
    /// within both limits (zero: go ahead).
    pub fn wait_before_next(&mut self, now: SystemTime) -> Duration {
        while self
            .made
            .front()
            .is_some_and(|t| now.duration_since(*t).unwrap_or_default() >= HOUR)
        {
            self.made.pop_front();
        }
        let mut wait = Duration::ZERO;
        if self.made.len() >= WRITES_PER_HOUR {
            let oldest = self.made[self.made.len() - WRITES_PER_HOUR];
            wait = wait.max(until(oldest + HOUR, now));
        }
        if self.made.len() >= WRITES_PER_MINUTE {
            let oldest = self.made[self.made.len() - WRITES_PER_MINUTE];
            wait = wait.max(until(oldest + MINUTE, now));
        }
        wait
    }

    pub fn record(&mut self, at: SystemTime) {
        self.made.push_back(at);
    }

    /// Content-creating requests made in the hour before `now`.
    pub fn last_hour(&self, now: SystemTime) -> usize {
        self.made
            .iter()
            .filter(|t| now.duration_since(**t).unwrap_or_default() < HOUR)
            .count()
    }
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests as fast as the budget lets them through, over `span`: never more
    /// than the limits in any window.
    fn run(span: Duration) -> Vec<SystemTime> {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut now = start;
        let mut budget = WriteBudget::default();
        let mut made = Vec::new();
        while now < start + span {
            let wait = budget.wait_before_next(now);
            now += wait;
            budget.record(now);
            made.push(now);
        }
        made
    }

    fn most_in_any(window: Duration, made: &[SystemTime]) -> usize {
        made.iter()
            .map(|&from| {
                made.iter()
                    .filter(|&&t| t >= from && t < from + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_writer_as_fast_as_allowed_keeps_within_both_limits() {
        let made = run(Duration::from_secs(3 * 3600));
        assert!(most_in_any(MINUTE, &made) <= WRITES_PER_MINUTE);
        assert!(most_in_any(HOUR, &made) <= WRITES_PER_HOUR);
        // And it is not needlessly slow: the hour's budget is used.
        assert!(made.len() >= 3 * WRITES_PER_HOUR - 1, "{}", made.len());
    }

    #[test]
    fn a_quiet_store_waits_for_nothing() {
        let mut budget = WriteBudget::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(5000);
        for i in 0..WRITES_PER_MINUTE as u64 {
            assert_eq!(
                budget.wait_before_next(now + Duration::from_millis(i)),
                Duration::ZERO
            );
            budget.record(now + Duration::from_millis(i));
        }
        assert!(budget.wait_before_next(now) > Duration::from_secs(59));
        assert_eq!(
            budget.last_hour(now + Duration::from_secs(1)),
            WRITES_PER_MINUTE
        );
    }
}
