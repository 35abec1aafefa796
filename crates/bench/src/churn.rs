//! `bench churn` (issue 13): pods that come and go on shared VMs and scale sets, each asking for
//! its token as soon as it runs, as a Job, a CronJob or a `Recreate` rollout does all day.
//!
//! MIC and one NMI per node (the workspace's binaries next to `bench`) run against a private
//! kube-apiserver and the Azure emulator: scale sets `ss-a` and `ss-b` of two instances each
//! and the VM `vm-c`, three identities, ARM operations taking `arm_latency_ms`. Workers create
//! pods one after another, at random targets, except two that alternate between the two
//! instances of one scale set (the failure users saw: a removal in flight while the next pod
//! arrives), and two that are each one StatefulSet replica: the same pod name comes back, each
//! time on a node drawn anew, so that its `AzureAssignedIdentity` is rewritten for another VM or
//! scale set, possibly before MIC's cache has seen the last write. Each pod asks NMI for a token
//! with the retry policy of the Python SDK's `ManagedIdentityCredential` (404, 410, 429 and 5xx retried with backoff; anything else final),
//! lives 0-3 s more and is deleted. Some pods are bound to nothing and must get no token.
//!
//! What a user relies on is checked, not timed: every bound pod gets a token for its own
//! identity, no unbound pod gets one, and once the pods are gone every VM and scale set carries
//! exactly the identities still needed (those of three long-lived pods). The run is driven by
//! one seed, printed first, so a failure can be replayed with `--seed`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::bail;
use azure_emulator::World;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::cluster::{self, Fleet, PodSpec};

mod behind;
mod lag;
mod moments;
mod plan;
mod report;
mod sdk;
mod slow_watch;
use plan::{Lifecycle, STABLE, plan, stable};
pub use report::Report;
use sdk::{Answer, ask, ask_as_sdk};

const NS: &str = "churn";
const IDENTITIES: usize = 3;
/// The nodes: two instances of each scale set, and the VM.
const NODES: [&str; 5] = ["a-0", "a-1", "b-0", "b-1", "c-0"];
/// Workers creating pods at once (two of them alternate between one scale set's instances).
const WORKERS: usize = 8;
/// Workers whose pods are one StatefulSet replica each: one name, reused.
const STATEFUL_WORKERS: [usize; 2] = [2, 3];
/// The share of pods bound to nothing.
const UNBOUND_SHARE: f64 = 0.15;
/// The longest a pod lives after its token answer.
const MAX_EXTRA_LIFE: Duration = Duration::from_secs(3);
/// How long the end state may take to settle: MIC removes what the last pods no longer need.
const SETTLE_LIMIT: Duration = Duration::from_secs(90);

/// What one run does.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// Pod lifecycles to run (the run also stops after `seconds`).
    pub pods: usize,
    pub seconds: u64,
    /// ARM operation latency of every VM and scale set.
    pub arm_latency_ms: u64,
    /// Every this long on average, someone removes an identity from a VM or scale set behind
    /// MIC's back (see `behind`); never when `None`.
    pub remove_behind: Option<Duration>,
    /// Every this long on average, MIC is paused for 0.5–3 s, so that its watches lag (see
    /// `lag`); never when `None`.
    pub pause_mic: Option<Duration>,
    /// MIC's watch events arrive up to this late while its writes go through at once (see
    /// `slow_watch`); never when `None`.
    pub slow_watch: Option<Duration>,
}

fn world(latency_ms: u64) -> anyhow::Result<World> {
    let inst = |ss: &str, n: usize| {
        format!(
            "      - {{name: {ss}_{n}, node: {}-{n}, imds: \"127.0.0.1:0\"}}\n",
            &ss[3..]
        )
    };
    cluster::fleet_world(
        IDENTITIES,
        &format!(
            r#"vms:
  - {{name: vm-c, resource_group: node-rg, node: c-0, imds: "127.0.0.1:0", operation_latency_ms: {latency_ms}}}
vmss:
  - name: ss-a
    resource_group: node-rg
    operation_latency_ms: {latency_ms}
    instances:
{a0}{a1}  - name: ss-b
    resource_group: node-rg
    operation_latency_ms: {latency_ms}
    instances:
{b0}{b1}"#,
            a0 = inst("ss-a", 0),
            a1 = inst("ss-a", 1),
            b0 = inst("ss-b", 0),
            b1 = inst("ss-b", 1),
        ),
    )
}

