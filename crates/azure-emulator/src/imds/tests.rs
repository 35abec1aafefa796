use super::*;

#[test]
fn duplicate_query_parameters_are_refused() {
    assert!(parse_query(Some("a=1&b=2")).is_ok());
    assert!(parse_query(Some("resource=x&Resource=y")).is_err());
    assert_eq!(
        parse_query(Some("resource=https%3A%2F%2Fx%2F")).unwrap()[0].1,
        "https://x/"
    );
    assert!(parse_query(None).unwrap().is_empty());
}

#[tokio::test]
async fn limiter_admits_the_configured_rate_and_concurrency() {
    let l = Limiter::new(true, 20, 5);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(l.admit().expect("within limits"));
    }
    assert!(l.admit().is_err(), "sixth concurrent request");
    held.clear();
    for _ in 0..15 {
        assert!(l.admit().is_ok());
    }
    assert!(l.admit().is_err(), "21st request in the same second");
    assert!(Limiter::new(false, 0, 0).admit().is_ok(), "off means off");
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
