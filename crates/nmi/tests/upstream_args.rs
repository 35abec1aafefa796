//! Upstream's deployments start our `nmi` (issue 14 §2): the binary runs with the exact argument
//! list and environment of upstream v1.8.17's `deploy/infra/deployment-rbac.yaml`, its
//! `managed-mode-deployment.yaml`, and its Helm chart with every optional argument on (and with an
//! old NMI tag, which adds `--host-ip`), against the real test kube-apiserver and the Azure
//! emulator's IMDS for the node. Each gets past start-up, installs its interception rules, serves
//! the liveness probe upstream's manifest points at, `/readyz` and `/metrics`, and answers on the
//! pod-facing port as its flags say; flags it does differently are one warning line each. The
//! lists are `examples/upstream-args/*.pod`; each container runs in a network namespace of its own
//! (see `examples/upstream-args/kubelet.rs`), so the rules never touch the root namespace.

mod common;
#[path = "../../../examples/upstream-args/kubelet.rs"]
mod kubelet;

use std::net::SocketAddr;

use azure_emulator::{Emulator, RunningEmulator};
use kubelet::{Harness, Pod, PodMeta};
use testbed::ApiServer;

/// `/etc/default/kubelet` of an AKS node with Azure CNI, which upstream's NMI read for kubenet.
const KUBELET_DEFAULTS_CNI: &str =
    "KUBELET_FLAGS=--address=0.0.0.0 --network-plugin=cni --max-pods=30 --node-labels=agentpool=nodepool1\n";
const KUBELET_DEFAULTS_KUBENET: &str =
    "KUBELET_FLAGS=--address=0.0.0.0 --network-plugin=kubenet --max-pods=110\n";

const INSTANCE: &str = "/metadata/instance/compute?api-version=2021-02-01";
const TOKEN: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://storage.azure.com/";

/// What one case expects.
struct Expect {
    prometheus_port: u16,
    /// `/metadata/instance…` blocked (`--block-instance-metadata`), else passed to the emulator's IMDS.
    instance_blocked: bool,
    /// The start-up warnings, one line each.
    warnings: &'static [&'static str],
}

struct Node {
    server: &'static ApiServer,
    emulator: RunningEmulator,
    meta: PodMeta,
}

async fn node() -> Node {
    kubelet::require_prerequisites();
    let server = ApiServer::shared();
    let (_client, ns) = server.namespace("upstream-nmi").await.unwrap();
    let node = format!("aks-{ns}");
    let emulator = Emulator::start(common::app_identity_world(&node)).await.unwrap();
    let meta = PodMeta {
        name: format!("nmi-{ns}"),
        namespace: ns,
        node,
        ip: "10.240.0.4".to_owned(),
    };
    Node {
        server,
        emulator,
        meta,
    }
}

fn start(node: &Node, case: &str, kubelet_defaults: &str) -> Pod {
    let spec = kubelet::spec(case);
    let api = SocketAddr::from(([127, 0, 0, 1], node.server.port()));
    let imds = node.emulator.imds_addr(&node.meta.node).unwrap();
    Pod::start(
        env!("CARGO_BIN_EXE_nmi").as_ref(),
        &spec,
        &node.meta,
        Harness {
            files: vec![("/etc/default/kubelet", kubelet_defaults.to_owned())],
            env: vec![("KUBECONFIG", node.server.kubeconfig().display().to_string())],
            args: Vec::new(),
            forwards: vec![(api, api), ("169.254.169.254:80".parse().unwrap(), imds)],
        },
    )
}

async fn starts_and_serves(case: &str, expect: Expect) {
    let node = node().await;
    let spec = kubelet::spec(case);
    let (probe_port, probe_path) = spec.liveness.clone();
    let pod = start(&node, case, KUBELET_DEFAULTS_CNI);

    pod.wait_until("upstream's liveness probe passes", 60, || {
        pod.get(probe_port, &probe_path, &[]) == Some((200, "Active".to_owned()))
    });
    pod.wait_until("NMI is ready (rules in place, caches synced)", 60, || {
        pod.get(probe_port, "/readyz", &[]).map(|r| r.0) == Some(200)
    });
    let rules = pod.exec(&["iptables", "-w", "-t", "nat", "-S", "aad-metadata"]);
    assert!(
        String::from_utf8_lossy(&rules.stdout).contains("--to-destination 127.0.0.1:2579"),
        "{case}: the interception rules: {}",
        String::from_utf8_lossy(&rules.stderr)
    );
    let metrics = pod.get(expect.prometheus_port, "/metrics", &[]).unwrap();
    assert_eq!(metrics.0, 200, "{case}: /metrics");

    // The pod-facing port, as pods reach it through the DNAT: upstream's defaults still apply.
    let no_header = pod.get(2579, TOKEN, &[]).unwrap();
    assert_eq!(
        no_header.0, 400,
        "{case}: --metadata-header-required: {no_header:?}"
    );
    let instance = pod.get(2579, INSTANCE, &["Metadata: true"]).unwrap();
    if expect.instance_blocked {
        assert_eq!(instance.0, 403, "{case}: --block-instance-metadata: {instance:?}");
    } else {
        assert_eq!(instance.0, 200, "{case}: passed through to IMDS: {instance:?}");
        assert!(
            instance.1.contains(&node.meta.node),
            "{case}: IMDS's answer {instance:?}"
        );
    }

    let log = pod.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("upstream flag ")).collect();
    assert_eq!(warnings.len(), expect.warnings.len(), "{case}: warnings:\n{log}");
    for (line, flag) in warnings.iter().zip(expect.warnings) {
        assert!(line.contains(&format!("upstream flag {flag}:")), "{case}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rbac_yaml_starts_nmi() {
    let expect = Expect {
        prometheus_port: 9090,
        instance_blocked: false,
        warnings: &[],
    };
    starts_and_serves("deployment-rbac.nmi", expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_mode_deployment_yaml_starts_nmi() {
    let expect = Expect {
        prometheus_port: 9090,
        instance_blocked: false,
        warnings: &[],
    };
    starts_and_serves("managed-mode.nmi", expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_with_every_optional_argument_starts_nmi() {
    let expect = Expect {
        prometheus_port: 9091,
        instance_blocked: true,
        warnings: &[
            "--MICNamespace",
            "--retry-attempts-for-created/--retry-attempts-for-assigned/--find-identity-retry-interval",
            "--custom-user-agent",
        ],
    };
    starts_and_serves("chart-all-args.nmi", expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_with_an_old_nmi_tag_starts_nmi() {
    let expect = Expect {
        prometheus_port: 9090,
        instance_blocked: false,
        warnings: &["--forceNamespaced=false / FORCENAMESPACED", "--host-ip"],
    };
    starts_and_serves("chart-legacy-tag.nmi", expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kubenet_nmi_refuses_to_start_as_upstream_did() {
    let node = node().await;
    let pod = start(&node, "deployment-rbac.nmi", KUBELET_DEFAULTS_KUBENET);
    pod.wait_until("NMI exits", 30, || !pod.is_running());
    let log = pod.log();
    assert!(
        log.contains("--network-plugin=kubenet") && log.contains("--allow-network-plugin-kubenet"),
        "{log}"
    );
    let rules = pod.exec(&["iptables", "-w", "-t", "nat", "-S", "aad-metadata"]);
    assert!(!rules.status.success(), "no rules were installed");
}
