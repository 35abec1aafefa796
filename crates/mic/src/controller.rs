//! The controller: watches pods, nodes and the CRDs, writes `AzureAssignedIdentity`
//! objects, and keeps one worker per VM or scale set that applies identity changes
//! through ARM.
//!
//! Unlike upstream's single loop that waited for every scale set's operation, each
//! VM or scale set has a worker of its own: a slow scale set never delays another.
//! The planner hands each worker the latest complete picture of what its target
//! needs through a `watch` channel, so changes that arrive while a PATCH is in
//! flight coalesce into the next batch: one delta PATCH per target per batch.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Debug,
    hash::Hash,
    sync::Arc,
    time::Duration,
};

use api::{
    AssignmentState, AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding,
    v1::{ASSIGNED_IDENTITY_FINALIZER, BINDING_LABEL, NODE_NAME_LABEL},
};
use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use matching::{ComputeTarget, Desired, PodFacts, Policy, TargetChange};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use crate::{
    Error,
    arm::{ArmClient, CallError, IdentityState, patch_bodies},
    metrics::Metrics,
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
    /// Parallel Kubernetes writes.
    pub write_concurrency: usize,
    /// Wait before retrying a target whose ARM call failed.
    pub failure_retry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            protected_client_ids: BTreeSet::new(),
            drift_interval: Duration::from_secs(180),
            debounce: Duration::from_millis(100),
            write_concurrency: 16,
            failure_retry: Duration::from_secs(30),
        }
    }
}

struct Stores {
    pods: Store<Pod>,
    nodes: Store<Node>,
    identities: Store<AzureIdentity>,
    bindings: Store<AzureIdentityBinding>,
    assigned: Store<AzureAssignedIdentity>,
}

/// Shared by the planner and the workers.
struct Shared {
    client: Client,
    arm: ArmClient,
    settings: Settings,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    /// Per target, identities left behind by updated objects, until the target's worker has removed them.
    stale: std::sync::Mutex<HashMap<ComputeTarget, BTreeSet<String>>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent: use them anyway.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An `AzureAssignedIdentity` a worker must mark `Assigned` once its identity is on the target.
#[derive(Clone, Debug, PartialEq)]
struct ToAssign {
    namespace: String,
    name: String,
    arm_id: String,
    pod: String,
    binding: ObjectReference,
    seen: Instant,
}

/// An `AzureAssignedIdentity` whose pod is gone: its identity may be removed, then the object deleted.
#[derive(Clone, Debug, PartialEq)]
struct ToRelease {
    namespace: String,
    name: String,
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
    /// Bumped by the drift timer: the worker reads the target back from Azure.
    refresh: u64,
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
    let wake = Arc::new(Notify::new());
    let pods_cfg = watcher::Config::default().labels(BINDING_LABEL);
    let all = watcher::Config::default;
    let (pods, pods_watch) = reflect(Api::<Pod>::all(client.clone()), pods_cfg, wake.clone(), prune_pod);
    let (nodes, nodes_watch) = reflect(Api::<Node>::all(client.clone()), all(), wake.clone(), prune_node);
    let (identities, ids_watch) = reflect(
        Api::<AzureIdentity>::all(client.clone()),
        all(),
        wake.clone(),
        prune_meta,
    );
    let (bindings, bindings_watch) = reflect(
        Api::<AzureIdentityBinding>::all(client.clone()),
        all(),
        wake.clone(),
        prune_meta,
    );
    let (assigned, aai_watch) = reflect(
        Api::<AzureAssignedIdentity>::all(client.clone()),
        all(),
        wake.clone(),
        prune_assigned,
    );
    let stores = Stores {
        pods,
        nodes,
        identities,
        bindings,
        assigned,
    };
    let reporter = Reporter {
        controller: "mic".into(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let shared = Arc::new(Shared {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        arm,
        settings,
        metrics,
        stale: std::sync::Mutex::new(HashMap::new()),
    });
    let watches = async {
        tokio::join!(pods_watch, nodes_watch, ids_watch, bindings_watch, aai_watch);
    };
    let planner = plan_forever(shared, stores, wake, ready);
    tokio::select! {
        () = watches => Err(Error::Config("a watch ended unexpectedly".into())),
        r = planner => r,
        () = shutdown => Ok(()),
    }
}

fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    wake: Arc<Notify>,
    prune: fn(&mut K),
) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .backoff(WatchBackoff::default())
        .modify(prune)
        .reflect(writer);
    let fut = async move {
        stream
            .for_each(|event| {
                match event {
                    Ok(_) => wake.notify_one(),
                    // The watcher backs off and resumes by itself; the store keeps its last state meanwhile.
                    Err(e) => {
                        tracing::warn!(error = %e, kind = %K::kind(&K::DynamicType::default()), "watch error")
                    }
                }
                futures_util::future::ready(())
            })
            .await;
    };
    (reader, fut)
}

// MIC keeps every watched object in memory; at 10,000 pods whole objects cost hundreds of MiB.
// Each cache keeps only what the decisions read (see `matching::PodFacts`): managed fields,
// containers, volumes and conditions go.

fn prune_meta<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn prune_pod(pod: &mut Pod) {
    prune_meta(pod);
    pod.metadata.owner_references = None;
    if let Some(spec) = pod.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::PodSpec {
            node_name: spec.node_name.take(),
            host_network: spec.host_network,
            ..Default::default()
        };
    }
    if let Some(status) = pod.status.as_mut() {
        *status = k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase.take(),
            pod_ip: status.pod_ip.take(),
            ..Default::default()
        };
    }
}

