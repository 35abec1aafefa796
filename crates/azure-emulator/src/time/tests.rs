use super::*;

#[test]
fn rfc3339_matches_arm_format() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.0000000Z");
    assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.1230000Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.0000000Z");
}

#[test]
fn timestamp_uses_entra_format() {
    let t = entra_timestamp();
    assert_eq!(t.len(), 20);
    assert_eq!(&t[10..11], " ");
    assert!(t.ends_with('Z'));
}

#[test]
fn clock_runs_until_frozen_then_moves_only_when_advanced() {
    let c = Clock::default();
    assert!(!c.is_frozen());
    let a = c.now();
    assert!(a <= Instant::now(), "the default is the system clock");
    assert!(c.now() >= a);
    c.freeze();
    let f = c.now();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(c.now(), f, "a frozen clock stands still");
    c.freeze();
    assert_eq!(c.now(), f, "freezing again keeps the instant");
    assert_eq!(
        c.advance(Duration::from_millis(1100)),
        f + Duration::from_millis(1100)
    );
    assert_eq!(c.now(), f + Duration::from_millis(1100));
    assert!(c.is_frozen());
}

#[test]
fn a_resumed_or_advanced_running_clock_runs_on_from_where_it_stands() {
    let c = Clock::default();
    c.freeze();
    let f = c.advance(Duration::from_secs(3600));
    c.resume();
    assert!(!c.is_frozen());
    let r = c.now();
    assert!(r >= f, "never back");
    std::thread::sleep(Duration::from_millis(5));
    assert!(c.now() >= r + Duration::from_millis(5), "running again");
    // Advancing a running clock moves it on and keeps it running.
    let before = c.now();
    let t = c.advance(Duration::from_secs(2));
    assert!(!c.is_frozen());
    assert!(t >= before + Duration::from_secs(2));
    assert!(c.now() >= t);
}

#[tokio::test]
async fn a_sleeper_on_a_frozen_clock_wakes_only_when_advanced_past_its_instant() {
    let c = std::sync::Arc::new(Clock::default());
    c.freeze();
    let due = c.now() + Duration::from_millis(1500);
    let sleeper = tokio::spawn({
        let c = c.clone();
        async move { c.sleep_until(due).await }
    });
    // Real time passing does not move a frozen clock.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!sleeper.is_finished());
    c.advance(Duration::from_millis(1499));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!sleeper.is_finished(), "1 ms short of its instant");
    c.advance(Duration::from_millis(1));
    tokio::time::timeout(Duration::from_secs(30), sleeper)
        .await
        .expect("woken by the advance")
        .unwrap();
}

#[tokio::test]
async fn a_sleeper_on_a_running_clock_wakes_when_it_is_moved_past_its_instant() {
    let c = std::sync::Arc::new(Clock::default());
    let due = c.now() + Duration::from_secs(3600);
    let sleeper = tokio::spawn({
        let c = c.clone();
        async move { c.sleep_until(due).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.advance(Duration::from_secs(3600));
    tokio::time::timeout(Duration::from_secs(30), sleeper)
        .await
        .expect("woken by the advance, not after an hour")
        .unwrap();
    // Frozen, a sleeper waits for the clock to run again.
    c.freeze();
    let due = c.now() + Duration::from_millis(50);
    let sleeper = tokio::spawn({
        let c = c.clone();
        async move { c.sleep_until(due).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!sleeper.is_finished(), "the frozen clock has not reached it");
    c.resume();
    tokio::time::timeout(Duration::from_secs(30), sleeper)
        .await
        .expect("woken once running again")
        .unwrap();
}

#[tokio::test]
async fn a_sleeper_on_the_running_clock_sleeps_in_real_time() {
    let c = Clock::default();
    let due = c.now() + Duration::from_millis(300);
    c.sleep_until(due).await;
    assert!(Instant::now() >= due);
    // Already due: returns at once.
    c.sleep_until(due).await;
}
