//! `bench ready` (issue 22): how soon a new pod counts as Ready once its identity works, and
//! what its first token request then costs.
//!
//! MIC and one NMI per node (the workspace's binaries next to `bench`) run against a private
//! kube-apiserver and the Azure emulator: the scale set `ss-r` of two instances, [`IDENTITIES`]
//! identities, ARM operations taking `--arm-latency-ms` (L). Pods arrive as a rollout brings
//! them, [`WAVE`] at a time every second, each bound to one of the identities and naming the
//! resource it will ask for in `aadpodidentity.k8s.io/token-resources` (README "Readiness").
//! For each pod the harness records:
//! - when its status became Running (the harness plays the kubelet) and when NMI's condition
//!   `aadpodidentity.k8s.io/IdentityReady` turned True (a watch sees it): `ready_after_running`;
//! - once True, one token request from the pod's address, as the SDK's first: its duration
//!   (`first_token_after_ready`; it should be a cache hit) and its answer (it must be a token);
//! - IMDS token calls made during the run, per pod (`prefetch_imds_calls_per_pod`). Its target:
//!   one call per identity, node and resource per token lifetime, so here at most
//!   identities × nodes ÷ pods ([`imds_calls_target`]), however many pods share an identity.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use azure_emulator::World;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use crate::cluster::{self, Fleet};

const NS: &str = "ready";
const NODES: [&str; 2] = ["r-0", "r-1"];
const IDENTITIES: usize = 4;
/// Pods created together, every second (a rollout's surge).
const WAVE: usize = 8;
const RESOURCE: &str = "https://storage.azure.com/";
/// Longest a pod may take to turn Ready (several ARM operations in a row, on a busy machine).
const READY_LIMIT: Duration = Duration::from_secs(120);

/// The most IMDS token calls per pod the prefetch may make: one per identity and node.
pub fn imds_calls_target(pods: usize) -> f64 {
    (IDENTITIES * NODES.len()) as f64 / pods.max(1) as f64
}

fn world(latency_ms: u64) -> anyhow::Result<World> {
    cluster::fleet_world(
        IDENTITIES,
        &format!(
            r#"vmss:
  - name: ss-r
    resource_group: node-rg
    operation_latency_ms: {latency_ms}
    instances:
      - {{name: ss-r_0, node: r-0, imds: "127.0.0.1:0"}}
      - {{name: ss-r_1, node: r-1, imds: "127.0.0.1:0"}}"#
        ),
    )
}

fn provider_id(node: &str) -> String {
    let n = node.rsplit('-').next().unwrap_or("0");
    format!(
        "azure:///subscriptions/{}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss-r/virtualMachines/{n}",
        cluster::SUB
    )
}

/// One pod of the run.
struct Arrival {
    name: String,
    node: &'static str,
    ip: IpAddr,
    identity: usize,
}

fn arrivals(pods: usize) -> Vec<Arrival> {
    (0..pods)
        .map(|i| Arrival {
            name: format!("app-{i}"),
            node: NODES[i % NODES.len()],
            ip: cluster::pod_ip(60, i),
            identity: (i / NODES.len()) % IDENTITIES,
        })
        .collect()
}

/// What one pod saw.
struct Seen {
    ready_after_running: Duration,
    first_token: Duration,
}

