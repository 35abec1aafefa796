//! The decision: whether a pod being created gets the identity readiness gate, and the JSONPatch
//! that adds it. Pure; the AdmissionReview handling around it is in [`super::review`].

use api::v1::IDENTITY_READY_CONDITION;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

/// The label that binds a pod to identities (upstream's; its value is the binding selector).
pub const BINDING_LABEL: &str = "aadpodidbinding";
/// The label with which a pod opts in to a federated (workload identity) token, value `"true"`.
pub const FEDERATED_LABEL: &str = "azure.workload.identity/use";
/// The namespace label that turns the webhook off for a namespace (value `disabled`). The
/// apiserver applies it (the chart's `namespaceSelector`), so such pods never reach [`mutate`].
pub const NAMESPACE_OPT_OUT_LABEL: &str = "aadpodidentity.k8s.io/readiness-gate";
/// The value of [`NAMESPACE_OPT_OUT_LABEL`] that opts a namespace out.
pub const NAMESPACE_OPT_OUT_VALUE: &str = "disabled";

/// What the webhook does with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Add the gate with this JSONPatch (RFC 6902).
    AddGate(Vec<PatchOp>),
    /// Leave the pod as it is, for this reason.
    Skip(SkipReason),
}

/// Why a pod is left without the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Neither a non-empty `aadpodidbinding` nor `azure.workload.identity/use: "true"`: the pod
    /// uses no identity, and nobody would ever set the condition.
    NoIdentity,
    /// The pod shares its node's network: NMI cannot tell its requests from the node's, so it
    /// never sets the condition, and a gated pod would never become Ready.
    HostNetwork,
    /// The gate is there already (added by hand, or by an earlier admission).
    AlreadyGated,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoIdentity => "no identity label",
            SkipReason::HostNetwork => "hostNetwork pod",
            SkipReason::AlreadyGated => "gate already present",
        }
    }
}

/// One JSONPatch `add` operation: the only operation this webhook ever sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchOp {
    pub op: &'static str,
    pub path: &'static str,
    pub value: serde_json::Value,
}

/// Whether `pod`, about to be created, gets the readiness gate, and how.
pub fn mutate(pod: &Pod) -> Mutation {
    if !uses_identity(pod) {
        return Mutation::Skip(SkipReason::NoIdentity);
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Mutation::Skip(SkipReason::HostNetwork);
    }
    let gate = serde_json::json!({ "conditionType": IDENTITY_READY_CONDITION });
    match spec.and_then(|s| s.readiness_gates.as_ref()) {
        Some(gates) if gates.iter().any(|g| g.condition_type == IDENTITY_READY_CONDITION) => {
            Mutation::Skip(SkipReason::AlreadyGated)
        }
        // Appending keeps the gates the pod has; `-` is the end of the existing array.
        Some(_) => Mutation::AddGate(vec![PatchOp {
            op: "add",
            path: "/spec/readinessGates/-",
            value: gate,
        }]),
        // No array (or `null`): `add` on the member creates it.
        None => Mutation::AddGate(vec![PatchOp {
            op: "add",
            path: "/spec/readinessGates",
            value: serde_json::Value::Array(vec![gate]),
        }]),
    }
}

/// A non-empty binding label, or the federated opt-in: what the chart's `objectSelector`s let
/// through, checked again here because `Exists` also matches an empty value.
fn uses_identity(pod: &Pod) -> bool {
    let Some(labels) = pod.metadata.labels.as_ref() else {
        return false;
    };
    labels.get(BINDING_LABEL).is_some_and(|v| !v.is_empty())
        || labels.get(FEDERATED_LABEL).is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests;
