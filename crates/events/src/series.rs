//! Which occurrences of a repeating Event are written, as client-go's events v1 decides it: the
//! first creates an Event; repeats within [`SeriesPolicy::expiry`] of the last one belong to its
//! series and are counted, the count written (`series.count`, `series.lastObservedTime`) at most
//! once per [`SeriesPolicy::write_every`]; a repeat after the expiry starts a new Event. So a
//! pod failing in a tight loop costs about two writes a minute, not one per failure.
//!
//! Pure: time is passed in, so tests drive it without sleeping.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// What makes occurrences the same Event: the object it is about, why, and what was tried.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// The regarding object's namespace and name: the Event lives in that namespace and its
    /// name starts with the object's.
    pub namespace: String,
    pub name: String,
    /// The regarding object's uid, when known: a pod recreated under the same name is another.
    pub uid: Option<String>,
    pub reason: String,
    pub action: String,
}

/// The bounds of a [`SeriesBook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesPolicy {
    /// Series remembered; beyond it, the one seen longest ago is forgotten.
    pub capacity: usize,
    /// A series ends when it has not repeated for this long (client-go: 6 minutes).
    pub expiry: Duration,
    /// The least time between two writes of one series (client-go: 30 s).
    pub write_every: Duration,
}

impl Default for SeriesPolicy {
    fn default() -> Self {
        Self {
            capacity: 4096,
            expiry: Duration::from_secs(6 * 60),
            write_every: Duration::from_secs(30),
        }
    }
}

/// What to write for one occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new Event, named after its object and `id` ([`event_name`]).
    Create { id: u64 },
    /// Set the series of the Event created for `id`: `count` occurrences so far.
    UpdateSeries { id: u64, count: u32 },
    /// Counted; a later write reports it.
    Suppress,
}

/// A series whose count has moved since it was last written, and may be written now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueUpdate {
    pub key: SeriesKey,
    pub id: u64,
    pub count: u32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u64,
    count: u32,
    /// The count the last write reported.
    written: u32,
    last_seen: Instant,
    last_written: Instant,
}

/// The series of recent Events, bounded by [`SeriesPolicy::capacity`].
#[derive(Debug)]
pub struct SeriesBook {
    policy: SeriesPolicy,
    next_id: u64,
    entries: HashMap<SeriesKey, Entry>,
}

/// The name of the Event of series `id` about the object named `object`: the object's name
/// then a suffix, as kubectl and client-go name Events.
pub fn event_name(object: &str, id: u64) -> String {
    format!("{object}.{id:016x}")
}

impl SeriesBook {
    /// `seed` starts the ids: a random one keeps a restarted process from reusing a name.
    pub fn new(policy: SeriesPolicy, seed: u64) -> Self {
        Self {
            policy,
            next_id: seed,
            entries: HashMap::new(),
        }
    }

    pub fn policy(&self) -> SeriesPolicy {
        self.policy
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records one occurrence of `key` at `now` and says what to write.
    pub fn observe(&mut self, key: &SeriesKey, now: Instant) -> Decision {
        let policy = self.policy;
        if let Some(e) = self.entries.get_mut(key) {
            if now.saturating_duration_since(e.last_seen) < policy.expiry {
                e.count = e.count.saturating_add(1);
                e.last_seen = now;
                if now.saturating_duration_since(e.last_written) < policy.write_every {
                    return Decision::Suppress;
                }
                e.written = e.count;
                e.last_written = now;
                return Decision::UpdateSeries {
                    id: e.id,
                    count: e.count,
                };
            }
            self.entries.remove(key);
        }
        self.make_room(now);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.entries.insert(
            key.clone(),
            Entry {
                id,
                count: 1,
                written: 1,
                last_seen: now,
                last_written: now,
            },
        );
        Decision::Create { id }
    }

    /// The series counted since their last write whose write interval has passed, marked
    /// written: a failure that stopped repeating still gets its final count out.
    pub fn due(&mut self, now: Instant) -> Vec<DueUpdate> {
        let policy = self.policy;
        let mut out = Vec::new();
        for (key, e) in &mut self.entries {
            let waiting = e.count > e.written;
            let fresh = now.saturating_duration_since(e.last_seen) < policy.expiry;
            if waiting && fresh && now.saturating_duration_since(e.last_written) >= policy.write_every {
                e.written = e.count;
                e.last_written = now;
                out.push(DueUpdate {
                    key: key.clone(),
                    id: e.id,
                    count: e.count,
                });
            }
        }
        out
    }

    /// Before a new series: drops the expired ones, then, when still full, the one seen
    /// longest ago (its next occurrence starts a new Event, which is all that is lost).
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.policy.capacity {
            return;
        }
        let expiry = self.policy.expiry;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_seen) < expiry);
        while self.entries.len() >= self.policy.capacity.max(1) {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests;
