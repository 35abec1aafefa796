use api::AzurePodIdentityException;

use crate::{PodFacts, Policy};

/// Whether an exception lets this pod through to the node's own identity.
///
/// As upstream: only exceptions in the pod's own namespace count, and a pod is
/// excepted when any one label of any one exception matches (key exactly, value
/// case-insensitively). Beyond upstream, [`Policy::exception_namespaces`] can
/// confine exceptions to chosen namespaces.
pub fn is_excepted<'a>(
    policy: &Policy,
    pod: &PodFacts,
    exceptions: impl IntoIterator<Item = &'a AzurePodIdentityException>,
) -> bool {
    if let Some(allowed) = &policy.exception_namespaces
        && !allowed.contains(&pod.namespace)
    {
        return false;
    }
    exceptions
        .into_iter()
        .filter(|e| e.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
        .flat_map(|e| e.spec.pod_labels())
        .any(|(k, v)| pod.labels.get(k).is_some_and(|have| have.eq_ignore_ascii_case(v)))
}

#[cfg(test)]
mod tests;
