//! Prometheus metrics, served on their own port. Names follow upstream (`aadpodidentity_*`) where
//! a metric means the same; the cache and refusal metrics are new.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation_type: String,
    pub status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuedLabels {
    pub cache_hit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyWriteLabels {
    pub status: String,
    pub result: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// NMI's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub nmi_operations: Histograms<OperationLabels>,
    pub imds_operations: Histograms<StatusLabels>,
    pub tokens_issued: Family<IssuedLabels, Counter>,
    pub refusals: Family<ReasonLabels, Counter>,
    pub cache_entries: Gauge,
    /// 1 while NMI refuses tokens because a watch has failed for longer than `--max-state-staleness`.
    pub state_stale: Gauge,
    /// Pod-facing connections open now, every source IP together.
    pub pod_connections: Gauge,
    /// Pod connections closed without an answer, by reason (see [`Metrics::connection_dropped`]).
    pub connections_dropped: Family<ReasonLabels, Counter>,
    /// Tokens fetched ahead of pods' first requests, by outcome (see [`Metrics::prefetched`]).
    pub prefetches: Family<OutcomeLabels, Counter>,
    /// Writes of pods' IdentityReady condition, by condition status and result.
    pub identity_ready_writes: Family<ReadyWriteLabels, Counter>,
    /// Refusal Events dropped because their queue was full.
    pub events_dropped: Counter,
    /// Series of the hot path, looked up once: a family lookup builds and hashes its labels.
    token_ok: Histogram,
    issued_hit: Counter,
    issued_miss: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aadpodidentity");
        let nmi_operations =
            Histograms::<OperationLabels>::new_with_constructor(latency as fn() -> Histogram);
        let imds_operations = Histograms::<StatusLabels>::new_with_constructor(latency as fn() -> Histogram);
        let tokens_issued = Family::<IssuedLabels, Counter>::default();
        let refusals = Family::<ReasonLabels, Counter>::default();
        let cache_entries = Gauge::default();
        let state_stale = Gauge::default();
        let pod_connections = Gauge::default();
        let connections_dropped = Family::<ReasonLabels, Counter>::default();
        let prefetches = Family::<OutcomeLabels, Counter>::default();
        let identity_ready_writes = Family::<ReadyWriteLabels, Counter>::default();
        let events_dropped = Counter::default();
        registry.register(
            "nmi_events_dropped",
            "Refusal Events dropped because the queue of Events to write was full",
            events_dropped.clone(),
        );
        build_info::register(&mut registry, "nmi", build_info::labels!());
        registry.register(
            "nmi_prefetch",
            "Tokens NMI fetched ahead of pods' first requests, by outcome: fetched (from IMDS or \
             Entra), cached (the cache had it), failed, backing_off (not tried: a failed fetch's back-off runs)",
            prefetches.clone(),
        );
        registry.register(
            "nmi_identity_ready_writes",
            "Writes of pods' aadpodidentity.k8s.io/IdentityReady condition, by the status written and \
             result: ok, error (after retries), gone (pod deleted or replaced), dropped (queue full)",
            identity_ready_writes.clone(),
        );
        registry.register(
            "nmi_operations_duration_seconds",
            "Time NMI took to answer a request, by route and status code",
            nmi_operations.clone(),
        );
        registry.register(
            "imds_operations_duration_seconds",
            "Time IMDS took to answer NMI's token requests, by status code",
            imds_operations.clone(),
        );
        registry.register(
            "nmi_tokens_issued",
            "Tokens handed to pods, by whether the token came from NMI's cache",
            tokens_issued.clone(),
        );
        registry.register(
            "nmi_refusals",
            "Token requests NMI refused, by reason",
            refusals.clone(),
        );
        registry.register(
            "nmi_token_cache_entries",
            "Entries in NMI's token cache",
            cache_entries.clone(),
        );
        registry.register(
            "nmi_state_stale",
            "1 while a watch of the cluster state has failed for longer than --max-state-staleness, \
             so NMI cannot prove authorizations and refuses token requests with 503",
            state_stale.clone(),
        );
        registry.register(
            "nmi_pod_connections",
            "Connections open on NMI's pod-facing port",
            pod_connections.clone(),
        );
        registry.register(
            "nmi_connections_dropped",
            "Pod connections NMI closed without serving them, by reason: per_pod_limit (over \
             --max-connections-per-pod), header_timeout (no whole request head within \
             --header-read-timeout), head_too_large (a request head over 16 KiB or 100 headers, answered 431)",
            connections_dropped.clone(),
        );
        let token_ok = nmi_operations
            .get_or_create(&OperationLabels {
                operation_type: "token".into(),
                status_code: "200".into(),
            })
            .clone();
        let issued = |hit: bool| {
            tokens_issued
                .get_or_create(&IssuedLabels {
                    cache_hit: hit.to_string(),
                })
                .clone()
        };
        let (issued_hit, issued_miss) = (issued(true), issued(false));
        Self {
            registry: Arc::new(registry),
            nmi_operations,
            imds_operations,
            tokens_issued,
            refusals,
            cache_entries,
            state_stale,
            pod_connections,
            connections_dropped,
            prefetches,
            identity_ready_writes,
            events_dropped,
            token_ok,
            issued_hit,
            issued_miss,
        }
    }

    pub fn operation(&self, operation: &str, status: u16, took: Duration) {
        if operation == "token" && status == 200 {
            self.token_ok.observe(took.as_secs_f64());
            return;
        }
        self.nmi_operations
            .get_or_create(&OperationLabels {
                operation_type: operation.to_owned(),
                status_code: status.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn imds_operation(&self, status: &str, took: Duration) {
        self.imds_operations
            .get_or_create(&StatusLabels {
                status_code: status.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn issued(&self, cache_hit: bool) {
        if cache_hit {
            self.issued_hit.inc();
        } else {
            self.issued_miss.inc();
        }
    }

    pub fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A pod connection closed without serving it: `per_pod_limit`, `header_timeout` or
    /// `head_too_large`.
    pub fn connection_dropped(&self, reason: &str) {
        self.connections_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// `n` prefetches ended with `outcome`: `fetched`, `cached`, `failed` or `backing_off`.
    pub fn prefetched(&self, outcome: &str, n: usize) {
        if n > 0 {
            self.prefetches
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_owned(),
                })
                .inc_by(n as u64);
        }
    }

    /// A write of a pod's IdentityReady condition (`status` True or False) ended with `result`.
    pub fn identity_ready_write(&self, status: &str, result: &str) {
        self.identity_ready_writes
            .get_or_create(&ReadyWriteLabels {
                status: status.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_is_one_series_of_this_build() {
        let line = format!(
            "aadpodidentity_nmi_build_info{{version=\"{}\",git_commit=\"{}\",rustc=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            env!("POD_IDENTITY_GIT_COMMIT"),
            env!("POD_IDENTITY_RUSTC"),
        );
        let text = Metrics::new().encode();
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
        assert!(
            text.contains("# TYPE aadpodidentity_nmi_build_info gauge\n"),
            "{text}"
        );
    }
}
