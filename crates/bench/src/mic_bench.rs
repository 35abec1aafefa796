//! `bench mic` (issue 5): the release `mic` binary against a private kube-apiserver and the Azure
//! emulator's ARM with an operation latency of L = 2 s and default quotas: 100 nodes in 10 scale
//! sets, 50 identities, then 1,000 and 10,000 labelled pods.

use std::{path::Path, time::Duration};

use anyhow::Context;
use azure_emulator::{Emulator, World};
use bench::mem::round;
use serde_json::{Value, json};

use crate::cluster::{self, Cluster, PodSpec};

const NS: &str = "bench-mic";
const SCALE_SETS: usize = 10;
const PER_SET: usize = 10;
const IDENTITIES: usize = 50;
const LATENCY_MS: u64 = 2000;

fn node(set: usize, i: usize) -> String {
    format!("ss{set}-{i}")
}

fn world() -> anyhow::Result<World> {
    let sets: String = (0..SCALE_SETS)
        .map(|s| {
            let instances: String = (0..PER_SET)
                .map(|i| format!("      - {{name: ss{s}_{i}, node: {}}}\n", node(s, i)))
                .collect();
            format!("  - name: ss{s}\n    resource_group: node-rg\n    instances:\n{instances}")
        })
        .collect();
    Ok(World::from_yaml(&format!(
        r#"
tenant_id: {}
subscriptions:
  - id: {}
    resource_groups: [node-rg, identity-rg]
identities:
{}
vmss:
{sets}
{}
arm:
  operation_latency_ms: {LATENCY_MS}
tls:
  enabled: true
"#,
        cluster::TENANT,
        cluster::SUB,
        cluster::identities_yaml(IDENTITIES),
        cluster::mic_principal_yaml(IDENTITIES),
    ))?)
}

fn pods(range: std::ops::Range<usize>) -> Vec<PodSpec> {
    let nodes = SCALE_SETS * PER_SET;
    range
        .map(|i| PodSpec {
            name: format!("pod-{i}"),
            node: node((i % nodes) / PER_SET, i % PER_SET),
            label: Some(format!("app-{}", i % IDENTITIES)),
            ip: None,
        })
        .collect()
}

pub async fn run(pods_large: usize, summary: &Path) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let logs = cluster::log_dir(summary)?;
    let k8s = Cluster::start().await?;
    let emulator = Emulator::start(world()?).await?;
    let ca = logs.join("emulator-ca-mic.pem");
    std::fs::write(&ca, emulator.ca_cert_pem().context("the emulator serves TLS")?)?;
    let nodes: Vec<(String, String)> = (0..SCALE_SETS)
        .flat_map(|s| {
            (0..PER_SET).map(move |i| {
                (
                    node(s, i),
                    format!(
                        "azure:///subscriptions/{}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss{s}/virtualMachines/{i}",
                        cluster::SUB
                    ),
                )
            })
        })
        .collect();
    k8s.nodes(&nodes).await?;
    k8s.namespace(NS).await?;
    for n in 0..IDENTITIES {
        k8s.identity_and_binding(NS, n, &format!("app-{n}")).await?;
    }
    let mic = cluster::start_mic(k8s.server.kubeconfig(), &emulator, &ca, &logs.join("mic.log")).await?;
    let rss_idle = mic.rss_mib()?;
    let admin = emulator.admin();
    // The consent reads of MIC's start (`arm::consent`), before the counters restart.
    let identity_reads_at_start = identity_reads(&admin.counters());
    admin.reset_counters();

    // 1,000 pods: convergence, ARM writes and 429s.
    let mut assigned = k8s.count_assigned();
    let started = std::time::Instant::now();
    k8s.pods(NS, pods(0..1000)).await?;
    let created = started.elapsed();
    assigned.wait_for(1000, Duration::from_secs(300)).await?;
    let converged = started.elapsed();
    let counters = admin.counters();
    let arm_writes: u64 = counters.arm_writes.values().sum();
    let arm_429s = counters.throttled.get("arm").copied().unwrap_or(0);
    let arm_requests = counters.requests.get("arm").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_1000 = mic.rss_mib()?;
    println!(
        "mic: 1,000 pods created in {created:?}, all Assigned after {converged:?}; {arm_writes} ARM writes, {arm_429s} 429s, RSS {rss_1000:.1} MiB"
    );

    // Up to `pods_large` pods on the same nodes.
    let more = std::time::Instant::now();
    k8s.pods(NS, pods(1000..pods_large)).await?;
    assigned.wait_for(pods_large, Duration::from_secs(600)).await?;
    let converged_large = more.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_large = mic.rss_mib()?;
    let (anon_large, file_large) = mic.rss_parts_mib()?;
    let counters = admin.counters();
    // Each identity is read when MIC first sees it and again every --identity-consent-refresh,
    // whatever the number of pods using it.
    let identity_reads_total = identity_reads_at_start + identity_reads(&counters);
    println!("mic: {identity_reads_total} identity reads from ARM for {IDENTITIES} identities (consent)");
    println!(
        "mic: {pods_large} pods all Assigned {converged_large:?} after the 1,001st was created; RSS {rss_large:.1} MiB (anonymous {anon_large:.1}, file-backed {file_large:.1})"
    );

    let mut out = vec![
        ("mic_convergence_s", json!(round(converged.as_secs_f64(), 2))),
        ("mic_pods_created_s", json!(round(created.as_secs_f64(), 2))),
        (
            "mic_convergence_after_last_pod_s",
            json!(round((converged - created).as_secs_f64(), 2)),
        ),
        ("mic_arm_latency_s", json!(LATENCY_MS as f64 / 1000.0)),
        ("mic_arm_writes", json!(arm_writes)),
        ("mic_arm_requests", json!(arm_requests)),
        ("mic_arm_429s", json!(arm_429s)),
        ("mic_scale_sets", json!(SCALE_SETS)),
        ("mic_rss_mib_idle", json!(round(rss_idle, 1))),
        ("mic_rss_mib_1000_pods", json!(round(rss_1000, 1))),
        (
            "mic_large_pods_convergence_s",
            json!(round(converged_large.as_secs_f64(), 1)),
        ),
        (
            "mic_large_arm_writes",
            json!(counters.arm_writes.values().sum::<u64>()),
        ),
        ("mic_identity_reads", json!(identity_reads_total)),
        (
            "mic_identity_reads_per_identity",
            json!(round(identity_reads_total as f64 / IDENTITIES as f64, 2)),
        ),
        (
            "mic_large_arm_429s",
            json!(counters.throttled.get("arm").copied().unwrap_or(0)),
        ),
    ];
    // The key names the size measured, so a smaller run never passes for the 10,000-pod figure.
    if pods_large == 10_000 {
        out.push(("mic_rss_mib_10000_pods", json!(round(rss_large, 1))));
        out.push(("mic_rss_anon_mib_10000_pods", json!(round(anon_large, 1))));
        out.push(("mic_large_pods", Value::Null));
        out.push(("mic_rss_mib_large_pods", Value::Null));
    } else {
        out.push(("mic_large_pods", json!(pods_large)));
        out.push(("mic_rss_mib_large_pods", json!(round(rss_large, 1))));
        out.push(("mic_rss_mib_10000_pods", Value::Null));
        out.push(("mic_rss_anon_mib_10000_pods", Value::Null));
    }
    drop(mic);
    Ok(out)
}

/// ARM GETs of user-assigned identities the emulator served (MIC's consent reads).
fn identity_reads(counters: &azure_emulator::CounterSnapshot) -> u64 {
    counters.arm_reads.get("identity").copied().unwrap_or(0)
}
