//! `bench nmi` (issue 4): the release `nmi` binary for one node with 100 bound pods, against a
//! private kube-apiserver and the Azure emulator's IMDS for that node.
//!
//! 1. Cached tokens: every pod asks, over keep-alive connections from its own loopback IP, for
//!    one of four (identity, resource) pairs, with the emulator's IMDS limits off:
//!    - with NMI and the load generator sharing both cores (closed-loop, then paced at 50,000/s);
//!    - with each on a core of its own (`pinned`): closed-loop, then paced at 10,000/s and at
//!      50,000/s, the issue's figure;
//!    - the same closed-loop load straight to the emulator's IMDS, for the ratio.
//! 2. IMDS calls: a fresh `nmi` in front of an emulator with the real per-VM limits answers
//!    10 000 requests from the 100 pods; the emulator counts the IMDS calls and 429s it served.
//! 3. Memory: 900 more pods on the node, then NMI's VmRSS.

use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{Context, bail};
use azure_emulator::{Emulator, World};
use bench::mem::round;
use serde_json::{Value, json};

use crate::{
    cluster::{self, Cluster, PodSpec, pod_ip, token_path},
    pinned,
};

const NODE: &str = "nmi-node";
const NS: &str = "bench-nmi";
const PODS: usize = 100;
const IDENTITIES: usize = 2;
/// Requests per second per pod of the paced latency run.
const PACED_RATE_PER_POD: f64 = 100.0;
/// The same for the paced run at the issue's 50,000 requests/s.
const PACED_50K_RATE_PER_POD: f64 = 500.0;
const RESOURCES: [&str; 2] = ["https://vault.azure.net", "https://storage.azure.com/"];
/// NMI's per-pod limit (50 requests/s by default) would cap 100 pods at 5,000/s: off here, so
/// that NMI's own capacity is measured.
const UNLIMITED: [&str; 1] = ["--pod-rate-limit=0"];
/// The same NMI without its defences against hostile pods (SECURITY.md threat 9: the header
/// timer, which hyper arms for every request, and the per-pod connection cap), to measure in the
/// same run what they cost a cached answer.
const UNDEFENDED: [&str; 3] = [
    "--pod-rate-limit=0",
    "--header-read-timeout=0",
    "--max-connections-per-pod=0",
];

fn world(rate_limit: bool) -> anyhow::Result<World> {
    let ids: Vec<String> = (0..IDENTITIES).map(|n| format!("id{n}")).collect();
    let mut w = World::from_yaml(&format!(
        r#"
tenant_id: {}
subscriptions:
  - id: {}
    resource_groups: [node-rg, identity-rg]
identities:
{}
vms:
  - {{name: {NODE}, resource_group: node-rg, node: {NODE}, user_assigned: [{}]}}
tls:
  enabled: false
"#,
        cluster::TENANT,
        cluster::SUB,
        cluster::identities_yaml(IDENTITIES),
        ids.join(", ")
    ))?;
    w.imds.rate_limit = rate_limit;
    Ok(w)
}

/// The (identity, resource) pairs asked for, as token paths.
fn paths() -> Vec<String> {
    (0..IDENTITIES)
        .flat_map(|n| RESOURCES.iter().map(move |r| token_path(n, r)))
        .collect()
}

