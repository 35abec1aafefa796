//! Refusals: a token request NMI answers without a token, and why. The authorizer decides most
//! of them (no pod, not bound, not yet assigned, ...), the server the rest (rate limit, malformed
//! request); both say here which [`Reason`], which IMDS-style status and error code, and what
//! the pod is told. The server renders the answer (`server::response`), counts it in
//! `aadpodidentity_nmi_refusals_total` by [`Reason`], logs it at `info` on the `nmi::refusal`
//! target ([`Refusal::log`], at most a line per pod and reason per window) and publishes it as
//! an Event on the pod. `nmi test-token-path` reads the texts of [`unbound_detail`] back.
//!
//! Kept apart from the server so that the authorizer, below it, gives refusals without knowing
//! how they are written to the wire.

use std::{net::IpAddr, time::Duration};

use axum::http::StatusCode;
use matching::{IdentityRequest, PodFacts};

use crate::Error;

/// Why a token request was refused: the `reason` label of `aadpodidentity_nmi_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Over `--pod-rate-limit` for the source IP.
    RateLimited,
    /// The query is malformed (no `resource`, repeated parameters, several selectors...).
    BadRequest,
    /// A path that spells the token path in a way IMDS might resolve.
    InvalidPath,
    /// No Pending or Running pod of this node has the source IP.
    NoPod,
    /// Several pods that may send from the source IP claim it.
    AmbiguousIp,
    /// The pod is bound to no identity.
    Unbound,
    /// The pod is not bound to the identity it asked for.
    NotBound,
    /// MIC has not (yet) marked the assignment `Assigned`.
    NotAssigned,
    /// MIC will not assign the identity as things stand: its owner has not allowed the
    /// namespace, or the AzureIdentity's clientID is not the identity's (`api::v1::REFUSAL_REASONS`).
    NotAllowed,
    /// MIC marked the assignment `Assigned`, but IMDS does not have the identity on this VM.
    IdentityMissingOnVm,
    /// IMDS or Entra refused or failed, or the identity cannot be used as configured.
    Upstream,
    /// The pod lost its binding while its token was fetched.
    ChangedDuringFetch,
    /// `/host/token` from a non-loopback address.
    HostTokenNotLoopback,
    /// NMI has just started and its watches have not all listed yet.
    NotSynced,
    /// A watch has failed for longer than `--max-state-staleness`.
    StateStale,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Self::RateLimited,
        Self::BadRequest,
        Self::InvalidPath,
        Self::NoPod,
        Self::AmbiguousIp,
        Self::Unbound,
        Self::NotBound,
        Self::NotAssigned,
        Self::NotAllowed,
        Self::IdentityMissingOnVm,
        Self::Upstream,
        Self::ChangedDuringFetch,
        Self::HostTokenNotLoopback,
        Self::NotSynced,
        Self::StateStale,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::BadRequest => "bad_request",
            Self::InvalidPath => "invalid_path",
            Self::NoPod => "no_pod",
            Self::AmbiguousIp => "ambiguous_ip",
            Self::Unbound => "unbound",
            Self::NotBound => "not_bound",
            Self::NotAssigned => "not_assigned",
            Self::NotAllowed => "not_allowed",
            Self::IdentityMissingOnVm => "identity_missing_on_vm",
            Self::Upstream => "upstream",
            Self::ChangedDuringFetch => "changed_during_fetch",
            Self::HostTokenNotLoopback => "host_token_not_loopback",
            Self::NotSynced => "not_synced",
            Self::StateStale => "state_stale",
        }
    }

    /// What an operator reading the log line could do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Self::RateLimited => {
                "the pod asks faster than --pod-rate-limit allows: let its SDK cache tokens, or raise the limit"
            }
            Self::BadRequest => {
                "send api-version and resource, and at most one of client_id, object_id, msi_res_id"
            }
            Self::InvalidPath => "ask /metadata/identity/oauth2/token, spelled exactly so",
            Self::NoPod => {
                "check the pod's status.podIP and spec.nodeName, and NMI's /readyz; a pod being deleted gets no new token"
            }
            Self::AmbiguousIp => {
                "several pods hold this IP (an old pod's deletion not yet seen); the SDK's retry is answered once it is"
            }
            Self::Unbound => {
                "label the pod aadpodidbinding=<selector of an AzureIdentityBinding in its namespace>"
            }
            Self::NotBound => {
                "ask for an identity one of the pod's bindings names, or add a binding for this one"
            }
            Self::NotAssigned => {
                "MIC has not assigned the identity yet: see MIC's log and the pod's Events (IdentityAssignmentFailed)"
            }
            Self::NotAllowed => {
                "MIC will not assign the identity: its owner has not allowed the namespace (tag pod-identity-namespaces), or clientID is not the identity's; the detail gives the fix"
            }
            Self::IdentityMissingOnVm => {
                "the VM or scale set lacks the identity although MIC marked it Assigned; NMI told MIC (annotation aadpodidentity.k8s.io/identity-missing): see MIC's log and ARM"
            }
            Self::Upstream => "IMDS or Entra refused or failed: see the detail",
            Self::ChangedDuringFetch => {
                "the pod's binding changed while its token was fetched; a retry is decided anew"
            }
            Self::HostTokenNotLoopback => "/host/token is for processes on the node itself",
            Self::NotSynced => {
                "NMI has just started and is still reading the cluster; the SDK's retry succeeds"
            }
            Self::StateStale => "NMI cannot reach the Kubernetes API: check the apiserver and NMI's network",
        }
    }
}

