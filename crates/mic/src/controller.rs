//! The controller: watches pods, nodes and the CRDs, plans the `AzureAssignedIdentity`
//! objects, and keeps one worker per VM or scale set that writes those objects and applies
//! identity changes through ARM.
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

mod missing;
mod worker;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use api::{
    AssignmentState, AzureAssignedIdentitySpec, AzureIdentity, AzureIdentityBinding, v1::BINDING_LABEL,
};
use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch},
    runtime::watcher,
};
use matching::{AssignedFacts, ComputeTarget, Desired, PodFacts, Policy};
use mirror::{Key, Mirror};
use serde_json::json;
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{Error, arm::ArmClient, events::Events, metrics::Metrics};

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
        }
    }
}

/// The VM or scale set behind a node, or why there is none.
type NodeTarget = Result<ComputeTarget, String>;

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

/// An `AzureAssignedIdentity` a worker must bring to `Assigned`. The identity and binding are
/// shared with the caches, not copied: at 10,000 pending pods copies cost tens of MiB.
#[derive(Clone, Debug)]
struct ToAssign {
    /// The object's namespace (the pod's) and name.
    key: Key,
    /// The lower-cased resource id to put on the target; `None` for a service principal,
    /// which needs nothing on the VM. Shared by all the identity's assignments.
    arm_id: Option<Arc<str>>,
    pod: String,
    node: String,
    identity: Arc<AzureIdentity>,
    binding: Arc<AzureIdentityBinding>,
    seen: Instant,
    /// Whether the object must be written first: `Some(true)` to create it, `Some(false)` to
    /// rewrite one that records something else; `None` when it exists as it should.
    write: Option<bool>,
}

impl ToAssign {
    /// Whether both describe the same object contents (the same pod, node, identity and binding).
    fn records_same(&self, other: &Self) -> bool {
        self.key == other.key
            && self.pod == other.pod
            && self.node == other.node
            && (Arc::ptr_eq(&self.identity, &other.identity) || self.identity == other.identity)
            && (Arc::ptr_eq(&self.binding, &other.binding) || self.binding == other.binding)
    }

    /// The object's spec, with copies of the identity and binding as upstream records them.
    fn spec(&self) -> AzureAssignedIdentitySpec {
        AzureAssignedIdentitySpec {
            azure_identity_ref: Some((*self.identity).clone()),
            azure_binding_ref: Some((*self.binding).clone()),
            pod: self.pod.clone(),
            pod_namespace: self.key.0.clone(),
            node_name: self.node.clone(),
            replicas: None,
        }
    }

    fn binding_ref(&self) -> ObjectReference {
        self.binding.object_ref(&())
    }
}

impl PartialEq for ToAssign {
    fn eq(&self, other: &Self) -> bool {
        self.records_same(other)
            && self.arm_id == other.arm_id
            && self.seen == other.seen
            && self.write == other.write
    }
}

/// An `AzureAssignedIdentity` whose pod is gone: its identity may be removed, then the object deleted.
#[derive(Clone, Debug, PartialEq)]
struct ToRelease {
    key: Key,
    arm_id: Option<String>,
}

/// Everything one target needs, recomputed from scratch by each plan.
#[derive(Clone, Debug, Default, PartialEq)]
struct TargetWork {
    needed: BTreeSet<String>,
    assign: Vec<ToAssign>,
    release: Vec<ToRelease>,
    /// Resource ids of protected identities known from the cluster's objects (ARM answers
    /// add those whose client id it reports).
    protected: BTreeSet<String>,
    /// Identities that objects moved away from this target (new node, new identity).
    stale: BTreeSet<String>,
    /// When it moves, the worker reads the target back from Azure.
    refresh: Refresh,
}

