//! The writer's queue, coalesced by pod, and its memory of its own writes: pure, on an instant
//! passed in.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use mirror::Key;
use tokio::time::Instant;

use super::{Job, MAX_QUEUED};

/// How long a write of NMI's own is trusted to be on its way through the watch. Within it, a
/// pass that still sees the old condition (the watch lags) does not write it again; after it,
/// the condition is written again if the watch does not show it: someone replaced the whole
/// list (a JSON merge patch of `status.conditions`) and removed it. Passes run at least every
/// resync, so such a condition comes back by then.
pub const WATCH_CATCH_UP: Duration = Duration::from_secs(30);

/// What NMI last wrote to a pod, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    ready: bool,
    reason: String,
    at: Instant,
}

/// What became of an offered job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// Queued, or replacing the pod's queued job: a worker is to be woken.
    Queued,
    /// The watch shows it, or NMI wrote it moments ago: nothing to do.
    Unchanged,
    /// The queue is full; the next pass offers it again.
    Dropped,
}

#[derive(Default)]
pub struct Queue {
    jobs: HashMap<Key, Job>,
    order: VecDeque<Key>,
    written: HashMap<Key, Written>,
}

impl Queue {
    /// Queues `job` for pod `key` unless the watch shows its status and reason, or NMI wrote
    /// them within [`WATCH_CATCH_UP`].
    pub fn offer(&mut self, key: Key, job: Job, now: Instant) -> Offered {
        if !job.desired.differs_from(job.current.as_ref()) {
            // The watch shows it: later changes by others are written over again.
            self.written.remove(&key);
            self.jobs.remove(&key);
            return Offered::Unchanged;
        }
        let just_written = self.written.get(&key).is_some_and(|w| {
            w.ready == job.desired.ready
                && w.reason == job.desired.reason
                && now.saturating_duration_since(w.at) < WATCH_CATCH_UP
        });
        if just_written {
            return Offered::Unchanged;
        }
        if !self.jobs.contains_key(&key) {
            if self.order.len() >= MAX_QUEUED {
                return Offered::Dropped;
            }
            self.order.push_back(key.clone());
        }
        self.jobs.insert(key, job);
        Offered::Queued
    }

    /// The next job to write, oldest pod first.
    pub fn next(&mut self) -> Option<(Key, Job)> {
        // A key whose job was withdrawn (the watch caught up) is skipped.
        while let Some(key) = self.order.pop_front() {
            if let Some(job) = self.jobs.remove(&key) {
                return Some((key, job));
            }
        }
        // Drained: a burst of writes (every pod of a full node) leaves no queue of its size behind.
        self.jobs.shrink_to_fit();
        self.order.shrink_to_fit();
        None
    }

    /// Remembers that `job` was written to pod `key` at `now`.
    pub fn written(&mut self, key: Key, job: &Job, now: Instant) {
        let written = Written {
            ready: job.desired.ready,
            reason: job.desired.reason.clone(),
            at: now,
        };
        self.written.insert(key, written);
    }

    /// Forgets pods for which `live` is false (gone from the node).
    pub fn sweep(&mut self, live: impl Fn(&Key) -> bool) {
        self.written.retain(|k, _| live(k));
        // Emptied once the watch shows every write: none of a burst's size is kept after it.
        if self.written.is_empty() {
            self.written.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness::{ReadyCondition, desired::Desired};

    fn key(name: &str) -> Key {
        ("ns".to_owned(), name.to_owned())
    }

    fn job(ready: bool, reason: &str, current: Option<(&str, &str)>) -> Job {
        Job {
            uid: Some("uid-1".into()),
            desired: Desired {
                ready,
                reason: reason.into(),
                message: "m".into(),
            },
            current: current.map(|(status, reason)| ReadyCondition {
                status: status.into(),
                reason: reason.into(),
                last_transition: None,
            }),
        }
    }

    #[test]
    fn a_pod_offered_twice_is_written_once_with_the_latest_condition() {
        let now = Instant::now();
        let mut q = Queue::default();
        assert_eq!(
            q.offer(key("a"), job(false, "Pending", None), now),
            Offered::Queued
        );
        assert_eq!(
            q.offer(key("a"), job(true, "TokenObtained", None), now),
            Offered::Queued
        );
        let (k, j) = q.next().expect("one job");
        assert_eq!((k, j.desired.reason.as_str()), (key("a"), "TokenObtained"));
        assert!(q.next().is_none());
    }

    #[test]
    fn a_condition_the_watch_shows_is_not_written() {
        let now = Instant::now();
        let mut q = Queue::default();
        let shown = job(true, "TokenObtained", Some(("True", "TokenObtained")));
        assert_eq!(q.offer(key("a"), shown, now), Offered::Unchanged);
        assert!(q.next().is_none());
    }

    #[test]
    fn a_lagging_watch_gets_no_second_write_within_the_catch_up() {
        let start = Instant::now();
        let mut q = Queue::default();
        q.written(key("a"), &job(true, "TokenObtained", None), start);
        let later = start + WATCH_CATCH_UP - Duration::from_millis(1);
        let again = job(true, "TokenObtained", None);
        assert_eq!(q.offer(key("a"), again, later), Offered::Unchanged);
    }

    /// Someone replaced the pod's conditions (a JSON merge patch) after NMI wrote: the watch shows
    /// none, and once the catch-up has passed NMI writes it again instead of trusting its memory.
    #[test]
    fn a_condition_removed_behind_nmis_back_is_written_again_after_the_catch_up() {
        let start = Instant::now();
        let mut q = Queue::default();
        q.written(key("a"), &job(true, "TokenObtained", None), start);
        let again = job(true, "TokenObtained", None);
        assert_eq!(q.offer(key("a"), again, start + WATCH_CATCH_UP), Offered::Queued);
        assert_eq!(q.next().map(|(k, _)| k), Some(key("a")));
    }

    #[test]
    fn another_condition_than_the_one_written_is_queued_at_once() {
        let start = Instant::now();
        let mut q = Queue::default();
        q.written(key("a"), &job(false, "IdentityNotAssigned", None), start);
        let now_usable = job(true, "TokenObtained", Some(("False", "IdentityNotAssigned")));
        assert_eq!(q.offer(key("a"), now_usable, start), Offered::Queued);
    }

    #[test]
    fn a_full_queue_drops_new_pods_but_updates_queued_ones() {
        let now = Instant::now();
        let mut q = Queue::default();
        for i in 0..MAX_QUEUED {
            assert_eq!(
                q.offer(key(&format!("p{i}")), job(false, "x", None), now),
                Offered::Queued
            );
        }
        assert_eq!(q.offer(key("late"), job(false, "x", None), now), Offered::Dropped);
        assert_eq!(q.offer(key("p0"), job(true, "y", None), now), Offered::Queued);
    }
}