/// The request's identity selector, as a refusal names it.
pub fn describe_request(request: &IdentityRequest) -> String {
    match request {
        IdentityRequest::Default => "the default identity".to_owned(),
        IdentityRequest::ClientId(c) => format!("client_id {c}"),
        IdentityRequest::ObjectId(o) => format!("object_id {o}"),
        IdentityRequest::ResourceId(m) => format!("msi_res_id {m}"),
    }
}

/// The `error_description` of [`Reason::Unbound`] for a pod: `pod <ns>/<name> is not bound to any
/// AzureIdentity (…)`. `nmi test-token-path` (the chart's `helm test`) recognises NMI by it.
pub fn unbound_detail(namespace: &str, name: &str) -> String {
    format!(
        "{} (label {}, bindings of its namespace)",
        unbound_subject(namespace, name),
        api::v1::BINDING_LABEL
    )
}

/// The start of [`unbound_detail`]: which pod, and that it is bound to nothing.
pub fn unbound_subject(namespace: &str, name: &str) -> String {
    format!("pod {namespace}/{name} {UNBOUND}")
}

/// What every [`unbound_detail`] says, whichever pod it names.
pub const UNBOUND: &str = "is not bound to any AzureIdentity";

/// The pod a refused request was attributed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
    /// For the pod's Event (`server::refusal_events`): `kubectl describe pod` lists those
    /// carrying its uid.
    pub uid: Option<String>,
}

#[cfg(test)]
impl PodName {
    /// Pod `name` of namespace `ns`, with no uid: the pod of this crate's unit tests.
    pub fn in_ns(name: &str) -> Self {
        Self {
            namespace: "ns".into(),
            name: name.into(),
            uid: None,
        }
    }
}

impl From<&PodFacts> for PodName {
    fn from(p: &PodFacts) -> Self {
        Self {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
        }
    }
}

/// A token request NMI will not answer with a token: the answer to give and what to log about it.
#[derive(Debug)]
pub struct Refusal {
    pub reason: Reason,
    /// The answer's status.
    pub status: StatusCode,
    /// The answer's `error` (IMDS's codes: `forbidden`, `not_found`, ...).
    pub error: &'static str,
    /// The answer's `error_description`: what the pod is told.
    pub detail: String,
    /// The answer's `Retry-After`, when the SDKs' retry will be answered.
    pub retry_after: Option<Duration>,
    /// The pod the request was attributed to, once known.
    pub pod: Option<PodName>,
    /// What the request asked for, once its query was read.
    pub requested: Option<String>,
    /// The AzureIdentity NMI chose for the pod, when it chose one.
    pub identity: Option<String>,
}

impl Refusal {
    /// An IMDS-style error answer.
    pub fn new(reason: Reason, status: StatusCode, error: &'static str, detail: String) -> Self {
        Self {
            reason,
            status,
            error,
            detail,
            retry_after: None,
            pod: None,
            requested: None,
            identity: None,
        }
    }

    /// 503 + `Retry-After`: NMI cannot decide now, and the SDKs' retry will be answered.
    pub fn unavailable(reason: Reason, detail: String, retry_after: Duration) -> Self {
        Self::new(
            reason,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            detail,
        )
        .retry_after(retry_after)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(detail: String) -> Self {
        Self::new(
            Reason::BadRequest,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            detail,
        )
    }

    /// IMDS or Entra failed, or the identity cannot be used as configured: transient failures
    /// stay retryable for the SDKs (429, 5xx, IMDS's 404/410 "updating"), with `Retry-After`
    /// when upstream gave one; a refusal by Azure is a 403, never a 400 (which SDKs read as "no
    /// identity here, stop"). The description is the error's text.
    pub fn upstream(e: &Error) -> Self {
        let (status, error) = match e {
            Error::Upstream { status, .. } => match *status {
                429 => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
                404 | 410 => (
                    StatusCode::from_u16(*status).expect("a valid status"),
                    "service_unavailable",
                ),
                s if s >= 500 => (
                    StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    "service_unavailable",
                ),
                _ => (StatusCode::FORBIDDEN, "forbidden"),
            },
            Error::Http { .. } | Error::Kube(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            Error::BadUpstreamBody { .. } => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            _ => (StatusCode::FORBIDDEN, "forbidden"),
        };
        let refusal = Self::new(Reason::Upstream, status, error, e.to_string());
        match e {
            Error::Upstream {
                retry_after: Some(after),
                ..
            } => refusal.retry_after(*after),
            _ => refusal,
        }
    }

    /// Adds `Retry-After` to the answer.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn for_pod(mut self, pod: &PodFacts) -> Self {
        self.pod = Some(pod.into());
        self
    }

    pub fn asking(mut self, request: &IdentityRequest) -> Self {
        self.requested.get_or_insert_with(|| describe_request(request));
        self
    }

    /// The AzureIdentity chosen: `<namespace>/<name>`, or its name alone where that is all NMI has.
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// The `nmi::refusal` line; `suppressed` lines of the same (pod, reason) were left out before it.
    pub fn log(&self, source: IpAddr, suppressed: u64) {
        let (namespace, pod) = self
            .pod
            .as_ref()
            .map_or(("", ""), |p| (p.namespace.as_str(), p.name.as_str()));
        tracing::info!(
            target: "nmi::refusal",
            pod,
            namespace,
            source = %source,
            reason = self.reason.label(),
            identity = self.requested.as_deref().unwrap_or(""),
            azure_identity = self.identity.as_deref().unwrap_or(""),
            status = self.status.as_u16(),
            // Quoted (a `&str`, not `%`): the detail holds text the pod sent (a parameter's name),
            // and a quoted value is read back as one field whatever it holds (plugin's `nmi_log`).
            detail = self.detail.as_str(),
            hint = self.reason.hint(),
            suppressed,
            "token request refused"
        );
    }
}

#[cfg(test)]
mod tests;
