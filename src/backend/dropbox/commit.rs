//! Commits into one Dropbox, one at a time, many files each.
//!
//! Dropbox takes one write into an account's files at a time: a second arriving
//! meanwhile is refused (429 `too_many_write_operations`), and so is a second
//! `finish_batch` while one runs. So this process never sends two: every commit
//! goes through one lane. Uploads of content need no lane and run in parallel;
//! their commits queue, and whoever finds the lane free commits everything queued
//! so far in one `upload_session/finish_batch_v2` (up to 1,000 files), while later
//! ones queue for the next (group commit: nobody waits on a timer, and parallel
//! writers share requests instead of taking turns).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::backend::BackendResult;

/// Dropbox's most entries in one `finish_batch`.
pub const BATCH_MAX: usize = 1_000;

/// A file uploaded into a closed session, waiting for its commit.
#[derive(Debug, Clone)]
pub struct Staged {
    pub session_id: String,
    pub size: u64,
    pub path: String,
    pub key: String,
    pub create_only: bool,
}

struct Slot {
    staged: Staged,
    result: Mutex<Option<BackendResult<()>>>,
    /// Taken into a batch (whose committer may have died without an answer).
    taken: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Lane {
    busy: bool,
    queue: Vec<Arc<Slot>>,
}

#[derive(Default)]
pub(super) struct Commits {
    lane: Mutex<Lane>,
    turn: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Frees the lane when its holder is done, even by a panic.
struct Holding<'a>(&'a Commits);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        lock(&self.0.lane).busy = false;
        self.0.turn.notify_all();
    }
}

impl Commits {
    /// Runs `write` holding the lane right away if nobody holds it or waits for
    /// it; None otherwise (the caller then stages and queues instead).
    pub fn if_idle<T>(&self, write: impl FnOnce() -> T) -> Option<T> {
        {
            let mut lane = lock(&self.lane);
            if lane.busy || !lane.queue.is_empty() {
                return None;
            }
            lane.busy = true;
        }
        let _holding = Holding(self);
        Some(write())
    }

    /// Runs `write` holding the lane, waiting for it as long as needed.
    pub fn exclusive<T>(&self, write: impl FnOnce() -> T) -> T {
        {
            let mut lane = lock(&self.lane);
            while lane.busy {
                lane = self.turn.wait(lane).unwrap_or_else(PoisonError::into_inner);
            }
            lane.busy = true;
        }
        let _holding = Holding(self);
        write()
    }

    /// Commits `staged`, in a batch with whatever else is queued; `finish` commits
    /// one batch and answers for each of its files, in order.
    pub fn commit(
        &self,
        staged: Staged,
        finish: &dyn Fn(&[Staged]) -> Vec<BackendResult<()>>,
    ) -> BackendResult<()> {
        let slot = Arc::new(Slot {
            staged,
            result: Mutex::new(None),
            taken: std::sync::atomic::AtomicBool::new(false),
        });
        let mut lane = lock(&self.lane);
        lane.queue.push(slot.clone());
        loop {
            if let Some(done) = lock(&slot.result).take() {
                return done;
            }
            if slot.taken.load(std::sync::atomic::Ordering::SeqCst) && !lane.busy {
                return Err(crate::backend::BackendError::Invalid(
                    "a batch commit into Dropbox ended without an answer".into(),
                ));
            }
            if !lane.busy {
                lane.busy = true;
                let take = lane.queue.len().min(BATCH_MAX);
                let batch: Vec<Arc<Slot>> = lane.queue.drain(..take).collect();
                for s in &batch {
                    s.taken.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                drop(lane);
                let holding = Holding(self);
                let staged: Vec<Staged> = batch.iter().map(|s| s.staged.clone()).collect();
                let mut results = finish(&staged).into_iter();
                for s in &batch {
                    let r = results.next().unwrap_or_else(|| {
                        Err(crate::backend::BackendError::Refused(
                            "Dropbox answered a batch commit with too few entries".into(),
                        ))
                    });
                    *lock(&s.result) = Some(r);
                }
                drop(holding);
                lane = lock(&self.lane);
                continue;
            }
            lane = self.turn.wait(lane).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    fn staged(n: usize) -> Staged {
        Staged {
            session_id: format!("s{n}"),
            size: 1,
            path: format!("/p{n}"),
            key: format!("p{n}"),
            create_only: false,
        }
    }

    #[test]
    fn parallel_commits_share_batches_and_never_overlap() {
        let commits = Commits::default();
        let (in_flight, most, batches, files) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let finish = |batch: &[Staged]| {
            let now = in_flight.fetch_add(1, SeqCst) + 1;
            most.fetch_max(now, SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            batches.fetch_add(1, SeqCst);
            files.fetch_add(batch.len(), SeqCst);
            in_flight.fetch_sub(1, SeqCst);
            batch.iter().map(|_| Ok(())).collect()
        };
        std::thread::scope(|s| {
            for n in 0..40 {
                let (commits, finish) = (&commits, &finish);
                s.spawn(move || commits.commit(staged(n), finish).unwrap());
            }
        });
        assert_eq!(most.load(SeqCst), 1, "two commits ran at once");
        assert_eq!(files.load(SeqCst), 40);
        assert!(
            batches.load(SeqCst) < 40,
            "no batch held more than one file ({} batches)",
            batches.load(SeqCst)
        );
    }

    #[test]
    fn the_lane_is_taken_only_when_idle() {
        let commits = Commits::default();
        let inner = commits.exclusive(|| commits.if_idle(|| ()));
        assert!(inner.is_none(), "the lane was taken twice");
        assert!(commits.if_idle(|| ()).is_some());
    }
}
