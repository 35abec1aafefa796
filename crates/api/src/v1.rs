//! `aadpodidentity.k8s.io/v1`: the four kinds of upstream AAD Pod Identity, with
//! its camelCase field names, plus the capitalised spellings of upstream ≤ 1.5
//! (`ResourceID`, `ClientID`, `AzureIdentity`, `Selector`, `PodLabels`, …) that
//! older manifests, and the seed walkthrough, still use.
//!
//! Upstream v1.8 pruned the old spellings silently, after which MIC failed with
//! `Invalid resource id: ""`. Here the schema declares both spellings, the
//! accessors read whichever is set, and a CEL rule refuses an object that sets
//! both spellings to different values.

// `#[kube(printcolumn(...))]` repeats `type_ = "string"` across columns, which
// clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

/// The pod label that binds a pod to every `AzureIdentityBinding` whose selector equals its value.
pub const BINDING_LABEL: &str = "aadpodidbinding";
/// The label MIC puts on each `AzureAssignedIdentity`, naming the pod's node.
pub const NODE_NAME_LABEL: &str = "nodename";
/// The field manager MIC writes as, so that `managedFields` and `kubectl` name MIC rather than
/// `unknown`, and so that an `AzureAssignedIdentity` it created is known as its own.
pub const MIC_FIELD_MANAGER: &str = "aadpodidentity-mic";
/// The finalizer MIC puts on each `AzureAssignedIdentity` (upstream's name, so both can coexist during a migration).
pub const ASSIGNED_IDENTITY_FINALIZER: &str = "azureassignedidentity.finalizers.aadpodidentity.k8s.io";
/// Upstream's per-identity opt-in to namespaced matching.
pub const BEHAVIOR_ANNOTATION: &str = "aadpodidentity.k8s.io/Behavior";
/// The value of [`BEHAVIOR_ANNOTATION`] that confines an identity to its namespace.
pub const BEHAVIOR_NAMESPACED: &str = "namespaced";
/// The annotation NMI puts on an `Assigned` `AzureAssignedIdentity` when IMDS has just answered
/// "Identity not found" for it: the identity vanished from the VM or scale set behind MIC's back
/// (or has not reached IMDS yet). Its value is an opaque token NMI changes at each finding (an
/// RFC 3339 time); MIC reads the target back from ARM whenever the value changes, and puts the
/// identity back within seconds instead of at its next periodic pass. Nothing clears it: a
/// value MIC has already acted on means nothing.
pub const IDENTITY_MISSING_ANNOTATION: &str = "aadpodidentity.k8s.io/identity-missing";

const GUID_RULE: &str =
    "self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')";
const GUID_MESSAGE: &str = "clientID must be a GUID such as 00000000-0000-0000-0000-000000000000";
const RESOURCE_ID_RULE: &str = "self == '' || self.matches('^(?i)/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\\\\.managedidentity/userassignedidentities/[^/]+$')";
const RESOURCE_ID_MESSAGE: &str = "resourceID must be a user-assigned identity's resource id: /subscriptions/<subscription>/resourcegroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>";

/// What kind of Azure identity an `AzureIdentity` describes (`spec.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdentityType {
    /// 0: a user-assigned managed identity, whose tokens come from the node's IMDS.
    UserAssignedMsi,
    /// 1: a service principal with a client secret.
    ServicePrincipal,
    /// 2: a service principal with a certificate.
    ServicePrincipalCertificate,
}

impl IdentityType {
    /// Reads upstream's integer; `None` for values no release defined.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::UserAssignedMsi),
            1 => Some(Self::ServicePrincipal),
            2 => Some(Self::ServicePrincipalCertificate),
            _ => None,
        }
    }

    /// Upstream's integer for this type.
    pub fn code(self) -> i64 {
        match self {
            Self::UserAssignedMsi => 0,
            Self::ServicePrincipal => 1,
            Self::ServicePrincipalCertificate => 2,
        }
    }
}

