//! Event sequences over one target, without an apiserver or ARM: the orderings of issue 13's
//! "What was seen" (pods that come and go on one scale set), drift, failures, protected
//! identities and service principals.

use super::*;
use std::time::{Duration, Instant};

use arm::body::UserIdentity;

const X: &str = "x";
const Y: &str = "y";
const Z: &str = "z";

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// ARM's answer: the target carries `ids`.
fn arm(ids: &[&str]) -> IdentityState {
    IdentityState {
        system_assigned: false,
        user_assigned: ids
            .iter()
            .map(|id| ((*id).to_owned(), UserIdentity::default()))
            .collect(),
        provisioning_state: Some("Succeeded".into()),
    }
}

fn needing(ids: &[&str]) -> Wants {
    Wants {
        needed: set(ids),
        ..Wants::default()
    }
}

fn releasing(ids: &[&str]) -> Wants {
    Wants {
        released: set(ids),
        ..Wants::default()
    }
}

fn add(ids: &[&str]) -> TargetChange {
    TargetChange {
        add: set(ids),
        remove: BTreeSet::new(),
    }
}

fn remove(ids: &[&str]) -> TargetChange {
    TargetChange {
        add: BTreeSet::new(),
        remove: set(ids),
    }
}

/// A target read from ARM carrying `on`, with `wants`.
fn read(on: &[&str], wants: Wants) -> TargetState {
    let mut t = TargetState::new(BTreeSet::new());
    t.want(wants);
    t.read(arm(on));
    t
}

/// Sends the next change and has ARM accept it.
fn send_and_land(t: &mut TargetState) -> TargetChange {
    let change = t.send().expect("a change to send");
    let Known::Read(mut after) = t.known().clone() else {
        panic!("sent without a read");
    };
    after.user_assigned.retain(|id, _| !change.remove.contains(id));
    for id in &change.add {
        after.user_assigned.entry(id.clone()).or_default();
    }
    t.landed(Landing::Answered(after));
    change
}

// --- Issue 13, "What was seen": pod 1 on one instance ends, pod 2 on the other starts. ---

/// Ordering 1: pod 2 arrives while pod 1's removal is still pending (not sent): the removal is
/// dropped, nothing goes to ARM, and pod 2 may be marked at once.
#[test]
fn a_removal_pending_when_the_identity_is_needed_again_is_not_sent() {
    let mut t = read(&[X], releasing(&[X]));
    assert_eq!(t.next(), Next::Send(remove(&[X])));
    t.want(Wants {
        needed: set(&[X]),
        released: set(&[X]),
        ..Wants::default()
    });
    assert_eq!(t.next(), Next::Nothing);
    assert_eq!(t.send(), None);
    assert!(t.may_mark_assigned(Some(X)));
    // Pod 1's object has nothing left to do: the identity stays for pod 2.
    assert!(t.let_go(X));
}

/// Ordering 2: pod 2 arrives while the removal's PATCH is in flight: the identity is still on
/// the target as ARM last said, but the change in flight removes it, so pod 2 waits.
#[test]
fn a_want_arriving_while_the_removal_is_in_flight_is_not_marked() {
    let mut t = read(&[X], releasing(&[X]));
    assert_eq!(t.send(), Some(remove(&[X])));
    t.want(needing(&[X]));
    assert!(!t.may_mark_assigned(Some(X)));
    assert!(t.on_target().is_empty());
    assert_eq!(t.next(), Next::AwaitFlight);
    assert_eq!(t.send(), None, "one change in flight at a time");
}

/// Ordering 3: the removal lands: the identity is gone, pod 2 still may not be marked, and
/// putting it back is the next thing to do.
#[test]
fn the_removal_landing_leaves_the_identity_to_be_added_back() {
    let mut t = read(&[X], releasing(&[X]));
    t.send();
    t.want(needing(&[X]));
    t.landed(Landing::Answered(arm(&[])));
    assert!(!t.may_mark_assigned(Some(X)));
    assert_eq!(t.next(), Next::Send(add(&[X])));
}

