//! What the webhook tests share: certificates, the in-process server, the chart's
//! MutatingWebhookConfiguration registered against the test apiserver, and pods.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use azure_emulator::ca::{Issued, TestCa};
use base64::Engine as _;
use k8s_openapi::api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use mic::{
    metrics::Metrics,
    webhook::{RunningWebhook, WebhookConfig, tls},
};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, SanType};
use serde_json::{Value, json};

pub const GATE: &str = api::v1::IDENTITY_READY_CONDITION;
/// The release namespace the chart is rendered for (not a test namespace).
const RELEASE_NS: &str = "pod-identity-system";

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A serving certificate for 127.0.0.1, where the apiserver dials the test's webhook.
pub fn loopback_cert(ca: &TestCa) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, "webhook");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    ca.sign(params).expect("signed")
}

/// Writes a pair as a mounted `kubernetes.io/tls` Secret would hold it. The key goes first, the
/// certificate last, each by rename: the server never reads a half-written file.
pub fn write_pair(dir: &Path, cert: &str, key: &str) {
    for (name, pem) in [(tls::KEY_FILE, key), (tls::CERT_FILE, cert)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, pem).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

/// The webhook on a free loopback port, reading its certificate from `dir` every 100 ms.
pub async fn start(dir: &Path, metrics: Arc<Metrics>) -> RunningWebhook {
    let config = WebhookConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        cert_dir: dir.to_owned(),
        reload_interval: Duration::from_millis(100),
    };
    RunningWebhook::start(&config, metrics)
        .await
        .expect("webhook starts")
}

/// `helm template` of the chart's webhook.yaml (federated entry included), as JSON documents.
pub fn chart_webhook_objects() -> Vec<Value> {
    let helm = &testbed::binaries().expect("helm from scripts/testbin.sh").helm;
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/charts/pod-identity");
    let home = std::env::temp_dir().join("pod-identity-mic-webhook-test-helm");
    let out = std::process::Command::new(helm)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .args(["template", "pod-identity"])
        .arg(&chart)
        .args(["--namespace", RELEASE_NS, "--show-only", "templates/webhook.yaml"])
        .args(["--kube-version", testbed::CHART_KUBE_VERSION])
        .args([
            "--set",
            "nmi.federatedTenantID=72f988bf-86f1-41af-91ab-2d7cd011db47",
        ])
        .output()
        .expect("running helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("UTF-8");
    yaml.split("\n---")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| serde_saphyr::from_str::<Value>(d).expect("rendered YAML parses"))
        .collect()
}

pub fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// Registers the chart's MutatingWebhookConfiguration, its selectors and policies unchanged,
/// but calling `url` with `ca_pem`, and for the pods of `namespaces` only (tests share the
/// apiserver). Returns its name.
pub async fn register(client: &Client, url: &str, ca_pem: &str, namespaces: &[&str]) -> String {
    let mut config = find(&chart_webhook_objects(), "MutatingWebhookConfiguration").clone();
    let name = format!("{}-{}", namespaces[0], "readiness-gate");
    config["metadata"] = json!({ "name": name });
    for hook in config["webhooks"].as_array_mut().expect("webhooks") {
        hook["clientConfig"] = json!({ "url": url, "caBundle": b64(ca_pem) });
        hook["namespaceSelector"]["matchExpressions"]
            .as_array_mut()
            .expect("the chart selects namespaces by expression")
            .push(json!({ "key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces }));
    }
    let config: MutatingWebhookConfiguration =
        serde_json::from_value(config).expect("a webhook configuration");
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &config)
        .await
        .expect("registering the webhook");
    name
}

pub async fn unregister(client: &Client, name: &str) {
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// A pod with `labels`, and `spec` merged into a one-container spec.
pub fn pod(name: &str, labels: Value, spec: Value) -> Pod {
    let mut s = json!({ "containers": [{ "name": "app", "image": "registry.example/app" }] });
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels }, "spec": s }))
        .expect("a pod")
}

pub fn gates(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .map(|g| g.iter().map(|g| g.condition_type.clone()).collect())
        .unwrap_or_default()
}

/// Creates `p` in `ns` and returns it as the apiserver stored it.
pub async fn create(client: &Client, ns: &str, p: &Pod) -> Pod {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), p)
        .await
        .unwrap_or_else(|e| panic!("creating pod {:?}: {e}", p.metadata.name))
}

/// Waits until a bound pod created in `ns` (dry run: nothing is kept) gets the gate: the
/// apiserver has loaded the configuration and the webhook answers with a certificate it trusts.
/// Fails after a minute.
pub async fn until_gated(client: &Client, ns: &str) {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let probe = pod("probe", json!({ "aadpodidbinding": "probe" }), json!({}));
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = api.create(&dry, &probe).await.expect("dry-run pod creation");
        if gates(&created).iter().any(|g| g == GATE) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a bound pod in {ns} got no readiness gate within a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
