//! For the tests that run the `nmi` binary: its command lines (on loopback ports, or with its
//! rules in a node's network namespace), waiting for it, the walkthrough's identity bound to pods,
//! and what the emulator's IMDS saw.

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use azure_emulator::{EndpointKind, RunningEmulator};
use fixtures::ids::{APP_IDENTITY_CLIENT, resource_id};
use kube::Client;
use serde_json::json;
use testbed::netns::Netns;

use super::create_in;

/// `nmi` on loopback, without iptables rules (the netns tests have them): tokens on `port`, probes
/// on `probe`, metrics on `metrics`, the emulator's IMDS of the node at `imds`.
pub fn nmi_on_loopback(
    node: &str,
    kubeconfig: &Path,
    imds: SocketAddr,
    port: u16,
    probe: u16,
    metrics: u16,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nmi"));
    cmd.args([
        format!("--node={node}"),
        format!("--nmi-port={port}"),
        "--ops-listen-address=127.0.0.1".into(),
        format!("--http-probe-port={probe}"),
        format!("--prometheus-port={metrics}"),
        format!("--metadata-ip={}", imds.ip()),
        format!("--metadata-port={}", imds.port()),
        "--operation-mode=managed".into(),
        "--manage-iptables=false".into(),
        format!("--kubeconfig={}", kubeconfig.display()),
    ]);
    cmd
}

/// `nmi` in the node namespace `nn`, with its rules and default ports; it checks its rules every
/// second, so a test sees a repair soon.
pub fn nmi_in(nn: &Netns, node: &str, kubeconfig: &Path) -> Command {
    let mut cmd = nn.command(env!("CARGO_BIN_EXE_nmi"));
    cmd.args([
        format!("--node={node}"),
        format!("--kubeconfig={}", kubeconfig.display()),
        "--operation-mode=managed".into(),
        "--ops-listen-address=127.0.0.1".into(),
        "--ipt-update-interval-sec=1".into(),
    ]);
    cmd
}

/// NMI's readiness probe (default port) answers 200 in the node namespace `nn`.
pub fn nmi_ready_in(nn: &Netns) -> bool {
    nn.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://127.0.0.1:8085/readyz",
    ])
    .stdout
        == b"200"
}

/// Takes the jump to NMI's chain out of the node namespace's PREROUTING, as a tamperer would
/// (NMI puts it back at its next check).
pub fn unhook_nmi(nn: &Netns) {
    nn.ok(&[
        "iptables",
        "-w",
        "-t",
        "nat",
        "-D",
        "PREROUTING",
        "-j",
        "aad-metadata",
    ]);
}

/// Polls `cond` for up to `secs` seconds; on timeout, fails with `log` (NMI's, say).
pub fn wait(what: &str, secs: u64, mut cond: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The walkthrough's `app-identity` (of [`super::app_identity_world`]) in `ns`, and a binding `b`
/// of it to the pods labelled `aadpodidbinding: app`.
pub async fn bind_app_identity(client: &Client, ns: &str) {
    let _: api::AzureIdentity = create_in(
        client,
        ns,
        json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
               "metadata": {"name": "app-identity"},
               "spec": {"type": 0, "clientID": APP_IDENTITY_CLIENT, "resourceID": resource_id("app-identity")}}),
    )
    .await;
    let _: api::AzureIdentityBinding = create_in(
        client,
        ns,
        json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
               "metadata": {"name": "b"}, "spec": {"azureIdentity": "app-identity", "selector": "app"}}),
    )
    .await;
}

/// How many requests the emulator's IMDS has answered so far (for any node).
pub fn imds_calls(emulator: &RunningEmulator) -> usize {
    emulator
        .admin()
        .calls()
        .iter()
        .filter(|c| c.endpoint == EndpointKind::Imds)
        .count()
}
