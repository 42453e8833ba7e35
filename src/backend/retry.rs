//! Retries over any store: a temporary failure (no answer, a timeout, throttling, a
//! server error) is tried again after an exponentially growing, fully jittered wait.
//!
//! How long to keep trying depends on what the backend has shown so far. A backend
//! that has never answered in this process is most likely misconfigured (a wrong
//! endpoint), so the user hears so within seconds; one that answered and then went
//! quiet is having an outage, and a command waits it out rather than leave its work
//! half done.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{BackendError, BackendResult, ObjectStore};

/// How long and how often to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long a request keeps being retried once the backend has answered before.
    pub patience: Duration,
    /// The same while it has not answered yet in this process.
    pub first_contact_patience: Duration,
    /// The wait before the first retry; doubled for each further one.
    pub first_wait: Duration,
    /// The longest single wait.
    pub longest_wait: Duration,
}

impl RetryPolicy {
    /// For commands someone started and waits for (push, pull, sync): an outage of a
    /// couple of minutes is waited out.
    pub fn commands() -> Self {
        Self {
            patience: Duration::from_secs(120),
            first_contact_patience: Duration::from_secs(3),
            first_wait: Duration::from_millis(200),
            longest_wait: Duration::from_secs(10),
        }
    }

    /// For a mount: a program reading a file must not hang for minutes, and the mount's
    /// worker tries its queue again by itself.
    pub fn mount() -> Self {
        Self {
            patience: Duration::from_secs(3),
            first_contact_patience: Duration::from_secs(3),
            first_wait: Duration::from_millis(200),
            longest_wait: Duration::from_secs(2),
        }
    }

    /// The wait before retry number `attempt` (0 for the first): anywhere from zero to
    /// the exponential bound, so devices that failed together do not retry together.
    fn wait_before(&self, attempt: u32) -> Duration {
        let bound = self
            .first_wait
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
            .min(self.longest_wait);
        let nanos = bound.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }
}

#[derive(Debug)]
pub struct RetryStore<S> {
    inner: S,
    policy: RetryPolicy,
    answered: AtomicBool,
    /// Set while requests are failing, so an outage is reported once, not per request.
    reported: AtomicBool,
}

impl<S: ObjectStore> RetryStore<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self {
            inner,
            policy,
            answered: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Runs `op` until it answers or patience runs out. `verb` and `key` name the
    /// request in the debug log (`-vv`): object names are opaque, never a secret.
    fn run<T>(
        &self,
        verb: &str,
        key: &str,
        mut op: impl FnMut(&S) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let result = op(&self.inner);
            tracing::debug!(
                "{verb} {key}: {} after {} ms",
                match &result {
                    Ok(_) => "done".to_owned(),
                    Err(e) => e.to_string(),
                },
                started.elapsed().as_millis()
            );
            match &result {
                Err(e) if e.is_temporary() => {}
                // Anything else (a refusal or a missing object included) is an answer.
                _ => {
                    self.answered.store(true, Ordering::Relaxed);
                    if self.reported.swap(false, Ordering::Relaxed) {
                        tracing::warn!("{} answers again", self.inner.describe());
                    }
                    return result;
                }
            }
            let patience = if self.answered.load(Ordering::Relaxed) {
                self.policy.patience
            } else {
                self.policy.first_contact_patience
            };
            let wait = self.policy.wait_before(attempt);
            if started.elapsed() + wait > patience {
                return result;
            }
            // Before the first answer the final error says it all; after it, the
            // user should know why the work pauses.
            let answered = self.answered.load(Ordering::Relaxed);
            if let (Err(e), true) = (&result, answered) {
                if !self.reported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{e}; trying again for up to {} s",
                        patience.as_secs().max(1)
                    );
                }
            }
            std::thread::sleep(wait);
            attempt += 1;
        }
    }
}

