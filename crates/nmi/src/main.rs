//! The `nmi` binary: flags, logging, and wiring of the library's parts.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use nmi::{
    flags::{Command, Flags, KubenetVerdict, LogFormat, kubenet_verdict},
    iptables,
    metrics::Metrics,
    server::{self, Nmi},
    state::State,
    token::{Azure, AzureConfig},
    token_cache::{CachePolicy, TokenCache},
};
use upstream_flags::{Environment, ParseGo};

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse_go();
    // The readiness probe runs every few seconds in NMI's container: it answers before the async
    // runtime (a thread per core) is started, the logging, and the checks of NMI's own flags,
    // none of which it uses.
    if let Some(Command::Probe(probe)) = &flags.command {
        match server::ready_socket::ask(&probe.socket, probe.timeout) {
            server::ready_socket::Verdict::Ready => println!("ready"),
            server::ready_socket::Verdict::NotReady(why) => {
                println!("{why}");
                std::process::exit(1);
            }
        }
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve_or_run_command(flags))
}

async fn serve_or_run_command(flags: Flags) -> anyhow::Result<()> {
    let env = Environment::from_process();
    upstream_flags::init_logging(
        flags.log_format == LogFormat::Json,
        &env,
        &flags.common.log_filter("nmi"),
    );
    flags.check(&env)?;
    upstream_flags::warn(&flags.notes(&env));
    if let Some(Command::TestTokenPath(check)) = &flags.command {
        let verdict = nmi::token_path_check::run(check).await?;
        println!("{verdict}");
        std::process::exit(if verdict.passed() { 0 } else { 1 });
    }
    if let Some(Command::Cleanup) = flags.command {
        nmi::interception::cleanup(&iptables::System::default(), &flags).await?;
        tracing::info!(
            chain = iptables::CHAIN,
            "iptables interception rules (and the CNI gate) removed"
        );
        return Ok(());
    }
    run(flags).await
}

async fn kube_client(flags: &Flags) -> anyhow::Result<kube::Client> {
    let mut config = match &flags.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let agent = flags.common.user_agent("NMI", env!("CARGO_PKG_VERSION"));
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&agent).context("--custom-user-agent is not a valid header value")?,
    ));
    Ok(kube::Client::try_from(config)?)
}