fn prune_node(node: &mut Node) {
    prune_meta(node);
    node.metadata.labels = None;
    node.metadata.annotations = None;
    node.status = None;
    if let Some(spec) = node.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::NodeSpec {
            provider_id: spec.provider_id.take(),
            ..Default::default()
        };
    }
}

fn prune_assigned(a: &mut AzureAssignedIdentity) {
    prune_meta(a);
    if let Some(i) = a.spec.azure_identity_ref.as_mut() {
        prune_meta(i);
    }
    if let Some(b) = a.spec.azure_binding_ref.as_mut() {
        prune_meta(b);
    }
}

/// Backoff for broken watches: 200 ms doubling to at most 5 s, with jitter. kube's default
/// grows to 30 s and more, which after an apiserver outage left MIC blind for most of a minute.
struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(200),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        Some(now.mul_f64(0.5 + fastrand::f64() / 2.0))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

async fn plan_forever(
    shared: Arc<Shared>,
    stores: Stores,
    wake: Arc<Notify>,
    ready: watch::Sender<bool>,
) -> Result<(), Error> {
    let synced = async {
        stores.pods.wait_until_ready().await?;
        stores.nodes.wait_until_ready().await?;
        stores.identities.wait_until_ready().await?;
        stores.bindings.wait_until_ready().await?;
        stores.assigned.wait_until_ready().await
    };
    synced
        .await
        .map_err(|e| Error::Config(format!("a cache never synced: {e}")))?;
    let _ = ready.send(true);
    tracing::info!("caches synced; planning");
    let mut planner = Planner {
        shared,
        workers: HashMap::new(),
        seen: HashMap::new(),
        refresh: 0,
    };
    let mut drift = tokio::time::interval(planner.shared.settings.drift_interval);
    drift.tick().await;
    loop {
        planner.plan(&stores).await;
        tokio::select! {
            () = wake.notified() => {}
            _ = drift.tick() => planner.refresh += 1,
        }
        // Let a burst of events (a deployment scaling up) land before planning once for all of it.
        tokio::time::sleep(planner.shared.settings.debounce).await;
    }
}

struct Planner {
    shared: Arc<Shared>,
    workers: HashMap<ComputeTarget, watch::Sender<TargetWork>>,
    /// When each desired assignment was first seen, for the latency metric.
    seen: HashMap<(String, String), Instant>,
    refresh: u64,
}

