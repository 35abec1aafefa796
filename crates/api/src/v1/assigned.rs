//! `AzureAssignedIdentity`: MIC's record that one pod uses one identity on one node, and its
//! assignment state.

// `#[kube(printcolumn(...))]` repeats `type_ = "string"` across columns, which
// clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::{AzureIdentity, AzureIdentityBinding, MIC_FIELD_MANAGER};

/// Where an `AzureAssignedIdentity` is in its life (`status.status`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AssignmentState {
    /// Recorded by MIC; the identity is not yet on the node's VM or VMSS.
    Created,
    /// The identity is on the node's VM or VMSS.
    Assigned,
    /// The pod is gone and the identity has been removed (or is no longer needed); the object is about to be deleted.
    Unassigned,
}

/// MIC's record that one pod uses one identity on one node. Created and owned by MIC.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "aadpodidentity.k8s.io",
    version = "v1",
    kind = "AzureAssignedIdentity",
    plural = "azureassignedidentities",
    singular = "azureassignedidentity",
    namespaced,
    annotation("api-approved.kubernetes.io", "unapproved"),
    status = "AzureAssignedIdentityStatus",
    derive = "PartialEq",
    doc = "MIC's record that a pod uses an identity on a node; created and owned by MIC.",
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".spec.podNamespace"),
    printcolumn(
        name = "Identity",
        type_ = "string",
        json_path = ".spec.azureIdentityRef.metadata.name"
    ),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodename"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    )
)]
pub struct AzureAssignedIdentitySpec {
    /// A copy of the `AzureIdentity` at the time of assignment.
    #[serde(rename = "azureIdentityRef", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "embedded_resource")]
    pub azure_identity_ref: Option<AzureIdentity>,

    /// A copy of the `AzureIdentityBinding` that matched the pod.
    #[serde(rename = "azureBindingRef", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "embedded_resource")]
    pub azure_binding_ref: Option<AzureIdentityBinding>,

    /// Name of the pod.
    #[serde(default)]
    pub pod: String,

    /// Namespace of the pod.
    #[serde(rename = "podNamespace", default)]
    pub pod_namespace: String,

    /// Name of the pod's node (all lower case, as upstream spells it).
    #[serde(rename = "nodename", default)]
    pub node_name: String,

    /// Accepted for compatibility with upstream; unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// Status of an `AzureAssignedIdentity`, written on the object itself (no status subresource, as upstream).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AzureAssignedIdentityStatus {
    /// `Created`, `Assigned` or `Unassigned`. Absent on objects written by MIC before upstream 1.5, which NMI treats as assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AssignmentState>,

    /// Kept for upstream compatibility (MIC always wrote 1).
    #[serde(
        rename = "availableReplicas",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub available_replicas: Option<i32>,

    /// Why the identity is not on the VM or scale set yet, while `Created` after a failed
    /// assignment: ARM's error code (`LinkedAuthorizationFailed`, ...) or MIC's own
    /// (`IdentityAssignmentFailed`). Absent once `Assigned`. Not in upstream's CRD: upstream
    /// clients ignore it, and upstream's MIC never writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub reason: Option<String>,

    /// The error behind `reason`, in words: ARM's message, naming the identity and the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub message: Option<String>,
}

impl AzureAssignedIdentity {
    /// The upstream object name: `<pod>-<podNamespace>-<identity>`.
    pub fn object_name(pod: &str, pod_namespace: &str, identity: &str) -> String {
        format!("{pod}-{pod_namespace}-{identity}")
    }

    /// The assignment state. A missing status counts as assigned (upstream's legacy rule: MICs
    /// before 1.5 wrote none), except on an object our MIC wrote. Our MIC may create an object
    /// first and write its status next, so a missing status there means that write has not
    /// landed, or never did (MIC stopped in between): the identity may not be on the VM yet, and
    /// the object is `Created` until MIC says otherwise. Upstream's MIC (1.5 and later) puts the
    /// status in the create's body, which the CRD keeps (it has no status subresource), so its
    /// objects are never status-less and the legacy rule only meets real legacy objects.
    pub fn state(&self) -> AssignmentState {
        match self.status.as_ref().and_then(|s| s.status) {
            Some(state) => state,
            None if self.written_by_mic() => AssignmentState::Created,
            None => AssignmentState::Assigned,
        }
    }

    /// Whether our MIC wrote this object (a `managedFields` entry of [`MIC_FIELD_MANAGER`]).
    pub fn written_by_mic(&self) -> bool {
        self.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some(MIC_FIELD_MANAGER))
    }
}

fn embedded_resource(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-embedded-resource": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
