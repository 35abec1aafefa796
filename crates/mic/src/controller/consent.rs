//! Reading identities' consent from ARM (see `arm::consent` for the decision, and
//! `arm::ArmClient::read_identity` for one read): a cache of
//! the latest read of each user-assigned identity the cluster's `AzureIdentity` objects name,
//! read in the background and re-read on a schedule, so that planning never waits for ARM.
//!
//! - An identity never read is read at once; until then its assignments wait (`Unknown`).
//! - An identity read is read again after `refresh` (a revoked grant takes effect then), or
//!   after `recheck` while some assignment is refused for it (a grant just given is seen
//!   soon), or after `recheck` when the read failed.
//! - A failed read keeps the last good answer: a passing ARM outage must not take working
//!   identities away.
//!
//! Each finished read wakes the planner. Reads are few: one per identity per `refresh` (at
//! 10,000 pods using 100 identities, 100 GETs per `refresh`), counted as `identity_get` in
//! `mic_arm_calls_total`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Semaphore, task::JoinHandle, time::Instant};

use arm::{ArmClient, consent::Read};

use super::{Caches, lock};

/// Identity reads in flight at once.
const READERS: usize = 4;

/// When to read each identity again.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub refresh: Duration,
    pub recheck: Duration,
}

#[derive(Debug, Default)]
struct Entry {
    read: Option<Read>,
    read_at: Option<Instant>,
    reading: bool,
}

/// The cache; cheap to share.
pub(super) struct Reader {
    arm: ArmClient,
    caches: Arc<Caches>,
    schedule: Schedule,
    slots: Arc<Semaphore>,
    entries: Mutex<HashMap<String, Entry>>,
    /// Wakes the planner when the next read falls due.
    alarm: Mutex<Option<JoinHandle<()>>>,
}

impl Reader {
    pub(super) fn new(arm: ArmClient, caches: Arc<Caches>, schedule: Schedule) -> Arc<Self> {
        Arc::new(Self {
            arm,
            caches,
            schedule,
            slots: Arc::new(Semaphore::new(READERS)),
            entries: Mutex::new(HashMap::new()),
            alarm: Mutex::new(None),
        })
    }

    /// The latest reads of `ids` (lower-cased resource ids), starting the reads that are due:
    /// `refused` are those some assignment was refused for in the last plan. Identities no
    /// longer named are forgotten.
    pub(super) fn reads(
        self: &Arc<Self>,
        ids: &BTreeSet<String>,
        refused: &BTreeSet<String>,
    ) -> HashMap<String, Read> {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        entries.retain(|id, _| ids.contains(id));
        let mut next_due: Option<Instant> = None;
        let mut out = HashMap::new();
        for id in ids {
            let e = entries.entry(id.clone()).or_default();
            let every = match &e.read {
                Some(Read::Facts(_)) if !refused.contains(id) => self.schedule.refresh,
                _ => self.schedule.recheck,
            };
            let due = e.read_at.map(|at| at + every);
            if !e.reading && due.is_none_or(|d| d <= now) {
                e.reading = true;
                tokio::spawn(self.clone().read(id.clone()));
            } else if let Some(d) = due {
                next_due = Some(next_due.map_or(d, |n| n.min(d)));
            }
            if let Some(r) = &e.read {
                out.insert(id.clone(), r.clone());
            }
        }
        drop(entries);
        if let Some(due) = next_due {
            let caches = self.caches.clone();
            let alarm = tokio::spawn(async move {
                tokio::time::sleep_until(due).await;
                caches.wake.notify_one();
            });
            if let Some(old) = lock(&self.alarm).replace(alarm) {
                old.abort();
            }
        }
        out
    }

    async fn read(self: Arc<Self>, id: String) {
        let answer = {
            let _slot = self.slots.acquire().await;
            self.arm.read_identity(&id).await
        };
        {
            let mut entries = lock(&self.entries);
            let Some(e) = entries.get_mut(&id) else { return };
            e.reading = false;
            e.read_at = Some(Instant::now());
            match (answer, &e.read) {
                (Read::Failed(why), Some(Read::Facts(_))) => {
                    tracing::warn!(identity = %id, error = %why, "reading an identity's consent failed; keeping the last answer");
                }
                (answer, _) => e.read = Some(answer),
            }
        }
        self.caches.wake.notify_one();
    }
}
