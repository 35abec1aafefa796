//! Issue 23 §5: a lasting ARM failure is one `IdentityAssignmentFailed` Event per pod whose
//! `series.count` grows with the retries, not a new Event per retry; and it names the pod's
//! uid, so that `kubectl describe pod` lists it. Real kube-apiserver and the Azure emulator.

#[allow(dead_code)] // the helpers other tests use
mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Pod, events::v1::Event};
use kube::{Api, api::ListParams};
use support::{Cluster, settings, world};

#[tokio::test]
async fn a_lasting_arm_failure_is_one_event_whose_series_grows() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("series").await;
    // id5 lacks MIC's "Managed Identity Operator" role: every retry fails the same way.
    c.identity("series", "forbidden", 5).await;
    c.binding("series", "b", "forbidden", "app").await;
    let mut s = settings();
    // Retries every 2 s (`settings`); series written at most every second instead of 30 s.
    s.event_series.write_every = Duration::from_secs(1);
    c.start_mic(s).await;
    c.pod("series", "web", "b-0", Some("app")).await;
    let uid = Api::<Pod>::namespaced(c.client.clone(), "series")
        .get("web")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let events = Api::<Event>::namespaced(c.client.clone(), "series");
    let failed = || async {
        events
            .list(&ListParams::default().fields(&format!("regarding.uid={uid}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("IdentityAssignmentFailed"))
            .collect::<Vec<_>>()
    };
    // Several retries: the count grows to 3 or more on the one Event.
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = failed().await;
        if got
            .iter()
            .any(|e| e.series.as_ref().is_some_and(|s| s.count >= 3))
        {
            break got;
        }
        assert!(Instant::now() < deadline, "the series did not grow: {got:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(got.len(), 1, "one Event for the lasting failure: {got:#?}");
    let e = &got[0];
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.regarding.as_ref().unwrap().uid.as_deref(), Some(uid.as_str()));
    assert!(
        e.note.as_deref().unwrap().contains("LinkedAuthorizationFailed"),
        "{e:?}"
    );
    c.stop_mic().await;
}
