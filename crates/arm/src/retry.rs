//! The retry policy and its timing helpers (backoff with jitter, `Retry-After`); apart from the
//! client so the arithmetic can be read and tested alone.

use std::time::{Duration, SystemTime};

use azure_token::retry_after;

/// Retry limits; the defaults suit production, tests shorten them.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub poll_interval: Duration,
    pub operation_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(20 * 60),
        }
    }
}

pub(crate) fn hinted(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    retry_after(headers.get("retry-after")?.to_str().ok()?, SystemTime::now())
}

/// Exponential backoff with full jitter: a random wait up to `base * 2^(attempt-1)`, capped.
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let ceiling = policy
        .base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(policy.max);
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
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
}
