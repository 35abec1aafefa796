//! `bench soak` (issue 7 §4): MIC and NMI (release binaries) on a private kube-apiserver and the
//! Azure emulator (real IMDS limits, default ARM), under mixed load for `seconds`:
//! - token requests at a steady rate from 50 bound pods against NMI;
//! - pod churn: a labelled pod created every 60/`churn_per_min` s, which asks NMI for its token
//!   once (held by NMI until MIC has assigned the identity) and is deleted 12 s after creation.
//!
//! Memory of both processes is sampled every 10 s.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use azure_emulator::{Emulator, World};
use bench::mem::{flatness, round};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::{Value, json};

use crate::cluster::{self, Cluster, PodSpec, pod_ip, token_path};

const NS: &str = "bench-soak";
const NODE: &str = "soak-0";
const IDENTITIES: usize = 5;
const STABLE_PODS: usize = 50;
const VAULT: &str = "https://vault.azure.net";
const CHURN_LIFETIME: Duration = Duration::from_secs(12);

fn world() -> anyhow::Result<World> {
    Ok(World::from_yaml(&format!(
        r#"
tenant_id: {}
subscriptions:
  - id: {}
    resource_groups: [node-rg, identity-rg]
identities:
{}
vmss:
  - name: soak
    resource_group: node-rg
    instances:
      - {{name: soak_0, node: {NODE}}}
{}
tls:
  enabled: true
"#,
        cluster::TENANT,
        cluster::SUB,
        cluster::identities_yaml(IDENTITIES),
        cluster::mic_principal_yaml(IDENTITIES),
    ))?)
}

