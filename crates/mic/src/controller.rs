//! The controller: watches pods, nodes and the CRDs, plans the `AzureAssignedIdentity`
//! objects, and keeps one worker per VM or scale set that writes those objects and applies
//! identity changes through ARM (the workers are `crate::worker`'s). What to do is decided by
//! pure functions (`crate::plan` for the planner; [`crate::worker::target_state`] and
//! `crate::worker::writes` for each worker); this module feeds them snapshots and answers, and
//! carries out their output.
//!
//! Unlike upstream's single loop that waited for every scale set's operation, each VM or
//! scale set has a worker of its own: a slow scale set never delays another. The planner
//! hands each worker the latest complete picture of what its target needs through a `watch`
//! channel, so changes that arrive while a PATCH is in flight coalesce into the next batch:
//! one delta PATCH per target per batch. The worker writes a batch's new objects while its
//! PATCH runs, and objects whose identity is already on the target go straight to `Assigned`:
//! "on the target" meaning that ARM's last answer has it and no change in flight removes it
//! (the rule of [`crate::worker::target_state`], which decides for each worker).
//!
//! Drift (identities removed behind MIC's back) is repaired two ways: every target MIC works
//! on is read back from ARM every [`Settings::drift_interval`]; and when NMI reports that IMDS
//! did not know an assigned identity (`api::v1::IDENTITY_MISSING_ANNOTATION` on the
//! `AzureAssignedIdentity`, see `missing`), that object's target is read back at once and what
//! is missing goes back on in the worker's next batch.
//!
//! The caches keep compact facts ([`PodFacts`], [`AssignedFacts`]), not whole objects, so
//! memory grows by a few hundred bytes per pod.

mod assigned;
mod consent;
mod missing;
mod planner;
mod refusals;

pub use consent::Schedule as ConsentSchedule;

pub(crate) use assigned::{delete_assigned, set_state};
use planner::plan_forever;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use api::{AzureIdentity, AzureIdentityBinding, v1::BINDING_LABEL};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client, Resource, runtime::watcher};
use matching::{AssignedFacts, ComputeTarget, PodFacts, Policy};
use mirror::Mirror;
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinHandle,
};

use arm::ArmClient;

use crate::{Error, events::Events, metrics::Metrics, plan::NodeTarget};

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
    /// (`--identity-removal-grace`; see `crate::worker::target_state`). Zero removes at once.
    pub removal_grace: Duration,
    /// When to read identities' consent from ARM (`arm::consent`); `None` assigns every
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

/// Shared by the planner and the workers (`crate::worker`).
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) arm: ArmClient,
    pub(crate) settings: Settings,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: Events,
    /// Bounds Kubernetes writes across all workers.
    pub(crate) writes: Arc<Semaphore>,
    /// Per target, identities left behind by updated objects, until the target's worker has removed them.
    pub(crate) stale: std::sync::Mutex<HashMap<ComputeTarget, BTreeSet<String>>>,
}

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    NodeTarget::of(node.spec.as_ref().and_then(|s| s.provider_id.as_deref()))
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

#[cfg(test)]
mod tests;
