//! `bench fed` (issue 17): federated mode with the `nmi` binary of this profile, a private
//! kube-apiserver (its service-account issuer, TokenRequest, OIDC discovery) and the emulator's
//! Entra, whose answers are delayed by `--entra-latency-ms` (default [`ENTRA_LATENCY_MS`]).
//!
//! 1. First token: pods are started one after another, each running as a service account of its
//!    own (so that every one needs its own TokenRequest and exchange, as a new workload does);
//!    the time from the pod's status becoming Running to its first token, the client asking at
//!    once and retrying as the SDKs do.
//! 2. Cached tokens: closed-loop requests from [`PODS`] federated pods, and the same load from as
//!    many pods in standard mode (bound, identity on the VM) through the same NMI process, for
//!    the ratio.

use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{Context, bail};
use azure_emulator::{
    Emulator, EndpointKind, Fault, FaultAction, World,
    world::{FederatedCredentialSpec, OidcIssuerSpec},
};
use bench::{load::percentile_ms, mem::round};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::cluster::{self, Cluster, PodSpec, pod_ip, token_path};

/// A realistic Entra token-endpoint latency from inside an Azure region: client-credentials
/// grants commonly take 50-150 ms (MSAL's telemetry and users' traces put the median near
/// 100 ms); the upper middle of that range.
pub const ENTRA_LATENCY_MS: u64 = 100;
const NODE: &str = "fed-node";
const NS: &str = "bench-fed";
/// Federated pods of the cached run, and standard pods to compare with.
const PODS: usize = 100;
/// Pods of the first-token run, each with a service account of its own.
const FIRST_TOKEN_PODS: usize = 100;
/// Azure allows 20 federated credentials per identity.
const CREDENTIALS_PER_IDENTITY: usize = 20;
const RESOURCE: &str = "https://storage.azure.com/";
const USE: &str = "azure.workload.identity/use";
const CLIENT_ID: &str = "azure.workload.identity/client-id";

/// Client id of federated identity `n` (on no VM).
fn fed_client(n: usize) -> String {
    format!("3f5a3c4d-0000-4000-8000-{n:012x}")
}

fn fed_principal(n: usize) -> String {
    format!("8b1e7d2a-0000-4000-8000-{n:012x}")
}

/// The service account of first-token pod `i` (`app` is the cached run's).
fn account(i: usize) -> String {
    format!("sa-{i}")
}

fn world(issuer: &str, ca_file: &Path) -> anyhow::Result<World> {
    let mut w = World::from_yaml(&format!(
        r#"
tenant_id: {}
subscriptions:
  - id: {}
    resource_groups: [node-rg, identity-rg]
identities:
{}
vms:
  - {{name: {NODE}, resource_group: node-rg, node: {NODE}, user_assigned: [id0]}}
tls:
  enabled: false
"#,
        cluster::TENANT,
        cluster::SUB,
        cluster::identities_yaml(1),
    ))?;
    w.imds.rate_limit = false;
    w.oidc_issuers.push(OidcIssuerSpec {
        issuer: issuer.to_owned(),
        jwks: None,
        jwks_file: None,
        ca_file: Some(ca_file.to_owned()),
    });
    let credential = |sa: &str| FederatedCredentialSpec {
        issuer: issuer.to_owned(),
        subject: format!("system:serviceaccount:{NS}:{sa}"),
        audience: "api://AzureADTokenExchange".into(),
    };
    // Identity 0 trusts `app`; identities 1.. trust the first-token pods' accounts, 20 each.
    let mut subjects: Vec<Vec<String>> = vec![vec!["app".into()]];
    for chunk in (0..FIRST_TOKEN_PODS)
        .map(account)
        .collect::<Vec<_>>()
        .chunks(CREDENTIALS_PER_IDENTITY)
    {
        subjects.push(chunk.to_vec());
    }
    for (n, sas) in subjects.iter().enumerate() {
        w.identities.push(azure_emulator::world::IdentitySpec {
            name: format!("fed{n}"),
            subscription: None,
            resource_group: "identity-rg".into(),
            client_id: fed_client(n),
            principal_id: fed_principal(n),
            may_assign: vec![],
            federated_credentials: sas.iter().map(|s| credential(s)).collect(),
            tags: Default::default(),
        });
    }
    Ok(w)
}

