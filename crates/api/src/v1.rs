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

mod assigned;
mod binding;
mod exception;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::{
    assigned::{
        AssignmentState, AzureAssignedIdentity, AzureAssignedIdentitySpec, AzureAssignedIdentityStatus,
    },
    binding::{AzureIdentityBinding, AzureIdentityBindingSpec, AzureIdentityBindingStatus},
    exception::{
        AzurePodIdentityException, AzurePodIdentityExceptionSpec, AzurePodIdentityExceptionStatus, LabelValue,
    },
};

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

/// `status.reason`s with which MIC records that it will not assign an identity as things stand
/// (the identity's owner has not allowed the namespace, the `clientID` is not the identity's,
/// there is no such identity): no waiting will change that, only the fix the `message` names.
/// NMI refuses such a pod's request at once, with that message, rather than holding it.
pub const REASON_CONSENT_MISSING: &str = "IdentityConsentMissing";
/// See [`REASON_CONSENT_MISSING`].
pub const REASON_CLIENT_ID_MISMATCH: &str = "IdentityClientIdMismatch";
/// See [`REASON_CONSENT_MISSING`].
pub const REASON_NOT_FOUND: &str = "IdentityNotFound";
/// The reasons of [`REASON_CONSENT_MISSING`].
pub const REFUSAL_REASONS: [&str; 3] = [
    REASON_CONSENT_MISSING,
    REASON_CLIENT_ID_MISMATCH,
    REASON_NOT_FOUND,
];

/// The pod condition NMI keeps on each pod of its node that uses an identity: `True` once a
/// token of the pod's identity has been obtained for it (so its first request is a cache hit),
/// `False` with one of the `READY_REASON_*` below, or MIC's reason passed through, otherwise.
pub const IDENTITY_READY_CONDITION: &str = "aadpodidentity.k8s.io/IdentityReady";
/// [`IDENTITY_READY_CONDITION`] `True`: a token of the pod's identity was obtained.
pub const READY_REASON_TOKEN_OBTAINED: &str = "TokenObtained";
/// `False`: the pod is bound, but MIC has not (yet) assigned the identity to its node.
pub const READY_REASON_NOT_ASSIGNED: &str = "IdentityNotAssigned";
/// `False`: the identity is usable on the node, but IMDS or Entra refused or failed the token.
pub const READY_REASON_TOKEN_REQUEST_FAILED: &str = "TokenRequestFailed";
/// `False`: the pod's binding label (or federation opt-in) names no identity it may use.
pub const READY_REASON_NO_MATCHING_IDENTITY: &str = "NoMatchingIdentity";
/// The pod annotation naming the resources (comma-separated, at most 8) NMI fetches a token
/// for ahead of the pod's first request.
pub const TOKEN_RESOURCES_ANNOTATION: &str = "aadpodidentity.k8s.io/token-resources";
/// The field manager NMI writes pods' [`IDENTITY_READY_CONDITION`] as.
pub const NMI_FIELD_MANAGER: &str = "pod-identity-nmi";

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

#[cfg(test)]
mod tests;
