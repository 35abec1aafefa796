//! `--request-timeout` in kubectl's syntax (client-go's `clientcmd.ParseTimeout`): a bare
//! integer is seconds, anything else a Go duration (`30s`, `1m`, `1h30m`, `1.5s`, `250ms`);
//! zero means no timeout. A user copies the value from a kubectl command line, so the plugin
//! must take every spelling kubectl takes and reject the rest with kubectl's hint.

use std::time::Duration;

use crate::Error;

/// What kubectl says of a value it cannot read, so the user sees the same hint from both.
pub const TIMEOUT_HINT: &str = "a timeout must be a single integer in seconds, or an integer followed by a \
     corresponding time unit (e.g. 1s | 2m | 3h)";

/// The timeout `value` asks for: `None` for zero (no timeout), as kubectl's default `0`.
pub fn parse_request_timeout(value: &str) -> Result<Option<Duration>, Error> {
    let value = value.trim();
    let parsed = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => go_duration(value).ok_or_else(|| Error::RequestTimeout {
            value: value.to_owned(),
        })?,
    };
    Ok((!parsed.is_zero()).then_some(parsed))
}

/// Go's `time.ParseDuration` for non-negative values: one or more `<decimal><unit>` terms.
fn go_duration(text: &str) -> Option<Duration> {
    // Go accepts a unitless "0" only; the integer path above has taken it already.
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        total = total.checked_add(term(number, unit)?)?;
        rest = next;
    }
    Some(total)
}

/// One term: `1.5` and `s` → 1.5 seconds.
fn term(number: &str, unit: &str) -> Option<Duration> {
    let nanos_per_unit: u128 = match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut nanos = whole.checked_mul(nanos_per_unit)?;
    // The fraction in exact integer arithmetic: digits beyond a nanosecond are dropped, as Go does.
    let mut scale = nanos_per_unit;
    for digit in fraction.chars() {
        let d = u128::from(digit.to_digit(10)?);
        scale /= 10;
        nanos = nanos.checked_add(d * scale)?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: &str) -> Option<Duration> {
        parse_request_timeout(value).unwrap_or_else(|e| panic!("{value}: {e}"))
    }

    #[test]
    fn zero_in_any_spelling_means_no_timeout() {
        for zero in ["0", "0s", "0m", "0.0s", "00"] {
            assert_eq!(ok(zero), None, "{zero}");
        }
    }

    #[test]
    fn a_bare_integer_is_seconds() {
        assert_eq!(ok("30"), Some(Duration::from_secs(30)));
        assert_eq!(ok(" 5 "), Some(Duration::from_secs(5)));
    }

    #[test]
    fn go_durations_as_kubectl_takes_them() {
        assert_eq!(ok("30s"), Some(Duration::from_secs(30)));
        assert_eq!(ok("1m"), Some(Duration::from_secs(60)));
        assert_eq!(ok("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(ok("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(ok("1m30.5s"), Some(Duration::from_millis(90_500)));
        assert_eq!(ok("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(ok("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(ok(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(ok("10us"), Some(Duration::from_micros(10)));
        assert_eq!(ok("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(ok("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(ok("+3s"), Some(Duration::from_secs(3)));
    }

    #[test]
    fn everything_else_is_refused_with_kubectl_s_hint() {
        for bad in [
            "", "s", "1x", "-1", "-1s", "1.5", "m1", "1s2", "1..5s", ".s", "1 s", "abc",
        ] {
            let e = parse_request_timeout(bad).expect_err(bad).to_string();
            assert!(e.contains(TIMEOUT_HINT), "{bad}: {e}");
        }
    }

    #[test]
    fn an_overflowing_duration_is_refused_not_wrapped() {
        assert!(parse_request_timeout("99999999999999999999h").is_err());
        assert!(parse_request_timeout("18446744073709551615s1s").is_err());
    }
}
