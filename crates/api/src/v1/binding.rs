//! `AzureIdentityBinding`: which pods (by their `aadpodidbinding` label) get which
//! `AzureIdentity`; apart from the identity kind it points at, as `assigned` and `exception` are.

// `#[kube(printcolumn(...))]` repeats `type_ = "string"` across columns, which
// clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::AzureIdentitySpec;
use super::non_empty;

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