/// An Azure identity that pods may use: a user-assigned managed identity or a service principal.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "aadpodidentity.k8s.io",
    version = "v1",
    kind = "AzureIdentity",
    plural = "azureidentities",
    singular = "azureidentity",
    namespaced,
    annotation("api-approved.kubernetes.io", "unapproved"),
    status = "AzureIdentityStatus",
    derive = "PartialEq",
    doc = "An Azure identity (user-assigned managed identity or service principal) that pods may be bound to.",
    printcolumn(name = "Type", type_ = "integer", json_path = ".spec.type"),
    printcolumn(name = "ClientID", type_ = "string", json_path = ".spec.clientID"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("!has(self.resourceID) || !has(self.ResourceID) || self.resourceID == self.ResourceID")
        .message("resourceID and ResourceID are two spellings of one field and must not differ"),
    validation = Rule::new("!has(self.clientID) || !has(self.ClientID) || self.clientID == self.ClientID")
        .message("clientID and ClientID are two spellings of one field and must not differ"),
    validation = Rule::new("!has(self.tenantID) || !has(self.TenantID) || self.tenantID == self.TenantID")
        .message("tenantID and TenantID are two spellings of one field and must not differ"),
    // An object-valued field: the apiserver's CEL cost estimate refuses a field-by-field comparison, so both spellings at once are refused.
    validation = Rule::new("!(has(self.clientPassword) && has(self.ClientPassword))")
        .message("set clientPassword or its older spelling ClientPassword, not both"),
    validation = Rule::new("(has(self.type) && self.type != 0) || (has(self.resourceID) && self.resourceID != '') || (has(self.ResourceID) && self.ResourceID != '')")
        .message("type 0 (user-assigned managed identity) needs resourceID, the identity's ARM resource id"),
    validation = Rule::new("(has(self.type) && self.type != 0) || (has(self.clientID) && self.clientID != '') || (has(self.ClientID) && self.ClientID != '')")
        .message("type 0 (user-assigned managed identity) needs clientID, the identity's client id"),
    validation = Rule::new("!has(self.type) || self.type == 0 || ((has(self.tenantID) || has(self.TenantID)) && (has(self.clientID) || has(self.ClientID)) && (has(self.clientPassword) || has(self.ClientPassword)))")
        .message("types 1 and 2 (service principal) need tenantID, clientID and clientPassword"),
)]
pub struct AzureIdentitySpec {
    /// 0: user-assigned managed identity; 1: service principal with a client secret; 2: service principal with a certificate. Omitted means 0.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in [0, 1, 2]").message("type must be 0 (user-assigned managed identity), 1 (service principal with a client secret) or 2 (service principal with a certificate)"))]
    pub type_: Option<i64>,

    /// ARM resource id of the user-assigned managed identity (type 0).
    #[serde(rename = "resourceID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new(RESOURCE_ID_RULE).message(RESOURCE_ID_MESSAGE))]
    pub resource_id: Option<String>,

    /// Client (application) id of the managed identity or service principal.
    #[serde(rename = "clientID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(GUID_RULE).message(GUID_MESSAGE))]
    pub client_id: Option<String>,

    /// The Secret holding the service principal's credential (types 1 and 2), in this identity's namespace.
    #[serde(rename = "clientPassword", default, skip_serializing_if = "Option::is_none")]
    pub client_password: Option<SecretReference>,

    /// Entra tenant of the service principal (types 1 and 2).
    #[serde(rename = "tenantID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub tenant_id: Option<String>,

    /// Further tenants for a multi-tenant service principal (type 1).
    #[serde(
        rename = "auxiliaryTenantIDs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub auxiliary_tenant_ids: Option<Vec<String>>,

    /// Entra authority for service principals; default `https://login.microsoftonline.com/`.
    #[serde(rename = "adEndpoint", default, skip_serializing_if = "Option::is_none")]
    pub ad_endpoint: Option<String>,

    /// Accepted for compatibility with upstream manifests; unused, as upstream.
    #[serde(rename = "adResourceID", default, skip_serializing_if = "Option::is_none")]
    pub ad_resource_id: Option<String>,

    /// Accepted for compatibility with upstream manifests; unused, as upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Older spelling of `resourceID` (upstream ≤ 1.5), accepted on read.
    #[serde(rename = "ResourceID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new(RESOURCE_ID_RULE).message(RESOURCE_ID_MESSAGE))]
    pub legacy_resource_id: Option<String>,

    /// Older spelling of `clientID`, accepted on read.
    #[serde(rename = "ClientID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(GUID_RULE).message(GUID_MESSAGE))]
    pub legacy_client_id: Option<String>,

    /// Older spelling of `clientPassword`, accepted on read.
    #[serde(rename = "ClientPassword", default, skip_serializing_if = "Option::is_none")]
    pub legacy_client_password: Option<SecretReference>,

