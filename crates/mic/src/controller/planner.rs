//! The planner loop: snapshots the caches, runs `crate::plan`, and hands each target's work to
//! its worker. Separate from the controller's setup (watches, settings) it is started by.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use futures_util::{StreamExt, stream};
use matching::ComputeTarget;
use mirror::Key;
use tokio::{sync::watch, time::Instant};

use super::{Caches, Shared, consent, delete_assigned, lock, missing, refusals};
use crate::{
    Error,
    plan::{self, Snapshot, TargetWork},
    worker,
};

pub(super) async fn plan_forever(
    shared: Arc<Shared>,
    caches: Arc<Caches>,
    ready: watch::Sender<bool>,
) -> Result<(), Error> {
    while !caches.is_ready() {
        caches.wake.notified().await;
    }
    let _ = ready.send(true);
    tracing::info!("caches synced; planning");
    let consent = planner_consent(&shared, &caches);
    let mut planner = Planner {
        consent,
        refused_ids: BTreeSet::new(),
        refusals: refusals::Written::default(),
        shared,
        workers: HashMap::new(),
        seen: HashMap::new(),
        refresh: 0,
        findings: missing::Findings::default(),
        reported_missing: HashMap::new(),
    };
    let mut drift = tokio::time::interval(planner.shared.settings.drift_interval);
    drift.tick().await;
    loop {
        planner.plan(&caches).await;
        tokio::select! {
            () = caches.wake.notified() => {}
            _ = drift.tick() => planner.refresh += 1,
        }
        // Let a burst of events (a deployment scaling up) land before planning once for all of it.
        tokio::time::sleep(planner.shared.settings.debounce).await;
    }
}

fn planner_consent(shared: &Shared, caches: &Arc<Caches>) -> Option<Arc<consent::Reader>> {
    let schedule = shared.settings.consent?;
    Some(consent::Reader::new(shared.arm.clone(), caches.clone(), schedule))
}

struct Planner {
    shared: Arc<Shared>,
    /// Identities' consent as read from ARM; `None` when not checked.
    consent: Option<Arc<consent::Reader>>,
    /// Identities some assignment was refused for in the last plan: re-read sooner.
    refused_ids: BTreeSet<String>,
    /// Refusals written, so that each is written once.
    refusals: refusals::Written,
    workers: HashMap<ComputeTarget, watch::Sender<TargetWork>>,
    /// When each pending assignment was first seen, for the latency metric.
    seen: HashMap<Key, Instant>,
    /// Drift read-backs asked by the timer so far.
    refresh: u64,
    /// NMI's findings of identities missing, and what was done about them.
    findings: missing::Findings,
    /// Per target, findings acted on (read-backs asked).
    reported_missing: HashMap<ComputeTarget, u64>,
}

impl Planner {
    async fn plan(&mut self, caches: &Caches) {
        let mut snapshot = snapshot(caches);
        if let Some(reader) = &self.consent {
            let ids = user_assigned_ids(&snapshot);
            snapshot.consent = plan::ConsentView::Reads(reader.reads(&ids, &self.refused_ids));
        }
        let settings = &self.shared.settings;
        let mut planned = plan::plan(
            &snapshot,
            &settings.policy,
            &settings.protected_client_ids,
            &self.seen,
            Instant::now(),
        );
        self.seen = std::mem::take(&mut planned.seen);
        self.refused_ids = std::mem::take(&mut planned.refused_ids);
        refusals::record(
            &self.shared,
            std::mem::take(&mut planned.refused),
            &mut self.refusals,
        )
        .await;
        // NMI found an identity missing from a VM or scale set: that target is read back now.
        for a in self.findings.fresh(snapshot.assigned.iter().map(AsRef::as_ref)) {
            if let Some(target) = snapshot.target_of(&a.node) {
                tracing::info!(
                    namespace = %a.namespace, name = %a.name, target = %target.arm_id(),
                    "NMI reports the identity missing from the VM or scale set; reading it back"
                );
                *self.reported_missing.entry(target.clone()).or_default() += 1;
            }
        }
        // Left-behind identities stay in the set shared with the workers until their target's
        // worker has dealt with them.
        let stale = {
            let mut stale = lock(&self.shared.stale);
            for (target, ids) in std::mem::take(&mut planned.left_behind) {
                tracing::debug!(target = %target.arm_id(), ?ids, "identities left behind by rewritten objects");
                stale.entry(target).or_default().extend(ids);
            }
            stale.clone()
        };
        planned.complete(&plan::Memory {
            stale: &stale,
            periodic: self.refresh,
            reported_missing: &self.reported_missing,
            workers: self.workers.keys().collect(),
        });
        for (target, w) in planned.work {
            match self.workers.get(&target) {
                Some(tx) => {
                    tx.send_if_modified(|old| {
                        let changed = *old != w;
                        *old = w;
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(w);
                    tokio::spawn(worker::run(self.shared.clone(), target.clone(), rx));
                    self.workers.insert(target, tx);
                }
            }
        }
        self.shared.metrics.set_queue_depth(
            self.workers
                .values()
                .filter(|w| !w.borrow().assign.is_empty() || !w.borrow().release.is_empty())
                .count(),
        );
        let shared = &self.shared;
        stream::iter(planned.orphans)
            .for_each_concurrent(shared.settings.write_concurrency, |release| async move {
                delete_assigned(shared, &release).await;
            })
            .await;
    }
}

/// The lower-cased resource ids of the user-assigned identities the cluster names.
fn user_assigned_ids(snapshot: &Snapshot) -> BTreeSet<String> {
    snapshot
        .identities
        .values()
        .filter(|i| i.spec.identity_type() == Ok(api::IdentityType::UserAssignedMsi))
        .filter_map(|i| i.spec.resource_id())
        .filter(|id| matching::is_user_assigned_identity_id(id))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// What the caches hold now, for one plan.
fn snapshot(caches: &Caches) -> Snapshot {
    Snapshot {
        pods: caches.pods.snapshot(),
        identities: caches.identities.with(HashMap::clone),
        bindings: caches.bindings.with(HashMap::clone),
        assigned: caches.assigned.snapshot(),
        nodes: caches
            .nodes
            .with(|m| m.iter().map(|((_, n), t)| (n.clone(), t.clone())).collect()),
        consent: plan::ConsentView::NotChecked,
    }
}