/// Upstream refused to start on kubenet unless told otherwise; so does NMI.
fn check_kubenet(flags: &Flags) -> anyhow::Result<()> {
    let Some(check) = flags.upstream.kubenet_check() else {
        return Ok(());
    };
    match kubenet_verdict(&check, std::fs::read_to_string(&check.path)) {
        KubenetVerdict::Run => Ok(()),
        KubenetVerdict::RunWithNote(note) => {
            tracing::warn!("{note}");
            Ok(())
        }
        KubenetVerdict::Refuse(why) => anyhow::bail!(why),
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    check_kubenet(&flags)?;
    let metrics = Metrics::new();
    let client = kube_client(&flags)
        .await
        .context("connecting to the Kubernetes API")?;
    let state = Arc::new(State::new(flags.node.clone(), flags.mode, flags.policy()));
    state.set_max_staleness(flags.max_state_staleness);
    state.spawn_watches(client.clone());

    let imds = format!(
        "http://{}",
        SocketAddr::new(flags.metadata_ip, flags.metadata_port)
    );
    let extra_roots_pem = match &flags.entra_ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let azure = Azure::new(
        AzureConfig {
            imds: imds.clone(),
            entra: flags.entra_endpoint.clone(),
            extra_roots_pem,
            timeout: flags.upstream_timeout,
        },
        Some(client.clone()),
        metrics.clone(),
    )?
    .allow_ad_endpoints(&flags.allowed_ad_endpoints)?;
    let readiness_client = client.clone();
    let federation_client = client;
    let http = azure.http().clone();
    let cache = Arc::new(TokenCache::new(
        Arc::new(azure),
        CachePolicy {
            max_entries: flags.token_cache_size,
            ..CachePolicy::default()
        },
        metrics.clone(),
    ));
    let nmi = Nmi::new(
        state.clone(),
        cache,
        server::Config {
            metadata_header_required: flags.metadata_header_required,
            block_instance_metadata: flags.block_instance_metadata,
            set_retry_after_header: flags.set_retry_after_header,
            identity_wait: flags.identity_wait(),
            pod_wait: flags.pod_wait,
            imds,
        },
        metrics.clone(),
        http,
    );
    nmi.rate_limit
        .configure(flags.pod_rate_limit, flags.pod_rate_burst);
    if flags.refusal_events {
        let dropped = metrics.events_dropped.clone();
        nmi.enable_refusal_events(server::RefusalEvents::start(
            readiness_client.clone(),
            &flags.node,
            events::SeriesPolicy::default(),
            std::sync::Arc::new(move || {
                dropped.inc();
            }),
        ));
    }
    if let Some(tenant) = flags.federated_tenant_id.clone().filter(|t| !t.is_empty()) {
        nmi.authorizer
            .enable_federation(nmi::federation::Federation::start(
                state.clone(),
                nmi.authorizer.cache.clone(),
                federation_client,
                nmi.http.clone(),
                nmi::federation::FederationConfig {
                    authority: flags.entra_endpoint.clone(),
                    tenant,
                },
            ));
    }
    tokio::spawn(server::track_staleness(state.clone(), metrics.clone()));
    if flags.identity_ready_condition {
        nmi::readiness::spawn(nmi.authorizer.clone(), readiness_client, Default::default());
    }

    let rules_in_place = Arc::new(AtomicBool::new(!flags.manage_iptables));
    if flags.manage_iptables {
        let target = iptables::Target::new(flags.listen_address, flags.port);
        let flag = rules_in_place.clone();
        let interval = Duration::from_secs(flags.ipt_update_interval_sec.max(1));
        let opts = nmi::interception::Options::from_flags(&flags)?;
        tokio::spawn(async move {
            nmi::interception::keep(&iptables::System::default(), target, interval, opts, |ok| {
                flag.store(ok, Ordering::Release)
            })
            .await
        });
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    // Every listener joins the node's group for its port (SO_REUSEPORT, newest wins), shared with
    // the NMI this one replaces during an update: server::listener says how that leaves no gap.
    let serve = |addr: SocketAddr, router: axum::Router, name: &'static str| {
        let (bound, stopped) = (stopped(), stopped());
        async move {
            let listener = tokio::select! {
                l = server::bind_retrying(addr, name, |_| {}) => l?,
                () = bound => return anyhow::Ok(()),
            };
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
                .with_context(|| format!("serving {name}"))
        }
    };
    // Readiness (`/readyz`, the readiness socket) waits for the pod-facing listener too.
    let pod_port = Arc::new(server::PodPort::default());
    let main = {
        let (addr, bound, stopped) = (
            SocketAddr::new(flags.listen_address, flags.port),
            stopped(),
            stopped(),
        );
        let limits = flags.connection_limits();
        let (state, rules, port) = (state.clone(), rules_in_place.clone(), pod_port.clone());
        async move {
            // Bound only once this NMI can serve, when it replaces another (see bind_pod_facing).
            let ready = move || server::is_ready(&state, &rules);
            let listener = tokio::select! {
                l = server::bind_pod_facing(addr, ready, &port) => l?,
                () = bound => return anyhow::Ok(()),
            };
            server::serve_with(listener, nmi, limits, stopped).await;
            anyhow::Ok(())
        }
    };
    let ready_socket = {
        let (state, rules, port, stopped) =
            (state.clone(), rules_in_place.clone(), pod_port.clone(), stopped());
        let path = flags.ready_socket.clone();
        async move {
            let Some(path) = path else { return anyhow::Ok(()) };
            let ready = move || server::answers_ready(&state, &rules, &port);
            server::ready_socket::serve(path, ready, stopped).await?;
            anyhow::Ok(())
        }
    };
    let probes = serve(
        SocketAddr::new(flags.ops_listen_address, flags.probe_port),
        server::probe_router(state, rules_in_place, pod_port),
        "probes",
    );
    let metrics_srv = serve(
        SocketAddr::new(flags.ops_listen_address, flags.prometheus_port),
        server::metrics_router(metrics),
        "metrics",
    );
    tokio::spawn(async move {
        shutdown_signal().await;
        // The iptables rules stay: while NMI is down, pods' IMDS traffic goes nowhere rather than
        // to IMDS with the node's identities.
        tracing::info!("shutting down; iptables interception rules are left in place");
        let _ = stop_tx.send(true);
    });
    tokio::try_join!(main, probes, metrics_srv, ready_socket)?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
