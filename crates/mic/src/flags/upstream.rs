//! MIC flags of upstream v1.8.17 (`cmd/mic/main.go`) that ours do not share by name: accepted in
//! upstream's syntax and noted at start-up with what does their job here (README "Upstream
//! flags" lists each).

use std::time::Duration;

use clap::Args;
use upstream_flags::{Note, go};

#[derive(Clone, Debug, Default, PartialEq, Args)]
#[command(next_help_heading = "Upstream's MIC flags (accepted; see README \"Upstream flags\")")]
pub struct Upstream {
    /// Upstream's periodic full resync. Noted: MIC is event-driven (see --failure-retry-interval).
    #[arg(long = "syncRetryDuration", alias = "sync-retry-duration", value_name = "DURATION", value_parser = go::parse_duration)]
    pub sync_retry_duration: Option<Duration>,
    /// pprof on localhost:6060. Noted when true: there is no profiler endpoint.
    #[arg(long = "enableProfile", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub enable_profile: Option<bool>,
    /// Deprecated no-op in upstream's MIC too: AzureAssignedIdentities always carry the nodename label.
    #[arg(long = "enableScaleFeatures", alias = "enable-scale-features", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub enable_scale_features: Option<bool>,
    /// Upstream's parallel Kubernetes writes per node or scale set. Noted: see README.
    #[arg(long = "createDeleteBatch", value_name = "N")]
    pub create_delete_batch: Option<i64>,
    /// Upstream's client-side rate limit of Kubernetes calls. Noted: none here.
    #[arg(long = "clientQps", alias = "client-qps", value_name = "QPS")]
    pub client_qps: Option<f64>,
    /// ConfigMap of upstream's one-time v1.6 type upgrade. Noted: no upgrade is needed.
    #[arg(long = "config-map-name", value_name = "NAME")]
    pub config_map_name: Option<String>,
    /// Key in that ConfigMap. Noted: no upgrade is needed.
    #[arg(long = "type-upgrade-status-key", value_name = "KEY")]
    pub type_upgrade_status_key: Option<String>,
    /// Upstream's v1.6 type upgrade. Noted when true: no upgrade is needed.
    #[arg(long = "enable-type-upgrade", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub enable_type_upgrade: Option<bool>,
    /// Retries of a PATCH with the identities ARM refused removed. Noted: always so here.
    #[arg(long = "update-user-msi-max-retry", value_name = "N")]
    pub update_user_msi_max_retry: Option<i64>,
    /// Wait before such a retry. Noted: see README.
    #[arg(long = "update-user-msi-retry-interval", value_name = "DURATION", value_parser = go::parse_duration)]
    pub update_user_msi_retry_interval: Option<Duration>,
}

const NO_TYPE_UPGRADE: &str = "ignored: no type upgrade is needed: the CRDs accept upstream's pre-v1.6 spellings \
                               (ClientID, ResourceID, Selector, ...) as written, so MIC rewrites no objects and \
                               writes no ConfigMap";

const ARM_RETRIES: &str = "replaced: when ARM names identities it cannot assign (LinkedAuthorizationFailed), MIC \
                           drops just those from the batch and retries the rest at once; other failures back off \
                           exponentially, then the VM or scale set is retried after --failure-retry-interval";

impl Upstream {
    /// A note for each given flag that is not honoured as upstream did; `failure_retry` and
    /// `drift`: our --failure-retry-interval and --identity-assignment-reconcile-interval.
    pub fn notes(&self, failure_retry: Duration, drift: Duration) -> Vec<Note> {
        let mut notes = Vec::new();
        if self.sync_retry_duration.is_some() {
            notes.push(Note::new(
                "--syncRetryDuration",
                format!(
                    "replaced: MIC acts on every watch event, retries a failed VM or scale set after \
                     --failure-retry-interval ({}s) and reads each back every \
                     --identity-assignment-reconcile-interval ({}s); there is no periodic full resync",
                    failure_retry.as_secs(),
                    drift.as_secs()
                ),
            ));
        }
        if self.enable_profile == Some(true) {
            notes.push(Note::new(
                "--enableProfile",
                "ignored: MIC has no pprof endpoint; its metrics are on --prometheus-port",
            ));
        }
        if self.create_delete_batch.is_some() {
            notes.push(Note::new(
                "--createDeleteBatch",
                "replaced: MIC keeps up to 64 Kubernetes writes in flight across all VMs and scale sets \
                 (upstream: this many per node or scale set)",
            ));
        }
        if self.client_qps.is_some() {
            notes.push(Note::new(
                "--clientQps",
                "ignored: MIC does not rate-limit its Kubernetes API calls on the client side; it keeps at most \
                 64 writes in flight and the apiserver's priority and fairness applies",
            ));
        }
        if self.config_map_name.is_some() {
            notes.push(Note::new("--config-map-name", NO_TYPE_UPGRADE));
        }
        if self.type_upgrade_status_key.is_some() {
            notes.push(Note::new("--type-upgrade-status-key", NO_TYPE_UPGRADE));
        }
        if self.enable_type_upgrade == Some(true) {
            notes.push(Note::new("--enable-type-upgrade", NO_TYPE_UPGRADE));
        }
        if self.update_user_msi_max_retry.is_some() {
            notes.push(Note::new("--update-user-msi-max-retry", ARM_RETRIES));
        }
        if self.update_user_msi_retry_interval.is_some() {
            notes.push(Note::new("--update-user-msi-retry-interval", ARM_RETRIES));
        }
        notes
    }
}
