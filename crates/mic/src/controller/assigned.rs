//! The Kubernetes writes of `AzureAssignedIdentity` objects the planner and the workers
//! (`crate::worker`) share (status, release); apart so that neither owns them.

use api::AssignmentState;
use kube::{
    Api,
    api::{DeleteParams, Patch, Preconditions},
};
use mirror::Key;
use serde_json::json;

use super::Shared;
use crate::plan::ToRelease;

/// Writes an `AzureAssignedIdentity`'s status.
pub(crate) async fn set_state(
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
pub(crate) async fn delete_assigned(shared: &Shared, release: &ToRelease) {
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
