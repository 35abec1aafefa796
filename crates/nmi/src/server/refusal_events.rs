//! Refusals as Kubernetes Events on the refused pod, so that `kubectl describe pod` (and
//! `kubectl pod-identity explain`) show what NMI refused and how to fix it, without reading
//! NMI's log. Only refusals of a pod NMI found in its own view of the node carry one: a pod a
//! caller merely named, or an unknown source IP, would let a caller write Events about pods it
//! is not. The shared series book ([`events::SeriesBook`]) keeps a pod retrying in a tight loop
//! to one Event and a series update at most every 30 s.

use events::{Kind, Publisher, publisher::Occurrence};
use k8s_openapi::api::core::v1::ObjectReference;

use crate::refusal::{Reason, Refusal};

/// `reportingController` of NMI's Events; `kubectl pod-identity explain` reads them by it.
pub const CONTROLLER: &str = "aadpodidentity.k8s.io/nmi";
/// `action` of NMI's Events.
pub const ACTION: &str = "GetToken";

impl Reason {
    /// The Event's `reason`: CamelCase, as Kubernetes spells them.
    pub fn event_reason(self) -> &'static str {
        match self {
            Self::RateLimited => "RateLimited",
            Self::BadRequest => "BadTokenRequest",
            Self::InvalidPath => "InvalidTokenPath",
            Self::NoPod => "PodNotFound",
            Self::AmbiguousIp => "AmbiguousPodIP",
            Self::Unbound => "IdentityNotBound",
            Self::NotBound => "RequestedIdentityNotBound",
            Self::NotAssigned => "IdentityNotAssigned",
            Self::NotAllowed => "IdentityNotAllowed",
            Self::IdentityMissingOnVm => "IdentityMissingOnVM",
            Self::Upstream => "TokenRequestFailed",
            Self::ChangedDuringFetch => "BindingChanged",
            Self::HostTokenNotLoopback => "HostTokenNotLoopback",
            Self::NotSynced => "NMINotSynced",
            Self::StateStale => "NMIStateStale",
        }
    }
}

/// NMI's refusal Events, when `--refusal-events` is on.
#[derive(Clone)]
pub struct RefusalEvents {
    publisher: Publisher,
}

impl RefusalEvents {
    /// Events reported by NMI on `node`; `dropped` counts those a full queue dropped.
    pub fn start(
        client: kube::Client,
        node: &str,
        series: events::SeriesPolicy,
        dropped: events::publisher::Dropped,
    ) -> Self {
        let publisher = Publisher::start(
            client,
            events::Config {
                controller: CONTROLLER.into(),
                instance: node.into(),
                queue: 1024,
                workers: 2,
                series,
                ready: None,
                on_drop: dropped,
            },
        );
        Self { publisher }
    }

    /// Publishes `refusal` on its pod, when NMI found that pod (it knows its uid).
    pub fn publish(&self, refusal: &Refusal) {
        if let Some(o) = occurrence(refusal) {
            self.publisher.publish(o);
        }
    }
}

/// The Event of `refusal`: on its pod, what happened and the fix; `None` when the pod is not
/// one NMI found.
pub fn occurrence(refusal: &Refusal) -> Option<Occurrence> {
    let pod = refusal.pod.as_ref()?;
    let uid = pod.uid.clone()?;
    Some(Occurrence {
        kind: Kind::Warning,
        reason: refusal.reason.event_reason().into(),
        action: ACTION.into(),
        // The detail quotes what the pod sent and MIC's messages: `events` escapes control
        // characters, so it stays one line whatever they hold.
        note: format!("{}; fix: {}", refusal.detail, refusal.reason.hint()),
        regarding: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(uid),
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::PodName;
    use axum::http::StatusCode;

    fn refusal(uid: Option<&str>) -> Refusal {
        let mut r = Refusal::new(
            Reason::NotBound,
            StatusCode::FORBIDDEN,
            "forbidden",
            "pod ns/p is not bound to the identity with client_id x\nINFO forged".into(),
        );
        r.pod = Some(PodName {
            namespace: "ns".into(),
            name: "p".into(),
            uid: uid.map(str::to_owned),
        });
        r
    }

    #[test]
    fn only_pods_nmi_found_get_events() {
        assert!(occurrence(&refusal(None)).is_none());
        let o = occurrence(&refusal(Some("u1"))).unwrap();
        assert_eq!(o.reason, "RequestedIdentityNotBound");
        assert_eq!(o.regarding.uid.as_deref(), Some("u1"));
        assert!(o.note.contains("; fix: ask for an identity"));
    }

    #[test]
    fn reasons_are_camel_case_and_distinct() {
        let all: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.event_reason()).collect();
        assert_eq!(all.len(), Reason::ALL.len());
        assert!(all.iter().all(|r| r.chars().all(char::is_alphanumeric)));
    }
}
