//! The owner's consent in the plan (`arm::consent`): a refused assignment is recorded, its
//! identity is not needed; an undecided one is left as it is.

use super::*;

#[test]
fn an_identity_whose_owner_allows_the_namespace_is_planned_as_without_checks() {
    let w = World::new().pod("p", "ss-a-0", "x").consent(&[("x", Some(NS))]);
    let p = w.plan();
    assert_eq!(p.work[&ss_a()].needed, set(&[X]));
    assert_eq!(assigns(&p.work[&ss_a()]), [(name("p", "x"), ObjectWrite::Create)]);
    assert!(p.refused.is_empty());
}

#[test]
fn a_refused_identity_is_not_needed_and_its_object_is_recorded_as_refused() {
    let w = World::new()
        .pod("p", "ss-a-0", "x")
        .consent(&[("x", Some("other-team"))]);
    let p = w.plan();
    assert!(
        p.work
            .get(&ss_a())
            .is_none_or(|t| t.needed.is_empty() && t.assign.is_empty())
    );
    assert_eq!(p.refused.len(), 1);
    let r = &p.refused[0];
    assert_eq!(r.key, key("p", "x"));
    assert!(!r.exists);
    assert_eq!(r.refusal.reason, arm::consent::REASON_CONSENT_MISSING);
    assert!(
        r.refusal
            .message
            .contains("pod-identity-namespaces=ns,other-team")
    );
    assert_eq!(p.refused_ids, set(&[X]));
}

#[test]
fn a_revoked_grant_takes_the_identity_off_the_target_like_a_moved_object() {
    let w = World::new()
        .pod("p", "ss-a-0", "x")
        .object("p", "ss-a-0", "x", Some(AssignmentState::Assigned))
        .consent(&[("x", None)]);
    let p = w.plan();
    assert_eq!(p.refused.len(), 1);
    assert!(p.refused[0].exists);
    // Not deleted (it says why), and its identity goes once no consenting pod needs it.
    assert!(p.orphans.is_empty());
    assert!(p.work.get(&ss_a()).is_none_or(|t| t.release.is_empty()));
    assert_eq!(p.left_behind[&ss_a()], set(&[X]));
}

#[test]
fn another_namespace_keeps_its_consented_use_of_the_same_identity() {
    // `y` is allowed here, `x` is not: the pod of `y` is planned, the pod of `x` refused.
    let w = World::new()
        .pod("px", "ss-a-0", "x")
        .pod("py", "ss-a-0", "y")
        .consent(&[("x", Some("elsewhere")), ("y", Some("*"))]);
    let p = w.plan();
    assert_eq!(p.work[&ss_a()].needed, set(&[Y]));
    assert_eq!(
        assigns(&p.work[&ss_a()]),
        [(name("py", "y"), ObjectWrite::Create)]
    );
    assert_eq!(
        p.refused.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        [key("px", "x")]
    );
}

#[test]
fn an_identity_not_read_yet_leaves_its_objects_as_they_are() {
    // MIC restarted: its consent cache is empty. The Assigned object is neither released nor
    // marked refused, and nothing new is created until the read is in.
    let w = World::new()
        .pod("p", "ss-a-0", "x")
        .object("p", "ss-a-0", "x", Some(AssignmentState::Assigned))
        .pod("q", "vm-1", "x")
        .consent(&[]);
    let p = w.plan();
    assert!(p.refused.is_empty());
    assert!(p.orphans.is_empty());
    assert!(p.left_behind.is_empty());
    for t in p.work.values() {
        assert!(t.assign.is_empty() && t.release.is_empty() && t.needed.is_empty());
    }
}

#[test]
fn service_principals_need_no_consent_read() {
    let w = World::new().pod("s", "ss-a-0", "sp").consent(&[]);
    let p = w.plan();
    assert_eq!(
        assigns(&p.work[&ss_a()]),
        [(name("s", "sp"), ObjectWrite::Create)]
    );
}