impl Planner {
    async fn plan(&mut self, stores: &Stores) {
        let pods: Vec<PodFacts> = stores
            .pods
            .state()
            .iter()
            .map(|p| PodFacts::from(p.as_ref()))
            .collect();
        let identities: Vec<AzureIdentity> =
            stores.identities.state().iter().map(|i| (**i).clone()).collect();
        let bindings: Vec<AzureIdentityBinding> =
            stores.bindings.state().iter().map(|b| (**b).clone()).collect();
        let all_assigned: Vec<AzureAssignedIdentity> =
            stores.assigned.state().iter().map(|a| (**a).clone()).collect();
        let nodes: HashMap<String, Result<ComputeTarget, String>> = stores
            .nodes
            .state()
            .iter()
            .map(|n| {
                let target = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.provider_id.as_deref())
                    .ok_or_else(|| "the node has no providerID".to_owned())
                    .and_then(|p| ComputeTarget::from_provider_id(p).map_err(|e| e.to_string()));
                (n.name_any(), target)
            })
            .collect();
        let target_of = |node: &str| nodes.get(node).and_then(|t| t.as_ref().ok());
        let protected_ids: BTreeSet<String> = identities
            .iter()
            .chain(
                all_assigned
                    .iter()
                    .filter_map(|a| a.spec.azure_identity_ref.as_ref()),
            )
            .filter(|i| {
                i.spec.client_id().is_some_and(|c| {
                    self.shared
                        .settings
                        .protected_client_ids
                        .contains(&c.to_ascii_lowercase())
                })
            })
            .filter_map(|i| i.spec.resource_id().map(str::to_ascii_lowercase))
            .collect();

        let desired: Vec<Desired<'_>> =
            matching::desired(&self.shared.settings.policy, &pods, &bindings, &identities)
                .into_iter()
                .filter(|d| {
                    let known = target_of(d.node).is_some();
                    if !known {
                        tracing::debug!(pod = %d.pod.name, node = d.node, "no VM known for the node yet");
                    }
                    known
                })
                .collect();
        let (deleting, live): (Vec<_>, Vec<_>) = all_assigned
            .iter()
            .cloned()
            .partition(|a| a.metadata.deletion_timestamp.is_some());
        let deleting_names: BTreeSet<(String, String)> = deleting.iter().map(key_of).collect();
        let desired: Vec<Desired<'_>> = desired
            .into_iter()
            .filter(|d| !deleting_names.contains(&(d.namespace.clone(), d.name.clone())))
            .collect();
        let now = Instant::now();
        let live_keys: BTreeSet<_> = desired
            .iter()
            .map(|d| (d.namespace.clone(), d.name.clone()))
            .collect();
        self.seen.retain(|k, _| live_keys.contains(k));
        for k in &live_keys {
            self.seen.entry(k.clone()).or_insert(now);
        }

        let plan = matching::plan(desired.clone(), &live);
        self.write_objects(&plan).await;

