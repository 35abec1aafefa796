use std::time::{Duration, Instant};

use super::*;

#[test]
fn duplicate_query_parameters_are_refused() {
    assert!(parse_query(Some("a=1&b=2")).is_ok());
    let e = parse_query(Some("resource=x&Resource=y")).unwrap_err();
    assert_eq!(e.to_string(), "Duplicate query parameter 'Resource' in request");
    assert_eq!(
        parse_query(Some("resource=https%3A%2F%2Fx%2F")).unwrap()[0].1,
        "https://x/"
    );
    assert!(parse_query(None).unwrap().is_empty());
}

#[test]
fn the_window_admits_per_second_requests_in_any_one_second_span() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut w = Window::default();
    // 20 spread over the first 950 ms pass; the 21st inside that second does not.
    for i in 0..20 {
        assert!(w.admit(ms(i * 50), 20), "request {i}");
    }
    assert!(!w.admit(ms(999), 20), "21st within a second of the first");
    assert!(
        !w.admit(ms(999), 20),
        "a refusal does not use up budget, nor free any"
    );
    // Exactly one second after the first admission, that one has left the window.
    assert!(w.admit(ms(1000), 20), "the first admission slid out");
    assert!(!w.admit(ms(1001), 20), "the second (at 50 ms) is still inside");
    assert!(w.admit(ms(1050), 20), "now the second slid out too");
    // A long pause empties the window.
    let mut later = 0;
    while w.admit(ms(5000), 20) {
        later += 1;
    }
    assert_eq!(later, 20, "a fresh second holds 20 again");
    // However slowly the requests come in real time, only the instants count.
    let mut w = Window::default();
    for _ in 0..3 {
        assert!(w.admit(t0, 3));
    }
    assert!(!w.admit(t0, 3));
    assert!(w.admit(ms(1000), 3));
}

#[tokio::test]
async fn limiter_admits_the_configured_rate_and_concurrency() {
    let l = Limiter::new(true, 20, 5);
    let t0 = Instant::now();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(l.admit(t0).expect("within limits"));
    }
    assert!(l.admit(t0).is_err(), "sixth concurrent request");
    held.clear();
    for _ in 0..15 {
        assert!(l.admit(t0).is_ok());
    }
    assert!(l.admit(t0).is_err(), "21st request in the same second");
    assert!(
        l.admit(t0 + Duration::from_secs(1)).is_ok(),
        "the budget is back a second later"
    );
    assert!(Limiter::new(false, 0, 0).admit(t0).is_ok(), "off means off");
}

#[test]
fn api_versions_are_dates_from_the_categorys_first() {
    for ok in ["2018-02-01", "2019-08-01", "2023-07-01", "2030-01-01"] {
        assert!(api_version_ok(Some(ok), "2018-02-01"), "{ok}");
    }
    for bad in [
        None,
        Some(""),
        Some("2017-12-01"),
        Some("latest"),
        Some("2018-02-0x"),
        Some("2018-02-011"),
    ] {
        assert!(!api_version_ok(bad, "2018-02-01"), "{bad:?}");
    }
    assert!(
        api_version_ok(Some("2017-12-01"), "2017-03-01"),
        "the instance category is older"
    );
}