/// Ordering 4: the re-add is the very next batch's work although nothing is pending (no object
/// to create or release), not the periodic pass's; once ARM accepts it, pod 2 is marked.
#[test]
fn the_identity_is_added_back_right_after_the_removal_returns() {
    let mut t = read(&[X], releasing(&[X]));
    t.send();
    t.landed(Landing::Answered(arm(&[])));
    // The planner's next picture: pod 2 needs X; pod 1's object is gone, pod 2's is pending or
    // (as the bug had it) already marked: either way nothing else is asked of the worker.
    t.want(needing(&[X]));
    assert!(t.needs_arm_work());
    assert_eq!(send_and_land(&mut t), add(&[X]));
    assert!(t.may_mark_assigned(Some(X)));
    assert!(!t.needs_arm_work());
}

/// The whole sequence as the worker sees it, checking at each step that pod 2's object is never
/// allowed to be `Assigned` while the identity is absent or going.
#[test]
fn pods_alternating_on_one_scale_set_are_never_marked_on_a_contradicted_picture() {
    let mut t = read(&[], needing(&[X]));
    // Pod 1 arrives: X is added.
    assert!(!t.may_mark_assigned(Some(X)));
    assert_eq!(send_and_land(&mut t), add(&[X]));
    assert!(t.may_mark_assigned(Some(X)));
    // Pod 1 ends: X is being removed.
    t.want(releasing(&[X]));
    assert_eq!(t.send(), Some(remove(&[X])));
    // Pod 2 arrives during the PATCH.
    t.want(Wants {
        needed: set(&[X]),
        released: set(&[X]),
        ..Wants::default()
    });
    assert!(!t.may_mark_assigned(Some(X)));
    // The removal lands; pod 1's object may go, the target needs X again.
    t.landed(Landing::Answered(arm(&[])));
    assert!(t.let_go(X));
    assert!(!t.may_mark_assigned(Some(X)));
    t.want(needing(&[X]));
    assert_eq!(send_and_land(&mut t), add(&[X]));
    assert!(t.may_mark_assigned(Some(X)));
    assert_eq!(t.next(), Next::Nothing);
}

// --- Basics ---

#[test]
fn a_target_is_read_before_anything_is_decided_for_it() {
    let mut t = TargetState::new(BTreeSet::new());
    t.want(needing(&[X]));
    assert_eq!(t.next(), Next::Read);
    assert!(t.needs_arm_work());
    assert!(!t.may_mark_assigned(Some(X)));
    assert_eq!(t.send(), None);
    assert!(!t.let_go(X));
}

#[test]
fn a_target_that_needs_nothing_from_arm_is_not_read() {
    let mut t = TargetState::new(BTreeSet::new());
    assert_eq!(t.next(), Next::Nothing);
    t.want(Wants {
        protected: set(&[X]),
        ..Wants::default()
    });
    assert_eq!(t.next(), Next::Nothing);
    assert!(!t.needs_arm_work());
}

#[test]
fn a_read_showing_the_identity_lets_its_objects_be_marked_without_a_patch() {
    let mut t = TargetState::new(BTreeSet::new());
    t.want(needing(&[X]));
    t.read(arm(&[X]));
    assert_eq!(t.next(), Next::Nothing);
    assert!(t.may_mark_assigned(Some(X)));
}

#[test]
fn an_identity_is_not_marked_until_arm_accepts_its_addition() {
    let mut t = read(&[], needing(&[X]));
    assert_eq!(t.send(), Some(add(&[X])));
    assert!(!t.may_mark_assigned(Some(X)));
    t.landed(Landing::Answered(arm(&[X])));
    assert!(t.may_mark_assigned(Some(X)));
}

#[test]
fn identities_a_flight_does_not_remove_stay_markable_during_it() {
    let mut t = read(
        &[X, Y],
        Wants {
            needed: set(&[Y]),
            released: set(&[X]),
            ..Wants::default()
        },
    );
    assert_eq!(t.send(), Some(remove(&[X])));
    assert!(t.may_mark_assigned(Some(Y)));
    assert_eq!(t.on_target(), set(&[Y]));
}

#[test]
fn one_change_adds_and_removes_together() {
    let t = read(
        &[X],
        Wants {
            needed: set(&[Y, Z]),
            released: set(&[X]),
            ..Wants::default()
        },
    );
    assert_eq!(
        t.next(),
        Next::Send(TargetChange {
            add: set(&[Y, Z]),
            remove: set(&[X]),
        })
    );
}