pub async fn run(
    seconds: u64,
    rps: f64,
    churn_per_min: f64,
    summary: &Path,
) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let logs = cluster::log_dir(summary)?;
    let k8s = Cluster::start().await?;
    let emulator = Emulator::start(world()?).await?;
    let ca = logs.join("emulator-ca-soak.pem");
    std::fs::write(&ca, emulator.ca_cert_pem().context("the emulator serves TLS")?)?;
    k8s.nodes(&[(
        NODE.into(),
        format!(
            "azure:///subscriptions/{}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachineScaleSets/soak/virtualMachines/0",
            cluster::SUB
        ),
    )])
    .await?;
    k8s.namespace(NS).await?;
    for n in 0..IDENTITIES {
        k8s.identity_and_binding(NS, n, &format!("app-{n}")).await?;
    }
    let kubeconfig = k8s.server.kubeconfig().to_owned();
    let mic = cluster::start_mic(&kubeconfig, &emulator, &ca, &logs.join("soak-mic.log")).await?;
    let imds = emulator.imds_addr(NODE).context("the node has an IMDS")?;
    let (nmi, nmi_addr) =
        cluster::start_nmi(&kubeconfig, NODE, imds, &[], &logs.join("soak-nmi.log"), None).await?;

    let ips: Vec<_> = (0..STABLE_PODS).map(|i| pod_ip(1, i)).collect();
    k8s.pods(
        NS,
        (0..STABLE_PODS)
            .map(|i| PodSpec {
                name: format!("stable-{i}"),
                node: NODE.into(),
                label: Some(format!("app-{}", i % IDENTITIES)),
                ip: Some(ips[i]),
            })
            .collect(),
    )
    .await?;
    k8s.count_assigned()
        .wait_for(STABLE_PODS, Duration::from_secs(120))
        .await?;

    // Connection i is pod i (ips[i]) and asks for identity i % IDENTITIES, which it is bound to.
    let connections = STABLE_PODS;
    let spec = bench::LoadSpec {
        paths: (0..IDENTITIES).map(|n| token_path(n, VAULT)).collect(),
        local_addrs: ips,
        warmup: Duration::from_secs(2),
        rate_per_connection: Some(rps / connections as f64),
        ..bench::LoadSpec::new(nmi_addr, "", connections, Duration::from_secs(seconds))
    };
    let load = tokio::spawn(bench::run(spec));

    let churn_errors = Arc::new(AtomicU64::new(0));
    let churned = Arc::new(AtomicU64::new(0));
    let first_token_ms = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let pods_api = Api::<Pod>::namespaced(k8s.client.clone(), NS);
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds) + Duration::from_secs(2);
    let churn = {
        let (churn_errors, churned, first_token_ms) =
            (churn_errors.clone(), churned.clone(), first_token_ms.clone());
        let pods_api = pods_api.clone();
        let every = Duration::from_secs_f64(60.0 / churn_per_min.max(0.1));
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            let mut n = 0usize;
            let mut tick = tokio::time::interval(every);
            // The last pods must have time to get their token and be deleted before the end.
            while Instant::now() + CHURN_LIFETIME < end {
                tick.tick().await;
                let (api, errors, churned, times) = (
                    pods_api.clone(),
                    churn_errors.clone(),
                    churned.clone(),
                    first_token_ms.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    churn_one(n, nmi_addr, &api, &errors, &times).await;
                    churned.fetch_add(1, Ordering::Relaxed);
                }));
                n += 1;
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };

    let mut samples_nmi = Vec::new();
    let mut samples_mic = Vec::new();
    let csv_path = logs.join("soak-memory.csv");
    let mut csv = String::from("seconds,nmi_rss_mib,mic_rss_mib\n");
    while Instant::now() < end {
        let t = started.elapsed().as_secs_f64();
        let (a, b) = (nmi.rss_mib()?, mic.rss_mib()?);
        println!(
            "soak t={t:>5.0}s  nmi {a:>6.1} MiB  mic {b:>6.1} MiB  churned {}",
            churned.load(Ordering::Relaxed)
        );
        csv.push_str(&format!("{t:.0},{a:.2},{b:.2}\n"));
        samples_nmi.push((t, a));
        samples_mic.push((t, b));
        tokio::time::sleep(Duration::from_secs(10).min(end.saturating_duration_since(Instant::now()))).await;
    }
    std::fs::write(&csv_path, csv)?;
    let report = load.await??;
    churn.await?;
    println!("soak load: {report:?}");
    let mut times = first_token_ms.lock().map(|v| v.clone()).unwrap_or_default();
    times.sort_unstable();

    let total = seconds as f64;
    let fl = |s: &[(f64, f64)]| flatness(s, total);
    let max = |s: &[(f64, f64)]| s.iter().map(|(_, m)| *m).fold(0.0, f64::max);
    let churn_errors = churn_errors.load(Ordering::Relaxed);
    let mut out = vec![
        ("soak_seconds", json!(seconds)),
        ("soak_token_rps", json!(round(report.requests_per_sec, 0))),
        ("soak_token_p50_ms", json!(report.p50_ms)),
        ("soak_token_p99_ms", json!(report.p99_ms)),
        (
            "soak_token_requests",
            json!(report.ok + report.non_2xx + report.errors),
        ),
        ("soak_pods_churned", json!(churned.load(Ordering::Relaxed))),
        (
            "soak_churn_first_token_p99_ms",
            json!(bench::load::percentile_ms(&times, 0.99)),
        ),
        (
            "soak_errors",
            json!(report.non_2xx + report.errors + churn_errors),
        ),
        ("soak_nmi_rss_mib_max", json!(round(max(&samples_nmi), 1))),
        ("soak_mic_rss_mib_max", json!(round(max(&samples_mic), 1))),
    ];
    for (who, s) in [("nmi", &samples_nmi), ("mic", &samples_mic)] {
        if let Some(f) = fl(s) {
            let keys: [&'static str; 3] = if who == "nmi" {
                [
                    "soak_nmi_rss_mib_early",
                    "soak_nmi_rss_mib_late",
                    "soak_nmi_rss_late_over_early",
                ]
            } else {
                [
                    "soak_mic_rss_mib_early",
                    "soak_mic_rss_mib_late",
                    "soak_mic_rss_late_over_early",
                ]
            };
            out.push((keys[0], json!(round(f.early_mib, 1))));
            out.push((keys[1], json!(round(f.late_mib, 1))));
            out.push((keys[2], json!(round(f.ratio, 3))));
        }
    }
    println!("(memory samples in {})", csv_path.display());
    drop(nmi);
    drop(mic);
    Ok(out)
}

/// One churned pod: created Running with its own IP, asks NMI once for its identity's token
/// (NMI holds the request until MIC has assigned it), then is deleted. A failure is an error.
async fn churn_one(
    n: usize,
    nmi: std::net::SocketAddr,
    api: &Api<Pod>,
    errors: &AtomicU64,
    times: &std::sync::Mutex<Vec<u32>>,
) {
    let created = Instant::now();
    let ip = pod_ip(2, n);
    let name = format!("churn-{n}");
    let identity = n % IDENTITIES;
    let spec = PodSpec {
        name: name.clone(),
        node: NODE.into(),
        label: Some(format!("app-{identity}")),
        ip: Some(ip),
    };
    let outcome = async {
        cluster::create_pod(api, &spec).await?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .local_address(ip)
            .timeout(Duration::from_secs(30))
            .build()?;
        let r = http
            .get(format!("http://{nmi}{}", token_path(identity, VAULT)))
            .header("Metadata", "true")
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            anyhow::bail!("{status}: {}", r.text().await.unwrap_or_default());
        }
        anyhow::Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            if let Ok(mut t) = times.lock() {
                t.push(created.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
        }
        Err(e) => {
            eprintln!("soak: churned pod {name} ({ip}) got no token: {e:#}");
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    tokio::time::sleep(CHURN_LIFETIME.saturating_sub(created.elapsed())).await;
    if let Err(e) = cluster::delete_pod(api, &name).await {
        eprintln!("soak: deleting {name}: {e:#}");
        errors.fetch_add(1, Ordering::Relaxed);
    }
}
