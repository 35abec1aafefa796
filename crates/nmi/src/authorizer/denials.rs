//! The denials of authorization once the caller's pod is known: not bound to what it asked
//! for, or bound to an identity not (yet) usable on the node; each a [`Refusal`] in IMDS's
//! terms.

use std::time::Duration;

use api::AzureIdentity;
use axum::http::StatusCode;
use matching::{NotChosen, PodFacts};

use super::Authorizer;
use crate::{
    refusal::{Reason, Refusal},
    token::TokenSource,
};

/// `Retry-After` upstream used with `--set-retry-after-header`.
const RETRY_AFTER_WAITING: Duration = Duration::from_secs(20);

/// An AzureIdentity's namespace and name, as refusals and the audit log name it.
pub(super) struct IdentityName<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

impl<'a> IdentityName<'a> {
    pub(super) fn of(identity: &'a AzureIdentity) -> Self {
        Self {
            namespace: identity.metadata.namespace.as_deref().unwrap_or_default(),
            name: identity.metadata.name.as_deref().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for IdentityName<'_> {
    /// `<namespace>/<name>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl<S: TokenSource> Authorizer<S> {
    /// 403, for good: the pod is bound to no identity, or not to the one it asked for.
    pub(super) fn forbidden(&self, pod: &PodFacts, why: &NotChosen) -> Refusal {
        let (reason, text) = match why {
            NotChosen::Unbound => (
                Reason::Unbound,
                crate::refusal::unbound_detail(&pod.namespace, &pod.name),
            ),
            NotChosen::NotBound(r) => (
                Reason::NotBound,
                format!(
                    "pod {}/{} is not bound to the identity with {}",
                    pod.namespace,
                    pod.name,
                    crate::refusal::describe_request(r)
                ),
            ),
        };
        Refusal::new(reason, StatusCode::FORBIDDEN, "forbidden", text).for_pod(pod)
    }

    /// What NMI answers while a pod's identity is not (yet) usable on the node: 404, or 503 +
    /// `Retry-After` with `--set-retry-after-header`; both retried by the SDKs, never 400.
    pub(super) fn not_yet_usable(&self, reason: Reason, pod: &PodFacts, text: String) -> Refusal {
        let refusal = if self.config.set_retry_after_header {
            Refusal::unavailable(reason, text, RETRY_AFTER_WAITING)
        } else {
            Refusal::new(reason, StatusCode::NOT_FOUND, "not_found", text)
        };
        refusal.for_pod(pod)
    }

    /// 403 at once: MIC has recorded why it will not assign the pod's identity (its `reason`
    /// and `message`, which names the fix), so holding the request would only delay the news.
    pub(super) fn not_allowed(
        &self,
        pod: &PodFacts,
        identity: String,
        refusal: &matching::MicRefusal,
    ) -> Refusal {
        let text = format!(
            "identity {identity} of pod {}/{} is not assigned: {}: {}",
            pod.namespace, pod.name, refusal.reason, refusal.message
        );
        Refusal::new(Reason::NotAllowed, StatusCode::FORBIDDEN, "forbidden", text)
            .for_pod(pod)
            .identity(identity)
    }

    /// The answer once `--identity-wait` has run out with IMDS still lacking the identity.
    pub(super) fn still_missing(&self, pod: &PodFacts, identity: &AzureIdentity) -> Refusal {
        let id = IdentityName::of(identity);
        self.not_yet_usable(
            Reason::IdentityMissingOnVm,
            pod,
            format!(
                "identity {} of pod {}/{} is not yet usable on node {}: the node's IMDS does not \
                 have it although MIC reports it assigned (MIC has been told); retry later",
                id.name, pod.namespace, pod.name, self.state.node
            ),
        )
        .identity(id.to_string())
    }
}
