//! The `mic` command: flags, logging, leader election, probes and metrics around the controller.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use arm::{
    ArmClient, RetryPolicy,
    cloud::{CloudConfig, EndpointOverrides},
};
use axum::{Router, http::StatusCode, routing::get};
use mic::{controller, flags::Flags, leader::Elector, metrics::Metrics};
use tokio::sync::watch;
use upstream_flags::{Environment, ParseGo};

async fn kube_client(flags: &Flags, user_agent: &str) -> anyhow::Result<kube::Client> {
    let mut config = match &flags.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_str(user_agent)
            .context("--custom-user-agent is not a valid header value")?,
    ));
    Ok(kube::Client::try_from(config)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse_go();
    let env = Environment::from_process();
    upstream_flags::init_logging(flags.log_format == "json", &env, &flags.common.log_filter("mic"));
    flags.check(&env)?;
    upstream_flags::warn(&flags.notes(&env));
    let user_agent = flags.common.user_agent("MIC", env!("CARGO_PKG_VERSION"));
    let cloud = match &flags.cloudconfig {
        Some(path) => CloudConfig::from_file(path).map_err(mic::Error::Cloud)?,
        None => CloudConfig::from_env(|k| std::env::var(k).ok()),
    };
    // The cloud name picks ARM, Entra and the token audience; our endpoint flags override them.
    let connection = cloud
        .connection(
            &EndpointOverrides {
                arm: flags.arm_endpoint.clone(),
                aad: flags.aad_endpoint.clone(),
            },
            &flags.imds_endpoint,
            |k| std::env::var(k).ok(),
        )
        .map_err(mic::Error::Cloud)?;
    let mut http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .user_agent(&user_agent);
    if let Some(ca) = &flags.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading --ca-file {}", ca.display()))?;
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).context("parsing --ca-file")?);
    }
    let metrics = Arc::new(Metrics::default());
    let retry = RetryPolicy {
        poll_interval: flags.arm_poll_interval,
        ..RetryPolicy::default()
    };
    let arm = ArmClient::connect(http.build()?, connection, retry, metrics.clone());
    let client = kube_client(&flags, &user_agent)
        .await
        .context("connecting to the Kubernetes API")?;
    let settings = flags.settings(&cloud);

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
    // The readiness-gate webhook, on every replica: admission must not wait for an election.
    let _webhook = match flags.webhook() {
        Some(config) => Some(mic::webhook::RunningWebhook::start(&config, metrics.clone()).await?),
        None => None,
    };

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
