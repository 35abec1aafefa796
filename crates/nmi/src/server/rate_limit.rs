//! Per-pod rate limiting (issue 7 §5, denial of service): a token bucket per source IP, which is
//! how NMI tells pods apart. A pod that floods NMI gets 429 with `Retry-After`, as IMDS itself
//! throttles, and cannot starve other pods of NMI's time or of the node's IMDS quota.

use mirror::sync;
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Buckets kept before idle (full) ones are dropped.
const PRUNE_ABOVE: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Inner {
    /// Requests per second refilled; 0 turns limiting off.
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

/// Token buckets by source IP. Off (rate 0) until [`PodRateLimiter::configure`]d.
pub struct PodRateLimiter {
    inner: Mutex<Inner>,
}

impl Default for PodRateLimiter {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                rate: 0.0,
                burst: 0.0,
                buckets: HashMap::new(),
            }),
        }
    }
}

impl PodRateLimiter {
    /// `rate` requests per second, up to `burst` at once; `rate` 0 turns limiting off.
    pub fn configure(&self, rate: f64, burst: u32) {
        let mut inner = sync::lock(&self.inner);
        inner.rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        inner.burst = f64::from(burst.max(1));
        inner.buckets.clear();
    }

    /// Takes one request from `ip`'s bucket: `Ok` to go on, or `Err(wait)` before the next is allowed.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut inner = sync::lock(&self.inner);
        let (rate, burst) = (inner.rate, inner.burst);
        if rate <= 0.0 {
            return Ok(());
        }
        if inner.buckets.len() > PRUNE_ABOVE {
            // A bucket that would be full again is the same as no bucket.
            inner
                .buckets
                .retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = inner.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_with_rate_zero() {
        let l = PodRateLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        assert!((0..10_000).all(|_| l.check(ip, now).is_ok()));
        l.configure(0.0, 1);
        assert!((0..10_000).all(|_| l.check(ip, now).is_ok()));
    }

    #[test]
    fn burst_then_rate_per_ip() {
        let l = PodRateLimiter::default();
        l.configure(2.0, 5);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert!((0..5).all(|_| l.check(a, t0).is_ok()));
        let wait = l.check(a, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another pod is not affected.
        assert!(l.check(b, t0).is_ok());
        // Half a second later, one more (2/s).
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.check(a, t1).is_ok());
        assert!(l.check(a, t1).is_err());
        // Long idle: back to the burst, no more.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| l.check(a, t2).is_ok()).count(), 5);
    }

    #[test]
    fn flags_default_to_50_per_second_burst_100() {
        use clap::Parser;
        let f = crate::flags::Flags::try_parse_from(["nmi", "--node=n"]).unwrap();
        assert_eq!((f.pod_rate_limit, f.pod_rate_burst), (50.0, 100));
        assert_eq!(f.max_state_staleness, crate::state::DEFAULT_MAX_STALENESS);
        let f = crate::flags::Flags::try_parse_from([
            "nmi",
            "--node=n",
            "--pod-rate-limit=0",
            "--pod-rate-burst=7",
            "--max-state-staleness=0",
        ])
        .unwrap();
        assert_eq!((f.pod_rate_limit, f.pod_rate_burst), (0.0, 7));
        assert_eq!(f.max_state_staleness, Duration::ZERO);
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let l = PodRateLimiter::default();
        l.configure(100.0, 10);
        let t0 = Instant::now();
        for i in 0..(PRUNE_ABOVE as u32 + 10) {
            l.check(IpAddr::from(i.to_be_bytes()), t0).unwrap();
        }
        l.check("10.9.9.9".parse().unwrap(), t0 + Duration::from_secs(1))
            .unwrap();
        assert!(sync::lock(&l.inner).buckets.len() < 10);
    }
}
