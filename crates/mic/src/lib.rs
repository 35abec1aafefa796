//! MIC, the Managed Identity Controller. It matches pods carrying
//! `aadpodidbinding` to `AzureIdentityBinding`s and `AzureIdentity`s (with the
//! shared rules of the `matching` crate), records each (pod, identity) as an
//! `AzureAssignedIdentity`, and puts user-assigned identities on the VM or
//! scale set behind each pod's node through ARM (the `arm` crate's client), removing them
//! when no pod there needs them any more. NMI serves a pod's token only once MIC has
//! marked its assignment `Assigned`.
//!
//! The decisions are pure functions, unit-tested on plain values: `matching` (which
//! assignments should exist), [`arm::consent`] (whether an identity's owner lets a namespace use
//! it), `plan` (from a snapshot of the caches to each VM's or scale set's work, and the objects
//! to delete at once), [`worker::target_state`] (when an assignment may be marked `Assigned`,
//! what each VM or scale set needs from ARM next), `worker::writes` (what to write for each
//! `AzureAssignedIdentity` at each stage of a batch), [`failure`] (what a failed assignment's
//! status says) and [`arm::patch_bodies`]; this crate is otherwise the I/O around them:
//! watches, Kubernetes writes, ARM calls, leader election, metrics.
#![forbid(unsafe_code)]

pub mod controller;
pub mod events;
pub mod failure;
pub mod flags;
pub mod leader;
pub mod metrics;
mod plan;
pub mod webhook;
pub mod worker;

/// The field manager MIC writes as (see [`api::v1::MIC_FIELD_MANAGER`]).
pub use api::v1::MIC_FIELD_MANAGER as FIELD_MANAGER;

/// Create and replace parameters with MIC's field manager.
pub fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Patch parameters with MIC's field manager.
pub fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// A merge patch made conditional on the object still being at `version`: the apiserver
/// answers 409 otherwise. MIC's writes that follow a plan carry the version the plan saw, so
/// that a decision made from a cache that is behind is refused rather than carried out.
pub fn at_version(mut patch: serde_json::Value, version: Option<&str>) -> serde_json::Value {
    if let Some(v) = version {
        patch["metadata"]["resourceVersion"] = serde_json::Value::from(v);
    }
    patch
}

/// What MIC logs when the apiserver refuses a write made from a plan (409): see [`at_version`].
const CACHE_BEHIND: &str = "the AzureAssignedIdentity is not as the plan saw it (MIC's cache is behind); the next plan decides again";

/// MIC's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    /// The cloud config cannot be used (unreadable, an unknown cloud, no credentials). Not a
    /// `#[source]`: its whole message is already in this one's.
    #[error("configuration: {0}")]
    Cloud(arm::Error),
    /// Flags that contradict one another ([`flags::Flags::check`]), in `upstream_flags`' words
    /// (its namespacing rule is shared with NMI and answers with a message).
    #[error("{0}")]
    Flags(String),
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}
