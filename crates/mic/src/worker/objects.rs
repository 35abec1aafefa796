//! The worker's Kubernetes side: writing `AzureAssignedIdentity` objects and their status as
//! decided (see `super::writes`), and the Events that tell users how assignments went.

use std::collections::BTreeMap;

use api::{
    AzureAssignedIdentity,
    v1::{ASSIGNED_IDENTITY_FINALIZER, NODE_NAME_LABEL},
};
use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api,
    api::{ObjectMeta, Patch},
};
use mirror::Key;
use serde_json::json;
use tokio::time::Instant;

use super::{
    shell::Worker,
    writes::{Decided, StatusWritten},
};
use crate::{
    controller::{Shared, set_state},
    events::{Kind, pod_ref_with_uid, some_of},
    failure::FailureStatus,
    plan::{ObjectWrite, ToAssign},
};

/// What one `write_all` did.
pub(super) struct Wrote<'w> {
    status: StatusWritten,
    /// The objects whose writes succeeded.
    ok: Vec<&'w ToAssign>,
    all_ok: bool,
}

impl Worker {
    /// Carries out decided writes of one status: each object as decided, then the status
    /// (none for [`StatusWritten::NotYet`]). Objects marked `Assigned` are counted and
    /// announced in Events.
    pub(super) async fn write_all<'w>(&self, items: &[Decided<'w>], status: StatusWritten) -> Wrote<'w> {
        let mut wrote = Wrote {
            status,
            ok: Vec::new(),
            all_ok: true,
        };
        if items.is_empty() {
            return wrote;
        }
        let shared = &*self.shared;
        let assigned = status == StatusWritten::Assigned;
        let writes: Vec<_> = items.iter().map(|d| write_one(shared, *d, status)).collect();
        let results: Vec<(&ToAssign, Result<(), kube::Error>)> = stream::iter(writes)
            .buffer_unordered(shared.settings.write_concurrency.max(1))
            .collect()
            .await;
        let mut by_binding: BTreeMap<Key, (ObjectReference, Vec<String>)> = BTreeMap::new();
        let target_id = self.target.arm_id();
        for (a, r) in results {
            match r {
                Ok(()) => {
                    wrote.ok.push(a);
                    if assigned {
                        shared.metrics.assigned(Some(a.seen.elapsed()));
                        let what = a.arm_id.as_deref().map_or_else(
                            || "service principal identity ready (nothing to assign)".to_owned(),
                            |id| format!("identity {id} assigned to {target_id}"),
                        );
                        shared.events.publish(
                            Kind::Normal,
                            "IdentityAssigned",
                            format!("{what} for pod {}/{}", a.key.0, a.pod),
                            pod_ref_with_uid(&a.key.0, &a.pod, a.pod_uid.as_deref()),
                        );
                        by_binding
                            .entry(mirror::key_of(a.binding.as_ref()))
                            .or_insert_with(|| (a.binding_ref(), Vec::new()))
                            .1
                            .push(a.pod.clone());
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    wrote.all_ok = false;
                    tracing::info!(namespace = %a.key.0, name = %a.key.1, "{}", crate::CACHE_BEHIND);
                }
                Err(e) => {
                    wrote.all_ok = false;
                    tracing::warn!(namespace = %a.key.0, name = %a.key.1, error = %e, ?status, "writing an AzureAssignedIdentity failed; the next batch retries");
                }
            }
        }
        // One event per binding and batch, not per pod: a deployment of 500 replicas would
        // otherwise bury the binding's events.
        for (_, (binding, pods)) in by_binding {
            shared.events.publish(
                Kind::Normal,
                "IdentityAssigned",
                format!(
                    "identity assigned on {target_id} for {} pod(s): {}",
                    pods.len(),
                    some_of(&pods)
                ),
                binding,
            );
        }
        wrote
    }

    /// Remembers in the ledger what `write_all` wrote; returns whether every write succeeded.
    pub(super) fn record(&mut self, wrote: Wrote<'_>) -> bool {
        let now = Instant::now();
        for a in wrote.ok {
            self.ledger.wrote(a, wrote.status, now);
        }
        wrote.all_ok
    }
}

/// Writes one object as decided, then its status.
async fn write_one<'w>(
    shared: &Shared,
    decided: Decided<'w>,
    status: StatusWritten,
) -> (&'w ToAssign, Result<(), kube::Error>) {
    let a = decided.assignment;
    let r = async {
        write_object(shared, a, decided.object).await?;
        match status {
            StatusWritten::NotYet => Ok(()),
            StatusWritten::Created => set_state(shared, &a.key, api::AssignmentState::Created).await,
            StatusWritten::Assigned => set_state(shared, &a.key, api::AssignmentState::Assigned).await,
        }
    }
    .await;
    (a, r)
}