        // Per target: what it needs, what to mark Assigned, what to release.
        let mut work: BTreeMap<ComputeTarget, TargetWork> = BTreeMap::new();
        for d in &desired {
            let Some(target) = target_of(d.node) else { continue };
            let w = work.entry(target.clone()).or_default();
            if let Some(id) = d.arm_identity() {
                w.needed.insert(id);
            }
        }
        let mut direct = Vec::new();
        let pending = plan
            .create
            .iter()
            .chain(plan.update.iter().map(|(_, d)| d))
            .chain(plan.retry.iter().map(|(_, d)| d));
        for d in pending {
            let Some(target) = target_of(d.node) else { continue };
            match d.arm_identity() {
                Some(arm_id) => work.entry(target.clone()).or_default().assign.push(ToAssign {
                    namespace: d.namespace.clone(),
                    name: d.name.clone(),
                    arm_id,
                    pod: d.pod.name.clone(),
                    binding: d.binding.object_ref(&()),
                    seen: self
                        .seen
                        .get(&(d.namespace.clone(), d.name.clone()))
                        .copied()
                        .unwrap_or(now),
                }),
                // Service principals need nothing on the VM.
                None => direct.push((d.namespace.clone(), d.name.clone())),
            }
        }
        for (ns, name) in direct {
            set_state(&self.shared, &ns, &name, AssignmentState::Assigned).await;
            self.shared
                .metrics
                .assigned(self.seen.get(&(ns, name)).map(|s| s.elapsed()));
        }
        let mut orphans = Vec::new();
        for a in plan.delete.iter().copied().chain(deleting.iter()) {
            let release = ToRelease {
                namespace: a.namespace().unwrap_or_default(),
                name: a.name_any(),
                arm_id: arm_identity_of(a),
            };
            match target_of(&a.spec.node_name) {
                Some(target) if release.arm_id.is_some() => {
                    work.entry(target.clone()).or_default().release.push(release)
                }
                // No VM to touch (node gone, as upstream: no ARM call), or nothing on it to remove.
                _ => orphans.push(release),
            }
        }
        // An updated object (new node, new identity) no longer holds its old identity on its old
        // target. The object itself is rewritten at once, so the old identity is remembered here
        // until that target's worker has dealt with it.
        {
            let mut stale = lock(&self.shared.stale);
            for (old, _) in &plan.update {
                if let (Some(target), Some(arm_id)) = (target_of(&old.spec.node_name), arm_identity_of(old)) {
                    stale.entry(target.clone()).or_default().insert(arm_id);
                }
            }
            for (target, ids) in stale.iter() {
                work.entry(target.clone()).or_default().stale = ids.clone();
            }
        }
        for r in orphans {
            delete_assigned(&self.shared, &r.namespace, &r.name).await;
        }
        // Targets that had work but need nothing now still get an empty picture (to finish releases).
        for target in self.workers.keys() {
            work.entry(target.clone()).or_default();
        }
        for (target, mut w) in work {
            w.refresh = self.refresh;
            w.protected = protected_ids.clone();
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
                    tokio::spawn(worker(self.shared.clone(), target.clone(), rx));
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
    }

    async fn write_objects(&self, plan: &matching::Plan<'_, '_>) {
        let writes = plan
            .create
            .iter()
            .map(|d| Write::Create(d.clone()))
            .chain(plan.update.iter().map(|(_, d)| Write::Update(d.clone())))
            .collect::<Vec<_>>();
        let shared = &self.shared;
        stream::iter(writes)
            .for_each_concurrent(shared.settings.write_concurrency, |w| async move {
                if let Err(e) = w.apply(shared).await {
                    tracing::warn!(error = %e, "writing an AzureAssignedIdentity failed; the next plan retries");
                }
            })
            .await;
    }
}

