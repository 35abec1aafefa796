//! Test support: feeding [`State`] objects as its watches would, without a cluster; apart so
//! that the production code reads without it.

use api::{AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException};
use k8s_openapi::api::core::v1::Pod;
use matching::AssignedFacts;
use mirror::{Sink, key_of};

use super::{State, WatchedPod};

/// Test support: builds state from plain objects, as if the watches had listed them.
impl State {
    /// Applies one pod as its watch would.
    pub fn apply_pod(&self, pod: &Pod) {
        self.pods.apply(key_of(pod), WatchedPod::from(pod));
        self.changed();
    }

    pub fn replace_all(
        &self,
        pods: Vec<Pod>,
        bindings: Vec<AzureIdentityBinding>,
        identities: Vec<AzureIdentity>,
        exceptions: Vec<AzurePodIdentityException>,
        assigned: Vec<AzureAssignedIdentity>,
    ) {
        self.pods
            .replace(pods.iter().map(|p| (key_of(p), WatchedPod::from(p))).collect());
        self.bindings
            .replace(bindings.into_iter().map(|o| (key_of(&o), o)).collect());
        self.identities
            .replace(identities.into_iter().map(|o| (key_of(&o), o)).collect());
        self.exceptions
            .replace(exceptions.into_iter().map(|o| (key_of(&o), o)).collect());
        self.assigned.replace(
            assigned
                .iter()
                .map(|o| (key_of(o), AssignedFacts::from(o)))
                .collect(),
        );
        self.changed();
    }

    /// Removes a pod as a watch would.
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.pods.delete(&(namespace.to_owned(), name.to_owned()));
        self.changed();
    }

    /// Adds or replaces an AzureAssignedIdentity as a watch would.
    pub fn apply_assigned(&self, aai: AzureAssignedIdentity) {
        self.assigned.apply(key_of(&aai), AssignedFacts::from(&aai));
        self.changed();
    }
}