/// Counts that ask a worker to read its target back from Azure whenever either moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Refresh {
    /// Bumped by the drift timer, for every target.
    periodic: u64,
    /// Bumped for this target when NMI reports one of its identities missing.
    reported_missing: u64,
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
        events: Events::start(client.clone(), metrics.clone(), writes.clone(), max_writes),
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
    let mut planner = Planner {
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

struct Planner {
    shared: Arc<Shared>,
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
        let pods = caches.pods.snapshot();
        let identities = caches.identities.with(HashMap::clone);
        let bindings = caches.bindings.with(HashMap::clone);
        let assigned = caches.assigned.snapshot();
        let nodes: HashMap<String, Arc<NodeTarget>> = caches
            .nodes
            .with(|m| m.iter().map(|((_, n), t)| (n.clone(), t.clone())).collect());
        let target_of = |node: &str| nodes.get(node).and_then(|t| t.as_ref().as_ref().ok());
        let protects = |client_id: Option<&str>| {
            client_id.is_some_and(|c| {
                self.shared
                    .settings
                    .protected_client_ids
                    .contains(&c.to_ascii_lowercase())
            })
        };
        let protected: BTreeSet<String> = identities
            .values()
            .filter(|i| protects(i.spec.client_id()))
            .filter_map(|i| i.spec.resource_id().map(str::to_ascii_lowercase))
            .chain(
                assigned
                    .iter()
                    .filter(|a| protects(a.client_id.as_deref()))
                    .filter_map(|a| a.arm_id.clone()),
            )
            .collect();

        let deleting: BTreeSet<(&str, &str)> = assigned
            .iter()
            .filter(|a| a.deleting)
            .map(|a| (a.namespace.as_str(), a.name.as_str()))
            .collect();
        let desired: Vec<Desired<'_>> = matching::desired(
            &self.shared.settings.policy,
            pods.iter().map(AsRef::as_ref),
            bindings.values().map(AsRef::as_ref),
            identities.values().map(AsRef::as_ref),
        )
        .into_iter()
        .filter(|d| {
            let known = target_of(d.node).is_some();
            if !known {
                tracing::debug!(pod = %d.pod.name, node = d.node, "no VM known for the node yet");
            }
            // An object being deleted is released first; its pod gets a new one afterwards.
            known && !deleting.contains(&(d.namespace.as_str(), d.name.as_str()))
        })
        .collect();

        // Per target: what it needs, what to bring to Assigned, what to release.
        let mut work: BTreeMap<ComputeTarget, TargetWork> = BTreeMap::new();
        for d in &desired {
            if let (Some(target), Some(id)) = (target_of(d.node), d.arm_identity()) {
                work.entry(target.clone()).or_default().needed.insert(id);
            }
        }
        let plan = matching::plan(
            desired,
            assigned.iter().map(AsRef::as_ref).filter(|a| !a.deleting),
        );
        let now = Instant::now();
        let pending = plan
            .create
            .iter()
            .map(|d| (d, Some(true)))
            .chain(plan.update.iter().map(|(_, d)| (d, Some(false))))
            .chain(plan.retry.iter().map(|(_, d)| (d, None)));
        let mut seen = HashMap::new();
        let mut arm_ids: HashMap<Key, Option<Arc<str>>> = HashMap::new();
        for (d, write) in pending {
            let Some(target) = target_of(d.node) else { continue };
            let key = (d.namespace.clone(), d.name.clone());
            let first_seen = self.seen.get(&key).copied().unwrap_or(now);
            let (Some(identity), Some(binding)) = (
                identities.get(&mirror::key_of(d.identity)),
                bindings.get(&mirror::key_of(d.binding)),
            ) else {
                continue;
            };
            work.entry(target.clone()).or_default().assign.push(ToAssign {
                key: key.clone(),
                arm_id: arm_ids
                    .entry(mirror::key_of(d.identity))
                    .or_insert_with(|| d.arm_identity().map(Arc::from))
                    .clone(),
                pod: d.pod.name.clone(),
                node: d.node.to_owned(),
                identity: identity.clone(),
                binding: binding.clone(),
                seen: first_seen,
                write,
            });
            seen.insert(key, first_seen);
        }
        // Only pending assignments need their first sighting.
        self.seen = seen;

        let mut orphans = Vec::new();
        let released = plan
            .delete
            .iter()
            .copied()
            .chain(assigned.iter().map(AsRef::as_ref).filter(|a| a.deleting));
        for a in released {
            let release = ToRelease {
                key: (a.namespace.clone(), a.name.clone()),
                arm_id: a.arm_id.clone(),
            };
            match target_of(&a.node) {
                Some(target) if release.arm_id.is_some() => {
                    work.entry(target.clone()).or_default().release.push(release)
                }
                // No VM to touch (node gone, as upstream: no ARM call), or nothing on it to remove.
                _ => orphans.push(release.key),
            }
        }
        // An updated object (new node, new identity) no longer holds its old identity on its old
        // target. The object itself is rewritten by the new target's worker, so the old identity
        // is remembered here until the old target's worker has dealt with it.
        {
            let mut stale = lock(&self.shared.stale);
            for (old, _) in &plan.update {
                if let (Some(target), Some(arm_id)) = (target_of(&old.node), old.arm_id.clone()) {
                    stale.entry(target.clone()).or_default().insert(arm_id);
                }
            }
            for (target, ids) in stale.iter() {
                work.entry(target.clone()).or_default().stale = ids.clone();
            }
        }
        // NMI found an identity missing from a VM or scale set: that target is read back now.
        for a in self.findings.fresh(assigned.iter().map(AsRef::as_ref)) {
            if let Some(target) = target_of(&a.node) {
                tracing::info!(
                    namespace = %a.namespace, name = %a.name, target = %target.arm_id(),
                    "NMI reports the identity missing from the VM or scale set; reading it back"
                );
                *self.reported_missing.entry(target.clone()).or_default() += 1;
                work.entry(target.clone()).or_default();
            }
        }
        // Targets that had work but need nothing now still get an empty picture (to finish releases).
        for target in self.workers.keys() {
            work.entry(target.clone()).or_default();
        }
        for (target, mut w) in work {
            w.refresh = Refresh {
                periodic: self.refresh,
                reported_missing: self.reported_missing.get(&target).copied().unwrap_or_default(),
            };
            w.protected = protected.clone();
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
        stream::iter(orphans)
            .for_each_concurrent(shared.settings.write_concurrency, |key| async move {
                delete_assigned(shared, &key).await;
            })
            .await;
    }
}

/// Writes an `AzureAssignedIdentity`'s status.
async fn set_state(
    shared: &Shared,
    (namespace, name): &Key,
    state: AssignmentState,
) -> Result<(), kube::Error> {
    let api = Api::<api::AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    let status = json!({"status": {"status": state, "availableReplicas": 1}});
    let _permit = shared.writes.acquire().await;
    api.patch_status(name, &crate::patch_params(), &Patch::Merge(&status))
        .await
        .map(drop)
}

/// Marks the object `Unassigned`, drops the finalizer and deletes it.
async fn delete_assigned(shared: &Shared, key: &Key) {
    let (namespace, name) = key;
    let api = Api::<api::AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    let outcome = async {
        set_state(shared, key, AssignmentState::Unassigned).await?;
        let unfinalize = json!({"metadata": {"finalizers": null}});
        let _permit = shared.writes.acquire().await;
        api.patch(name, &crate::patch_params(), &Patch::Merge(&unfinalize))
            .await?;
        api.delete(name, &DeleteParams::default()).await?;
        Ok::<_, kube::Error>(())
    }
    .await;
    match outcome {
        Ok(()) => shared.metrics.deleted(),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
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
