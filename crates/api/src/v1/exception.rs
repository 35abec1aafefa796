//! `AzurePodIdentityException`: pods that bypass pod identity, and the scalar label values its
//! `podLabels` accept.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

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

fn scalar_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true },
    })
}
