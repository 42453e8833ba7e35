//! A token bucket for requests to Google: Drive's quota is per user, and a client
//! that keeps to about ten requests a second (as rclone does) is rarely refused.
//! Callers reserve a slot under the lock and sleep outside it, so parallel
//! requests queue up fairly without holding each other up longer than the pace.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub(crate) struct Pacer {
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    /// Requests that may start now; negative when slots are already promised.
    tokens: f64,
    at: Instant,
}

impl Pacer {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst),
            state: Mutex::new(Bucket {
                tokens: f64::from(burst),
                at: Instant::now(),
            }),
        }
    }

    /// How long the caller must wait before its request starts (the slot is
    /// taken either way).
    pub fn reserve(&self) -> Duration {
        let mut bucket = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let earned = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + earned).min(self.burst);
        bucket.at = now;
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.per_second)
        }
    }

    /// Waits for a slot.
    pub fn wait(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_pace() {
        let pacer = Pacer::new(10.0, 5);
        let waits: Vec<Duration> = (0..8).map(|_| pacer.reserve()).collect();
        assert!(waits[..5].iter().all(|w| w.is_zero()), "{waits:?}");
        // The sixth waits about 0.1 s, the eighth about 0.3 s.
        assert!(waits[5] > Duration::from_millis(80), "{waits:?}");
        assert!(waits[7] > Duration::from_millis(280), "{waits:?}");
        assert!(waits[7] < Duration::from_millis(320), "{waits:?}");
    }
}
