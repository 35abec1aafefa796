//! `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP date. IMDS, Entra and ARM send
//! seconds; a proxy in front of them may send a date.

use std::time::{Duration, SystemTime};

/// How long a `Retry-After` value asks to wait, from `now`: the seconds given, or the time until
/// the date given (zero for a date already past). `None` for anything else.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn takes_seconds_or_a_date() {
        let now = at();
        assert_eq!(retry_after("20", now), Some(Duration::from_secs(20)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        assert_eq!(
            retry_after("Tue, 14 Nov 2023 22:13:27 GMT", now),
            Some(Duration::from_secs(7))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
        for junk in ["soon", "", "-1", "1.5", "Tuesday"] {
            assert_eq!(retry_after(junk, now), None, "{junk:?}");
        }
    }

    proptest! {
        // proptest's default config: 256 cases, or PROPTEST_CASES (the long run).

        /// Whatever a service (or a proxy in front of it) sends, no panic, and what is there is found.
        #[test]
        fn fuzz_retry_after_any_value(v in prop_oneof![any::<String>(), "[ -~]{0,64}"], secs in any::<u64>(), ahead in 0u64..100_000) {
            let now = at();
            let _ = retry_after(&v, now);
            prop_assert_eq!(retry_after(&format!(" {secs} "), now), Some(Duration::from_secs(secs)));
            let date = httpdate::fmt_http_date(now + Duration::from_secs(ahead));
            prop_assert_eq!(retry_after(&date, now), Some(Duration::from_secs(ahead)));
            let past = httpdate::fmt_http_date(now - Duration::from_secs(ahead));
            prop_assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        }
    }
}
