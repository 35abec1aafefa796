//! The `nmi` binary as a DaemonSet would run it (minus iptables, which `tests/netns.rs` covers):
//! flags, probes, metrics, a token through the emulator's IMDS, the audit line, graceful shutdown.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use azure_emulator::Emulator;
use fixtures::ids::APP_IDENTITY_CLIENT as CLIENT;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use testbed::{ApiServer, Supervised};

mod common;

use common::free_port;

async fn eventually<F: Future<Output = bool>>(what: &str, nmi: &Supervised, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; NMI's log:\n{}",
            nmi.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_binary_serves_tokens_probes_and_metrics_and_stops_gracefully() {
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("nmi-bin").await.unwrap();
    let node = format!("node-{ns}");
    let world = common::app_identity_world(&node);
    let emulator = Emulator::start(world).await.unwrap();
    let imds = emulator.imds_addr(&node).unwrap();
    let (port, probe, metrics) = (free_port(), free_port(), free_port());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = common::nmi_on_loopback(&node, server.kubeconfig(), imds, port, probe, metrics);
    cmd.arg("--log-format=json");
    let mut nmi = Supervised::spawn_with("nmi", &cmd, log.path()).unwrap();
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            match http.get(url).send().await {
                Ok(r) => Some((r.status().as_u16(), r.text().await.unwrap_or_default())),
                Err(_) => None,
            }
        }
    };
    eventually("NMI is ready", &nmi, || async {
        get(format!("http://127.0.0.1:{probe}/readyz")).await.map(|r| r.0) == Some(200)
    })
    .await;
    assert_eq!(
        get(format!("http://127.0.0.1:{probe}/healthz")).await,
        Some((200, "Active".into()))
    );

    common::bind_app_identity(&client, &ns).await;
    let _: Pod = common::create_in(
        &client,
        &ns,
        json!({"metadata": {"name": "p", "labels": {"aadpodidbinding": "app"}},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "c"}]}}),
    )
    .await;
    Api::<Pod>::namespaced(client.clone(), &ns)
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "127.0.20.1"}})),
        )
        .await
        .unwrap();

    let pod_http = reqwest::Client::builder()
        .local_address("127.0.20.1".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let url = format!(
        "http://{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://storage.azure.com/",
        SocketAddr::from(([127, 0, 0, 1], port))
    );
    let probe_answer = pod_http.get(&url).send().await.unwrap();
    assert_eq!(probe_answer.status(), 400, "the SDK probe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let r = pod_http
            .get(&url)
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.json::<Value>().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no token: {}\n{}",
            r.text().await.unwrap(),
            nmi.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(token["client_id"], CLIENT);
    let access_token = token["access_token"].as_str().unwrap().to_owned();

    let text = get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap()
        .1;
    assert!(
        text.contains("aadpodidentity_nmi_tokens_issued_total{cache_hit=\"false\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("aadpodidentity_imds_operations_duration_seconds_count{status_code=\"200\"} 1"),
        "{text}"
    );

    // SIGTERM stops NMI by itself (exit 0), not the SIGKILL that follows an unheeded one.
    nmi.stop(Duration::from_secs(30));
    assert!(!nmi.is_running());
    assert_eq!(
        nmi.exit_code(),
        Some(0),
        "NMI exits on SIGTERM; its log:\n{}",
        nmi.log_tail()
    );
    let logged = std::fs::read_to_string(log.path()).unwrap();
    let audit = logged
        .lines()
        .find(|l| l.contains("token issued"))
        .unwrap_or_else(|| panic!("no audit line in:\n{logged}"));
    for field in [
        "\"pod\":\"p\"",
        &format!("\"namespace\":\"{ns}\""),
        "\"cache_hit\":false",
        "127.0.20.1",
    ] {
        assert!(
            audit.contains(field),
            "{field} missing from the audit line {audit}"
        );
    }
    assert!(
        !logged.contains(&access_token),
        "token text never reaches the log"
    );
    assert!(
        logged.contains("iptables interception rules are left in place"),
        "{logged}"
    );
}
