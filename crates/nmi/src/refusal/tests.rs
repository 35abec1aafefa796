use std::time::Duration;

use super::*;

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
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.retry_after, Some(Duration::from_secs(5)));
    assert_eq!(r.pod, Some(PodName::in_ns("p")));
    assert_eq!(
        r.requested.as_deref(),
        Some("client_id c"),
        "the first request described stays"
    );
    assert_eq!(r.identity.as_deref(), Some("ns/id"));
}
