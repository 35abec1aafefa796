//! What a churn run saw and the figures it reports: the result type on its own, apart from
//! the run that fills it in.

use serde_json::{Value, json};

/// What one run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub pods: usize,
    pub bound_pods: usize,
    /// Bound pods that got no token for their identity, with the reason.
    pub token_failures: Vec<String>,
    /// Unbound pods that got a token.
    pub unbound_tokens: Vec<String>,
    /// From pod Running to the first token, per bound pod, in microseconds.
    pub first_token_us: Vec<u32>,
    pub arm_writes: u64,
    /// Identities removed behind MIC's back during the run, as "id<n> from <target>".
    pub removed_behind: Vec<String>,
    /// How many times MIC was paused during the run.
    pub mic_pauses: usize,
    /// Watch events delivered late to MIC (see `slow_watch`).
    pub late_watch_events: u64,
    /// Targets whose identities differ from what is still needed at the end.
    pub end_state: Vec<String>,
}

impl Report {
    pub fn failures(&self) -> Vec<String> {
        let mut all = self.token_failures.clone();
        all.extend(
            self.unbound_tokens
                .iter()
                .map(|p| format!("unbound pod got a token: {p}")),
        );
        all.extend(self.end_state.iter().cloned());
        all
    }

    pub fn figures(&self) -> Vec<(&'static str, Value)> {
        let mut times = self.first_token_us.clone();
        times.sort_unstable();
        let per_pod = if self.bound_pods == 0 {
            0.0
        } else {
            self.arm_writes as f64 / self.bound_pods as f64
        };
        vec![
            ("churn_pods", json!(self.pods)),
            (
                "churn_token_failures",
                json!(self.token_failures.len() + self.unbound_tokens.len()),
            ),
            (
                "churn_first_token_p50_ms",
                json!(bench::load::percentile_ms(&times, 0.50).round()),
            ),
            (
                "churn_first_token_p99_ms",
                json!(bench::load::percentile_ms(&times, 0.99).round()),
            ),
            (
                "churn_arm_writes_per_pod",
                json!((per_pod * 100.0).round() / 100.0),
            ),
        ]
    }
}
