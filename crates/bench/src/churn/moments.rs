//! The seeded random moments at which the churn run's meddlers (`behind`, `lag`) act: every
//! `mean` on average (0.5 to 1.5 times it apart), until the run's deadline or its end.

use std::time::{Duration, Instant};

/// The moments, and the generator the meddler draws the rest of its choices from, so that one
/// seed replays the whole sequence.
pub(super) struct Moments {
    pub rng: fastrand::Rng,
    mean: Duration,
    deadline: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Moments {
    pub fn new(
        seed: u64,
        mean: Duration,
        deadline: Instant,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            mean,
            deadline,
            stop,
        }
    }

    /// Waits for the next moment; false when the run ends first (the pods may run out before
    /// the deadline).
    pub async fn next(&mut self) -> bool {
        let wait = self.mean.mul_f64(0.5 + self.rng.f64());
        if Instant::now() + wait >= self.deadline {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            _ = self.stop.changed() => false,
        }
    }
}