/// Creates or rewrites an `AzureAssignedIdentity`, as `object` says (its status is written
/// separately: the status subresource ignores it here).
pub(crate) async fn write_object(
    shared: &Shared,
    a: &ToAssign,
    object: ObjectWrite,
) -> Result<(), kube::Error> {
    let (namespace, name) = &a.key;
    let api = Api::<AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    let spec = a.spec();
    match object {
        ObjectWrite::Nothing => Ok(()),
        ObjectWrite::Create => {
            let obj = AzureAssignedIdentity {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some([(NODE_NAME_LABEL.to_owned(), a.node.clone())].into()),
                    finalizers: Some(vec![ASSIGNED_IDENTITY_FINALIZER.to_owned()]),
                    ..Default::default()
                },
                spec,
                // Written with the object (the CRD has no status subresource): an object without a
                // status reads as upstream's legacy "Assigned" to upstream's NMI.
                status: Some(api::AzureAssignedIdentityStatus {
                    status: Some(api::AssignmentState::Created),
                    available_replicas: Some(1),
                    ..Default::default()
                }),
            };
            let _permit = shared.writes.acquire().await;
            // A 409 is no success: the object there, which the planner's cache has not seen yet,
            // may record another node or identity, and taking it for this one would leave the
            // identity it records where no object says so.
            api.create(&crate::post_params(), &obj).await.map(drop)
        }
        ObjectWrite::Rewrite => {
            // Conditional on the version the planner saw (see `ToAssign::version`).
            let patch = crate::at_version(
                json!({"metadata": {"labels": {NODE_NAME_LABEL: a.node}}, "spec": spec}),
                a.version.as_deref(),
            );
            let _permit = shared.writes.acquire().await;
            api.patch(name, &crate::patch_params(), &Patch::Merge(&patch))
                .await
                .map(drop)
        }
    }
}

/// Warning events for assignments whose identity could not be put on the target, and the
/// failure in each object's status (`reason`, `message`: see `crate::failure`).
pub(super) async fn report_failure(
    shared: &Shared,
    target_id: &str,
    items: &[&ToAssign],
    batch_error: &str,
    refused: &BTreeMap<String, String>,
) {
    let mut by_binding: BTreeMap<Key, (ObjectReference, Vec<String>, String)> = BTreeMap::new();
    let mut statuses: Vec<(&Key, FailureStatus)> = Vec::new();
    for a in items {
        let why = a
            .arm_id
            .as_ref()
            .and_then(|id| refused.get(&**id))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .or((!batch_error.is_empty()).then_some(batch_error));
        let (Some(why), Some(arm_id)) = (why, a.arm_id.as_deref()) else {
            continue;
        };
        let note = format!(
            "assigning identity {arm_id} for pod {}/{} failed: {why}",
            a.key.0, a.pod
        );
        tracing::warn!(namespace = %a.key.0, name = %a.key.1, "{note}");
        statuses.push((&a.key, FailureStatus::of(arm_id, target_id, why)));
        shared.events.publish(
            Kind::Warning,
            "IdentityAssignmentFailed",
            note,
            pod_ref_with_uid(&a.key.0, &a.pod, a.pod_uid.as_deref()),
        );
        by_binding
            .entry(mirror::key_of(a.binding.as_ref()))
            .or_insert_with(|| {
                (
                    a.binding_ref(),
                    Vec::new(),
                    format!("assigning identity {arm_id} failed: {why}"),
                )
            })
            .1
            .push(a.pod.clone());
    }
    for (_, (binding, pods, note)) in by_binding {
        shared.events.publish(
            Kind::Warning,
            "IdentityAssignmentFailed",
            format!("{note} (pods: {})", some_of(&pods)),
            binding,
        );
    }
    stream::iter(statuses)
        .for_each_concurrent(shared.settings.write_concurrency.max(1), |(key, failure)| {
            write_failure(shared, key, failure)
        })
        .await;
}

/// Records a failure in an object's status. An object not created yet (ARM failed before its
/// batch wrote it) has none to record: its Events say it, and its next failure will.
async fn write_failure(shared: &Shared, (namespace, name): &Key, failure: FailureStatus) {
    let api = Api::<AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    let _permit = shared.writes.acquire().await;
    match api
        .patch(name, &crate::patch_params(), &Patch::Merge(&failure.patch()))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            tracing::warn!(%namespace, %name, error = %e, "recording an assignment failure in the status failed");
        }
    }
}
