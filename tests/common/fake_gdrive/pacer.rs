//! The per-user request budget: a token bucket on real time. A client that
//! neither paces nor backs off on 403 `userRateLimitExceeded` / 429 runs it dry
//! and keeps failing; a refused request costs nothing, so backing off works.

use std::time::Instant;

pub struct Pacer {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    /// A new budget, starting full.
    pub fn set(&mut self, per_second: f64, burst: u32) {
        *self = Self::new(per_second, burst);
    }

    /// Whether one more request fits now.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