fn provider_id(node: &str) -> String {
    let base = format!(
        "azure:///subscriptions/{}/resourceGroups/node-rg/providers/Microsoft.Compute",
        cluster::SUB
    );
    match node.split_once('-') {
        Some(("c", _)) => format!("{base}/virtualMachines/vm-c"),
        Some((ss, n)) => format!("{base}/virtualMachineScaleSets/ss-{ss}/virtualMachines/{n}"),
        None => unreachable!("node names are <set>-<n>"),
    }
}

pub async fn run(cfg: &Config, logs: &Path) -> anyhow::Result<Report> {
    println!(
        "churn: seed {} ({} pods, at most {} s, ARM latency {} ms); replay with --seed {}",
        cfg.seed, cfg.pods, cfg.seconds, cfg.arm_latency_ms, cfg.seed
    );
    let nodes: Vec<(String, String)> = NODES.iter().map(|n| ((*n).to_owned(), provider_id(n))).collect();
    let fleet = Fleet::start(world(cfg.arm_latency_ms)?, &nodes, NS, IDENTITIES, logs, "churn").await?;
    let (k8s, emulator, kubeconfig) = (&fleet.k8s, &fleet.emulator, &fleet.kubeconfig);
    let proxy = match cfg.slow_watch {
        Some(max) => Some(slow_watch::start(k8s.client.clone(), cfg.seed, max, logs).await?),
        None => None,
    };
    let mic_kubeconfig = proxy.as_ref().map_or(kubeconfig, |p| &p.kubeconfig);
    let mic = cluster::start_mic(mic_kubeconfig, emulator, &fleet.ca, &logs.join("churn-mic.log")).await?;
    let nmi_processes = fleet.start_nmis(&NODES, logs, "churn").await?;
    let nmis = Arc::new(nmi_processes.addrs.clone());
    let pods = Api::<Pod>::namespaced(k8s.client.clone(), NS);

    // The long-lived pods get their tokens first: they also prove the set-up works.
    for (i, (node, identity)) in STABLE.iter().enumerate() {
        let pod = stable(i, node, *identity);
        start_pod(&pods, &pod).await?;
        if let Err(e) = ask_as_sdk(nmis[node], ip_of(&pod), *identity).await {
            bail!("the long-lived pod stable-{i} on {node} got no token: {e}");
        }
    }
    emulator.admin().reset_counters();

    let report = Arc::new(Mutex::new(Report::default()));
    let deadline = Instant::now() + Duration::from_secs(cfg.seconds);
    let workers: Vec<_> = plan(cfg.seed, cfg.pods)
        .into_iter()
        .map(|lives| {
            let (pods, nmis, report) = (pods.clone(), nmis.clone(), report.clone());
            tokio::spawn(async move {
                for life in lives {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let outcome = live(&pods, &nmis, &life).await;
                    let mut r = report.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    record(&mut r, &life, outcome);
                }
            })
        })
        .collect();
    let (stop_meddling, stop_rx) = tokio::sync::watch::channel(false);
    let remover = match cfg.remove_behind {
        Some(mean) => {
            let op = behind::Operator::new(emulator)?;
            Some(tokio::spawn(behind::run(
                op,
                cfg.seed,
                mean,
                deadline,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let pauser = cfg
        .pause_mic
        .map(|mean| tokio::spawn(lag::run(mic.pid, cfg.seed, mean, deadline, stop_rx)));
    for w in workers {
        w.await?;
    }
    let _ = stop_meddling.send(true);
    let mic_pauses = match pauser {
        Some(p) => p.await??,
        None => 0,
    };
    let removed_behind = match remover {
        Some(r) => r.await??,
        None => Vec::new(),
    };
    let mut report = std::mem::take(&mut *report.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    report.arm_writes = emulator.admin().counters().arm_writes.values().sum();
    report.mic_pauses = mic_pauses;
    report.late_watch_events = proxy.as_ref().map_or(0, slow_watch::Proxy::late_events);
    report.removed_behind = removed_behind
        .iter()
        .map(|r| format!("id{} from {}", r.identity, r.target))
        .collect();

    // Every VM and scale set must end with exactly the long-lived pods' identities.
    let want: BTreeMap<String, BTreeSet<String>> = {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for n in NODES {
            m.entry(target_of(n).to_owned()).or_default();
        }
        for (node, identity) in STABLE {
            m.entry(target_of(node).to_owned())
                .or_default()
                .insert(cluster::identity_resource_id(identity).to_ascii_lowercase());
        }
        m
    };
    let started = Instant::now();
    loop {
        let have = identities_by_target(emulator);
        let diff: Vec<String> = want
            .iter()
            .filter(|(t, ids)| have.get(*t) != Some(ids))
            .map(|(t, ids)| {
                format!(
                    "{t} carries {:?}, needs exactly {ids:?}",
                    have.get(t).cloned().unwrap_or_default()
                )
            })
            .collect();
        if diff.is_empty() {
            break;
        }
        if started.elapsed() > SETTLE_LIMIT {
            report.end_state = diff;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And the long-lived pods are still served.
    for (i, (node, identity)) in STABLE.iter().enumerate() {
        let pod = stable(i, node, *identity);
        if let Err(e) = ask_as_sdk(nmis[node], ip_of(&pod), *identity).await {
            report
                .token_failures
                .push(format!("long-lived pod stable-{i} on {node} lost its token: {e}"));
        }
    }
    Ok(report)
}

fn target_of(node: &str) -> &'static str {
    match &node[..1] {
        "a" => "ss-a",
        "b" => "ss-b",
        _ => "vm-c",
    }
}

fn identities_by_target(emulator: &azure_emulator::RunningEmulator) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for n in emulator.admin().node_identities() {
        let name = n.resource_id.rsplit('/').next().unwrap_or_default().to_owned();
        // Both what IMDS serves and what ARM shows must agree with the need.
        let ids: BTreeSet<String> = n.effective.iter().map(|i| i.to_ascii_lowercase()).collect();
        let model: BTreeSet<String> = n.model.iter().map(|i| i.to_ascii_lowercase()).collect();
        let entry = out.entry(name).or_default();
        entry.extend(ids);
        entry.extend(model);
    }
    out
}

fn ip_of(life: &Lifecycle) -> IpAddr {
    cluster::pod_ip(40, life.n)
}

async fn start_pod(api: &Api<Pod>, life: &Lifecycle) -> anyhow::Result<()> {
    cluster::create_pod(
        api,
        &PodSpec {
            name: life.name.clone(),
            node: life.node.to_owned(),
            label: Some(match life.identity {
                Some(i) => format!("app-{i}"),
                None => "nothing-selects-this".to_owned(),
            }),
            ip: Some(ip_of(life)),
        },
    )
    .await
}

/// How one pod's token request ended.
enum Outcome {
    Token { after: Duration },
    Refused(String),
    Broken(anyhow::Error),
}

async fn live(api: &Api<Pod>, nmis: &BTreeMap<&'static str, SocketAddr>, life: &Lifecycle) -> Outcome {
    if let Err(e) = start_pod(api, life).await {
        return Outcome::Broken(e);
    }
    let running = Instant::now();
    let nmi = nmis[life.node];
    let outcome = match life.identity {
        Some(identity) => match ask_as_sdk(nmi, ip_of(life), identity).await {
            Ok(()) => Outcome::Token {
                after: running.elapsed(),
            },
            Err(e) => Outcome::Refused(e),
        },
        // A pod bound to nothing: one request is enough to see whether it is handed a token.
        None => match ask(nmi, ip_of(life), None).await {
            Ok(Answer { status: 200, .. }) => Outcome::Token {
                after: running.elapsed(),
            },
            Ok(a) => Outcome::Refused(format!("{}", a.status)),
            Err(e) => Outcome::Refused(format!("transport: {e}")),
        },
    };
    tokio::time::sleep(life.extra_life).await;
    if let Err(e) = cluster::delete_pod(api, &life.name).await {
        return Outcome::Broken(e);
    }
    outcome
}

fn record(r: &mut Report, life: &Lifecycle, outcome: Outcome) {
    r.pods += 1;
    let who = format!(
        "{} (#{}) on {} ({:?})",
        life.name,
        life.n,
        life.node,
        life.identity.map(|i| format!("id{i}"))
    );
    match (life.identity, outcome) {
        (Some(_), Outcome::Token { after }) => {
            r.bound_pods += 1;
            r.first_token_us
                .push(after.as_micros().min(u128::from(u32::MAX)) as u32);
        }
        (Some(_), Outcome::Refused(why)) => {
            r.bound_pods += 1;
            r.token_failures.push(format!("{who}: {why}"));
        }
        (None, Outcome::Token { .. }) => r.unbound_tokens.push(who),
        (None, Outcome::Refused(_)) => {}
        (_, Outcome::Broken(e)) => r.token_failures.push(format!("{who}: the harness failed: {e:#}")),
    }
}

#[cfg(test)]
mod tests;
