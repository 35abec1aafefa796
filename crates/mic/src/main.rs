//! The `mic` command: flags, logging, leader election, probes and metrics around the controller.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, http::StatusCode, routing::get};
use clap::Parser;
use mic::{
    arm::{ArmClient, RetryPolicy},
    cloud::CloudConfig,
    controller::{self, Settings},
    leader::Elector,
    metrics::Metrics,
};
use tokio::sync::watch;

/// MIC, the Managed Identity Controller of pod-identity: puts the identities pods are
/// bound to on their nodes' VMs and scale sets, and records each as an AzureAssignedIdentity.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Flags {
    /// Path of a kubeconfig; default: in-cluster config, or $KUBECONFIG.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Path of the cloud config (AKS: /etc/kubernetes/azure.json). Without it, upstream's
    /// environment variables are read (TENANT_ID, CLIENT_ID, CLIENT_SECRET, USE_MSI, …).
    #[arg(long)]
    cloudconfig: Option<PathBuf>,
    /// Upstream's flag; namespaced matching is already the default here. Accepted for compatibility.
    #[arg(long = "forceNamespaced", env = "FORCENAMESPACED", default_value_t = false)]
    force_namespaced: bool,
    /// Let pods match bindings and identities in other namespaces (upstream's default, a risk on shared clusters).
    #[arg(long, default_value_t = false)]
    allow_cross_namespace: bool,
    /// Comma-separated client ids of identities never removed from a VM or scale set.
    #[arg(long = "immutable-user-msis", value_delimiter = ',', default_value = "")]
    immutable_user_msis: Vec<String>,
    /// How often each VM or scale set is read back from Azure to re-add identities that vanished.
    #[arg(long = "identity-assignment-reconcile-interval", default_value = "60s", value_parser = parse_duration)]
    reconcile_interval: Duration,
    /// Name of this replica in the leader election; default: the host name.
    #[arg(long = "leader-election-instance", env = "HOSTNAME", default_value = "mic")]
    leader_instance: String,
    /// Namespace of the Lease; default: $MIC_POD_NAMESPACE, else `default`.
    #[arg(
        long = "leader-election-namespace",
        env = "MIC_POD_NAMESPACE",
        default_value = "default"
    )]
    leader_namespace: String,
    /// Name of the Lease.
    #[arg(long = "leader-election-name", default_value = "aad-pod-identity-mic")]
    leader_name: String,
    /// How long a lease lasts without renewal.
    #[arg(long = "leader-election-duration", default_value = "15s", value_parser = parse_duration)]
    leader_duration: Duration,
    /// Port of /healthz and /readyz.
    #[arg(long = "http-probe-port", default_value_t = 8080)]
    http_probe_port: u16,
    /// Port of /metrics.
    #[arg(long = "prometheus-port", default_value_t = 8888)]
    prometheus_port: u16,
    /// ARM endpoint (the Azure emulator's in tests).
    #[arg(long, default_value = "https://management.azure.com")]
    arm_endpoint: String,
    /// Entra authority for a service principal.
    #[arg(long, default_value = "https://login.microsoftonline.com")]
    aad_endpoint: String,
    /// IMDS endpoint, when MIC authenticates with a managed identity.
    #[arg(long, default_value = "http://169.254.169.254")]
    imds_endpoint: String,
    /// Extra CA certificate (PEM) to trust for ARM and Entra (the emulator's).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Longest wait between polls of an ARM long-running operation.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    arm_poll_interval: Duration,
    /// Wait before retrying a VM or scale set whose ARM call failed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    failure_retry_interval: Duration,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// Parses `500ms`, `15s`, `3m`, `1h` (and a bare number of seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 15s, 3m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init()
    } else {
        builder.init()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    init_logging(&flags.log_format);
    let cloud = match &flags.cloudconfig {
        Some(path) => CloudConfig::from_file(path)?,
        None => CloudConfig::from_env(|k| std::env::var(k).ok()),
    };
    let credential = cloud.credential(&flags.aad_endpoint, &flags.imds_endpoint)?;
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(ca) = &flags.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading --ca-file {}", ca.display()))?;
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).context("parsing --ca-file")?);
    }
    let metrics = Arc::new(Metrics::default());
    let retry = RetryPolicy {
        poll_interval: flags.arm_poll_interval,
        ..RetryPolicy::default()
    };
    let arm = ArmClient::new(
        http.build()?,
        &flags.arm_endpoint,
        credential,
        retry,
        metrics.clone(),
    );
    let client = match &flags.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            let config =
                kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
            kube::Client::try_from(config)?
        }
        None => kube::Client::try_default().await?,
    };
    let settings = Settings {
        policy: matching::Policy {
            namespaced: !flags.allow_cross_namespace,
            exception_namespaces: None,
        },
        protected_client_ids: cloud.protected_client_ids(&flags.immutable_user_msis),
        drift_interval: flags.reconcile_interval,
        failure_retry: flags.failure_retry_interval,
        ..Settings::default()
    };
    if flags.force_namespaced && flags.allow_cross_namespace {
        anyhow::bail!("--forceNamespaced and --allow-cross-namespace contradict each other");
    }

    // Readiness: a standby is ready (it can take over); a leader once its caches are synced.
    let (ready_tx, ready_rx) = watch::channel(false);
    let (leading_tx, leading_rx) = watch::channel(false);
    let probes = Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let (ready, leading) = (*ready_rx.borrow(), *leading_rx.borrow());
            async move {
                match (leading, ready) {
                    (false, _) => (StatusCode::OK, "standby"),
                    (true, true) => (StatusCode::OK, "leader"),
                    (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "leader, caches syncing"),
                }
            }
        }),
    );
    let m = metrics.clone();
    let metrics_app = Router::new().route(
        "/metrics",
        get(move || {
            let body = m.encode();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    serve(flags.http_probe_port, probes).await?;
    serve(flags.prometheus_port, metrics_app).await?;

    let elector = Elector::new(
        client.clone(),
        &flags.leader_namespace,
        &flags.leader_name,
        &flags.leader_instance,
        flags.leader_duration,
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
    };
    tokio::pin!(shutdown);
    tokio::select! {
        () = elector.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!(instance = %flags.leader_instance, "became the leader");
    metrics.became_leader();
    let _ = leading_tx.send(true);
    let outcome = tokio::select! {
        r = controller::run(client, arm, settings, metrics, ready_tx, std::future::pending()) => r.map_err(anyhow::Error::from),
        () = elector.hold() => Err(anyhow::anyhow!("lost the leader lease; exiting so that a restart rejoins as standby")),
        () = &mut shutdown => Ok(()),
    };
    elector.release().await;
    outcome
}

async fn serve(port: u16, app: Router) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "probe or metrics server stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_upstream_flags() {
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn flags_parse_with_upstream_names() {
        let f = Flags::try_parse_from([
            "mic",
            "--cloudconfig=/etc/kubernetes/azure.json",
            "--forceNamespaced",
            "--immutable-user-msis=a,b",
        ])
        .unwrap();
        assert!(f.force_namespaced);
        assert_eq!(f.immutable_user_msis, ["a", "b"]);
    }
}
