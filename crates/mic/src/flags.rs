//! MIC's command-line flags. Upstream's names are kept wherever they still mean something, and
//! upstream v1.8.17's whole command line is accepted in its Go syntax ([`upstream_flags::ParseGo`]);
//! flags whose job is done differently here are noted at start-up ([`Flags::notes`], README
//! "Upstream flags").

mod upstream;

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use upstream_flags::{Common, Environment, Note, UpstreamNamespacing, go};

pub use upstream::Upstream;

use arm::cloud::CloudConfig;

use crate::{Error, controller::Settings};

/// MIC, the Managed Identity Controller of pod-identity: puts the identities pods are
/// bound to on their nodes' VMs and scale sets, and records each as an AzureAssignedIdentity.
#[derive(Parser, Debug, Clone)]
#[command(name = "mic", version, about, args_override_self = true)]
pub struct Flags {
    /// Path of a kubeconfig; default: in-cluster config, or $KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Path of the cloud config (AKS: /etc/kubernetes/azure.json). Without it, upstream's
    /// environment variables are read (TENANT_ID, CLIENT_ID, CLIENT_SECRET, USE_MSI, …).
    #[arg(long)]
    pub cloudconfig: Option<PathBuf>,
    /// Upstream's (with env FORCENAMESPACED): MIC is namespaced by default, so true changes nothing; false is noted (see --allow-cross-namespace).
    #[arg(long = "forceNamespaced", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub force_namespaced: Option<bool>,
    /// Let pods match bindings and identities in other namespaces (upstream's default, a risk on shared clusters).
    #[arg(long, default_value_t = false)]
    pub allow_cross_namespace: bool,
    /// Comma-separated client ids of identities never removed from a VM or scale set.
    #[arg(long = "immutable-user-msis", value_delimiter = ',', default_value = "")]
    pub immutable_user_msis: Vec<String>,
    /// How often each VM or scale set is read back from Azure to re-add identities that vanished.
    #[arg(long = "identity-assignment-reconcile-interval", default_value = "60s", value_parser = go::parse_duration)]
    pub reconcile_interval: Duration,
    /// Name of this replica in the leader election; default: the host name.
    #[arg(long = "leader-election-instance", env = "HOSTNAME", default_value = "mic")]
    pub leader_instance: String,
    /// Namespace of the Lease; default: $MIC_POD_NAMESPACE, else `default`.
    #[arg(
        long = "leader-election-namespace",
        env = "MIC_POD_NAMESPACE",
        default_value = "default"
    )]
    pub leader_namespace: String,
    /// Name of the Lease.
    #[arg(long = "leader-election-name", default_value = "aad-pod-identity-mic")]
    pub leader_name: String,
    /// How long a lease lasts without renewal.
    #[arg(long = "leader-election-duration", default_value = "15s", value_parser = go::parse_duration)]
    pub leader_duration: Duration,
    /// Port of /healthz and /readyz.
    #[arg(long = "http-probe-port", default_value_t = 8080)]
    pub http_probe_port: u16,
    /// Port of /metrics.
    #[arg(long = "prometheus-port", default_value_t = 8888)]
    pub prometheus_port: u16,
    /// ARM endpoint (the Azure emulator's in tests); default: the cloud's (azure.json `cloud`).
    /// The token audience stays the cloud's.
    #[arg(long)]
    pub arm_endpoint: Option<String>,
    /// Entra authority for a service principal; default: the cloud's.
    #[arg(long)]
    pub aad_endpoint: Option<String>,
    /// IMDS endpoint, when MIC authenticates with a managed identity.
    #[arg(long, default_value = "http://169.254.169.254")]
    pub imds_endpoint: String,
    /// Extra CA certificate (PEM) to trust for ARM and Entra (the emulator's).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Longest wait between polls of an ARM long-running operation.
    #[arg(long, default_value = "5s", value_parser = go::parse_duration)]
    pub arm_poll_interval: Duration,
    /// Wait before retrying a VM or scale set whose ARM call failed.
    #[arg(long, default_value = "30s", value_parser = go::parse_duration)]
    pub failure_retry_interval: Duration,
    /// How long an identity no pod on a VM or scale set needs any more stays there before MIC
    /// removes it, in case a pod needs it again: the pods of a Job, a CronJob or a `Recreate`
    /// rollout follow one another, and removing the identity between two of them makes the next
    /// one wait for two ARM operations. 0s removes at once, as upstream did.
    #[arg(long = "identity-removal-grace", default_value = "30s", value_parser = go::parse_duration)]
    pub removal_grace: Duration,
    /// Assign an identity only where its owner allowed it in Azure: its `clientId` must be the
    /// AzureIdentity's clientID and its tag `pod-identity-namespaces` must list the namespace
    /// (or be `*`). false assigns every identity a namespace names, as upstream did: only for
    /// clusters that trust everyone who may write an AzureIdentity.
    #[arg(long = "identity-consent", num_args = 0..=1, require_equals = true, default_value = "true", default_missing_value = "true", value_parser = go::parse_bool)]
    pub identity_consent: bool,
    /// How often an identity's consent is read again from ARM (a revoked grant takes effect then).
    #[arg(long = "identity-consent-refresh", default_value = "5m", value_parser = go::parse_duration)]
    pub consent_refresh: Duration,
    /// How often an identity is read again while an assignment is refused for it, or its read
    /// failed (a grant just given is seen then).
    #[arg(long = "identity-consent-recheck", default_value = "15s", value_parser = go::parse_duration)]
    pub consent_recheck: Duration,
    /// Port of the HTTPS admission webhook that adds the identity readiness gate to pods
    /// (served by every replica, leader or not); 0 serves none. The chart sets it.
    #[arg(long = "webhook-port", default_value_t = 0)]
    pub webhook_port: u16,
    /// Directory of the webhook's serving certificate, `tls.crt` and `tls.key` (a mounted
    /// `kubernetes.io/tls` Secret); read again every 30s, so a rotated Secret needs no restart.
    #[arg(long = "webhook-cert-dir", default_value = "/etc/pod-identity/webhook")]
    pub webhook_cert_dir: PathBuf,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    #[command(flatten)]
    pub upstream: Upstream,

    #[command(flatten)]
    pub common: Common,
}

