use super::*;

#[test]
fn backoff_grows_and_is_capped() {
    let p = RetryPolicy::default();
    for attempt in 1..10 {
        let d = backoff(&p, attempt);
        let ceiling = p.base.saturating_mul(1 << (attempt - 1)).min(p.max);
        assert!(
            d <= ceiling && d >= ceiling / 2,
            "attempt {attempt}: {d:?} vs {ceiling:?}"
        );
    }
}
