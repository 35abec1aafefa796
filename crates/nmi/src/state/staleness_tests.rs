use super::*;

#[test]
fn stale_only_after_a_watch_fails_for_longer_than_allowed() {
    let s = State::new("n", Mode::Managed, Policy::default());
    assert_eq!(s.unproven_for(), None);
    assert!(!s.is_stale());
    s.set_max_staleness(Duration::from_millis(50));
    assert!(s.watch_failed("Pod"));
    assert!(
        !s.watch_failed("Pod"),
        "a second failure keeps the first one's time"
    );
    assert!(!s.is_stale(), "within the allowance");
    std::thread::sleep(Duration::from_millis(80));
    assert!(s.is_stale());
    // 0: never stale (upstream's behaviour).
    s.set_max_staleness(Duration::ZERO);
    assert!(!s.is_stale());
    s.set_max_staleness(Duration::from_millis(50));
    // Another watch proven does not prove the failing one.
    s.watch_proven("AzureIdentity");
    assert!(s.is_stale());
    s.watch_proven("Pod");
    assert!(!s.is_stale());
    assert_eq!(s.unproven_for(), None);
}