/// Pods that arrive while a PATCH runs coalesce into the next change, which holds only what is
/// still missing.
#[test]
fn wants_arriving_during_a_flight_make_one_next_change() {
    let mut t = read(&[], needing(&[X]));
    t.send();
    t.want(needing(&[X, Y]));
    t.want(needing(&[X, Y, Z]));
    assert_eq!(t.next(), Next::AwaitFlight);
    t.landed(Landing::Answered(arm(&[X])));
    assert_eq!(t.next(), Next::Send(add(&[Y, Z])));
}

#[test]
fn identities_someone_else_put_on_the_target_are_left_alone() {
    let t = read(&[X, Y], needing(&[X]));
    assert_eq!(t.next(), Next::Nothing);
    assert!(t.may_mark_assigned(Some(Y)));
}

#[test]
fn a_released_identity_is_removed_then_let_go() {
    let mut t = read(&[X], releasing(&[X]));
    assert!(!t.let_go(X));
    send_and_land(&mut t);
    assert!(t.let_go(X));
    assert_eq!(t.next(), Next::Nothing);
}

#[test]
fn a_release_is_not_let_go_while_its_removal_is_in_flight() {
    let mut t = read(&[X], releasing(&[X]));
    t.send();
    assert!(!t.let_go(X));
}

#[test]
fn a_left_behind_identity_is_removed_unless_needed() {
    let mut t = read(
        &[X, Y],
        Wants {
            needed: set(&[Y]),
            stale: set(&[X, Y]),
            ..Wants::default()
        },
    );
    assert_eq!(t.next(), Next::Send(remove(&[X])));
    assert!(t.let_go(Y), "needed again: nothing to remove");
    send_and_land(&mut t);
    assert!(t.let_go(X));
}

// --- Drift: identities that vanish behind MIC's back ---

#[test]
fn drift_is_seen_only_after_a_read_back_and_then_repaired() {
    let mut t = read(&[X], needing(&[X]));
    assert_eq!(t.next(), Next::Nothing);
    // Someone removes X; MIC's last answer still says it is there until a read-back.
    t.forget();
    assert_eq!(t.next(), Next::Read);
    assert!(!t.may_mark_assigned(Some(X)));
    t.read(arm(&[]));
    assert_eq!(send_and_land(&mut t), add(&[X]));
    assert!(t.may_mark_assigned(Some(X)));
}

#[test]
fn a_read_back_asked_during_a_flight_happens_after_it() {
    let mut t = read(&[], needing(&[X, Y]));
    t.send();
    t.forget();
    assert_eq!(t.next(), Next::AwaitFlight);
    t.landed(Landing::Answered(arm(&[X, Y])));
    assert_eq!(t.next(), Next::Read, "the flight's answer says nothing of drift");
    t.read(arm(&[X]));
    assert_eq!(t.next(), Next::Send(add(&[Y])));
}

#[test]
fn a_read_back_showing_nothing_changed_needs_no_patch() {
    let mut t = read(&[X], needing(&[X]));
    t.forget();
    t.read(arm(&[X]));
    assert!(!t.needs_arm_work());
    assert!(t.may_mark_assigned(Some(X)));
}

// --- Failures ---

/// ARM refused the PATCH (or its operation failed): its answer stands for the target, the
/// identity is still missing, and the next batch tries again.
#[test]
fn a_refused_patch_leaves_the_identity_missing_and_to_be_added() {
    let mut t = read(&[], needing(&[X]));
    t.send();
    t.landed(Landing::Answered(arm(&[])));
    assert!(!t.may_mark_assigned(Some(X)));
    assert_eq!(t.next(), Next::Send(add(&[X])));
}

/// ARM accepted part of a batch and refused one identity by name (`LinkedAuthorizationFailed`).
#[test]
fn identities_arm_refused_by_name_stay_unmarked_while_the_rest_are_marked() {
    let mut t = read(&[], needing(&[X, Y]));
    t.send();
    t.landed(Landing::Answered(arm(&[X])));
    assert!(t.may_mark_assigned(Some(X)));
    assert!(!t.may_mark_assigned(Some(Y)));
    assert_eq!(t.next(), Next::Send(add(&[Y])));
}