/// The identity first-token pod `i`'s account names.
fn identity_of(i: usize) -> usize {
    1 + i / CREDENTIALS_PER_IDENTITY
}

async fn service_account(k8s: &Cluster, name: &str, client: &str) -> anyhow::Result<()> {
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {CLIENT_ID: client}}
    }))?;
    Api::<ServiceAccount>::namespaced(k8s.client.clone(), NS)
        .create(&PostParams::default(), &sa)
        .await?;
    Ok(())
}

/// A federated pod running as `sa`, Running at `ip`; returns when its status says so.
async fn federated_pod(k8s: &Cluster, name: &str, sa: &str, ip: IpAddr) -> anyhow::Result<()> {
    let api = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(k8s.client.clone(), NS);
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {USE: "true"}},
        "spec": {"nodeName": NODE, "serviceAccountName": sa, "containers": [{"name": "app", "image": "app"}]}
    }))?;
    api.create(&PostParams::default(), &pod).await?;
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]}})),
    )
    .await?;
    Ok(())
}

/// The default-identity token path (the walkthrough's code names no identity).
fn default_path() -> String {
    format!(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
        form_urlencoded::byte_serialize(RESOURCE.as_bytes()).collect::<String>()
    )
}

pub async fn run(
    seconds: u64,
    entra_latency_ms: u64,
    summary: &Path,
) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let logs = cluster::log_dir(summary)?;
    let k8s = Cluster::start().await?;
    k8s.namespace(NS).await?;
    let emulator = Emulator::start(world(&k8s.server.issuer(), &k8s.server.ca_file())?).await?;
    let imds = emulator.imds_addr(NODE).context("the node has an IMDS")?;
    let tenant = format!("--federated-tenant-id={}", cluster::TENANT);
    let entra = format!("--entra-endpoint={}/", emulator.entra_url());
    let (nmi, nmi_addr) = cluster::start_nmi(
        k8s.server.kubeconfig(),
        NODE,
        imds,
        &["--pod-rate-limit=0", &tenant, &entra],
        &logs.join("nmi-fed.log"),
        None,
    )
    .await?;
    emulator.admin().inject(Fault {
        endpoint: EndpointKind::Entra,
        target: None,
        action: FaultAction::Latency { ms: entra_latency_ms },
        count: None,
        rate: None,
    });

    // 1. First token, pod after pod.
    for i in 0..FIRST_TOKEN_PODS {
        service_account(&k8s, &account(i), &fed_client(identity_of(i))).await?;
    }
    let mut first_us: Vec<u32> = Vec::with_capacity(FIRST_TOKEN_PODS);
    for i in 0..FIRST_TOKEN_PODS {
        let ip = pod_ip(2, i);
        let http = reqwest::Client::builder()
            .no_proxy()
            .local_address(ip)
            .timeout(Duration::from_secs(30))
            .build()?;
        federated_pod(&k8s, &format!("first-{i}"), &account(i), ip).await?;
        let running = std::time::Instant::now();
        let url = format!("http://{nmi_addr}{}", default_path());
        loop {
            let r = http.get(&url).header("Metadata", "true").send().await?;
            let status = r.status().as_u16();
            if status == 200 {
                break;
            }
            let body = r.text().await.unwrap_or_default();
            // NMI holds a request for a pod it has not seen yet (`--pod-wait`); a 404 after that
            // is retried at once, as a fresh pod's SDK retries.
            if status != 404 || running.elapsed() > Duration::from_secs(30) {
                bail!(
                    "first-{i} got {status}: {body}\nNMI's log:\n{}",
                    nmi.process.log_tail()
                );
            }
        }
        first_us.push(running.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    first_us.sort_unstable();
    let exchanges = emulator
        .admin()
        .calls()
        .iter()
        .filter(|c| c.endpoint == EndpointKind::Entra && c.path.contains("/oauth2/v2.0/token"))
        .count();
    println!(
        "fed first token: {FIRST_TOKEN_PODS} pods, {exchanges} exchanges, p50 {:.1} ms, p99 {:.1} ms",
        percentile_ms(&first_us, 0.50),
        percentile_ms(&first_us, 0.99)
    );

    // 2. Cached: federated pods of `app`, and standard pods bound to identity 0 on the VM.
    service_account(&k8s, "app", &fed_client(0)).await?;
    let fed_ips: Vec<IpAddr> = (0..PODS).map(|i| pod_ip(3, i)).collect();
    for (i, ip) in fed_ips.iter().enumerate() {
        federated_pod(&k8s, &format!("fed-{i}"), "app", *ip).await?;
    }
    k8s.identity_and_binding(NS, 0, "std").await?;
    let std_ips: Vec<IpAddr> = (0..PODS).map(|i| pod_ip(4, i)).collect();
    k8s.pods(
        NS,
        (0..PODS)
            .map(|i| PodSpec {
                name: format!("std-{i}"),
                node: NODE.into(),
                label: Some("std".into()),
                ip: Some(std_ips[i]),
            })
            .collect(),
    )
    .await?;
    let pairs: Vec<(String, usize)> = (0..PODS).map(|i| (format!("std-{i}"), 0)).collect();
    k8s.assigned(NS, NODE, &pairs).await?;
    let load = |ips: &[IpAddr], path: String| bench::LoadSpec {
        paths: vec![path],
        local_addrs: ips.to_vec(),
        ..bench::LoadSpec::new(nmi_addr, "", PODS, Duration::from_secs(seconds))
    };
    let fed_path = default_path();
    let std_path = token_path(0, RESOURCE);
    for (ips, path) in [(&fed_ips, &fed_path), (&std_ips, &std_path)] {
        served(nmi_addr, ips, path).await?;
    }
    let fed = bench::run(load(&fed_ips, fed_path)).await?;
    println!("fed cached: {fed:?}");
    let std = bench::run(load(&std_ips, std_path)).await?;
    println!("standard cached, same NMI: {std:?}");
    if [&fed, &std].iter().any(|r| r.non_2xx + r.errors > 0) {
        bail!(
            "failed requests: {fed:?} {std:?}; NMI's log:\n{}",
            nmi.process.log_tail()
        );
    }
    drop(nmi);
    Ok(vec![
        ("fed_entra_latency_ms", json!(entra_latency_ms)),
        (
            "fed_first_token_p50_ms",
            json!(round(percentile_ms(&first_us, 0.50), 1)),
        ),
        (
            "fed_first_token_p99_ms",
            json!(round(percentile_ms(&first_us, 0.99), 1)),
        ),
        ("fed_cached_rps", json!(round(fed.requests_per_sec, 0))),
        ("fed_cached_p99_ms", json!(fed.p99_ms)),
        ("fed_standard_cached_rps", json!(round(std.requests_per_sec, 0))),
        (
            "fed_cached_vs_standard",
            json!(round(fed.requests_per_sec / std.requests_per_sec.max(1.0), 3)),
        ),
    ])
}

/// Every pod gets its token once before measuring, so the cached run measures cached answers.
async fn served(nmi: std::net::SocketAddr, ips: &[IpAddr], path: &str) -> anyhow::Result<()> {
    for ip in ips {
        let http = reqwest::Client::builder().no_proxy().local_address(*ip).build()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = http
                .get(format!("http://{nmi}{path}"))
                .header("Metadata", "true")
                .send()
                .await?;
            if r.status().is_success() {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "pod {ip} asked {path}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
