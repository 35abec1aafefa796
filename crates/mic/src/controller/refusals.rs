//! Recording refused assignments (see `arm::consent`): each object is created when missing,
//! then marked `Created` with the refusal as its `reason` and `message`, and a Warning Event
//! goes to the pod and the binding, so `kubectl describe`, `kubectl get azureassignedidentity`
//! and `kubectl pod-identity explain` all say why and how to fix it.
//!
//! Plans repeat while a refusal lasts; what was written is remembered, so that each refusal is
//! written and announced once (again only when its text changes, or when its object vanished
//! and the planner's cache has had [`WRITTEN_FOR`] to see the re-creation).

use std::collections::HashMap;

use futures_util::{StreamExt, stream};
use kube::{Api, Resource, api::Patch};
use mirror::Key;
use serde_json::json;
use tokio::time::Instant;

use arm::consent::Refusal;

use super::Shared;
use crate::{
    events::{Kind, pod_ref_with_uid},
    failure::{MAX_MESSAGE, truncate},
    plan::{ObjectWrite, ToRefuse},
    worker::{write_object, writes::WRITTEN_FOR},
};

/// What was last written for each refused object.
#[derive(Debug, Default)]
pub(super) struct Written {
    by_key: HashMap<Key, (Refusal, Instant)>,
}

impl Written {
    /// Whether `r` needs writing now.
    fn due(&self, r: &ToRefuse, now: Instant) -> bool {
        match self.by_key.get(&r.key) {
            Some((done, at)) if *done == r.refusal => {
                !r.exists && now.saturating_duration_since(*at) >= WRITTEN_FOR
            }
            _ => true,
        }
    }
}

/// Writes the refusals that are new or changed; forgets those no longer refused.
pub(super) async fn record(shared: &Shared, refused: Vec<ToRefuse>, written: &mut Written) {
    let now = Instant::now();
    let keys: std::collections::HashSet<&Key> = refused.iter().map(|r| &r.key).collect();
    written.by_key.retain(|k, _| keys.contains(k));
    // Futures collected first: a closure making them inside the stream trips the compiler's
    // `Send` inference for the planner's task.
    let writes: Vec<_> = refused
        .iter()
        .filter(|r| written.due(r, now))
        .map(|r| write(shared, r))
        .collect();
    let done: Vec<Option<&ToRefuse>> = stream::iter(writes)
        .buffer_unordered(shared.settings.write_concurrency.max(1))
        .collect()
        .await;
    // One Event per binding and refusal, not per pod: a Deployment of 500 replicas would
    // otherwise bury the binding's events.
    let mut announced = std::collections::HashSet::new();
    for r in done.into_iter().flatten() {
        written.by_key.insert(r.key.clone(), (r.refusal.clone(), now));
        if announced.insert((mirror::key_of(r.binding.as_ref()), &r.refusal)) {
            shared.events.publish(
                Kind::Warning,
                r.refusal.reason,
                r.refusal.message.clone(),
                r.binding.object_ref(&()),
            );
        }
    }
}

async fn write<'r>(shared: &Shared, r: &'r ToRefuse) -> Option<&'r ToRefuse> {
    let (namespace, name) = &r.key;
    tracing::warn!(%namespace, %name, reason = r.refusal.reason, "{}", r.refusal.message);
    if !r.exists {
        match write_object(shared, &r.as_new(), ObjectWrite::Create).await {
            Ok(()) => {}
            // There already (the cache is behind): its status is written below all the same.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(%namespace, %name, error = %e, "creating a refused AzureAssignedIdentity failed; the next plan retries");
                return None;
            }
        }
    }
    let api = Api::<api::AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    let status = json!({"status": {
        "status": api::AssignmentState::Created,
        "reason": r.refusal.reason,
        "message": truncate(&r.refusal.message, MAX_MESSAGE),
    }});
    let outcome = {
        let _permit = shared.writes.acquire().await;
        api.patch(name, &crate::patch_params(), &Patch::Merge(&status))
            .await
    };
    if let Err(e) = outcome {
        tracing::warn!(%namespace, %name, error = %e, "recording a refusal in the status failed; the next plan retries");
        return None;
    }
    shared.events.publish(
        Kind::Warning,
        r.refusal.reason,
        format!("pod {namespace}/{}: {}", r.pod, r.refusal.message),
        pod_ref_with_uid(namespace, &r.pod, r.pod_uid.as_deref()),
    );
    Some(r)
}
