//! AdmissionReview v1: the request the apiserver sends, and the answer. The answer always
//! allows: this webhook only ever adds a readiness gate, and a pod must never fail to be
//! created because of it.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::mutate::{Mutation, SkipReason, mutate};

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// The parts of an AdmissionReview request this webhook reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewRequest {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    resource: Resource,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    object: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Resource {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resource: String,
}

/// The AdmissionReview answer.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    api_version: &'static str,
    kind: &'static str,
    response: Response,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Response {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// The JSONPatch, base64 (a `[]byte` in the Go types).
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// What happened to one review, for the metric and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    GateAdded,
    Skipped(SkipReason),
    /// Not a pod CREATE (a misconfigured webhook): allowed untouched.
    NotAPodCreate,
    /// A well-formed review whose object is not a pod we can read: allowed untouched.
    UnreadablePod(String),
}

impl Outcome {
    /// The `outcome` label of `aadpodidentity_mic_webhook_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::GateAdded => "gate_added",
            Outcome::Skipped(_) | Outcome::NotAPodCreate => "skipped",
            Outcome::UnreadablePod(_) => "error",
        }
    }
}

/// A body that is not an AdmissionReview v1 with a request: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("not JSON of an AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}/{1} is not {API_VERSION}/{KIND}")]
    Type(String, String),
    #[error("the AdmissionReview has no request (or no uid)")]
    NoRequest,
}

/// One reviewed request: its answer, and what it did.
#[derive(Debug)]
pub struct Reviewed {
    pub response: ReviewResponse,
    pub outcome: Outcome,
    /// `namespace/name` (or generateName) of the pod, for the log.
    pub pod: String,
}

/// Answers the AdmissionReview in `body`.
pub fn review(body: &[u8]) -> Result<Reviewed, Malformed> {
    let r: ReviewRequest = serde_json::from_slice(body)?;
    if r.api_version != API_VERSION || r.kind != KIND {
        return Err(Malformed::Type(r.api_version, r.kind));
    }
    let request = r
        .request
        .filter(|q| !q.uid.is_empty())
        .ok_or(Malformed::NoRequest)?;
    let is_pod_create = request.operation == "CREATE"
        && request.resource.group.is_empty()
        && request.resource.resource == "pods";
    let (outcome, patch, pod) = match (is_pod_create, request.object) {
        (false, _) => (Outcome::NotAPodCreate, None, String::new()),
        (true, None) => (Outcome::UnreadablePod("no object".into()), None, String::new()),
        (true, Some(object)) => match serde_json::from_value::<Pod>(object) {
            Err(e) => (Outcome::UnreadablePod(e.to_string()), None, String::new()),
            Ok(p) => {
                let name = p
                    .metadata
                    .name
                    .clone()
                    .or_else(|| p.metadata.generate_name.clone())
                    .unwrap_or_default();
                let ns = request.namespace.clone().unwrap_or_default();
                match mutate(&p) {
                    Mutation::AddGate(ops) => {
                        let json = serde_json::to_vec(&ops).expect("a patch always serialises");
                        (
                            Outcome::GateAdded,
                            Some(base64::engine::general_purpose::STANDARD.encode(json)),
                            format!("{ns}/{name}"),
                        )
                    }
                    Mutation::Skip(why) => (Outcome::Skipped(why), None, format!("{ns}/{name}")),
                }
            }
        },
    };
    Ok(Reviewed {
        response: ReviewResponse {
            api_version: API_VERSION,
            kind: KIND,
            response: Response {
                uid: request.uid,
                allowed: true,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
            },
        },
        outcome,
        pod,
    })
}

#[cfg(test)]
mod tests;
