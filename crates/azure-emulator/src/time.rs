//! Clock readings and the date formats Azure writes, in one place for every server.

use std::{
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::sync::Notify;

use crate::sync::lock;

/// The monotonic clock the emulator's time-based behaviour reads: IMDS's requests per second,
/// ARM's subscription token buckets and when an identity write completes. It runs with the
/// system clock (the default, and what production uses); a test can freeze it, so that "the
/// same second" lasts however long a slow machine needs, move it forward, and let it run on
/// from where it stands (`Admin::freeze_clock`, `Admin::advance_clock`, `Admin::resume_clock`,
/// `POST /admin/clock`). It never goes back.
#[derive(Debug)]
pub struct Clock {
    reading: Mutex<Reading>,
    /// Woken when the clock is moved forward or set running again.
    moved: Notify,
}

#[derive(Debug, Clone, Copy)]
enum Reading {
    /// Reads `from` plus the real time passed since `at`.
    Running {
        from: Instant,
        at: Instant,
    },
    Frozen(Instant),
}

impl Reading {
    fn now(self) -> Instant {
        match self {
            Reading::Running { from, at } => from + at.elapsed(),
            Reading::Frozen(t) => t,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            reading: Mutex::new(Reading::Running { from: now, at: now }),
            moved: Notify::new(),
        }
    }
}

impl Clock {
    /// The current instant.
    pub fn now(&self) -> Instant {
        lock(&self.reading).now()
    }

    /// Stops the clock where it stands (no change when already frozen).
    pub fn freeze(&self) {
        let mut r = lock(&self.reading);
        *r = Reading::Frozen(r.now());
    }

    /// Sets a frozen clock running again from where it stands.
    pub fn resume(&self) {
        {
            let mut r = lock(&self.reading);
            if let Reading::Frozen(t) = *r {
                *r = Reading::Running {
                    from: t,
                    at: Instant::now(),
                };
            }
        }
        self.moved.notify_waiters();
    }

    /// Moves the clock forward by `by`, frozen or running; returns the new instant.
    pub fn advance(&self, by: Duration) -> Instant {
        let t = {
            let mut r = lock(&self.reading);
            match &mut *r {
                Reading::Running { from, .. } => *from += by,
                Reading::Frozen(t) => *t += by,
            }
            r.now()
        };
        self.moved.notify_waiters();
        t
    }

    pub fn is_frozen(&self) -> bool {
        matches!(*lock(&self.reading), Reading::Frozen(_))
    }

    /// Returns once the clock reads `due` or later: after a real sleep while the clock runs (cut
    /// short when it is moved forward), and only once moved far enough while it is frozen.
    pub async fn sleep_until(&self, due: Instant) {
        loop {
            // Created before reading the clock, so a move in between is not missed.
            let moved = self.moved.notified();
            let now = self.now();
            if now >= due {
                return;
            }
            if self.is_frozen() {
                moved.await;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(due - now) => {}
                    () = moved => {}
                }
            }
        }
    }
}

/// Seconds since the Unix epoch, as JWT `iat`/`exp` count.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with 7 fractional digits, as ARM writes times.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one format.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}0000Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Entra's error timestamp format, e.g. `2024-01-02 03:04:05Z`.
pub fn entra_timestamp() -> String {
    let s = rfc3339(now_ms());
    format!("{} {}Z", &s[0..10], &s[11..19])
}

#[cfg(test)]
mod tests;
