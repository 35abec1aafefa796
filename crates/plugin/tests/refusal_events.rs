//! `kubectl pod-identity explain` reads NMI's refusals of a pod from the pod's Events (as NMI
//! publishes them, in series), against a real kube-apiserver: not from NMI's log text, which a
//! wording change or a forged line would fool.

mod support;

use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::PostParams};
use serde_json::json;
use support::{Cluster, facts};

/// An Event as NMI's publisher writes a refusal series (crates/events, crates/nmi/src/server/refusal_events.rs).
fn refusal_event(name: &str, controller: &str, reason: &str, note: &str, count: i32) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop"},
        "eventTime": "2026-12-07T10:00:00.000000Z",
        "series": {"count": count, "lastObservedTime": "2026-12-07T10:05:00.000000Z"},
        "reportingController": controller,
        "reportingInstance": "n-0",
        "action": "GetToken",
        "reason": reason,
        "type": "Warning",
        "regarding": {"kind": "Pod", "namespace": "shop", "name": "web", "apiVersion": "v1"},
        "note": note,
    }))
    .unwrap()
}

#[tokio::test]
async fn explain_shows_nmi_s_refusal_events_and_ignores_other_writers() {
    let c = Cluster::start().await;
    c.namespace("shop").await;
    c.nmi_everywhere().await;
    c.pod("shop", "web", "n-0", json!({"aadpodidbinding": "app"}))
        .await;

    // Before any refusal: the pod's Events say nothing.
    let run = c.plugin(&["explain", "web", "-n", "shop", "-o", "json"]).await;
    assert!(
        facts(&run.link("nmi")).contains("no refusal of this pod in its Events from NMI"),
        "{}",
        run.stdout
    );

    let events = Api::<Event>::namespaced(c.client.clone(), "shop");
    let nmi = refusal_event(
        "web.00000000000000a1",
        "aadpodidentity.k8s.io/nmi",
        "IdentityNotBound",
        "pod shop/web is not bound to any AzureIdentity; fix: create an AzureIdentityBinding with selector app",
        20,
    );
    // Another writer's Event on the same pod, posing as NMI's wording: not NMI's refusal.
    let forged = refusal_event(
        "web.00000000000000b2",
        "example.com/someone-else",
        "IdentityNotAllowed",
        "pod shop/web may use every identity; fix: nothing",
        2,
    );
    for e in [&nmi, &forged] {
        events.create(&PostParams::default(), e).await.unwrap();
    }

    let run = c.plugin(&["explain", "web", "-n", "shop", "-o", "json"]).await;
    let shown = facts(&run.link("nmi"));
    assert!(
        shown.contains("1 refusal(s) of this pod in its Events from NMI")
            && shown.contains("IdentityNotBound")
            && shown.contains("is not bound to any AzureIdentity (20 times)")
            && shown.contains("create an AzureIdentityBinding with selector app"),
        "{shown}"
    );
    assert!(!shown.contains("may use every identity"), "{shown}");
}