/// No answer: the PATCH may or may not have taken effect. Nothing is marked, no release is let
/// go, and the target is read before the next change.
#[test]
fn an_unanswered_patch_makes_the_state_unknown_and_reads_first() {
    let mut t = read(
        &[X],
        Wants {
            needed: set(&[Y]),
            released: set(&[X]),
            ..Wants::default()
        },
    );
    assert_eq!(
        t.send(),
        Some(TargetChange {
            add: set(&[Y]),
            remove: set(&[X]),
        })
    );
    t.landed(Landing::Unanswered);
    assert_eq!(t.known(), &Known::Unread);
    assert!(!t.may_mark_assigned(Some(Y)));
    assert!(!t.let_go(X));
    assert_eq!(t.next(), Next::Read);
    t.read(arm(&[Y]));
    assert!(t.may_mark_assigned(Some(Y)));
    assert!(t.let_go(X));
    assert_eq!(t.next(), Next::Nothing);
}

#[test]
fn a_failed_read_leaves_the_target_to_be_read_again() {
    let mut t = TargetState::new(BTreeSet::new());
    t.want(needing(&[X]));
    // (The worker simply does not call `read` when the GET fails.)
    assert_eq!(t.next(), Next::Read);
    assert_eq!(t.flight(), &Flight::Idle);
}

#[test]
fn a_target_being_deleted_is_left_alone() {
    let mut t = TargetState::new(BTreeSet::new());
    t.want(needing(&[X]));
    let mut deleting = arm(&[]);
    deleting.provisioning_state = Some("Deleting".into());
    t.read(deleting);
    assert_eq!(t.next(), Next::LeaveAlone);
    assert!(!t.needs_arm_work());
    assert_eq!(t.send(), None);
    assert!(!t.may_mark_assigned(Some(X)));
}

// --- Protected identities ---

#[test]
fn a_protected_identity_is_never_removed() {
    let t = read(
        &[X],
        Wants {
            released: set(&[X]),
            protected: set(&[X]),
            ..Wants::default()
        },
    );
    assert_eq!(t.next(), Next::Nothing);
    assert!(t.let_go(X));
}

#[test]
fn an_identity_arm_reports_with_a_protected_client_id_is_never_removed() {
    let mut t = TargetState::new(set(&["cid-x"]));
    t.want(releasing(&[X, Y]));
    let mut answer = arm(&[X, Y]);
    answer.user_assigned.insert(
        X.to_owned(),
        UserIdentity {
            client_id: Some("CID-X".into()),
            principal_id: None,
        },
    );
    t.read(answer);
    assert_eq!(t.protected(), set(&[X]));
    assert_eq!(t.next(), Next::Send(remove(&[Y])));
}

#[test]
fn a_protected_identity_that_is_needed_is_still_added() {
    let t = read(
        &[],
        Wants {
            needed: set(&[X]),
            protected: set(&[X]),
            ..Wants::default()
        },
    );
    assert_eq!(t.next(), Next::Send(add(&[X])));
}

// --- Service principals ---

#[test]
fn service_principals_need_nothing_from_arm() {
    let mut t = TargetState::new(BTreeSet::new());
    // A picture with only service-principal assignments has no ARM identities at all.
    t.want(Wants::default());
    assert_eq!(t.next(), Next::Nothing);
    assert!(t.may_mark_assigned(None), "even before any read");
    t.want(releasing(&[X]));
    t.read(arm(&[X]));
    t.send();
    assert!(t.may_mark_assigned(None), "even during a flight");
    t.landed(Landing::Unanswered);
    assert!(
        t.may_mark_assigned(None),
        "even when the target's state is unknown"
    );
}

/// A target read carrying `on`, with `wants`, a grace of 30 s, at `now`.
fn graced(on: &[&str], wants: Wants, now: Instant) -> TargetState {
    let mut t = TargetState::new(BTreeSet::new()).with_removal_grace(GRACE);
    t.tick(now);
    t.want(wants);
    t.read(arm(on));
    t
}

const GRACE: Duration = Duration::from_secs(30);

