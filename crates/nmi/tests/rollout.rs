//! An update of NMI without a gap (issue 22), with two real `nmi` processes in one node network
//! namespace, as the DaemonSet's old pod and its surge pod share a node's host network: a pod asks
//! for a token every 50 ms while NMI-2 starts beside NMI-1 and NMI-1 then gets SIGTERM once the
//! chart's readiness probe (`nmi probe` on the pod's own socket) finds NMI-2 ready, as the
//! DaemonSet does. Every ask is answered, with the pod's own identity, and none reaches IMDS
//! directly.
//!
//! Needs what tests/netns.rs needs (root, `ip`, `iptables`, `socat`, `curl`); run it under
//! `flock /tmp/pod-identity-netns.lock`.

mod common;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use azure_emulator::{Emulator, EndpointKind};
use common::wait;
use fixtures::ids::APP_IDENTITY_PRINCIPAL as PRINCIPAL;
use serde_json::{Value, json};
use testbed::{
    ApiServer, Supervised,
    netns::{Netns, join, require_prerequisites},
};

/// A marker only the pod's asks carry (NMI asks IMDS with its own query), to tell whether one of
/// them reached the emulator's IMDS, the node's real one here.
const MARKER: &str = "rollout-probe=1";

/// One ask: a new connection, as an SDK's first request. `Ok(body)` for a 200, `Err(why)` else.
fn ask(pod: &Netns) -> Result<String, String> {
    let url = format!(
        "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01\
         &resource=https://storage.azure.com/&{MARKER}"
    );
    let out = pod.exec(&[
        "curl",
        "-s",
        "-S",
        "-m",
        "5",
        "-w",
        "\n%{http_code}",
        "-H",
        "Metadata: true",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("curl: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    match text.rsplit_once('\n') {
        Some((body, "200")) => Ok(body.to_owned()),
        _ => Err(text),
    }
}

/// The object id of the token in a token answer.
fn oid(body: &str) -> String {
    let answer: Value = serde_json::from_str(body).unwrap();
    let payload = answer["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["oid"].as_str().unwrap().to_owned()
}

fn log_of(nmi: &Supervised) -> String {
    std::fs::read_to_string(nmi.log_path()).unwrap_or_default()
}

/// NMI's log says its pod-facing listener is bound (on the default port).
fn serves_pods(nmi: &Supervised) -> bool {
    log_of(nmi)
        .lines()
        .any(|l| l.contains("listening") && l.contains(":2579"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_nmi_takes_over_and_the_first_drains_without_a_refused_ask() {
    require_prerequisites();
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("nmi-rollout").await.unwrap();
    let node = format!("node-{ns}");
    let emulator = Emulator::start(common::app_identity_world(&node)).await.unwrap();
    let imds = emulator.imds_addr(&node).unwrap();

    // A node and a pod namespace (deleted on drop, when the test fails too).
    let id = std::process::id() % 100_000;
    let nn = Netns::create(&format!("nmi-rn{id}"));
    let pod = Netns::create(&format!("nmi-ra{id}"));
    join(&nn, &pod, &format!("nmir{id}"), "10.200.3");
    nn.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
    nn.ok(&["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"]);
    let dir = tempfile::tempdir().unwrap();
    let _fwd_api = nn.forwarder(
        &format!("127.0.0.1:{}", server.port()),
        &format!("127.0.0.1:{}", server.port()),
        &dir.path().join("fwd-api.log"),
    );
    let _fwd_imds = nn.forwarder(
        "169.254.169.254:80",
        &imds.to_string(),
        &dir.path().join("fwd-imds.log"),
    );
    common::bind_app_identity(&client, &ns).await;
    common::running_pod(
        &client,
        &ns,
        "a",
        &node,
        "10.200.3.2",
        json!({"aadpodidbinding": "app"}),
        false,
    )
    .await;
    let marked_imds_calls = || {
        emulator
            .admin()
            .calls()
            .iter()
            .filter(|c| c.endpoint == EndpointKind::Imds && c.path.contains(MARKER))
            .count()
    };
    // Without the rules the pod's ask reaches IMDS, and IMDS's log shows it by the marker.
    assert!(ask(&pod).is_ok(), "without the rules the pod reaches IMDS");
    assert_eq!(marked_imds_calls(), 1);

    // Each NMI answers its readiness on a socket of its own, as each pod's emptyDir holds one.
    let socket = |n: u32| dir.path().join(format!("nmi-{n}.sock"));
    let nmi_cmd = |n: u32| {
        let mut cmd = common::nmi_in(&nn, &node, server.kubeconfig());
        cmd.arg(format!("--ready-socket={}", socket(n).display()));
        cmd
    };
    // The chart's readiness probe, run as the kubelet runs it: `nmi probe` in the pod.
    let kubelet_probe = |n: u32| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nmi"))
            .arg("probe")
            .arg(format!("--ready-socket={}", socket(n).display()))
            .output()
            .unwrap()
            .status
            .success()
    };
    let mut nmi1 = Supervised::spawn_with("nmi-1", &nmi_cmd(1), &dir.path().join("nmi-1.log")).unwrap();
    wait(
        "NMI-1 is ready",
        30,
        || common::nmi_ready_in(&nn),
        || log_of(&nmi1),
    );
    wait("NMI-1 serves pods", 10, || serves_pods(&nmi1), || log_of(&nmi1));
    wait("NMI-1's pod is Ready", 10, || kubelet_probe(1), || log_of(&nmi1));

    let stop = AtomicBool::new(false);
    let (asks, joined, stopped) = std::thread::scope(|s| {
        let asker = s.spawn(|| {
            let mut asks = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = ask(&pod);
                asks.push((started, Instant::now(), answer));
                std::thread::sleep(Duration::from_millis(50));
            }
            asks
        });
        std::thread::sleep(Duration::from_secs(1));

        // The kubelet probes the new pod from its container's start, before its NMI has bound
        // anything. The probe port, shared by every NMI of the node, still reaches NMI-1 then, and
        // NMI-1 says ready: a probe there would make the new pod Ready, and the DaemonSet would
        // stop NMI-1 before NMI-2 serves. The new pod's own socket does not exist yet: not Ready.
        assert!(
            common::nmi_ready_in(&nn),
            "the shared probe port answers ready for NMI-1"
        );
        assert!(!kubelet_probe(2), "the new pod is not Ready before its NMI runs");

        // NMI-2 starts beside NMI-1 and joins the pod-facing group once it is ready. NMI-1 is
        // stopped when the kubelet's probe finds the new pod Ready, as the DaemonSet does.
        let mut nmi2 = Supervised::spawn_with("nmi-2", &nmi_cmd(2), &dir.path().join("nmi-2.log")).unwrap();
        wait("NMI-2's pod is Ready", 30, || kubelet_probe(2), || log_of(&nmi2));
        assert!(
            serves_pods(&nmi2),
            "NMI-2 serves pods by the time its pod is Ready:\n{}",
            log_of(&nmi2)
        );
        let joined = Instant::now();
        assert!(
            log_of(&nmi2).contains("another NMI serves pods on this port: joining once ready"),
            "NMI-2 saw NMI-1 and waited to be ready:\n{}",
            log_of(&nmi2)
        );
        std::thread::sleep(Duration::from_secs(1));

        // NMI-1 gets SIGTERM, drains and exits; NMI-2 serves alone.
        nmi1.stop(Duration::from_secs(20));
        let stopped = Instant::now();
        assert_eq!(
            nmi1.exit_code(),
            Some(0),
            "NMI-1 stopped on SIGTERM:\n{}",
            log_of(&nmi1)
        );
        assert!(
            log_of(&nmi1).contains("stopped accepting pods' connections"),
            "NMI-1 drained:\n{}",
            log_of(&nmi1)
        );
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        let asks = asker.join().unwrap();
        assert!(nmi2.is_running(), "{}", log_of(&nmi2));
        nmi2.stop(Duration::from_secs(10));
        (asks, joined, stopped)
    });

    let failed: Vec<_> = asks.iter().filter(|(_, _, a)| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} asks failed across the rollout: {failed:?}\nNMI-1:\n{}",
        failed.len(),
        asks.len(),
        log_of(&nmi1)
    );
    for (_, _, answer) in &asks {
        assert_eq!(oid(answer.as_ref().unwrap()), PRINCIPAL, "the pod's own identity");
    }
    // The pod asked throughout, however slow the machine: some ask was in flight before NMI-2
    // joined, while both served, and after NMI-1 had gone (a count of asks would measure the
    // machine's speed: 37 in 3 s beside `make bench`).
    let asking_during = |from: Instant, to: Instant| asks.iter().any(|(s, e, _)| *s < to && *e > from);
    let first = asks.first().map(|a| a.0).expect("the pod asked");
    assert!(asking_during(first, joined), "asks before NMI-2 joined");
    assert!(asking_during(joined, stopped), "asks while both NMIs served");
    assert!(
        asking_during(stopped, stopped + Duration::from_millis(900)),
        "asks after NMI-1 stopped"
    );
    assert_eq!(
        marked_imds_calls(),
        1,
        "no ask of the pod reached IMDS once NMI ran"
    );
    eprintln!("rollout: {} asks, none failed", asks.len());
}
