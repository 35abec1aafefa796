//! Writing pods' IdentityReady condition: a bounded queue coalesced by pod (a pod queued twice
//! is written once, with the latest condition; `queue`), a few workers, retries with back-off.
//!
//! The write is a **server-side apply** of `status.conditions` on `pods/status`, as field
//! manager `pod-identity-nmi`, forced. Why this patch:
//! - `status.conditions` is a list-map keyed by `type`: the apply names only NMI's condition,
//!   so kubelet's (`Ready`, `PodScheduled`, ...) and other controllers' are left alone, with no
//!   read-modify-write race (a JSON merge patch would replace the whole list; a JSON patch needs
//!   the index, which moves);
//! - `managedFields` then names NMI as the writer of its condition, for whoever wonders;
//! - forced: NMI is the one authority on this condition, and kubelet, which copies other
//!   components' conditions into its own status writes, may co-own its fields;
//! - the applied object carries the pod's UID, so a write meant for a pod never lands on a
//!   namesake created since (the apiserver refuses a UID that is not the object's).

mod queue;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use api::v1::{IDENTITY_READY_CONDITION, NMI_FIELD_MANAGER};
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api,
    api::{Patch, PatchParams},
    core::Request,
};
use mirror::{Key, sync};
use serde_json::json;
use tokio::{sync::Notify, time::Instant};

use self::queue::{Offered, Queue};
use super::{ReadyCondition, desired::Desired};
use crate::{metrics::Metrics, state::State};

/// Most pods waiting for a write; more are dropped (and counted) until the queue drains: the
/// next pass queues them again, since their condition still differs.
pub const MAX_QUEUED: usize = 1024;
/// Writes in flight at once.
pub const WORKERS: usize = 4;
/// Tries of one write before it is left to the next pass.
const TRIES: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// One pod's write.
#[derive(Clone, Debug)]
pub(super) struct Job {
    pub uid: Option<String>,
    pub desired: Desired,
    /// The condition the pod has now, as the watch last saw it.
    pub current: Option<ReadyCondition>,
}

pub(super) struct Writer {
    queue: Mutex<Queue>,
    wake: Notify,
    state: Arc<State>,
    client: kube::Client,
    metrics: Metrics,
}

impl Writer {
    /// Starts [`WORKERS`] workers, which run until the runtime stops.
    pub fn start(state: Arc<State>, client: kube::Client, metrics: Metrics) -> Arc<Self> {
        let this = Arc::new(Self {
            queue: Mutex::default(),
            wake: Notify::new(),
            state,
            client,
            metrics,
        });
        for _ in 0..WORKERS {
            let this = this.clone();
            tokio::spawn(async move {
                loop {
                    // Registered before looking, so that a job queued meanwhile wakes it.
                    let notified = this.wake.notified();
                    match this.next() {
                        Some((key, job)) => this.write(&key, job).await,
                        None => notified.await,
                    }
                }
            });
        }
        this
    }

    /// Queues `job` for pod `key` unless the watch, or NMI's own write of the last
    /// [`queue::WATCH_CATCH_UP`], already has its status and reason.
    pub fn offer(&self, key: Key, job: Job) {
        let status = job.desired.status();
        let offered = sync::lock(&self.queue).offer(key, job, Instant::now());
        match offered {
            Offered::Queued => self.wake.notify_one(),
            Offered::Unchanged => {}
            Offered::Dropped => self.metrics.identity_ready_write(status, "dropped"),
        }
    }

    /// Forgets pods for which `live` is false (gone from the node).
    pub fn sweep(&self, live: impl Fn(&Key) -> bool) {
        sync::lock(&self.queue).sweep(live);
    }

    fn next(&self) -> Option<(Key, Job)> {
        sync::lock(&self.queue).next()
    }

    async fn write(&self, key: &Key, job: Job) {
        let (ns, name) = key;
        // The pod watch is this node's only; a pod gone from it (deleted, or another node's) is
        // never written.
        if self
            .state
            .pods
            .by_name(ns, name)
            .is_none_or(|p| p.node.as_deref() != Some(self.state.node.as_str()) || p.uid != job.uid)
        {
            self.metrics.identity_ready_write(job.desired.status(), "gone");
            return;
        }
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        let patch = apply_body(name, ns, &job);
        let params = PatchParams::apply(NMI_FIELD_MANAGER).force();
        let mut wait = FIRST_RETRY;
        for attempt in 1..=TRIES {
            // `Api::patch_status`'s request, but the pod the apiserver answers with, which nothing
            // here reads, is dropped as text rather than parsed (with its managed fields, some
            // hundreds of allocations for every write of a burst: issue 23 §7).
            let written = match Request::new(pods.resource_url()).patch_subresource(
                "status",
                name,
                &params,
                &Patch::Apply(&patch),
            ) {
                Ok(mut req) => {
                    req.extensions_mut().insert("patch_status");
                    self.client.request_text(req).await.map(drop)
                }
                Err(e) => Err(kube::Error::BuildRequest(e)),
            };
            match written {
                Ok(()) => {
                    self.metrics.identity_ready_write(job.desired.status(), "ok");
                    tracing::debug!(namespace = %ns, pod = %name, status = job.desired.status(),
                        reason = %job.desired.reason, "IdentityReady condition written");
                    sync::lock(&self.queue).written(key.clone(), &job, Instant::now());
                    return;
                }
                // Gone, or a namesake with another UID: nothing to write to.
                Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => {
                    self.metrics.identity_ready_write(job.desired.status(), "gone");
                    tracing::debug!(namespace = %ns, pod = %name, error = %e, "IdentityReady not written: pod gone");
                    return;
                }
                Err(e) if attempt < TRIES => {
                    tracing::debug!(namespace = %ns, pod = %name, error = %e, attempt, "IdentityReady write failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY);
                }
                Err(e) => {
                    self.metrics.identity_ready_write(job.desired.status(), "error");
                    tracing::warn!(namespace = %ns, pod = %name, error = %e,
                        "IdentityReady condition not written; the next pass tries again");
                }
            }
        }
    }
}

/// The applied configuration: the pod's UID and NMI's one condition. The transition time moves
/// only when the status does.
pub(super) fn apply_body(name: &str, namespace: &str, job: &Job) -> serde_json::Value {
    let d = &job.desired;
    let since = job
        .current
        .as_ref()
        .filter(|c| c.status == d.status())
        .and_then(|c| c.last_transition.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": job.uid},
        "status": {"conditions": [{
            "type": IDENTITY_READY_CONDITION,
            "status": d.status(),
            "reason": d.reason,
            "message": d.message,
            "lastTransitionTime": since,
        }]},
    })
}