pub async fn run(seconds: u64, summary: &Path) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let logs = cluster::log_dir(summary)?;
    let k8s = Cluster::start().await?;
    k8s.namespace(NS).await?;
    for n in 0..IDENTITIES {
        k8s.identity_and_binding(NS, n, "app").await?;
    }
    let ips: Vec<IpAddr> = (0..PODS).map(|i| pod_ip(0, i)).collect();
    k8s.pods(
        NS,
        (0..PODS)
            .map(|i| PodSpec {
                name: format!("pod-{i}"),
                node: NODE.into(),
                label: Some("app".into()),
                ip: Some(ips[i]),
            })
            .collect(),
    )
    .await?;
    let pairs: Vec<(String, usize)> = (0..PODS)
        .flat_map(|i| (0..IDENTITIES).map(move |n| (format!("pod-{i}"), n)))
        .collect();
    k8s.assigned(NS, NODE, &pairs).await?;
    let kubeconfig = k8s.server.kubeconfig().to_owned();

    // 1. Cached tokens, IMDS limits off. First with NMI and the generator sharing both cores,
    // then each on a core of its own (see `pinned`), then the emulator's IMDS directly.
    let open = Emulator::start(world(false)?).await?;
    let open_imds = open.imds_addr(NODE).context("the node has an IMDS")?;

    // Started, then every pod gets its tokens once before measuring (the warm-up also does, but a
    // pod whose first answer failed would otherwise count as an error of the cached path).
    // The same NMI without its defences against hostile pods (SECURITY.md threat 9: the header
    // timer, which hyper arms for every request, and the per-pod connection cap), to measure in
    // this run what they cost a cached answer.
    let start_with = |args: &'static [&'static str], log: &str, cpu: Option<usize>| {
        let log = logs.join(log);
        let (kubeconfig, ips) = (&kubeconfig, &ips);
        async move {
            let (nmi, addr) = cluster::start_nmi(kubeconfig, NODE, open_imds, args, &log, cpu).await?;
            check_all_pods_served(addr, ips).await?;
            anyhow::Ok((nmi, addr))
        }
    };
    let start_unlimited = |log: &str, cpu: Option<usize>| start_with(&UNLIMITED, log, cpu);
    let (nmi, nmi_addr) = start_unlimited("nmi-cached.log", None).await?;
    let spec = bench::LoadSpec {
        paths: paths(),
        local_addrs: ips.clone(),
        ..bench::LoadSpec::new(nmi_addr, "", PODS, Duration::from_secs(seconds))
    };
    let paced_at = |rate: f64| bench::LoadSpec {
        rate_per_connection: Some(rate),
        ..spec.clone()
    };
    let shared = bench::run(spec.clone()).await?;
    println!("nmi cached, cores shared: {shared:?}");
    let shared_50k = bench::run(paced_at(PACED_50K_RATE_PER_POD)).await?;
    println!("nmi paced at 50,000/s, cores shared: {shared_50k:?}");
    drop(nmi);

    let (gen_cpu, nmi_cpu) = pinned::cores().context("the pinned runs need two cores")?;
    let (nmi, nmi_addr) = start_unlimited("nmi-pinned.log", Some(nmi_cpu)).await?;
    let on_pinned = |s: bench::LoadSpec| bench::LoadSpec { addr: nmi_addr, ..s };
    let cached = pinned::run(&on_pinned(spec.clone()), gen_cpu).await?;
    println!("nmi cached, one core each: {cached:?}");
    let cached_undefended = {
        let (nmi, addr) = start_with(&UNDEFENDED, "nmi-undefended.log", Some(nmi_cpu)).await?;
        let r = pinned::run(&bench::LoadSpec { addr, ..spec.clone() }, gen_cpu).await?;
        drop(nmi);
        r
    };
    println!("nmi cached without the hostile-pod defences, one core each: {cached_undefended:?}");
    // The same pods at a fixed rate of 100 requests/s each (10,000/s): latency well below
    // capacity.
    let paced = pinned::run(&on_pinned(paced_at(PACED_RATE_PER_POD)), gen_cpu).await?;
    println!("nmi paced, one core each: {paced:?}");
    // And at 500 requests/s each: 50,000/s, the issue's throughput, open-loop.
    let paced_50k = pinned::run(&on_pinned(paced_at(PACED_50K_RATE_PER_POD)), gen_cpu).await?;
    println!("nmi paced at 50,000/s, one core each: {paced_50k:?}");
    let direct = bench::run(bench::LoadSpec {
        addr: open_imds,
        local_addrs: Vec::new(),
        ..spec.clone()
    })
    .await?;
    println!("emulator IMDS direct: {direct:?}");
    let runs = [
        &shared,
        &shared_50k,
        &cached,
        &cached_undefended,
        &paced,
        &paced_50k,
        &direct,
    ];
    if runs.iter().any(|r| r.non_2xx + r.errors > 0) {
        bail!(
            "failed requests: {runs:?}; NMI's log:\n{}",
            nmi.process.log_tail()
        );
    }
    drop(nmi);
    drop(open);

    // 2. IMDS calls with the real per-VM limits, from a cold cache.
    let limited = Emulator::start(world(true)?).await?;
    let limited_imds = limited.imds_addr(NODE).context("the node has an IMDS")?;
    let (nmi, nmi_addr) =
        cluster::start_nmi(&kubeconfig, NODE, limited_imds, &[], &logs.join("nmi.log"), None).await?;
    let before = limited.admin().counters();
    let per_conn = 10_000 / PODS as u64;
    let burst = bench::run(bench::LoadSpec {
        addr: nmi_addr,
        warmup: Duration::ZERO,
        requests_per_connection: Some(per_conn),
        duration: Duration::from_secs(120),
        ..spec.clone()
    })
    .await?;
    println!("nmi, IMDS limits on: {burst:?}");
    let after = limited.admin().counters();
    let delta = |m: &std::collections::BTreeMap<String, u64>, b: &std::collections::BTreeMap<String, u64>| {
        m.get("imds").copied().unwrap_or(0) - b.get("imds").copied().unwrap_or(0)
    };
    let imds_calls = delta(&after.requests, &before.requests);
    let imds_429s = delta(&after.throttled, &before.throttled);
    let sent = burst.ok + burst.non_2xx + burst.errors;
    let rss_100 = nmi.rss_mib()?;

    // 3. Memory with 1,000 pods on the node (the 900 more carry a label no binding selects).
    k8s.pods(
        NS,
        (PODS..1000)
            .map(|i| PodSpec {
                name: format!("pod-{i}"),
                node: NODE.into(),
                label: Some("idle".into()),
                ip: Some(pod_ip(0, i)),
            })
            .collect(),
    )
    .await?;
    let last = pod_ip(0, 999);
    let http = reqwest::Client::builder()
        .no_proxy()
        .local_address(last)
        .build()?;
    let url = format!("http://{nmi_addr}{}", token_path(0, RESOURCES[0]));
    // A pod NMI knows and that no binding selects is refused at once with 403.
    cluster::wait_for(
        "NMI sees the 1,000th pod",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let req = http.get(&url).header("Metadata", "true");
            async move { Ok(req.send().await?.status().as_u16() == 403) }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_1000 = nmi.rss_mib()?;
    let (anon_1000, file_1000) = nmi.rss_parts_mib()?;
    println!(
        "nmi: RSS {rss_1000:.1} MiB with 1,000 pods (anonymous {anon_1000:.1}, file-backed {file_1000:.1})"
    );
    drop(nmi);

    Ok(vec![
        ("nmi_cached_rps", json!(round(cached.requests_per_sec, 0))),
        ("nmi_cached_p50_ms", json!(cached.p50_ms)),
        ("nmi_cached_p99_ms", json!(cached.p99_ms)),
        (
            "nmi_cached_undefended_rps",
            json!(round(cached_undefended.requests_per_sec, 0)),
        ),
        (
            "nmi_cached_vs_undefended_ratio",
            json!(round(
                cached.requests_per_sec / cached_undefended.requests_per_sec,
                3
            )),
        ),
        ("nmi_paced_rps", json!(round(paced.requests_per_sec, 0))),
        ("nmi_paced_p50_ms", json!(paced.p50_ms)),
        ("nmi_paced_p99_ms", json!(paced.p99_ms)),
        ("nmi_paced_50k_rps", json!(round(paced_50k.requests_per_sec, 0))),
        ("nmi_paced_50k_p50_ms", json!(paced_50k.p50_ms)),
        ("nmi_paced_50k_p99_ms", json!(paced_50k.p99_ms)),
        ("nmi_shared_cached_rps", json!(round(shared.requests_per_sec, 0))),
        ("nmi_shared_cached_p50_ms", json!(shared.p50_ms)),
        ("nmi_shared_cached_p99_ms", json!(shared.p99_ms)),
        ("nmi_shared_paced_50k_p50_ms", json!(shared_50k.p50_ms)),
        ("nmi_shared_paced_50k_p99_ms", json!(shared_50k.p99_ms)),
        ("nmi_imds_direct_rps", json!(round(direct.requests_per_sec, 0))),
        ("nmi_imds_direct_p99_ms", json!(direct.p99_ms)),
        (
            "nmi_shared_cached_vs_imds_direct_ratio",
            json!(round(shared.requests_per_sec / direct.requests_per_sec, 3)),
        ),
        ("nmi_cached_vs_imds_direct_ratio", Value::Null),
        ("nmi_connections", json!(PODS)),
        ("nmi_seconds", json!(seconds)),
        ("nmi_limited_requests", json!(sent)),
        (
            "nmi_imds_calls_per_10k",
            json!(round(imds_calls as f64 * 10_000.0 / sent.max(1) as f64, 1)),
        ),
        ("nmi_imds_429s_served", json!(imds_429s)),
        (
            "nmi_429s_to_pods",
            json!(burst.statuses.get(&429).copied().unwrap_or(0)),
        ),
        ("nmi_limited_failed", json!(burst.non_2xx + burst.errors)),
        ("nmi_rss_mib_100_pods", json!(round(rss_100, 1))),
        ("nmi_rss_mib_1000_pods", json!(round(rss_1000, 1))),
        ("nmi_rss_anon_mib_1000_pods", json!(round(anon_1000, 1))),
        ("nmi_rss_file_mib_1000_pods", json!(round(file_1000, 1))),
    ])
}

/// One request per pod and pair, each from the pod's own IP: all must be 200.
async fn check_all_pods_served(nmi: std::net::SocketAddr, ips: &[IpAddr]) -> anyhow::Result<()> {
    for ip in ips {
        let http = reqwest::Client::builder().no_proxy().local_address(*ip).build()?;
        for path in paths() {
            let r = http
                .get(format!("http://{nmi}{path}"))
                .header("Metadata", "true")
                .send()
                .await?;
            let status = r.status();
            if !status.is_success() {
                bail!(
                    "pod {ip} asked {path}: {status} {}",
                    r.text().await.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