    /// Older spelling of `tenantID`, accepted on read.
    #[serde(rename = "TenantID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub legacy_tenant_id: Option<String>,
}

/// Names a Secret, as Kubernetes' `SecretReference` does (same keys), with length limits that let the apiserver's CEL cost estimate accept our rules.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretReference {
    /// Name of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub name: Option<String>,
    /// Namespace of the Secret; NMI reads it only from the identity's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

/// Status of an `AzureIdentity`; kept for upstream compatibility, unused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AzureIdentityStatus {
    #[serde(
        rename = "availableReplicas",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub available_replicas: Option<i32>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl AzureIdentitySpec {
    /// `spec.type` as upstream reads it: omitted means 0. `Err` carries an unknown code.
    pub fn identity_type(&self) -> Result<IdentityType, i64> {
        let code = self.type_.unwrap_or(0);
        IdentityType::from_code(code).ok_or(code)
    }

    /// The resource id, under either spelling.
    pub fn resource_id(&self) -> Option<&str> {
        non_empty(&self.resource_id).or_else(|| non_empty(&self.legacy_resource_id))
    }

    /// The client id, under either spelling.
    pub fn client_id(&self) -> Option<&str> {
        non_empty(&self.client_id).or_else(|| non_empty(&self.legacy_client_id))
    }

    /// The tenant id, under either spelling.
    pub fn tenant_id(&self) -> Option<&str> {
        non_empty(&self.tenant_id).or_else(|| non_empty(&self.legacy_tenant_id))
    }

    /// The secret reference, under either spelling.
    pub fn client_password(&self) -> Option<&SecretReference> {
        self.client_password
            .as_ref()
            .or(self.legacy_client_password.as_ref())
    }

    /// The same spec in upstream v1.8's camelCase spelling only. Upstream's binaries decode
    /// case-sensitively, so a copy they read (an AzureAssignedIdentity's `azureIdentityRef`) must
    /// say `clientID`: upstream's NMI reading a seed-spelled copy finds no client id and asks IMDS
    /// for the node's default identity.
    pub fn in_upstream_spelling(&self) -> Self {
        Self {
            resource_id: self.resource_id().map(str::to_owned),
            client_id: self.client_id().map(str::to_owned),
            client_password: self.client_password().cloned(),
            tenant_id: self.tenant_id().map(str::to_owned),
            legacy_resource_id: None,
            legacy_client_id: None,
            legacy_client_password: None,
            legacy_tenant_id: None,
            ..self.clone()
        }
    }
}

impl AzureIdentity {
    /// A copy with its spec in upstream's spelling ([`AzureIdentitySpec::in_upstream_spelling`]).
    pub fn in_upstream_spelling(&self) -> Self {
        Self {
            spec: self.spec.in_upstream_spelling(),
            ..self.clone()
        }
    }
}

/// Binds pods whose `aadpodidbinding` label equals `selector` to the named `AzureIdentity`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "aadpodidentity.k8s.io",
    version = "v1",
    kind = "AzureIdentityBinding",
    plural = "azureidentitybindings",
    singular = "azureidentitybinding",
    namespaced,
    annotation("api-approved.kubernetes.io", "unapproved"),
    status = "AzureIdentityBindingStatus",
    derive = "PartialEq",
    doc = "Binds pods labelled aadpodidbinding=<selector> to an AzureIdentity in the same namespace.",
    printcolumn(name = "Identity", type_ = "string", json_path = ".spec.azureIdentity"),
    printcolumn(name = "Selector", type_ = "string", json_path = ".spec.selector"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("!has(self.azureIdentity) || !has(self.AzureIdentity) || self.azureIdentity == self.AzureIdentity")
        .message("azureIdentity and AzureIdentity are two spellings of one field and must not differ"),
    validation = Rule::new("!has(self.selector) || !has(self.Selector) || self.selector == self.Selector")
        .message("selector and Selector are two spellings of one field and must not differ"),
    validation = Rule::new("(has(self.azureIdentity) && self.azureIdentity != '') || (has(self.AzureIdentity) && self.AzureIdentity != '')")
        .message("azureIdentity is required: the name of an AzureIdentity in this namespace"),
    validation = Rule::new("(has(self.selector) && self.selector != '') || (has(self.Selector) && self.Selector != '')")
        .message("selector is required: pods labelled aadpodidbinding=<selector> get the identity"),
)]
pub struct AzureIdentityBindingSpec {
    /// Name of the `AzureIdentity`, in this binding's namespace.
    #[serde(rename = "azureIdentity", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub azure_identity: Option<String>,

