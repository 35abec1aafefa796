//! The write decision on plain values: every stage for each kind of object, and the sequences a
//! worker goes through (a quick batch, a slow one, a failed write, issue 13's pod that arrives
//! while its identity is being removed).

use std::sync::Arc;

use api::{AzureIdentity, AzureIdentityBinding};

use super::*;

const X: &str = "x";

use Decision::Skip;
use ObjectWrite::{Create, Nothing, Rewrite};
use Stage::{Ahead, Answered, Later, Mark};

fn write(object: ObjectWrite, status: StatusWritten) -> Decision {
    Decision::Write { object, status }
}

/// An assignment of identity `x` (or of a service principal: `arm_id` `None`) for `pod` on `node`.
fn assignment(pod: &str, node: &str, arm_id: Option<&str>, write: ObjectWrite) -> ToAssign {
    ToAssign {
        key: ("ns".into(), format!("{pod}-ns-x")),
        arm_id: arm_id.map(Arc::from),
        pod: pod.into(),
        pod_uid: None,
        node: node.into(),
        identity: Arc::new(AzureIdentity::new("x", Default::default())),
        binding: Arc::new(AzureIdentityBinding::new("b", Default::default())),
        seen: Instant::now(),
        write,
        version: None,
    }
}

fn picture(assign: Vec<ToAssign>) -> TargetWork {
    TargetWork {
        assign,
        ..TargetWork::default()
    }
}

