//! The controller: watches pods, nodes and the CRDs, plans the `AzureAssignedIdentity`
//! objects, and keeps one worker per VM or scale set that writes those objects and applies
//! identity changes through ARM. What to do is decided by pure functions (`crate::plan` for
//! the planner; [`crate::target_state`] and `crate::writes` for each worker); this module feeds
//! them snapshots and answers, and carries out their output.
//!
//! Unlike upstream's single loop that waited for every scale set's operation, each VM or
//! scale set has a worker of its own: a slow scale set never delays another. The planner
//! hands each worker the latest complete picture of what its target needs through a `watch`
//! channel, so changes that arrive while a PATCH is in flight coalesce into the next batch:
//! one delta PATCH per target per batch. The worker writes a batch's new objects while its
//! PATCH runs, and objects whose identity is already on the target go straight to `Assigned`:
//! "on the target" meaning that ARM's last answer has it and no change in flight removes it
//! (the rule of [`crate::target_state`], which decides for each worker).
//!
//! Drift (identities removed behind MIC's back) is repaired two ways: every target MIC works
//! on is read back from ARM every [`Settings::drift_interval`]; and when NMI reports that IMDS
//! did not know an assigned identity (`api::v1::IDENTITY_MISSING_ANNOTATION` on the
//! `AzureAssignedIdentity`, see `missing`), that object's target is read back at once and what
//! is missing goes back on in the worker's next batch.
//!
//! The caches keep compact facts ([`PodFacts`], [`AssignedFacts`]), not whole objects, so
//! memory grows by a few hundred bytes per pod.

mod consent;
mod missing;
mod refusals;
mod worker;

pub use consent::{Schedule as ConsentSchedule, read_identity};

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use api::{AssignmentState, AzureIdentity, AzureIdentityBinding, v1::BINDING_LABEL};
use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, Preconditions},
    runtime::watcher,
};
use matching::{AssignedFacts, ComputeTarget, PodFacts, Policy};
use mirror::{Key, Mirror};
use serde_json::json;
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    Error,
    arm::ArmClient,
    events::Events,
    metrics::Metrics,
    plan::{self, NodeTarget, Snapshot, TargetWork, ToRelease},
};

/// What the controller decides with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub policy: Policy,
    /// Client ids never removed from a VM (`--immutable-user-msis` and the cluster identity), lower-cased.
    pub protected_client_ids: BTreeSet<String>,
    /// How often each target's identities are read back from Azure to repair drift.
    pub drift_interval: Duration,
    /// How long to let a burst of changes settle before planning.
    pub debounce: Duration,
    /// Kubernetes writes in flight at once, across all targets.
    pub write_concurrency: usize,
    /// Wait before retrying a target whose ARM call failed.
    pub failure_retry: Duration,
    /// How long an identity no pod on a target needs any more stays there before it is removed
    /// (`--identity-removal-grace`; see `crate::target_state`). Zero removes at once.
    pub removal_grace: Duration,
    /// When to read identities' consent from ARM (`crate::consent`); `None` assigns every
    /// identity a namespace names, as upstream did (`--identity-consent=false`).
    pub consent: Option<consent::Schedule>,
    /// The series of MIC's warning Events (see [`::events::SeriesBook`]); tests shorten its
    /// write interval.
    pub event_series: ::events::SeriesPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            protected_client_ids: BTreeSet::new(),
            drift_interval: Duration::from_secs(60),
            debounce: Duration::from_millis(100),
            write_concurrency: 64,
            failure_retry: Duration::from_secs(30),
            removal_grace: Duration::from_secs(30),
            consent: Some(consent::Schedule {
                refresh: Duration::from_secs(300),
                recheck: Duration::from_secs(15),
            }),
            event_series: ::events::SeriesPolicy::default(),
        }
    }
}

/// What MIC knows of the cluster, kept current by its watches.
#[derive(Default)]
struct Caches {
    pods: Mirror<PodFacts>,
    nodes: Mirror<NodeTarget>,
    identities: Mirror<AzureIdentity>,
    bindings: Mirror<AzureIdentityBinding>,
    assigned: Mirror<AssignedFacts>,
    /// Woken by every change: the planner plans again.
    wake: Notify,
}

impl Caches {
    fn is_ready(&self) -> bool {
        self.pods.is_ready()
            && self.nodes.is_ready()
            && self.identities.is_ready()
            && self.bindings.is_ready()
            && self.assigned.is_ready()
    }
}

impl mirror::Observer for Caches {
    fn changed(&self, _kind: &'static str) {
        self.wake.notify_one();
    }
    fn failed(&self, kind: &'static str, error: &watcher::Error) {
        // The cache keeps its last state meanwhile; the watch lists again after a backoff.
        tracing::warn!(kind, %error, "watch failed; listing again");
    }
}

/// The watch tasks, stopped when MIC stops leading.
struct Watches(Vec<JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for w in &self.0 {
            w.abort();
        }
    }
}

/// Shared by the planner and the workers.
struct Shared {
    client: Client,
    arm: ArmClient,
    settings: Settings,
    metrics: Arc<Metrics>,
    events: Events,
    /// Bounds Kubernetes writes across all workers.
    writes: Arc<Semaphore>,
    /// Per target, identities left behind by updated objects, until the target's worker has removed them.
    stale: std::sync::Mutex<HashMap<ComputeTarget, BTreeSet<String>>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The shared policy: a poisoned lock is used anyway (`mirror::sync` says why).
    mirror::sync::lock(m)
}

