//! NMI's refusals of one pod, read from the pod's Events: NMI publishes each refusal of a pod
//! it found as a Warning Event on that pod (`reportingController: aadpodidentity.k8s.io/nmi`,
//! in series), with the detail the pod got and the fix. Unlike NMI's log text, they do not
//! change with its wording, and a pod cannot forge them by what it sends (NMI escapes it).

use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client, api::ListParams};

use crate::nmi_log::Refusal;

/// `reportingController` of NMI's Events (`nmi::server::refusal_events::CONTROLLER`).
pub const NMI_CONTROLLER: &str = "aadpodidentity.k8s.io/nmi";
/// What NMI's notes put between what happened and the fix.
const FIX: &str = "; fix: ";

/// NMI's refusals of pod `namespace/name`, oldest first.
pub async fn refusals(client: &Client, namespace: &str, name: &str) -> Result<Vec<Refusal>, kube::Error> {
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("regarding.name={name}")))
        .await?
        .items;
    Ok(refusals_in(&events, name))
}

/// The refusals among `events` regarding pod `name`, oldest first.
pub fn refusals_in(events: &[Event], name: &str) -> Vec<Refusal> {
    let mut out: Vec<(String, Refusal)> = events
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(NMI_CONTROLLER))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            let time = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0.to_string())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                .unwrap_or_default();
            let note = e.note.clone().unwrap_or_default();
            let (detail, hint) = note.split_once(FIX).unwrap_or((note.as_str(), ""));
            let count = e.series.as_ref().map_or(1, |s| s.count);
            let refusal = Refusal {
                time: time.clone(),
                reason: e.reason.clone().unwrap_or_default(),
                detail: match count {
                    1 => detail.to_owned(),
                    n => format!("{detail} ({n} times)"),
                },
                hint: hint.to_owned(),
                identity: String::new(),
            };
            (time, refusal)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(controller: &str, pod: &str, at: &str, count: Option<i32>) -> Event {
        let mut e = json!({
            "metadata": {"name": format!("{pod}.1"), "namespace": "ns"},
            "eventTime": at,
            "reportingController": controller,
            "reportingInstance": "node-1",
            "action": "GetToken",
            "reason": "IdentityNotBound",
            "type": "Warning",
            "regarding": {"kind": "Pod", "namespace": "ns", "name": pod, "uid": "u"},
            "note": "pod ns/web is not bound to any AzureIdentity; fix: label the pod",
        });
        if let Some(n) = count {
            e["series"] = json!({"count": n, "lastObservedTime": at});
        }
        serde_json::from_value(e).unwrap()
    }

    #[test]
    fn only_nmi_s_events_of_the_pod_are_refusals() {
        let events = [
            event(NMI_CONTROLLER, "web", "2026-01-01T00:00:02.000000Z", Some(20)),
            event(
                "aadpodidentity.k8s.io/mic",
                "web",
                "2026-01-01T00:00:01.000000Z",
                None,
            ),
            event(NMI_CONTROLLER, "other", "2026-01-01T00:00:01.000000Z", None),
        ];
        let got = refusals_in(&events, "web");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reason, "IdentityNotBound");
        assert_eq!(got[0].hint, "label the pod");
        assert!(got[0].detail.ends_with("(20 times)"), "{}", got[0].detail);
    }
}