enum Write<'a> {
    Create(Desired<'a>),
    Update(Desired<'a>),
}

impl Write<'_> {
    async fn apply(&self, shared: &Shared) -> Result<(), kube::Error> {
        let (Self::Create(d) | Self::Update(d)) = self;
        let api = Api::<AzureAssignedIdentity>::namespaced(shared.client.clone(), &d.namespace);
        let spec = d.spec();
        match self {
            Self::Create(_) => {
                let obj = AzureAssignedIdentity {
                    metadata: ObjectMeta {
                        name: Some(d.name.clone()),
                        namespace: Some(d.namespace.clone()),
                        labels: Some([(NODE_NAME_LABEL.to_owned(), d.node.to_owned())].into()),
                        finalizers: Some(vec![ASSIGNED_IDENTITY_FINALIZER.to_owned()]),
                        ..Default::default()
                    },
                    spec,
                    status: None,
                };
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => {}
                    // Our cache was behind; the object is there.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            Self::Update(_) => {
                let patch = json!({"metadata": {"labels": {NODE_NAME_LABEL: d.node}}, "spec": spec});
                api.patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        let status = json!({"status": {"status": AssignmentState::Created, "availableReplicas": 1}});
        api.patch_status(&d.name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }
}

fn key_of(a: &AzureAssignedIdentity) -> (String, String) {
    (a.namespace().unwrap_or_default(), a.name_any())
}

fn arm_identity_of(a: &AzureAssignedIdentity) -> Option<String> {
    let id = a.spec.azure_identity_ref.as_ref()?;
    (id.spec.identity_type() == Ok(api::IdentityType::UserAssignedMsi))
        .then(|| id.spec.resource_id().map(str::to_ascii_lowercase))
        .flatten()
}

async fn set_state(shared: &Shared, namespace: &str, name: &str, state: AssignmentState) -> bool {
    let api = Api::<AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    let status = json!({"status": {"status": state, "availableReplicas": 1}});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(%namespace, %name, error = %e, ?state, "updating an AzureAssignedIdentity's status failed");
            false
        }
    }
}

/// Marks the object `Unassigned`, drops the finalizer and deletes it.
async fn delete_assigned(shared: &Shared, namespace: &str, name: &str) {
    let api = Api::<AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    set_state(shared, namespace, name, AssignmentState::Unassigned).await;
    let unfinalize = json!({"metadata": {"finalizers": null}});
    let outcome = async {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&unfinalize))
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

fn pod_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

async fn publish(shared: &Shared, type_: EventType, reason: &str, note: String, refs: &[ObjectReference]) {
    for r in refs {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "AssignIdentity".into(),
            secondary: None,
        };
        if let Err(e) = shared.recorder.publish(&ev, r).await {
            tracing::debug!(error = %e, "publishing an event failed");
        }
    }
}