    /// Pods whose `aadpodidbinding` label equals this value are bound (plain string equality, not a label selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub selector: Option<String>,

    /// Accepted for compatibility with upstream manifests; unused, as upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,

    /// Older spelling of `azureIdentity`, accepted on read.
    #[serde(rename = "AzureIdentity", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub legacy_azure_identity: Option<String>,

    /// Older spelling of `selector`, accepted on read.
    #[serde(rename = "Selector", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub legacy_selector: Option<String>,
}

/// Status of an `AzureIdentityBinding`; kept for upstream compatibility, unused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AzureIdentityBindingStatus {
    #[serde(
        rename = "availableReplicas",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub available_replicas: Option<i32>,
}

impl AzureIdentityBindingSpec {
    /// The identity name, under either spelling.
    pub fn azure_identity(&self) -> Option<&str> {
        non_empty(&self.azure_identity).or_else(|| non_empty(&self.legacy_azure_identity))
    }

    /// The selector, under either spelling.
    pub fn selector(&self) -> Option<&str> {
        non_empty(&self.selector).or_else(|| non_empty(&self.legacy_selector))
    }

    /// The same spec in upstream v1.8's camelCase spelling only (see
    /// [`AzureIdentitySpec::in_upstream_spelling`]).
    pub fn in_upstream_spelling(&self) -> Self {
        Self {
            azure_identity: self.azure_identity().map(str::to_owned),
            selector: self.selector().map(str::to_owned),
            legacy_azure_identity: None,
            legacy_selector: None,
            ..self.clone()
        }
    }
}

impl AzureIdentityBinding {
    /// A copy with its spec in upstream's spelling.
    pub fn in_upstream_spelling(&self) -> Self {
        Self {
            spec: self.spec.in_upstream_spelling(),
            ..self.clone()
        }
    }
}

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
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
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

/// Pods in this namespace carrying any one of `podLabels` (value compared case-insensitively) bypass pod identity and reach the node's own identity.
///
/// Both spellings may be set; their labels are then taken together, since an
/// exception already means "any one of these labels". (CEL cannot see maps of
/// untyped values, so no rule could compare them anyway.)
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "aadpodidentity.k8s.io",
    version = "v1",
    kind = "AzurePodIdentityException",
    plural = "azurepodidentityexceptions",
    singular = "azurepodidentityexception",
    namespaced,
    annotation("api-approved.kubernetes.io", "unapproved"),
    status = "AzurePodIdentityExceptionStatus",
    derive = "PartialEq",
    doc = "Pods in this namespace with any one of podLabels bypass pod identity and use the node's own identity."
)]
pub struct AzurePodIdentityExceptionSpec {
    /// Label key to value; a pod with any one of them is excepted. Values may be written as YAML scalars (`noaad: true`).
    #[serde(rename = "podLabels", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "scalar_map")]
    pub pod_labels: Option<BTreeMap<String, LabelValue>>,

    /// Older spelling of `podLabels`, as in the seed walkthrough, accepted on read.
    #[serde(rename = "PodLabels", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "scalar_map")]
    pub legacy_pod_labels: Option<BTreeMap<String, LabelValue>>,
}

/// Status of an `AzurePodIdentityException`; kept for upstream compatibility, unused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AzurePodIdentityExceptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl AzurePodIdentityExceptionSpec {
    /// The labels under either spelling, as strings; values that are not scalars are skipped, since no label can equal them.
    pub fn pod_labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pod_labels
            .iter()
            .chain(self.legacy_pod_labels.iter())
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
    }
}

/// A label value in an exception: a string, or a YAML scalar written without quotes (`true`, `1`).
///
/// Anything else (a list, an object) decodes to a value that matches no label, so
/// one odd object never stops a watch from decoding the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LabelValue(Option<String>);

impl LabelValue {
    /// The value as a label would carry it; `None` for a non-scalar.
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl From<&str> for LabelValue {
    fn from(s: &str) -> Self {
        Self(Some(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for LabelValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }))
    }
}

fn embedded_resource(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-embedded-resource": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn scalar_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true },
    })
}

#[cfg(test)]
mod tests;