impl<S: ObjectStore> ObjectStore for RetryStore<S> {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.run("put", key, |s| s.put(key, data))
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        let mut tried = false;
        self.run("create", key, |s| {
            let r = s.put_if_absent(key, data);
            // A create that timed out may have landed: an "already exists" on the
            // retry could be our own write, so the bytes decide.
            if tried {
                if let Err(BackendError::AlreadyExists { .. }) = &r {
                    if s.get(key).is_ok_and(|there| there == data) {
                        return Ok(());
                    }
                }
            }
            tried = true;
            r
        })
    }

    fn put_file(&self, key: &str, path: &Path) -> BackendResult<()> {
        self.run("put", key, |s| s.put_file(key, path))
    }

    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.run("get", key, |s| s.get(key))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        self.run("get part of", key, |s| s.get_range(key, range.clone()))
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        self.run("list", prefix, |s| s.list(prefix, start_after))
    }

    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        self.run("list folders of", prefix, |s| s.list_dirs(prefix))
    }

    fn list_sized(&self, prefix: &str) -> BackendResult<Vec<(String, Option<u64>)>> {
        self.run("list with sizes", prefix, |s| s.list_sized(prefix))
    }

    fn delete(&self, key: &str) -> BackendResult<()> {
        self.run("delete", key, |s| s.delete(key))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn provider_status(&self, look: bool) -> Option<super::ProviderStatus> {
        self.inner.provider_status(look)
    }
    fn wait_for_change(&self, max: std::time::Duration) -> Option<super::BackendResult<bool>> {
        self.inner.wait_for_change(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryStore;
    use std::sync::atomic::AtomicU32;

    /// Fails the next `failures` requests with a temporary error, then serves.
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryStore,
        failures: AtomicU32,
        calls: AtomicU32,
    }

    impl Flaky {
        fn new(failures: u32) -> Self {
            Self {
                inner: MemoryStore::new(),
                failures: AtomicU32::new(failures),
                calls: AtomicU32::new(0),
            }
        }
        fn gate(&self) -> BackendResult<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(BackendError::Io {
                    message: "503 SlowDown".into(),
                    temporary: true,
                    source: std::io::Error::other("503"),
                });
            }
            Ok(())
        }
    }

    impl ObjectStore for Flaky {
        fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
            self.gate()?;
            self.inner.put(key, data)
        }
        fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
            self.gate()?;
            self.inner.put_if_absent(key, data)
        }
        fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
            self.gate()?;
            self.inner.get(key)
        }
        fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
            self.gate()?;
            self.inner.get_range(key, range)
        }
        fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
            self.gate()?;
            self.inner.list(prefix, start_after)
        }
        fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
            self.gate()?;
            self.inner.list_dirs(prefix)
        }
        fn delete(&self, key: &str) -> BackendResult<()> {
            self.gate()?;
            self.inner.delete(key)
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            patience: Duration::from_secs(5),
            first_contact_patience: Duration::from_millis(300),
            first_wait: Duration::from_millis(5),
            longest_wait: Duration::from_millis(50),
        }
    }

    #[test]
    fn temporary_failures_are_retried_until_an_answer() {
        let store = RetryStore::new(Flaky::new(0), quick());
        store.put("k", b"v").unwrap();
        store.inner().failures.store(6, Ordering::SeqCst);
        assert_eq!(store.get("k").unwrap(), b"v");
        assert_eq!(store.inner().calls.load(Ordering::SeqCst), 1 + 7);
    }

    #[test]
    fn a_backend_that_never_answered_is_given_up_on_quickly() {
        let store = RetryStore::new(Flaky::new(u32::MAX), quick());
        let started = Instant::now();
        let e = store.get("k").unwrap_err();
        assert!(e.is_temporary());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(store.inner().calls.load(Ordering::SeqCst) > 1);
    }

    #[test]
    fn permanent_failures_and_missing_objects_are_not_retried() {
        let store = RetryStore::new(Flaky::new(0), quick());
        assert!(store.get("absent").unwrap_err().is_not_found());
        store.put_if_absent("k", b"v").unwrap();
        assert!(matches!(
            store.put_if_absent("k", b"other"),
            Err(BackendError::AlreadyExists { .. })
        ));
        assert_eq!(store.inner().calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_create_only_write_that_landed_before_its_answer_was_lost_succeeds() {
        // The first attempt's bytes are stored but its answer fails: the retry meets
        // "already exists" with our own bytes, which is success.
        #[derive(Debug)]
        struct LostAnswer(MemoryStore, AtomicBool);
        impl ObjectStore for LostAnswer {
            fn put(&self, k: &str, d: &[u8]) -> BackendResult<()> {
                self.0.put(k, d)
            }
            fn put_if_absent(&self, k: &str, d: &[u8]) -> BackendResult<()> {
                self.0.put_if_absent(k, d)?;
                if !self.1.swap(true, Ordering::SeqCst) {
                    return Err(BackendError::Io {
                        message: "timeout".into(),
                        temporary: true,
                        source: std::io::Error::other("timeout"),
                    });
                }
                Ok(())
            }
            fn get(&self, k: &str) -> BackendResult<Vec<u8>> {
                self.0.get(k)
            }
            fn get_range(&self, k: &str, r: Range<u64>) -> BackendResult<Vec<u8>> {
                self.0.get_range(k, r)
            }
            fn list(&self, p: &str, s: Option<&str>) -> BackendResult<Vec<String>> {
                self.0.list(p, s)
            }
            fn list_dirs(&self, p: &str) -> BackendResult<Vec<String>> {
                self.0.list_dirs(p)
            }
            fn delete(&self, k: &str) -> BackendResult<()> {
                self.0.delete(k)
            }
            fn describe(&self) -> String {
                "lost answer".into()
            }
        }
        let store = RetryStore::new(
            LostAnswer(MemoryStore::new(), AtomicBool::new(false)),
            quick(),
        );
        store.put_if_absent("ring", b"mine").unwrap();
        let other = RetryStore::new(
            LostAnswer(MemoryStore::new(), AtomicBool::new(false)),
            quick(),
        );
        other.inner().0.put("ring", b"theirs").unwrap();
        other.inner().1.store(true, Ordering::SeqCst);
        assert!(matches!(
            other.put_if_absent("ring", b"mine"),
            Err(BackendError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn waits_grow_exponentially_within_the_cap_and_are_jittered() {
        let p = quick();
        let samples: Vec<Duration> = (0..200).map(|_| p.wait_before(2)).collect();
        assert!(samples.iter().all(|w| *w <= Duration::from_millis(20)));
        assert!(samples.iter().any(|w| *w != samples[0]), "no jitter");
        assert!((0..200).all(|_| p.wait_before(30) <= p.longest_wait));
    }
}