fn on(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// The writes' objects by status: (no status, `Created`, `Assigned`), each as (pod, object write).
type Grouped = [Vec<(String, ObjectWrite)>; 3];

fn grouped(w: &Writes<'_>) -> Grouped {
    let g = |v: &[Decided<'_>]| v.iter().map(|d| (d.assignment.pod.clone(), d.object)).collect();
    [g(&w.no_status), g(&w.created), g(&w.assigned)]
}

fn one(pod: &str, object: ObjectWrite) -> Vec<(String, ObjectWrite)> {
    vec![(pod.to_owned(), object)]
}

/// Carries out a picture's writes at `stage`, all succeeding, and returns them.
fn run(ledger: &mut Ledger, work: &TargetWork, on: &BTreeSet<String>, stage: Stage) -> Grouped {
    let writes = ledger.writes(work, on, stage);
    let g = grouped(&writes);
    let now = Instant::now();
    for (list, status) in [
        (&writes.no_status, StatusWritten::NotYet),
        (&writes.created, StatusWritten::Created),
        (&writes.assigned, StatusWritten::Assigned),
    ] {
        for d in list {
            ledger.wrote(d.assignment, status, now);
        }
    }
    g
}

// --- One object, every stage. ---

#[test]
fn a_new_object_waiting_for_its_identity_is_created_without_a_status_and_marked_only_when_slow() {
    let done = Done::Nothing;
    assert_eq!(
        decide(Create, done, false, Ahead),
        write(Create, StatusWritten::NotYet)
    );
    assert_eq!(
        decide(Create, done, false, Later),
        write(Create, StatusWritten::NotYet)
    );
    assert_eq!(
        decide(Create, done, false, Mark),
        write(Create, StatusWritten::Created)
    );
    assert_eq!(decide(Create, done, false, Answered), Skip);
}

#[test]
fn a_rewritten_object_waiting_for_its_new_identity_is_marked_created_before_its_patch_only() {
    let done = Done::Nothing;
    assert_eq!(
        decide(Rewrite, done, false, Ahead),
        write(Rewrite, StatusWritten::Created)
    );
    assert_eq!(
        decide(Rewrite, done, false, Later),
        Skip,
        "its own batch rewrites it"
    );
    assert_eq!(
        decide(Rewrite, done, false, Mark),
        write(Rewrite, StatusWritten::Created)
    );
    assert_eq!(decide(Rewrite, done, false, Answered), Skip);
}

#[test]
fn an_existing_object_still_created_waits_without_writes() {
    for stage in [Ahead, Later, Mark, Answered] {
        assert_eq!(decide(Nothing, Done::Nothing, false, stage), Skip, "{stage:?}");
    }
}

#[test]
fn an_object_whose_identity_is_on_the_target_is_written_and_assigned_at_every_stage() {
    for stage in [Ahead, Later, Mark, Answered] {
        for asked in [Create, Rewrite, Nothing] {
            assert_eq!(
                decide(asked, Done::Nothing, true, stage),
                write(asked, StatusWritten::Assigned)
            );
        }
        // Already written by this worker: only the status.
        for status in [StatusWritten::NotYet, StatusWritten::Created] {
            assert_eq!(
                decide(Create, Done::Object(status), true, stage),
                write(Nothing, StatusWritten::Assigned)
            );
        }
    }
}

#[test]
fn an_object_this_worker_assigned_is_never_written_again() {
    for stage in [Ahead, Later, Mark, Answered] {
        for on_target in [true, false] {
            let done = Done::Object(StatusWritten::Assigned);
            assert_eq!(decide(Create, done, on_target, stage), Skip);
        }
    }
}

#[test]
fn an_object_created_here_without_a_status_is_marked_created_only_when_slow() {
    let done = Done::Object(StatusWritten::NotYet);
    assert_eq!(decide(Create, done, false, Ahead), Skip);
    assert_eq!(decide(Create, done, false, Later), Skip);
    assert_eq!(
        decide(Create, done, false, Mark),
        write(Nothing, StatusWritten::Created)
    );
    assert_eq!(decide(Create, done, false, Answered), Skip);
    let marked = Done::Object(StatusWritten::Created);
    for stage in [Ahead, Later, Mark, Answered] {
        assert_eq!(decide(Rewrite, marked, false, stage), Skip, "{stage:?}");
    }
}

// --- The ledger over a worker's sequences. ---

#[test]
fn a_quick_batch_takes_two_writes_per_pod() {
    let work = picture(vec![assignment("p1", "a-0", Some(X), Create)]);
    let mut ledger = Ledger::default();
    assert_eq!(
        run(&mut ledger, &work, &on(&[]), Ahead),
        [one("p1", Create), vec![], vec![]]
    );
    // The PATCH returns with `x` on the target.
    assert_eq!(
        run(&mut ledger, &work, &on(&[X]), Answered),
        [vec![], vec![], one("p1", Nothing)]
    );
    assert!(ledger.todo(&work).is_empty());
    // The planner's cache has not caught up yet: the same picture asks for nothing more.
    for stage in [Ahead, Later, Mark, Answered] {
        assert_eq!(
            grouped(&ledger.writes(&work, &on(&[X]), stage)),
            Grouped::default()
        );
    }
}

#[test]
fn a_slow_batch_marks_its_waiting_objects_created_once() {
    let work = picture(vec![
        assignment("p1", "a-0", Some(X), Create),
        assignment("p2", "a-1", Some(X), Rewrite),
    ]);
    let mut ledger = Ledger::default();
    assert_eq!(
        run(&mut ledger, &work, &on(&[]), Ahead),
        [one("p1", Create), one("p2", Rewrite), vec![]]
    );
    assert_eq!(
        run(&mut ledger, &work, &on(&[]), Mark),
        [vec![], one("p1", Nothing), vec![]]
    );
    assert_eq!(run(&mut ledger, &work, &on(&[]), Mark), Grouped::default());
    assert_eq!(
        run(&mut ledger, &work, &on(&[X]), Answered),
        [
            vec![],
            vec![],
            vec![("p1".into(), Nothing), ("p2".into(), Nothing)]
        ]
    );
}

#[test]
fn a_failed_write_is_decided_again() {
    let work = picture(vec![assignment("p1", "a-0", Some(X), Create)]);
    let ledger = Ledger::default();
    // Nothing recorded: the create failed.
    let first = grouped(&ledger.writes(&work, &on(&[]), Ahead));
    assert_eq!(first, grouped(&ledger.writes(&work, &on(&[]), Ahead)));
    assert_eq!(ledger.todo(&work).len(), 1);
}

#[test]
fn a_newer_version_of_an_object_is_written_again() {
    let mut ledger = Ledger::default();
    let old = picture(vec![assignment("p1", "a-0", Some(X), Create)]);
    run(&mut ledger, &old, &on(&[X]), Ahead);
    assert!(ledger.todo(&old).is_empty());
    // The planner now asks for the object on another node: this worker's write does not count.
    let moved = picture(vec![assignment("p1", "a-1", Some(X), Rewrite)]);
    assert_eq!(ledger.todo(&moved).len(), 1);
    assert_eq!(
        run(&mut ledger, &moved, &on(&[X]), Ahead),
        [vec![], vec![], one("p1", Rewrite)]
    );
}

#[test]
fn an_object_needing_no_write_counts_as_written_whatever_this_worker_wrote_of_it() {
    let mut ledger = Ledger::default();
    let retry = picture(vec![assignment("p1", "a-0", Some(X), Nothing)]);
    assert_eq!(
        run(&mut ledger, &retry, &on(&[X]), Answered),
        [vec![], vec![], one("p1", Nothing)]
    );
    assert!(ledger.todo(&retry).is_empty());
}

#[test]
fn service_principals_are_assigned_even_when_the_target_cannot_be_read() {
    let work = picture(vec![
        assignment("sp", "a-0", None, Create),
        assignment("msi", "a-0", Some(X), Create),
    ]);
    let ledger = Ledger::default();
    assert_eq!(
        grouped(&ledger.writes(&work, &BTreeSet::new(), Answered)),
        [vec![], vec![], one("sp", Create)]
    );
}

#[test]
fn the_ledger_forgets_writes_not_asked_any_more_or_too_old() {
    let mut ledger = Ledger::default();
    let both = picture(vec![
        assignment("p1", "a-0", Some(X), Create),
        assignment("p2", "a-0", Some(X), Create),
    ]);
    run(&mut ledger, &both, &on(&[X]), Ahead);
    let only_p2 = picture(vec![both.assign[1].clone()]);
    ledger.forget_settled(&only_p2, Instant::now());
    assert_eq!(
        ledger.todo(&both).len(),
        1,
        "p1's write forgotten: its cache caught up"
    );
    assert!(ledger.todo(&only_p2).is_empty());
    ledger.forget_settled(&only_p2, Instant::now() + WRITTEN_FOR);
    assert_eq!(ledger.todo(&only_p2).len(), 1);
}

// --- Issue 13: pod 1 on one instance ends, pod 2 on the other starts while the PATCH that
// removes the identity is in flight. ---

/// Pod 2's object is created while the removal runs (`on` excludes the identity the flight
/// removes), stays unmarked when the removal returns without it, and is marked `Assigned` by the
/// batch that adds it back.
#[test]
fn a_pod_arriving_while_its_identity_is_removed_is_assigned_only_after_it_is_back() {
    let mut ledger = Ledger::default();
    let work = picture(vec![assignment("p2", "a-0", Some(X), Create)]);
    // Arrives while the removal of `x` is in flight.
    assert_eq!(
        run(&mut ledger, &work, &on(&[]), Later),
        [one("p2", Create), vec![], vec![]]
    );
    // The removal returns: `x` is gone.
    assert_eq!(run(&mut ledger, &work, &on(&[]), Answered), Grouped::default());
    // The next batch adds `x` back: before its PATCH, nothing to write again...
    assert_eq!(run(&mut ledger, &work, &on(&[]), Ahead), Grouped::default());
    // ...and when it returns with `x`, pod 2 is marked.
    assert_eq!(
        run(&mut ledger, &work, &on(&[X]), Answered),
        [vec![], vec![], one("p2", Nothing)]
    );
}

/// Pod 1's removal was dropped because pod 2 needed the identity before it was sent: the
/// identity never left, and pod 2 is assigned at once, before any PATCH.
#[test]
fn a_pod_whose_identity_stayed_on_the_target_is_assigned_at_once() {
    let mut ledger = Ledger::default();
    let work = picture(vec![assignment("p2", "a-0", Some(X), Create)]);
    assert_eq!(
        run(&mut ledger, &work, &on(&[X]), Ahead),
        [vec![], vec![], one("p2", Create)]
    );
}
