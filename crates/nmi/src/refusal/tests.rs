use std::net::Ipv4Addr;

use super::*;

const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 244, 0, 5));

fn pod(name: &str) -> PodName {
    PodName {
        namespace: "ns".into(),
        name: name.into(),
        uid: None,
    }
}

#[test]
fn one_line_per_pod_and_reason_per_window_then_the_count_left_out() {
    let log = RefusalLog::new(Duration::from_secs(15));
    let t0 = Instant::now();
    let p = pod("p");
    assert_eq!(log.admit(Some(&p), SOURCE, Reason::Unbound, t0), Some(0));
    for s in 1..=9 {
        assert_eq!(
            log.admit(Some(&p), SOURCE, Reason::Unbound, t0 + Duration::from_secs(s)),
            None,
            "within the window"
        );
    }
    // The window is over: the next line says how many were left out, and opens a new window.
    let t1 = t0 + Duration::from_secs(15);
    assert_eq!(log.admit(Some(&p), SOURCE, Reason::Unbound, t1), Some(9));
    assert_eq!(
        log.admit(Some(&p), SOURCE, Reason::Unbound, t1 + Duration::from_secs(1)),
        None
    );
    assert_eq!(
        log.admit(Some(&p), SOURCE, Reason::Unbound, t1 + Duration::from_secs(40)),
        Some(1)
    );
}

#[test]
fn another_reason_another_pod_or_an_unknown_pod_each_have_their_own_window() {
    let log = RefusalLog::new(Duration::from_secs(15));
    let t = Instant::now();
    let (p, q) = (pod("p"), pod("q"));
    assert_eq!(log.admit(Some(&p), SOURCE, Reason::Unbound, t), Some(0));
    assert_eq!(log.admit(Some(&p), SOURCE, Reason::NotAssigned, t), Some(0));
    assert_eq!(log.admit(Some(&q), SOURCE, Reason::Unbound, t), Some(0));
    // No pod known (no pod has the IP): the source IP stands for it.
    assert_eq!(log.admit(None, SOURCE, Reason::NoPod, t), Some(0));
    assert_eq!(log.admit(None, SOURCE, Reason::NoPod, t), None);
    let other: IpAddr = "10.244.0.6".parse().unwrap();
    assert_eq!(log.admit(None, other, Reason::NoPod, t), Some(0));
    // The same pod from another IP is the same pod.
    assert_eq!(log.admit(Some(&p), other, Reason::Unbound, t), None);
}

#[test]
fn a_flood_keeps_the_table_bounded() {
    let log = RefusalLog::new(Duration::from_secs(1));
    let t = Instant::now();
    for i in 0..(PRUNE_ABOVE as u32 + 10) {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        log.admit(None, ip, Reason::NoPod, t);
    }
    // Long after, the next refusal drops the expired windows.
    log.admit(None, SOURCE, Reason::NoPod, t + Duration::from_secs(60));
    assert!(sync::lock(&log.windows).len() < 10);
}

#[test]
fn every_reason_has_a_distinct_label_and_a_hint() {
    let all = Reason::ALL;
    let labels: std::collections::BTreeSet<_> = all.iter().map(|r| r.label()).collect();
    assert_eq!(labels.len(), all.len());
    assert!(all.iter().all(|r| !r.hint().is_empty()));
    assert_eq!(Reason::IdentityMissingOnVm.label(), "identity_missing_on_vm");
}

#[test]
fn a_refusal_carries_who_and_what() {
    let facts = PodFacts {
        namespace: "ns".into(),
        name: "p".into(),
        ..Default::default()
    };
    let r = Refusal::unavailable(Reason::AmbiguousIp, "two pods".into(), Duration::from_secs(5))
        .for_pod(&facts)
        .asking(&IdentityRequest::ClientId("c".into()))
        .asking(&IdentityRequest::Default)
        .identity("ns/id");
    assert_eq!(r.response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.response.headers()["retry-after"], "5");
    assert_eq!(r.pod, Some(pod("p")));
    assert_eq!(
        r.requested.as_deref(),
        Some("client_id c"),
        "the first request described stays"
    );
    assert_eq!(r.identity.as_deref(), Some("ns/id"));
}