#[test]
fn a_removal_waits_for_its_grace_and_a_pod_that_needs_the_identity_again_cancels_it() {
    let t0 = Instant::now();
    // Pod 1 ended: its identity is held for the grace, and the worker knows when to wake.
    let mut t = graced(&[X], releasing(&[X]), t0);
    assert_eq!(t.next(), Next::Nothing);
    assert!(t.in_grace(X));
    assert!(
        !t.let_go(X),
        "the object that released it stays until the removal"
    );
    assert_eq!(t.next_removal_due(), Some(t0 + GRACE));
    // Pod 2 needs it again within the grace: nothing is ever sent, and nothing is due.
    t.tick(t0 + Duration::from_secs(10));
    t.want(Wants {
        needed: set(&[X]),
        released: set(&[X]),
        ..Wants::default()
    });
    assert_eq!(t.next(), Next::Nothing);
    assert!(!t.in_grace(X));
    assert_eq!(t.next_removal_due(), None);
    // Pod 2 ends too: a new grace starts then, not at pod 1's end.
    t.tick(t0 + Duration::from_secs(20));
    t.want(releasing(&[X]));
    assert_eq!(t.next_removal_due(), Some(t0 + Duration::from_secs(50)));
    t.tick(t0 + Duration::from_secs(49));
    t.want(releasing(&[X]));
    assert_eq!(t.next(), Next::Nothing);
    // Once it runs out, the removal goes.
    t.tick(t0 + Duration::from_secs(50));
    t.want(releasing(&[X]));
    assert_eq!(t.next(), Next::Send(remove(&[X])));
    assert_eq!(send_and_land(&mut t), remove(&[X]));
    assert!(t.let_go(X));
    assert_eq!(t.next_removal_due(), None);
}

#[test]
fn a_change_that_adds_carries_only_the_removals_whose_grace_ran_out() {
    let t0 = Instant::now();
    // x was released 40 s ago, y 5 s ago; a pod needs z now.
    let mut t = TargetState::new(BTreeSet::new()).with_removal_grace(GRACE);
    t.tick(t0);
    t.want(releasing(&[X]));
    t.tick(t0 + Duration::from_secs(35));
    t.want(releasing(&[X, Y]));
    t.read(arm(&[X, Y]));
    t.tick(t0 + Duration::from_secs(40));
    t.want(Wants {
        needed: set(&[Z]),
        released: set(&[X, Y]),
        ..Wants::default()
    });
    assert_eq!(
        t.next(),
        Next::Send(TargetChange {
            add: set(&[Z]),
            remove: set(&[X]),
        }),
        "y, released 5 s ago, stays: the next pod of its Job may need it"
    );
    assert_eq!(t.next_removal_due(), Some(t0 + Duration::from_secs(65)));
}

#[test]
fn a_busy_target_still_sheds_what_it_no_longer_needs() {
    // New pictures keep coming (other pods start and end): the grace counts from when x
    // stopped being needed, so it does not restart with every change.
    let t0 = Instant::now();
    let mut t = graced(&[X, Y], releasing(&[X]), t0);
    for s in 1..=30 {
        t.tick(t0 + Duration::from_secs(s));
        t.want(Wants {
            needed: if s % 2 == 0 { set(&[Y]) } else { set(&[]) },
            released: set(&[X]),
            ..Wants::default()
        });
    }
    assert_eq!(t.next(), Next::Send(remove(&[X])));
}

#[test]
fn without_a_grace_removals_go_at_once_as_upstream_did() {
    let t = read(&[X], releasing(&[X]));
    assert_eq!(t.next(), Next::Send(remove(&[X])));
    assert!(!t.in_grace(X));
    assert_eq!(t.next_removal_due(), None);
}

#[test]
fn protected_identities_and_unread_targets_set_no_removal_timer() {
    let t0 = Instant::now();
    let mut t = TargetState::new(BTreeSet::new()).with_removal_grace(GRACE);
    t.tick(t0);
    t.want(releasing(&[X]));
    assert_eq!(
        t.next(),
        Next::Read,
        "unread targets are read first, whatever the wants"
    );
    assert_eq!(t.next_removal_due(), None);
    t.want(Wants {
        released: set(&[X]),
        protected: set(&[X]),
        ..Wants::default()
    });
    t.read(arm(&[X]));
    assert_eq!(t.next_removal_due(), None);
    assert!(t.let_go(X));
}