/// Runs the controller until `shutdown` resolves. Call it only while leader.
pub async fn run(
    client: Client,
    arm: ArmClient,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let caches = Arc::new(Caches::default());
    let all = watcher::Config::default;
    let _watches = Watches(vec![
        mirror::spawn(
            caches.clone(),
            Api::<Pod>::all(client.clone()),
            all().labels(BINDING_LABEL),
            |c| &c.pods,
            |p: Pod| PodFacts::from(&p),
        ),
        mirror::spawn(
            caches.clone(),
            Api::<Node>::all(client.clone()),
            all(),
            |c| &c.nodes,
            |n: Node| node_target(&n),
        ),
        mirror::spawn(
            caches.clone(),
            Api::<AzureIdentity>::all(client.clone()),
            all(),
            |c| &c.identities,
            pruned,
        ),
        mirror::spawn(
            caches.clone(),
            Api::<AzureIdentityBinding>::all(client.clone()),
            all(),
            |c| &c.bindings,
            pruned,
        ),
        mirror::spawn(
            caches.clone(),
            Api::<api::AzureAssignedIdentity>::all(client.clone()),
            all(),
            |c| &c.assigned,
            |a| AssignedFacts::from(&a),
        ),
    ]);
    let max_writes = settings.write_concurrency.max(1);
    let writes = Arc::new(Semaphore::new(max_writes));
    let shared = Arc::new(Shared {
        events: Events::start_with(
            client.clone(),
            metrics.clone(),
            writes.clone(),
            max_writes,
            settings.event_series,
        ),
        writes,
        client,
        arm,
        settings,
        metrics,
        stale: std::sync::Mutex::new(HashMap::new()),
    });
    tokio::select! {
        r = plan_forever(shared, caches, ready) => r,
        () = shutdown => Ok(()),
    }
}

fn node_target(node: &Node) -> NodeTarget {
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .ok_or_else(|| "the node has no providerID".to_owned())
        .and_then(|p| ComputeTarget::from_provider_id(p).map_err(|e| e.to_string()))
}

/// Identities and bindings are copied into each `AzureAssignedIdentity`: without the managed
/// fields and kubectl's last-applied copy, which upstream's objects never carried.
fn pruned<K: Resource>(mut obj: K) -> K {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    obj
}

async fn plan_forever(
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

/// Writes an `AzureAssignedIdentity`'s status.
async fn set_state(
    shared: &Shared,
    (namespace, name): &Key,
    state: AssignmentState,
) -> Result<(), kube::Error> {
    let api = Api::<api::AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    let status = crate::failure::state_patch(state);
    let _permit = shared.writes.acquire().await;
    api.patch(name, &crate::patch_params(), &Patch::Merge(&status))
        .await
        .map(drop)
}

/// Marks the object `Unassigned`, drops the finalizer and deletes it. Each step is conditional
/// on the version the planner saw, then on the one the step before left (see
/// `ToRelease::version`): an object that changed since the plan is the next plan's to decide.
async fn delete_assigned(shared: &Shared, release: &ToRelease) {
    let (namespace, name) = &release.key;
    let api = Api::<api::AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    let outcome = async {
        let _permit = shared.writes.acquire().await;
        let unassigned = crate::at_version(
            crate::failure::state_patch(AssignmentState::Unassigned),
            release.version.as_deref(),
        );
        let marked = api
            .patch(name, &crate::patch_params(), &Patch::Merge(&unassigned))
            .await?;
        let unfinalize = crate::at_version(
            json!({"metadata": {"finalizers": null}}),
            marked.metadata.resource_version.as_deref(),
        );
        let unfinalized = api
            .patch(name, &crate::patch_params(), &Patch::Merge(&unfinalize))
            .await?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: unfinalized.metadata.resource_version,
                uid: None,
            }),
            ..DeleteParams::default()
        };
        api.delete(name, &params).await?;
        Ok::<_, kube::Error>(())
    }
    .await;
    match outcome {
        Ok(()) => shared.metrics.deleted(),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(%namespace, %name, "{}", crate::CACHE_BEHIND)
        }
        Err(e) => {
            tracing::warn!(%namespace, %name, error = %e, "deleting an AzureAssignedIdentity failed; the next plan retries")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_without_an_azure_provider_id_has_no_target() {
        let mut node = Node::default();
        assert_eq!(node_target(&node), Err("the node has no providerID".to_owned()));
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            provider_id: Some("kind://docker/kind/kind-control-plane".into()),
            ..Default::default()
        });
        assert!(node_target(&node).unwrap_err().contains("kind://"));
        node.spec.as_mut().unwrap().provider_id = Some(
            "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1"
                .into(),
        );
        assert_eq!(node_target(&node).unwrap().name, "vm-1");
    }

    #[test]
    fn copies_of_identities_leave_managed_fields_and_last_applied_behind() {
        let mut id = AzureIdentity::new("x", Default::default());
        id.metadata.managed_fields = Some(vec![Default::default()]);
        id.metadata.annotations = Some(
            [
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                    "{}".to_owned(),
                ),
                ("team".to_owned(), "a".to_owned()),
            ]
            .into(),
        );
        let id = pruned(id);
        assert_eq!(id.metadata.managed_fields, None);
        assert_eq!(
            id.metadata.annotations.unwrap().keys().collect::<Vec<_>>(),
            ["team"]
        );
    }
}
