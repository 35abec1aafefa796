//! Command-line flags. Upstream's names are kept wherever they still mean something, and upstream
//! v1.8.17's whole command line is accepted in its Go syntax ([`upstream_flags::ParseGo`]); flags
//! whose job is done differently here are noted at start-up ([`Flags::notes`], README "Upstream
//! flags").

mod gate;
mod upstream;

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use upstream_flags::{Common, Environment, Note, UpstreamNamespacing, go};

pub use gate::{CniGate, DEFAULT_PLUGIN_BINARY};
pub use upstream::{DEFAULT_KUBELET_CONFIG, KubenetCheck, KubenetVerdict, Upstream, kubenet_verdict};

use crate::{Error, state::Mode};

/// How long a request is held for MIC when neither --identity-wait nor upstream's retry flags say.
pub const DEFAULT_IDENTITY_WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// NMI, the node agent of pod identity: answers pods' IMDS token requests with the identity bound to them.
#[derive(Clone, Debug, Parser)]
#[command(name = "nmi", version, args_override_self = true)]
pub struct Flags {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Name of this node; only its pods (and, in standard mode, its AzureAssignedIdentities) are watched.
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node: String,

    /// Address NMI listens on for pods' requests; also the iptables DNAT target (0.0.0.0 means 127.0.0.1 there).
    #[arg(long = "nmi-listen-address", default_value = "127.0.0.1")]
    pub listen_address: IpAddr,

    /// Port NMI listens on for pods' requests.
    #[arg(long = "nmi-port", default_value_t = 2579)]
    pub port: u16,

    /// IP of the node's Instance Metadata Service.
    #[arg(long = "metadata-ip", default_value = "169.254.169.254")]
    pub metadata_ip: IpAddr,

    /// Port of the node's Instance Metadata Service.
    #[arg(long = "metadata-port", default_value_t = 80)]
    pub metadata_port: u16,

    /// Port serving /healthz (liveness) and /readyz (rules in place and caches synced).
    #[arg(long = "http-probe-port", default_value_t = 8085)]
    pub probe_port: u16,

    /// A Unix socket, in this pod's own directory, answering whether this NMI is ready: the chart's
    /// readiness probe (`nmi probe`) asks it. The probe port is shared with the NMI an update
    /// replaces, so a probe there can reach the other process (server::ready_socket).
    #[arg(long = "ready-socket")]
    pub ready_socket: Option<PathBuf>,

    /// Address of the probe and metrics listeners (kubelet and Prometheus reach them on the node's IP).
    #[arg(long = "ops-listen-address", default_value = "0.0.0.0")]
    pub ops_listen_address: IpAddr,

    /// Port serving Prometheus metrics at /metrics.
    #[arg(long = "prometheus-port", default_value_t = 9090)]
    pub prometheus_port: u16,

