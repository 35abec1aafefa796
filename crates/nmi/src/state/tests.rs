use api::AssignmentState::{Assigned, Created, Unassigned};

use super::*;
use crate::testing::*;

fn state(mode: Mode) -> State {
    State::new(NODE, mode, Policy::default())
}

fn found(l: PodLookup) -> String {
    match l {
        PodLookup::Found(p) => format!("{}/{}", p.namespace, p.name),
        other => panic!("expected a pod, got {other:?}"),
    }
}

#[test]
fn pods_by_ip_only_addressable_ones() {
    let s = state(Mode::Managed);
    let mut host = pod("ns", "host", "10.0.0.9", Some("app"));
    host.spec.as_mut().unwrap().host_network = Some(true);
    let mut done = pod("ns", "done", "10.0.0.8", Some("app"));
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let mut pending = pod("ns", "pending", "10.0.0.7", Some("app"));
    pending.status.as_mut().unwrap().phase = Some("Pending".into());
    s.replace_all(
        vec![pod("ns", "a", "10.0.0.1", Some("app")), host, done, pending],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    assert_eq!(found(s.pods.by_ip("10.0.0.1")), "ns/a");
    assert_eq!(found(s.pods.by_ip("10.0.0.7")), "ns/pending");
    // hostNetwork pods share the node's IP and are never matched; finished pods free their IP.
    assert_eq!(s.pods.by_ip("10.0.0.9"), PodLookup::NotFound);
    assert_eq!(s.pods.by_ip("10.0.0.8"), PodLookup::NotFound);
    assert_eq!(s.pods.by_ip("10.9.9.9"), PodLookup::NotFound);
    assert!(s.pods.by_name("ns", "host").is_none());
    assert!(s.pods.by_name("ns", "a").is_some());
}

#[test]
fn two_pods_on_one_ip_are_ambiguous_until_one_goes() {
    let s = state(Mode::Managed);
    s.replace_all(
        vec![pod("ns", "a", "10.0.0.1", None), pod("ns", "b", "10.0.0.1", None)],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    assert_eq!(
        s.pods.by_ip("10.0.0.1"),
        PodLookup::Ambiguous(vec!["ns/a".into(), "ns/b".into()])
    );
    s.delete_pod("ns", "a");
    assert_eq!(found(s.pods.by_ip("10.0.0.1")), "ns/b");
    // An IP change moves the pod in the index.
    s.apply_pod(&pod("ns", "b", "10.0.0.2", None));
    assert_eq!(s.pods.by_ip("10.0.0.1"), PodLookup::NotFound);
    assert_eq!(found(s.pods.by_ip("10.0.0.2")), "ns/b");
}

fn deleted(mut p: k8s_openapi::api::core::v1::Pod) -> k8s_openapi::api::core::v1::Pod {
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    p
}

/// Issue 13 §5, the candidate rule on plain values: only a Pending or Running pod with its own
/// network namespace and no deletion timestamp may be a request's source.
#[test]
fn ip_candidates_are_live_pods_not_being_deleted() {
    let candidate = |phase: Option<&str>, host_network: bool, terminating: bool| {
        WatchedPod {
            facts: PodFacts {
                phase: phase.map(str::to_owned),
                host_network,
                ip: Some("10.0.0.1".into()),
                ..Default::default()
            },
            terminating,
            readiness: Default::default(),
        }
        .is_ip_candidate()
    };
    assert!(candidate(Some("Running"), false, false));
    assert!(candidate(Some("Pending"), false, false));
    for phase in [Some("Succeeded"), Some("Failed"), Some("Unknown"), None] {
        assert!(!candidate(phase, false, false), "{phase:?}");
    }
    assert!(!candidate(Some("Running"), false, true), "being deleted");
    assert!(!candidate(Some("Pending"), false, true), "being deleted");
    assert!(!candidate(Some("Running"), true, false), "hostNetwork");
    // Read from the pod object: the deletion timestamp is what marks it.
    let p = pod("ns", "p", "10.0.0.1", None);
    assert!(WatchedPod::from(&p).is_ip_candidate());
    assert!(!WatchedPod::from(&deleted(p)).is_ip_candidate());
}

/// Issue 13 §5: a deleted pod's IP handed to a new pod: while NMI sees the old one Running, the IP
/// is ambiguous; once it sees the old one terminating (or gone), the IP is the new pod's.
#[test]
fn a_reused_ip_is_ambiguous_until_the_old_pod_is_seen_going() {
    let s = state(Mode::Managed);
    let (old, new) = (
        pod("ns", "old", "10.0.0.1", None),
        pod("ns", "new", "10.0.0.1", None),
    );
    s.replace_all(vec![old.clone(), new], vec![], vec![], vec![], vec![]);
    assert!(matches!(s.pods.by_ip("10.0.0.1"), PodLookup::Ambiguous(_)));
    s.apply_pod(&deleted(old));
    assert_eq!(found(s.pods.by_ip("10.0.0.1")), "ns/new");
    assert!(s.pods.by_name("ns", "old").is_none(), "nor by name (/host/token)");
    assert_eq!(s.pods.len(), 2, "the terminating pod is still known");
    s.delete_pod("ns", "old");
    assert_eq!(found(s.pods.by_ip("10.0.0.1")), "ns/new");
}

fn facts(p: &k8s_openapi::api::core::v1::Pod) -> PodFacts {
    PodFacts::from(p)
}

fn used(d: Decision) -> String {
    match d {
        Decision::Use { identity, .. } => identity.metadata.name.clone().unwrap(),
        other => panic!("expected an identity, got {other:?}"),
    }
}

#[test]
fn standard_mode_needs_an_assigned_aai_for_this_pod_node_and_identity() {
    let s = state(Mode::Standard);
    let p = pod("ns", "p", "10.0.0.1", Some("app"));
    let id = identity("ns", "id", 1);
    let setup = |aais: Vec<AzureAssignedIdentity>| {
        s.replace_all(
            vec![p.clone()],
            vec![binding("ns", "b", "id", "app", 1)],
            vec![id.clone()],
            vec![],
            aais,
        )
    };
    let none = |_: &AzureIdentity| None;
    setup(vec![]);
    assert_eq!(
        s.decide(&facts(&p), &IdentityRequest::Default, none),
        Decision::Waiting {
            identity: "id".into()
        }
    );
    for state in [Created, Unassigned] {
        setup(vec![aai(&p, &id, Some(state))]);
        assert!(matches!(
            s.decide(&facts(&p), &IdentityRequest::Default, none),
            Decision::Waiting { .. }
        ));
    }
    setup(vec![aai(&p, &id, Some(Assigned))]);
    assert_eq!(used(s.decide(&facts(&p), &IdentityRequest::Default, none)), "id");
    // §5.2 case 10: an AAI without status (upstream ≤1.4) counts as assigned.
    setup(vec![aai(&p, &id, None)]);
    assert_eq!(used(s.decide(&facts(&p), &IdentityRequest::Default, none)), "id");
    // Another node's AAI, or one for an identity whose client id has since changed, does not count.
    let mut elsewhere = aai(&p, &id, Some(Assigned));
    elsewhere.spec.node_name = "node-1".into();
    setup(vec![elsewhere]);
    assert!(matches!(
        s.decide(&facts(&p), &IdentityRequest::Default, none),
        Decision::Waiting { .. }
    ));
    setup(vec![aai(&p, &identity("ns", "id", 9), Some(Assigned))]);
    assert!(matches!(
        s.decide(&facts(&p), &IdentityRequest::Default, none),
        Decision::Waiting { .. }
    ));
}

/// MIC's final refusal (the identity's owner has not consented, ...) is answered at once, with
/// MIC's message; ARM's failures, which MIC retries, keep the request waiting.
#[test]
fn a_refusal_mic_records_is_not_waited_for() {
    let s = state(Mode::Standard);
    let p = pod("ns", "p", "10.0.0.1", Some("app"));
    let id = identity("ns", "id", 1);
    let refused = |reason: &str| {
        let mut a = aai(&p, &id, Some(Created));
        a.status.as_mut().unwrap().reason = Some(reason.into());
        a.status.as_mut().unwrap().message = Some("the owner grants it with: az tag update".into());
        s.replace_all(
            vec![p.clone()],
            vec![binding("ns", "b", "id", "app", 1)],
            vec![id.clone()],
            vec![],
            vec![a],
        );
        s.decide(&facts(&p), &IdentityRequest::Default, |_| None)
    };
    assert_eq!(
        refused(api::v1::REASON_CONSENT_MISSING),
        Decision::NotAllowed {
            identity: "id".into(),
            refusal: matching::MicRefusal {
                reason: api::v1::REASON_CONSENT_MISSING.into(),
                message: "the owner grants it with: az tag update".into(),
            },
        }
    );
    assert!(matches!(
        refused("LinkedAuthorizationFailed"),
        Decision::Waiting { .. }
    ));
}

#[test]
fn managed_mode_needs_no_aai() {
    let s = state(Mode::Managed);
    let p = pod("ns", "p", "10.0.0.1", Some("app"));
    s.replace_all(
        vec![p.clone()],
        vec![binding("ns", "b", "id", "app", 1)],
        vec![identity("ns", "id", 1)],
        vec![],
        vec![],
    );
    assert_eq!(
        used(s.decide(&facts(&p), &IdentityRequest::Default, |_| None)),
        "id"
    );
    let rogue = pod("other", "rogue", "10.0.0.2", Some("app"));
    assert_eq!(
        s.decide(&facts(&rogue), &IdentityRequest::Default, |_| None),
        Decision::Refused(NotChosen::Unbound)
    );
}

#[test]
fn object_id_requests_learn_unknown_principals_first() {
    let s = state(Mode::Managed);
    let p = pod("ns", "p", "10.0.0.1", Some("app"));
    s.replace_all(
        vec![p.clone()],
        vec![
            binding("ns", "b1", "one", "app", 1),
            binding("ns", "b2", "two", "app", 2),
        ],
        vec![identity("ns", "one", 1), identity("ns", "two", 2)],
        vec![],
        vec![],
    );
    let want = IdentityRequest::ObjectId(principal_id(2).to_uppercase());
    match s.decide(&facts(&p), &want, |_| None) {
        Decision::LearnPrincipals(ids) => assert_eq!(ids.len(), 2),
        other => panic!("{other:?}"),
    }
    let known = |i: &AzureIdentity| {
        [(client_id(1), principal_id(1)), (client_id(2), principal_id(2))]
            .into_iter()
            .find(|(k, _)| Some(k.as_str()) == i.spec.client_id())
            .map(|(_, v)| v)
    };
    assert_eq!(used(s.decide(&facts(&p), &want, known)), "two");
    assert_eq!(
        s.decide(&facts(&p), &IdentityRequest::ObjectId("nobody".into()), known),
        Decision::Refused(NotChosen::NotBound(IdentityRequest::ObjectId("nobody".into())))
    );
}

#[test]
fn exceptions_only_from_the_pods_namespace_and_allowed_namespaces() {
    let p = pod("ns", "p", "10.0.0.1", None);
    let mut labelled = p.clone();
    labelled.metadata.labels = Some([("noaad".to_owned(), "TRUE".to_owned())].into());
    let s = state(Mode::Managed);
    s.replace_all(
        vec![],
        vec![],
        vec![],
        vec![exception("ns", &[("noaad", "true")])],
        vec![],
    );
    assert!(s.is_excepted(&facts(&labelled)));
    assert!(!s.is_excepted(&facts(&p)));
    let s = state(Mode::Managed);
    s.replace_all(
        vec![],
        vec![],
        vec![],
        vec![exception("other", &[("noaad", "true")])],
        vec![],
    );
    assert!(!s.is_excepted(&facts(&labelled)), "§5.2 case 20");
    let confined = State::new(
        NODE,
        Mode::Managed,
        Policy {
            exception_namespaces: Some(["kube-system".to_owned()].into()),
            ..Policy::default()
        },
    );
    confined.replace_all(
        vec![],
        vec![],
        vec![],
        vec![exception("ns", &[("noaad", "true")])],
        vec![],
    );
    assert!(!confined.is_excepted(&facts(&labelled)));
}

#[test]
fn synced_only_after_every_watch_listed() {
    let s = state(Mode::Standard);
    assert!(!s.is_synced());
    s.replace_all(vec![], vec![], vec![], vec![], vec![]);
    assert!(s.is_synced());
}
