//! Issue 23 §5: NMI's refusals are Warning Events on the refused pod, in series, against the
//! real kube-apiserver and the Azure emulator (NMI in-process; no network namespaces). The
//! series write interval is shortened so that counts are written without 30 s sleeps.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::{core::v1::Pod, events::v1::Event};
use kube::{Api, api::ListParams};
use serde_json::json;

fn opts() -> Opts {
    Opts {
        refusal_events: Some(events::SeriesPolicy {
            write_every: Duration::from_millis(300),
            ..events::SeriesPolicy::default()
        }),
        ..Opts::default()
    }
}

/// NMI's Events regarding the pod with `uid`.
async fn events_of(env: &Env, uid: &str) -> Vec<Event> {
    Api::<Event>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default().fields(&format!("regarding.uid={uid}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("aadpodidentity.k8s.io/nmi"))
        .collect()
}

async fn uid_of(env: &Env, name: &str) -> String {
    Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .get(name)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

/// Polls until `cond` holds of the pod's Events (the writes are in the background).
async fn until_events(env: &Env, uid: &str, what: &str, cond: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = events_of(env, uid).await;
        if cond(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_pod_asking_twenty_times_gets_one_event_in_series() {
    let env = env_in("nmi-ev-unbound", opts()).await;
    env.pod("lonely", "127.0.60.1", json!({})).await;
    let uid = uid_of(&env, "lonely").await;
    for _ in 0..20 {
        env.ask("127.0.60.1", "").await.refused(403);
    }
    let got = until_events(&env, &uid, "the series counts all 20", |e| {
        e.iter().any(|e| e.series.as_ref().is_some_and(|s| s.count == 20))
    })
    .await;
    assert_eq!(got.len(), 1, "one Event for the pod: {got:#?}");
    let e = &got[0];
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reason.as_deref(), Some("IdentityNotBound"));
    assert_eq!(e.action.as_deref(), Some("GetToken"));
    assert_eq!(e.reporting_instance.as_deref(), Some(env.node.as_str()));
    let regarding = e.regarding.as_ref().unwrap();
    assert_eq!(regarding.name.as_deref(), Some("lonely"));
    assert_eq!(regarding.namespace.as_deref(), Some(env.ns.as_str()));
    let note = e.note.as_deref().unwrap();
    assert!(note.contains(nmi::refusal::UNBOUND), "{note}");
    assert!(note.contains("; fix: label the pod aadpodidbinding="), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ips_and_pods_of_other_nodes_get_no_event() {
    let env = env_in("nmi-ev-other", opts()).await;
    // On another node, at an IP NMI is asked from: NMI does not attribute it to that pod.
    running_pod(
        &env.client,
        &env.ns,
        "elsewhere",
        "another-node",
        "127.0.61.2",
        json!({}),
        false,
    )
    .await;
    let elsewhere = uid_of(&env, "elsewhere").await;
    // A pod of this node, unbound, for a positive control that the publisher works.
    env.pod("here", "127.0.61.3", json!({})).await;
    let here = uid_of(&env, "here").await;
    for _ in 0..3 {
        assert_ne!(env.ask("127.0.61.1", "").await.status, 200);
        assert_ne!(env.ask("127.0.61.2", "").await.status, 200);
    }
    env.ask("127.0.61.3", "").await.refused(403);
    until_events(&env, &here, "the control pod's Event", |e| e.len() == 1).await;
    assert!(events_of(&env, &elsewhere).await.is_empty());
    let all = Api::<Event>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 1, "only the pod NMI found has an Event: {all:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_stays_escaped_in_the_note() {
    let env = env_in("nmi-ev-hostile", opts()).await;
    let id = env.identity(uami(0)).await;
    env.binding("b", id.metadata.name.as_deref().unwrap(), "app")
        .await;
    env.pod("app", "127.0.62.1", json!({"aadpodidbinding": "app"}))
        .await;
    let uid = uid_of(&env, "app").await;
    // A selector value the pod chose, with a newline and an ANSI escape: NMI quotes it.
    let hostile = "x\nINFO nmi::refusal: forged\u{1b}[2K";
    let q = format!(
        "&client_id={}",
        form_urlencoded::byte_serialize(hostile.as_bytes()).collect::<String>()
    );
    let answer = env.ask("127.0.62.1", &q).await;
    assert!(answer.status >= 400, "{}", answer.body);
    let got = until_events(&env, &uid, "the refusal's Event", |e| !e.is_empty()).await;
    let note = got[0].note.as_deref().unwrap();
    assert!(!note.chars().any(char::is_control), "{note:?}");
    assert!(note.contains("x\\nINFO nmi::refusal: forged\\u{1b}[2K"), "{note}");
}
