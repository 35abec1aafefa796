//! IMDS's per-VM request limits (rate window and concurrency cap): plain bookkeeping over
//! instants, apart from the HTTP handling so it can be reasoned about and tested on its own.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::sync::lock;

/// Admission times within the last second: a sliding window, so no one-second span ever holds
/// more than the allowed number of admissions. Time is an input, so the window is a pure function
/// of the instants it is given.
#[derive(Debug, Default)]
pub struct Window {
    admitted: VecDeque<Instant>,
}

impl Window {
    /// Admits a request at `now` when fewer than `per_second` were admitted in the second before
    /// it, and records it; otherwise says no and records nothing.
    pub fn admit(&mut self, now: Instant, per_second: u32) -> bool {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() >= per_second as usize {
            return false;
        }
        self.admitted.push_back(now);
        true
    }
}

/// 20 requests/s and 5 concurrent per VM, as real IMDS applies to managed-identity requests.
pub struct Limiter {
    enabled: bool,
    window: Mutex<Window>,
    per_second: u32,
    concurrent: Arc<Semaphore>,
}

impl Limiter {
    pub fn new(enabled: bool, per_second: u32, concurrent: u32) -> Self {
        Self {
            enabled,
            window: Mutex::new(Window::default()),
            per_second,
            concurrent: Arc::new(Semaphore::new(concurrent as usize)),
        }
    }

    /// Admits a request arriving at `now` (the emulator's clock), or says no. The returned permit
    /// holds a concurrency slot until dropped.
    pub(super) fn admit(&self, now: Instant) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ()> {
        if !self.enabled {
            return Ok(None);
        }
        // Concurrency first, so a request refused for it does not also use up rate budget.
        let permit = self.concurrent.clone().try_acquire_owned().map_err(|_| ())?;
        if !lock(&self.window).admit(now, self.per_second) {
            return Err(());
        }
        Ok(Some(permit))
    }
}
