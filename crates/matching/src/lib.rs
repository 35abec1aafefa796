//! The rules of pod identity, as plain functions over plain values, with no
//! I/O: which `AzureIdentityBinding`s select a pod, which `AzureIdentity`s
//! those bindings grant, whether an `AzurePodIdentityException` lets the pod
//! through to the node's own identity, and which identity a token request
//! gets. MIC and NMI both decide with this crate, so they can never disagree.
//!
//! Safer than upstream by default: a pod matches only bindings of its own
//! namespace ([`Policy::namespaced`]), exceptions can be confined to chosen
//! namespaces ([`Policy::exception_namespaces`]), and when a request names no
//! identity the choice is deterministic ([`choose`]) instead of cache order.
#![forbid(unsafe_code)]

mod assign;
mod exception;
mod pod;
mod select;

pub use assign::{
    AssignedFacts, BadProviderId, ComputeKind, ComputeTarget, Desired, MicRefusal, Plan, Recorded,
    TargetChange, desired, is_usable, is_user_assigned_identity_id, plan, target_change,
};
pub use exception::is_excepted;
pub use pod::PodFacts;
pub use select::{Candidate, Choice, IdentityRequest, NotChosen, candidates, choose};

use std::collections::BTreeSet;

/// How strictly pods, bindings and identities must share a namespace, and who may use exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A pod matches only bindings (and so identities) in its own namespace. Upstream's default was
    /// `false` (its `--forceNamespaced` flag turned this on); ours is `true`.
    pub namespaced: bool,
    /// Namespaces whose `AzurePodIdentityException`s are honoured; `None` means every namespace (upstream).
    /// An exception hands out the node's own identity, so a cluster may confine it to system namespaces.
    pub exception_namespaces: Option<BTreeSet<String>>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            namespaced: true,
            exception_namespaces: None,
        }
    }
}

#[cfg(test)]
mod fixtures;