    /// standard: MIC assigns identities and NMI waits for its AzureAssignedIdentity; managed: identities are pre-assigned to the VMs.
    #[arg(
        long = "operation-mode",
        value_enum,
        ignore_case = true,
        default_value = "standard"
    )]
    pub mode: Mode,

    /// Upstream's (with env FORCENAMESPACED): NMI is namespaced by default, so true changes nothing; false is noted (see --allow-cross-namespace).
    #[arg(long = "forceNamespaced", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub force_namespaced: Option<bool>,

    /// Let a pod match bindings and identities of other namespaces (upstream's default; a risk).
    #[arg(long = "allow-cross-namespace", default_value_t = false)]
    pub allow_cross_namespace: bool,

    /// Honour AzurePodIdentityExceptions only in these namespaces (comma-separated); default: every namespace.
    #[arg(long = "exception-namespaces", value_delimiter = ',')]
    pub exception_namespaces: Option<Vec<String>>,

    /// Answer /metadata/instance* with 403 instead of passing it to IMDS.
    #[arg(long = "block-instance-metadata", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go::parse_bool)]
    pub block_instance_metadata: bool,

    /// Require the `Metadata: true` header, as IMDS does.
    #[arg(long = "metadata-header-required", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = go::parse_bool)]
    pub metadata_header_required: bool,

    /// Publish each refusal of a known pod as a Warning Event on the pod (events.k8s.io/v1, in
    /// series: one Event per pod and reason, its count updated at most every 30 s).
    #[arg(long = "refusal-events", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = go::parse_bool)]
    pub refusal_events: bool,

    /// While waiting for MIC times out, answer 503 with `Retry-After` instead of 404.
    #[arg(long = "set-retry-after-header", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go::parse_bool)]
    pub set_retry_after_header: bool,

    /// Longest a request is held while MIC assigns its identity (woken by the AzureAssignedIdentity watch) [default: 20, or what upstream's retry flags add up to].
    #[arg(long = "identity-wait", value_parser = parse_secs)]
    pub identity_wait: Option<Duration>,

    /// Longest a request from an unknown IP is held while the pod watch catches up.
    #[arg(long = "pod-wait", value_parser = parse_secs, default_value = "2")]
    pub pod_wait: Duration,

    /// Timeout of each call to IMDS or Entra, and of pass-through requests.
    #[arg(long = "upstream-timeout", value_parser = parse_secs, default_value = "10")]
    pub upstream_timeout: Duration,

    /// Requests per second each source pod (IP) may make; over it NMI answers 429 with Retry-After. 0: no limit.
    #[arg(long = "pod-rate-limit", default_value_t = 50.0)]
    pub pod_rate_limit: f64,

    /// Requests a source pod may make at once before --pod-rate-limit applies.
    #[arg(long = "pod-rate-burst", default_value_t = 100)]
    pub pod_rate_burst: u32,

    /// Longest a pod may take to send a request head (also how long an idle keep-alive connection stays open); slower connections are closed. 0: no limit.
    #[arg(long = "header-read-timeout", value_parser = parse_secs, default_value = "10")]
    pub header_read_timeout: Duration,

    /// Most connections one source pod (IP) may have open at once; more are closed at once (best effort: after a 429). 0: no limit.
    #[arg(long = "max-connections-per-pod", default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS_PER_POD)]
    pub max_connections_per_pod: usize,

    /// Longest NMI keeps authorizing with the state of a failing watch (apiserver unreachable) before refusing with 503. 0: forever.
    #[arg(long = "max-state-staleness", value_parser = parse_secs, default_value = "30")]
    pub max_state_staleness: Duration,

    /// Most (identity, resource) tokens cached.
    #[arg(long = "token-cache-size", default_value_t = 4096)]
    pub token_cache_size: usize,

    /// Entra ID authority host for service principals without an adEndpoint.
    #[arg(long = "entra-endpoint", default_value = "https://login.microsoftonline.com/")]
    pub entra_endpoint: String,

    /// An Entra ID authority (https) an AzureIdentity's adEndpoint may name besides --entra-endpoint and Azure's clouds' (login.microsoftonline.com, .us, login.chinacloudapi.cn), e.g. Azure Stack's ADFS; repeatable.
    #[arg(long = "allowed-ad-endpoint")]
    pub allowed_ad_endpoints: Vec<String>,

    /// Extra PEM CA certificates trusted for Entra ID (e.g. a test emulator's).
    #[arg(long = "entra-ca-file")]
    pub entra_ca_file: Option<PathBuf>,

    /// Enables federated mode (pods labelled azure.workload.identity/use=true whose service
    /// account is annotated azure.workload.identity/client-id): the tenant of identities whose
    /// service account has no azure.workload.identity/tenant-id. Unset: federated mode is off.
    #[arg(long = "federated-tenant-id", env = "FEDERATED_TENANT_ID")]
    pub federated_tenant_id: Option<String>,

    /// Keep the aadpodidentity.k8s.io/IdentityReady condition on this node's pods that use an identity, fetching each identity's token ahead of the pod's first request (needs pods/status patch). false: no writes, no prefetch.
    #[arg(long = "identity-ready-condition", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = go::parse_bool)]
    pub identity_ready_condition: bool,

    /// Install and repair the iptables interception rules.
    #[arg(long = "manage-iptables", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub manage_iptables: bool,

    /// Seconds between checks (and repairs) of the iptables rules.
    #[arg(long = "ipt-update-interval-sec", default_value_t = 60)]
    pub ipt_update_interval_sec: u64,

    /// Log format.
    #[arg(long = "log-format", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Kubeconfig to use instead of the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    pub cni: CniGate,

    #[command(flatten)]
    pub upstream: Upstream,

    #[command(flatten)]
    pub common: Common,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Remove the iptables interception rules (uninstall only: without them pods reach IMDS directly).
    Cleanup,
    /// Ask the IMDS token endpoint as a pod does and say whether NMI answered as it should, on one line; exit 0 or 1 (the chart's `helm test`).
    TestTokenPath(crate::token_path_check::TokenPathCheck),
    /// Ask this pod's NMI, on its --ready-socket, whether it is ready, on one line; exit 0 or 1 (the chart's readiness probe).
    Probe(ProbeArgs),
}