impl Flags {
    /// Settings that cannot work together.
    pub fn check(&self, env: &Environment) -> Result<(), Error> {
        UpstreamNamespacing::from_upstream(self.force_namespaced, env)
            .reconcile(self.allow_cross_namespace, "MIC")
            .map(|_| ())
            .map_err(|e| Error::Flags(e.to_string()))
    }

    /// Upstream flags given and not honoured as upstream did, each with what replaced it; logged
    /// once at start-up.
    pub fn notes(&self, env: &Environment) -> Vec<Note> {
        let mut notes: Vec<Note> = UpstreamNamespacing::from_upstream(self.force_namespaced, env)
            .note(self.allow_cross_namespace, "MIC")
            .into_iter()
            .collect();
        notes.extend(
            self.upstream
                .notes(self.failure_retry_interval, self.reconcile_interval),
        );
        notes.extend(self.common.notes(env));
        notes
    }

    /// The webhook's configuration, when `--webhook-port` is not 0.
    pub fn webhook(&self) -> Option<crate::webhook::WebhookConfig> {
        (self.webhook_port != 0).then(|| crate::webhook::WebhookConfig {
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], self.webhook_port)),
            cert_dir: self.webhook_cert_dir.clone(),
            reload_interval: crate::webhook::CERT_RELOAD_INTERVAL,
        })
    }

    /// The controller's settings.
    pub fn settings(&self, cloud: &CloudConfig) -> Settings {
        Settings {
            policy: matching::Policy {
                namespaced: !self.allow_cross_namespace,
                exception_namespaces: None,
            },
            protected_client_ids: cloud.protected_client_ids(&self.immutable_user_msis),
            drift_interval: self.reconcile_interval,
            failure_retry: self.failure_retry_interval,
            removal_grace: self.removal_grace,
            consent: self
                .identity_consent
                .then_some(crate::controller::ConsentSchedule {
                    refresh: self.consent_refresh,
                    recheck: self.consent_recheck,
                }),
            ..Settings::default()
        }
    }
}

#[cfg(test)]
mod tests;