/// Runs the benchmark and returns its figures.
pub async fn run(
    pods: usize,
    arm_latency_ms: u64,
    logs: &Path,
) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let nodes: Vec<(String, String)> = NODES.iter().map(|n| ((*n).to_owned(), provider_id(n))).collect();
    let fleet = Fleet::start(world(arm_latency_ms)?, &nodes, NS, IDENTITIES, logs, "ready").await?;
    let (k8s, emulator) = (&fleet.k8s, &fleet.emulator);
    let _mic = cluster::start_mic(
        &fleet.kubeconfig,
        emulator,
        &fleet.ca,
        &logs.join("ready-mic.log"),
    )
    .await?;
    let nmi_processes = fleet.start_nmis(&NODES, logs, "ready").await?;
    let nmis = &nmi_processes.addrs;
    let api = Api::<Pod>::namespaced(k8s.client.clone(), NS);
    let ready_at = watch_ready(api.clone());
    emulator.admin().reset_counters();

    let mut running_at = BTreeMap::new();
    let all = arrivals(pods);
    for wave in all.chunks(WAVE) {
        for a in wave {
            create_running(&api, a).await?;
            running_at.insert(a.name.clone(), Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let mut seen = Vec::new();
    for a in &all {
        let started = Instant::now();
        let ready = loop {
            if let Some(t) = ready_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&a.name)
            {
                break *t;
            }
            if started.elapsed() > READY_LIMIT {
                bail!("{} on {} never turned IdentityReady=True", a.name, a.node);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The pod's first ask, once Ready, as its SDK would make it.
        let asked = Instant::now();
        let answer = ask(nmis[a.node], a.ip).await?;
        let first_token = asked.elapsed();
        if answer != cluster::client_id(a.identity) {
            bail!("{}'s first token was for {answer}, not id{}", a.name, a.identity);
        }
        seen.push(Seen {
            ready_after_running: ready.saturating_duration_since(running_at[&a.name]),
            first_token,
        });
    }
    let imds_calls = emulator
        .admin()
        .counters()
        .requests
        .get("imds")
        .copied()
        .unwrap_or(0);
    Ok(figures(&seen, imds_calls, pods))
}

fn figures(seen: &[Seen], imds_calls: u64, pods: usize) -> Vec<(&'static str, Value)> {
    let sorted = |f: fn(&Seen) -> Duration| {
        let mut v: Vec<u32> = seen
            .iter()
            .map(|s| f(s).as_micros().min(u128::from(u32::MAX)) as u32)
            .collect();
        v.sort_unstable();
        v
    };
    let ready = sorted(|s| s.ready_after_running);
    let first = sorted(|s| s.first_token);
    let round = |ms: f64| (ms * 100.0).round() / 100.0;
    let per_pod = imds_calls as f64 / pods.max(1) as f64;
    println!(
        "ready: {pods} pods, {imds_calls} IMDS token calls ({per_pod:.3} per pod; target at most {:.3})",
        imds_calls_target(pods)
    );
    vec![
        ("ready_pods", json!(pods)),
        (
            "ready_after_running_p50_ms",
            json!(bench::load::percentile_ms(&ready, 0.50).round()),
        ),
        (
            "ready_after_running_p99_ms",
            json!(bench::load::percentile_ms(&ready, 0.99).round()),
        ),
        (
            "first_token_after_ready_p99_ms",
            json!(round(bench::load::percentile_ms(&first, 0.99))),
        ),
        ("prefetch_imds_calls_per_pod", json!(round(per_pod * 10.0) / 10.0)),
        (
            "prefetch_imds_calls_per_pod_target",
            json!(round(imds_calls_target(pods) * 10.0) / 10.0),
        ),
    ]
}

/// Pod name → when a watch first saw its `IdentityReady` condition True.
fn watch_ready(api: Api<Pod>) -> Arc<Mutex<BTreeMap<String, Instant>>> {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        let mut pods = watcher(api, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(pod)) = pods.next().await {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == api::v1::IDENTITY_READY_CONDITION && c.status == "True")
                });
            if ready && let Some(name) = pod.metadata.name {
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(name)
                    .or_insert_with(Instant::now);
            }
        }
    });
    out
}

/// Creates the pod and plays its kubelet: Running, with its IP.
async fn create_running(api: &Api<Pod>, a: &Arrival) -> anyhow::Result<()> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": a.name,
            "labels": {"aadpodidbinding": format!("app-{}", a.identity)},
            "annotations": {(api::v1::TOKEN_RESOURCES_ANNOTATION): RESOURCE},
        },
        "spec": {
            "nodeName": a.node,
            "containers": [{"name": "app", "image": "app"}],
            "readinessGates": [{"conditionType": api::v1::IDENTITY_READY_CONDITION}],
        }
    }))?;
    api.create(&PostParams::default(), &pod).await?;
    let ip = a.ip.to_string();
    api.patch_status(
        &a.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})),
    )
    .await?;
    Ok(())
}

/// One token request from the pod's address (no retry: once Ready, the first must answer);
/// returns the token's `appid`-style client id as NMI's answer names it.
async fn ask(nmi: std::net::SocketAddr, from: IpAddr) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .local_address(from)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!(
        "http://{nmi}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
        form_urlencoded::byte_serialize(RESOURCE.as_bytes()).collect::<String>()
    );
    let r = http.get(url).header("Metadata", "true").send().await?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != 200 {
        bail!("HTTP {status}: {body}");
    }
    body.get("client_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("the answer names no client_id")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_world_parses_with_its_scale_set_and_identities() {
        let w = super::world(2000).unwrap();
        assert_eq!(w.identities.len(), super::IDENTITIES);
        assert_eq!(w.vmss.len(), 1);
        assert_eq!(w.vmss[0].instances.len(), super::NODES.len());
    }
}