/// The flags of `nmi probe`.
#[derive(Clone, Debug, clap::Args)]
pub struct ProbeArgs {
    /// The socket the NMI of this pod was started with (its --ready-socket).
    #[arg(long = "ready-socket")]
    pub socket: PathBuf,

    /// Longest wait for the answer, in seconds.
    #[arg(long, value_parser = parse_secs, default_value = "2")]
    pub timeout: Duration,
}

/// A number of seconds, `2`, `2.5` or `2.5s`. (clap takes any error type from a value parser,
/// and shows its text after the flag's name.)
pub(crate) fn parse_secs(s: &str) -> Result<Duration, Error> {
    s.trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| Error::Flags(format!("`{s}` is not a number of seconds")))
}

impl Flags {
    /// How long a request is held for MIC: --identity-wait, else upstream's retry flags, else 20 s.
    pub fn identity_wait(&self) -> Duration {
        self.identity_wait
            .or_else(|| self.upstream.identity_wait())
            .unwrap_or(DEFAULT_IDENTITY_WAIT)
    }

    /// Upstream flags given and not honoured as upstream did, each with what replaced it; logged
    /// once at start-up.
    pub fn notes(&self, env: &Environment) -> Vec<Note> {
        let mut notes: Vec<Note> = UpstreamNamespacing::from_upstream(self.force_namespaced, env)
            .note(self.allow_cross_namespace, "NMI")
            .into_iter()
            .collect();
        notes.extend(self.upstream.notes(self.identity_wait.is_some()));
        notes.extend(self.common.notes(env));
        if self.common.custom_user_agent.is_some() {
            notes.push(Note::new(
                "--custom-user-agent",
                "appended to the User-Agent of NMI's Kubernetes API requests only; its IMDS and Entra requests \
                 say pod-identity/NMI/<version>",
            ));
        }
        notes
    }

    /// What one pod's connections may take of NMI (`--header-read-timeout`, `--max-connections-per-pod`).
    pub fn connection_limits(&self) -> crate::server::ConnectionLimits {
        crate::server::ConnectionLimits {
            header_read_timeout: Some(self.header_read_timeout).filter(|t| !t.is_zero()),
            per_pod: self.max_connections_per_pod,
        }
    }

    pub fn policy(&self) -> matching::Policy {
        matching::Policy {
            namespaced: !self.allow_cross_namespace,
            exception_namespaces: self.exception_namespaces.as_ref().map(|v| {
                v.iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<BTreeSet<_>>()
            }),
        }
    }

    /// Settings that cannot work together.
    pub fn check(&self, env: &Environment) -> Result<(), Error> {
        if self.command.is_none() && self.node.is_empty() {
            return Err(Error::Flags("--node (or NODE_NAME) is required".into()));
        }
        if self.mode == Mode::Managed && self.allow_cross_namespace {
            return Err(Error::Flags(
                "managed mode is namespaced: --allow-cross-namespace cannot be used with it".into(),
            ));
        }
        // `upstream_flags` (shared with MIC) says why; NMI's error carries its words as they are.
        UpstreamNamespacing::from_upstream(self.force_namespaced, env)
            .reconcile(self.allow_cross_namespace, "NMI")
            .map(|_| ())
            .map_err(|e| Error::Flags(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
