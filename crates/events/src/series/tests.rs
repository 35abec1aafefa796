use super::*;

fn key(uid: &str, reason: &str) -> SeriesKey {
    SeriesKey {
        namespace: "ns".into(),
        name: format!("pod-{uid}"),
        uid: Some(uid.into()),
        reason: reason.into(),
        action: "GetToken".into(),
    }
}

fn book() -> SeriesBook {
    SeriesBook::new(SeriesPolicy::default(), 7)
}

const S: Duration = Duration::from_secs(1);

#[test]
fn a_tight_loop_makes_one_event_and_two_writes_a_minute() {
    let mut b = book();
    let t0 = Instant::now();
    let k = key("a", "IdentityNotBound");
    assert_eq!(b.observe(&k, t0), Decision::Create { id: 7 });
    let mut writes = 0;
    // A pod asking every 50 ms for a minute.
    for i in 1..1200u32 {
        match b.observe(&k, t0 + Duration::from_millis(50) * i) {
            Decision::Create { .. } => panic!("a repeat within the window made a new Event"),
            Decision::UpdateSeries { id, count } => {
                assert_eq!(id, 7);
                assert_eq!(count, i + 1, "the count is every occurrence so far");
                writes += 1;
            }
            Decision::Suppress => {}
        }
    }
    assert_eq!(
        writes, 1,
        "one series write in the minute after the create (at 30 s)"
    );
}

#[test]
fn series_are_kept_apart_by_object_reason_and_action() {
    let mut b = book();
    let t0 = Instant::now();
    assert!(matches!(b.observe(&key("a", "X"), t0), Decision::Create { .. }));
    assert!(matches!(b.observe(&key("a", "Y"), t0), Decision::Create { .. }));
    assert!(matches!(b.observe(&key("b", "X"), t0), Decision::Create { .. }));
    let mut other_action = key("a", "X");
    other_action.action = "AssignIdentity".into();
    assert!(matches!(b.observe(&other_action, t0), Decision::Create { .. }));
    assert_eq!(b.observe(&key("a", "X"), t0 + S), Decision::Suppress);
    assert_eq!(b.len(), 4);
}

#[test]
fn a_series_expires_after_six_quiet_minutes() {
    let mut b = book();
    let t0 = Instant::now();
    let k = key("a", "X");
    let Decision::Create { id: first } = b.observe(&k, t0) else {
        panic!()
    };
    // Repeats every 5 minutes keep the series alive.
    assert!(matches!(
        b.observe(&k, t0 + 300 * S),
        Decision::UpdateSeries { count: 2, .. }
    ));
    assert!(matches!(
        b.observe(&k, t0 + 600 * S),
        Decision::UpdateSeries { count: 3, .. }
    ));
    // Six minutes of quiet: a new Event.
    let Decision::Create { id: second } = b.observe(&k, t0 + 960 * S) else {
        panic!()
    };
    assert_ne!(first, second);
}

#[test]
fn due_reports_counts_left_unwritten_once_the_interval_passes() {
    let mut b = book();
    let t0 = Instant::now();
    let k = key("a", "X");
    b.observe(&k, t0);
    for i in 1..20 {
        assert_eq!(
            b.observe(&k, t0 + Duration::from_millis(50) * i),
            Decision::Suppress
        );
    }
    assert!(b.due(t0 + 10 * S).is_empty(), "not before the write interval");
    let due = b.due(t0 + 31 * S);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].count, 20);
    assert!(b.due(t0 + 120 * S).is_empty(), "written once");
    assert!(
        b.due(t0 + 1000 * S).is_empty(),
        "an expired series is not written"
    );
}

#[test]
fn the_book_is_bounded_and_forgets_the_oldest() {
    let policy = SeriesPolicy {
        capacity: 3,
        ..SeriesPolicy::default()
    };
    let mut b = SeriesBook::new(policy, 0);
    let t0 = Instant::now();
    for (i, uid) in ["a", "b", "c", "d"].iter().enumerate() {
        b.observe(&key(uid, "X"), t0 + S * i as u32);
    }
    assert_eq!(b.len(), 3);
    // "a" was forgotten: it starts anew; "d" is still a series.
    assert!(matches!(
        b.observe(&key("d", "X"), t0 + 5 * S),
        Decision::Suppress
    ));
    assert!(matches!(
        b.observe(&key("a", "X"), t0 + 5 * S),
        Decision::Create { .. }
    ));
    assert_eq!(b.len(), 3);
}

#[test]
fn event_names_start_with_the_object() {
    assert_eq!(event_name("web-0", 255), "web-0.00000000000000ff");
}
