//! MIC's Prometheus metrics. Upstream's names (prefix `aadpodidentity_`) are kept where a
//! metric means the same; ours are prefixed `aadpodidentity_mic_`.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: String,
    pub result: String,
}

/// Every metric MIC exports.
pub struct Metrics {
    pub registry: Registry,
    assignment_latency: Histogram,
    additions: Counter,
    deletions: Counter,
    arm_duration: Family<OperationLabels, Histogram>,
    arm_calls: Family<CallLabels, Counter>,
    arm_errors: Family<OperationLabels, Counter>,
    arm_throttled: Counter,
    arm_retries: Family<OperationLabels, Counter>,
    queue_depth: Gauge,
    leader_elections: Counter,
    events_dropped: Counter,
    webhook_requests: Family<OutcomeLabels, Counter>,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("aadpodidentity");
        let m = Self {
            assignment_latency: latency_buckets(),
            additions: Counter::default(),
            deletions: Counter::default(),
            arm_duration: Family::new_with_constructor(latency_buckets),
            arm_calls: Family::default(),
            arm_errors: Family::default(),
            arm_throttled: Counter::default(),
            arm_retries: Family::default(),
            queue_depth: Gauge::default(),
            leader_elections: Counter::default(),
            events_dropped: Counter::default(),
            webhook_requests: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "mic_assignment_latency_seconds",
            "Time from MIC first seeing a pod that needs an identity to its AzureAssignedIdentity being Assigned",
            m.assignment_latency.clone(),
        );
        registry.register(
            "assigned_identity_addition",
            "AzureAssignedIdentity objects that reached Assigned",
            m.additions.clone(),
        );
        registry.register(
            "assigned_identity_deletion",
            "AzureAssignedIdentity objects deleted",
            m.deletions.clone(),
        );
        registry.register(
            "cloud_provider_operations_duration_seconds",
            "Duration of ARM requests by operation (vmss_get, vmss_update, vm_get, vm_update, operation_get)",
            m.arm_duration.clone(),
        );
        registry.register(
            "mic_arm_calls",
            "ARM requests by operation and result (ok, throttled, server_error, client_error, transport_error, unauthorized)",
            m.arm_calls.clone(),
        );
        registry.register(
            "cloud_provider_operations_errors",
            "ARM requests that failed, by operation",
            m.arm_errors.clone(),
        );
        registry.register(
            "mic_arm_throttled",
            "ARM answers of 429 Too Many Requests",
            m.arm_throttled.clone(),
        );
        registry.register(
            "mic_arm_retries",
            "ARM requests retried, by operation",
            m.arm_retries.clone(),
        );
        registry.register(
            "mic_queue_depth",
            "VMs and scale sets with identity changes waiting or in flight",
            m.queue_depth.clone(),
        );
        registry.register(
            "mic_new_leader_election",
            "Times this MIC became the leader",
            m.leader_elections.clone(),
        );
        registry.register(
            "mic_events_dropped",
            "Kubernetes Events not published because the event queue was full",
            m.events_dropped.clone(),
        );
        registry.register(
            "mic_webhook_requests",
            "Admission reviews answered by the readiness-gate webhook, by outcome (gate_added, skipped, error)",
            m.webhook_requests.clone(),
        );
        build_info::register(&mut registry, "mic", build_info::labels!());
        Self { registry, ..m }
    }
}

impl Metrics {
    pub fn assigned(&self, latency: Option<Duration>) {
        self.additions.inc();
        if let Some(l) = latency {
            self.assignment_latency.observe(l.as_secs_f64());
        }
    }

    pub fn deleted(&self) {
        self.deletions.inc();
    }

    pub fn arm_duration(&self, operation: &str, d: Duration) {
        self.arm_duration
            .get_or_create(&OperationLabels {
                operation_type: operation.into(),
            })
            .observe(d.as_secs_f64());
    }

    pub fn arm_call(&self, operation: &str, result: &str) {
        self.arm_calls
            .get_or_create(&CallLabels {
                operation: operation.into(),
                result: result.into(),
            })
            .inc();
        if result != "ok" {
            self.arm_errors
                .get_or_create(&OperationLabels {
                    operation_type: operation.into(),
                })
                .inc();
        }
        if result == "throttled" {
            self.arm_throttled.inc();
        }
    }

    pub fn arm_retry(&self, operation: &str) {
        self.arm_retries
            .get_or_create(&OperationLabels {
                operation_type: operation.into(),
            })
            .inc();
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as i64);
    }

    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// One admission review answered (or refused as malformed): `gate_added`, `skipped` or `error`.
    pub fn webhook_request(&self, outcome: &str) {
        self.webhook_requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn became_leader(&self) {
        self.leader_elections.inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// MIC's ARM client reports each request here (`cloud_provider_operations_*`, `mic_arm_*`).
impl arm::CallObserver for Metrics {
    fn duration(&self, operation: &'static str, elapsed: Duration) {
        self.arm_duration(operation, elapsed);
    }

    fn result(&self, operation: &'static str, result: arm::CallResult) {
        self.arm_call(operation, result.as_str());
    }

    fn retry(&self, operation: &'static str) {
        self.arm_retry(operation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_is_one_series_of_this_build() {
        let line = format!(
            "aadpodidentity_mic_build_info{{version=\"{}\",git_commit=\"{}\",rustc=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            env!("POD_IDENTITY_GIT_COMMIT"),
            env!("POD_IDENTITY_RUSTC"),
        );
        let text = Metrics::default().encode();
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
        assert!(
            text.contains("# TYPE aadpodidentity_mic_build_info gauge\n"),
            "{text}"
        );
    }
}
