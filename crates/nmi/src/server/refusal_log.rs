//! Which refusal lines are written: a pod retrying in a tight loop cannot fill the log. The
//! lines of one (pod, reason) share a window of [`LOG_WINDOW`]: its first refusal is logged
//! ([`Refusal::log`], on the `nmi::refusal` target), the others are counted and reported by the
//! next line written.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use mirror::sync;

use crate::refusal::{PodName, Reason, Refusal};

/// How long the refusals of one (pod, reason) share one log line.
pub const LOG_WINDOW: Duration = Duration::from_secs(15);
/// Windows kept before the expired ones are dropped (each is a few dozen bytes).
const PRUNE_ABOVE: usize = 4096;

/// Who a refusal is about, for rate limiting: the pod when known, else the source IP.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Subject {
    Pod(String, String),
    Ip(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Window {
    opened: Instant,
    suppressed: u64,
}

/// Which refusal lines are written: the first of each (pod, reason) in a [`LOG_WINDOW`], the
/// others counted and reported by the next line written.
pub struct RefusalLog {
    window: Duration,
    windows: Mutex<HashMap<(Subject, Reason), Window>>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new(LOG_WINDOW)
    }
}

impl RefusalLog {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            windows: Mutex::default(),
        }
    }

    /// Whether to write the line of a refusal at `now`: `Some(n)` when it opens a new window, `n`
    /// lines of the same pod and reason having been left out since the last one written.
    pub fn admit(&self, pod: Option<&PodName>, source: IpAddr, reason: Reason, now: Instant) -> Option<u64> {
        let subject = match pod {
            Some(p) => Subject::Pod(p.namespace.clone(), p.name.clone()),
            None => Subject::Ip(source),
        };
        let mut windows = sync::lock(&self.windows);
        if windows.len() > PRUNE_ABOVE {
            // A dropped window's unreported count is lost; only windows long past go.
            let window = self.window;
            windows.retain(|_, w| now.saturating_duration_since(w.opened) < window * 4);
        }
        match windows.get_mut(&(subject.clone(), reason)) {
            Some(w) if now.saturating_duration_since(w.opened) < self.window => {
                w.suppressed += 1;
                None
            }
            Some(w) => {
                let suppressed = w.suppressed;
                *w = Window {
                    opened: now,
                    suppressed: 0,
                };
                Some(suppressed)
            }
            None => {
                windows.insert(
                    (subject, reason),
                    Window {
                        opened: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// Logs `refusal` from `source` if its window allows.
    pub fn record(&self, refusal: &Refusal, source: IpAddr, now: Instant) {
        if let Some(suppressed) = self.admit(refusal.pod.as_ref(), source, refusal.reason, now) {
            refusal.log(source, suppressed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 244, 0, 5));

    #[test]
    fn one_line_per_pod_and_reason_per_window_then_the_count_left_out() {
        let log = RefusalLog::new(Duration::from_secs(15));
        let t0 = Instant::now();
        let p = PodName::in_ns("p");
        assert_eq!(log.admit(Some(&p), SOURCE, Reason::Unbound, t0), Some(0));
        for s in 1..=9 {
            assert_eq!(
                log.admit(Some(&p), SOURCE, Reason::Unbound, t0 + Duration::from_secs(s)),
                None,
                "within the window"
            );
        }
        // The window is over: the next line says how many were left out, and opens a new window.
        let t1 = t0 + Duration::from_secs(15);
        assert_eq!(log.admit(Some(&p), SOURCE, Reason::Unbound, t1), Some(9));
        assert_eq!(
            log.admit(Some(&p), SOURCE, Reason::Unbound, t1 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            log.admit(Some(&p), SOURCE, Reason::Unbound, t1 + Duration::from_secs(40)),
            Some(1)
        );
    }

    #[test]
    fn another_reason_another_pod_or_an_unknown_pod_each_have_their_own_window() {
        let log = RefusalLog::new(Duration::from_secs(15));
        let t = Instant::now();
        let (p, q) = (PodName::in_ns("p"), PodName::in_ns("q"));
        assert_eq!(log.admit(Some(&p), SOURCE, Reason::Unbound, t), Some(0));
        assert_eq!(log.admit(Some(&p), SOURCE, Reason::NotAssigned, t), Some(0));
        assert_eq!(log.admit(Some(&q), SOURCE, Reason::Unbound, t), Some(0));
        // No pod known (no pod has the IP): the source IP stands for it.
        assert_eq!(log.admit(None, SOURCE, Reason::NoPod, t), Some(0));
        assert_eq!(log.admit(None, SOURCE, Reason::NoPod, t), None);
        let other: IpAddr = "10.244.0.6".parse().unwrap();
        assert_eq!(log.admit(None, other, Reason::NoPod, t), Some(0));
        // The same pod from another IP is the same pod.
        assert_eq!(log.admit(Some(&p), other, Reason::Unbound, t), None);
    }

    #[test]
    fn a_flood_keeps_the_table_bounded() {
        let log = RefusalLog::new(Duration::from_secs(1));
        let t = Instant::now();
        for i in 0..(PRUNE_ABOVE as u32 + 10) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            log.admit(None, ip, Reason::NoPod, t);
        }
        // Long after, the next refusal drops the expired windows.
        log.admit(None, SOURCE, Reason::NoPod, t + Duration::from_secs(60));
        assert!(sync::lock(&log.windows).len() < 10);
    }
}