/// One VM or scale set: applies the latest picture, one batch at a time.
async fn worker(shared: Arc<Shared>, target: ComputeTarget, mut rx: watch::Receiver<TargetWork>) {
    let mut state: Option<IdentityState> = None;
    let mut refreshed = 0;
    loop {
        let work = rx.borrow_and_update().clone();
        if work.refresh != refreshed {
            refreshed = work.refresh;
            state = None;
        }
        let failed = apply_target(&shared, &target, &work, &mut state).await;
        let retry_at = failed.then(|| Instant::now() + shared.settings.failure_retry);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = sleep_until_opt(retry_at) => {}
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Applies one picture to one target. Returns whether something must be retried later.
async fn apply_target(
    shared: &Shared,
    target: &ComputeTarget,
    work: &TargetWork,
    state: &mut Option<IdentityState>,
) -> bool {
    let target_id = target.arm_id();
    if work.assign.is_empty() && work.release.is_empty() && work.stale.is_empty() && state.is_some() {
        return false;
    }
    if state.is_none() {
        match shared.arm.get(target).await {
            Ok(s) => *state = Some(s),
            Err(e) => {
                report_failure(shared, work, &e.to_string(), &BTreeMap::new()).await;
                return true;
            }
        }
    }
    let mut current = state.take().expect("state was just read");
    if current.provisioning_state.as_deref() == Some("Deleting") {
        tracing::info!(target = %target_id, "not touching a VM or scale set that is being deleted");
        *state = Some(current);
        return false;
    }
    let mut protected = current.ids_with_client_ids(&shared.settings.protected_client_ids);
    protected.extend(work.protected.iter().cloned());
    let released: BTreeSet<String> = work
        .release
        .iter()
        .filter_map(|r| r.arm_id.clone())
        .chain(work.stale.iter().cloned())
        .collect();
    let mut change = matching::target_change(&work.needed, &released, &current.ids(), &protected);
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    let mut batch_error: Option<String> = None;
    // Whether `current` still reflects Azure: after a transport error the outcome is unknown.
    let mut known = true;
    while !change.is_empty() && batch_error.is_none() && known {
        for body in patch_bodies(&current, &change) {
            match shared.arm.patch(target, &body).await {
                Ok(()) => current.apply(&body),
                Err(e) => {
                    let blamed: BTreeSet<String> = e
                        .arm_error()
                        .map(|a| a.blamed_identities())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|id| change.add.contains(id) || change.remove.contains(id))
                        .collect();
                    if blamed.is_empty() {
                        batch_error = Some(e.to_string());
                    } else {
                        // Drop the refused identities; the rest of the batch goes again.
                        for id in &blamed {
                            refused.insert(id.clone(), e.to_string());
                        }
                    }
                    known = !matches!(e, CallError::Transport { .. });
                    change = TargetChange {
                        add: change.add.difference(&blamed).cloned().collect(),
                        remove: change.remove.difference(&blamed).cloned().collect(),
                    };
                    break;
                }
            }
        }
        change = matching::target_change(&change.add, &change.remove, &current.ids(), &protected);
    }
    if known {
        *state = Some(current);
    }
    let now_on = state.as_ref().map(IdentityState::ids).unwrap_or_default();
    let mut retry = batch_error.is_some() || !refused.is_empty();
    for a in &work.assign {
        if now_on.contains(&a.arm_id) {
            if set_state(shared, &a.namespace, &a.name, AssignmentState::Assigned).await {
                shared.metrics.assigned(Some(a.seen.elapsed()));
                let note = format!(
                    "identity {} assigned to {target_id} for pod {}/{}",
                    a.arm_id, a.namespace, a.pod
                );
                publish(
                    shared,
                    EventType::Normal,
                    "IdentityAssigned",
                    note,
                    &[pod_ref(&a.namespace, &a.pod), a.binding.clone()],
                )
                .await;
            } else {
                retry = true;
            }
        }
    }
    report_failure(shared, work, batch_error.as_deref().unwrap_or_default(), &refused).await;
    if !work.stale.is_empty() {
        // Left-behind identities that are gone, needed again or protected need no more care.
        let mut stale = lock(&shared.stale);
        if let Some(ids) = stale.get_mut(target) {
            ids.retain(|id| {
                !(work.stale.contains(id)
                    && (!now_on.contains(id) || work.needed.contains(id) || protected.contains(id)))
            });
            if ids.is_empty() {
                stale.remove(target);
            }
        }
    }
    for r in &work.release {
        let still_there = r
            .arm_id
            .as_ref()
            .is_some_and(|id| now_on.contains(id) && !work.needed.contains(id) && !protected.contains(id));
        if still_there {
            retry = true;
        } else {
            delete_assigned(shared, &r.namespace, &r.name).await;
        }
    }
    retry
}

async fn report_failure(
    shared: &Shared,
    work: &TargetWork,
    batch_error: &str,
    refused: &BTreeMap<String, String>,
) {
    for a in &work.assign {
        let why = refused
            .get(&a.arm_id)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .or((!batch_error.is_empty()).then_some(batch_error));
        if let Some(why) = why {
            let note = format!(
                "assigning identity {} for pod {}/{} failed: {why}",
                a.arm_id, a.namespace, a.pod
            );
            tracing::warn!(namespace = %a.namespace, name = %a.name, "{note}");
            publish(
                shared,
                EventType::Warning,
                "IdentityAssignmentFailed",
                note,
                &[pod_ref(&a.namespace, &a.pod), a.binding.clone()],
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::AzureAssignedIdentitySpec;

    #[test]
    fn arm_identity_only_for_user_assigned_identities() {
        let mut id = AzureIdentity::new("x", api::AzureIdentitySpec {
            type_: Some(0),
            resource_id: Some("/subscriptions/S/resourcegroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/X".into()),
            ..Default::default()
        });
        let mut a = AzureAssignedIdentity::new(
            "a",
            AzureAssignedIdentitySpec {
                azure_identity_ref: Some(id.clone()),
                ..Default::default()
            },
        );
        assert_eq!(
            arm_identity_of(&a).as_deref(),
            Some(
                "/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/x"
            )
        );
        id.spec.type_ = Some(1);
        a.spec.azure_identity_ref = Some(id);
        assert_eq!(arm_identity_of(&a), None);
    }
}
