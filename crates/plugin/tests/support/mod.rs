//! A cluster for the plugin: a private kube-apiserver (MIC, when a test runs it, watches every
//! namespace), the Azure emulator with one scale set (`ss`, nodes `n-0` and `n-1`), Node
//! objects whose providerIDs name it, NMI pods as the DaemonSet would leave them, and the
//! plugin run as a user runs it: the built binary, with a kubeconfig.

#![allow(dead_code)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use api::{AssignmentState, AzureAssignedIdentity};
use arm::{ArmClient, Credential, RetryPolicy};
use azure_emulator::{Emulator, RunningEmulator, World};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use mic::{
    controller::{self, Settings},
    metrics::Metrics,
};
use serde_json::{Value, json};
use testbed::ApiServer;
use tokio::{process::Command, sync::watch, task::JoinHandle};

pub use fixtures::ids::{MIC_CLIENT as MIC_CLIENT_ID, SUBSCRIPTION as SUB, TENANT, client_id};

pub const NMI_SELECTOR: &str = "app.kubernetes.io/component=nmi";

/// Resource id of identity `id<n>`, as `az identity show` spells it.
pub fn resource_id(n: usize) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/identity-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id{n}"
    )
}

/// Identities id1 and id2; MIC may assign id1 only (id2 lacks "Managed Identity Operator").
fn world() -> World {
    World::from_yaml(&format!(
        r#"
tenant_id: {TENANT}
location: westeurope
subscriptions:
  - id: {SUB}
    resource_groups: [node-rg, identity-rg]
identities:
  - {{name: id1, resource_group: identity-rg, client_id: {}, principal_id: 9b1e7d2a-0000-4000-8000-000000000001, tags: {{pod-identity-namespaces: "*"}}}}
  - {{name: id2, resource_group: identity-rg, client_id: {}, principal_id: 9b1e7d2a-0000-4000-8000-000000000002, tags: {{pod-identity-namespaces: "*"}}}}
vmss:
  - name: ss
    resource_group: node-rg
    operation_latency_ms: 200
    instances:
      - {{name: ss_0, node: n-0, imds: "127.0.0.1:0"}}
      - {{name: ss_1, node: n-1, imds: "127.0.0.1:0"}}
service_principals:
  - name: mic
    client_id: {MIC_CLIENT_ID}
    client_secret: mic-secret
    may_assign: [id1]
imds:
  rate_limit: false
arm:
  listen: "127.0.0.1:0"
entra:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
tls:
  enabled: true
"#,
        client_id(1),
        client_id(2),
    ))
    .expect("the test world is valid")
}

pub struct Cluster {
    pub server: ApiServer,
    pub azure: RunningEmulator,
    pub client: Client,
    dir: tempfile::TempDir,
    mic: Option<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What the plugin printed and its exit code.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", self.stdout, self.stderr))
    }

    /// The link `id` of the JSON report.
    pub fn link(&self, id: &str) -> Value {
        let v = self.json();
        v["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no link {id} in {}", self.stdout))
    }

    /// The ids of the failed links.
    pub fn failed(&self) -> Vec<String> {
        self.json()["links"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["verdict"] == "fail")
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Cluster {
    pub async fn start() -> Self {
        let server = tokio::task::spawn_blocking(ApiServer::start)
            .await
            .unwrap()
            .expect("the test apiserver starts");
        let azure = Emulator::start(world()).await.expect("the emulator starts");
        let client = server.client().await.unwrap();
        for i in 0..2 {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": format!("n-{i}")},
                "spec": {"providerID": format!(
                    "azure:///subscriptions/{SUB}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/{i}"
                )}
            }))
            .unwrap();
            Api::<Node>::all(client.clone())
                .create(&PostParams::default(), &node)
                .await
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("azure.json"),
            json!({"cloud": "AzurePublicCloud", "tenantId": TENANT, "subscriptionId": SUB,
                   "aadClientId": MIC_CLIENT_ID, "aadClientSecret": "mic-secret", "vmType": "vmss"})
            .to_string(),
        )
        .unwrap();
        let c = Self {
            server,
            azure,
            client,
            dir,
            mic: None,
            stop: None,
        };
        c.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}))
            .await;
        c
    }

    /// Runs `kubectl-pod_identity ARGS` with the cluster's kubeconfig in `$KUBECONFIG`, as
    /// kubectl runs a plugin. Awaited, not blocked on: the emulator answering the plugin's ARM
    /// calls runs on this test's runtime.
    pub async fn plugin(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-pod_identity"))
            .env("KUBECONFIG", self.server.kubeconfig())
            .env_remove("POD_IDENTITY_CLOUD_CONFIG")
            .args(args)
            .output()
            .await
            .expect("the plugin runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The flags that give the plugin ARM credentials: the cloud config, and the emulator's
    /// endpoints and CA.
    pub fn arm_flags(&self) -> Vec<String> {
        vec![
            "--cloud-config".into(),
            self.cloud_config().display().to_string(),
            "--arm-endpoint".into(),
            self.azure.arm_url(),
            "--aad-endpoint".into(),
            self.azure.entra_url(),
            "--ca-file".into(),
            self.azure.ca_cert_path().unwrap().display().to_string(),
        ]
    }

    pub fn cloud_config(&self) -> PathBuf {
        self.dir.path().join("azure.json")
    }

    /// Creates an object from its JSON (namespaced objects name their namespace).
    pub async fn apply(&self, obj: &Value) {
        let mut cmd = self.server.kubectl().unwrap();
        cmd.args(["apply", "-f", "-"]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        cmd.stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(obj.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply {obj}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn namespace(&self, name: &str) {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }

    pub async fn identity(&self, ns: &str, name: &str, n: usize) {
        self.apply(&json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": 0, "resourceID": resource_id(n), "clientID": client_id(n)}
        }))
        .await;
    }

    pub async fn binding(&self, ns: &str, name: &str, identity: &str, selector: &str) {
        self.apply(&json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"azureIdentity": identity, "selector": selector}
        }))
        .await;
    }

    /// A running pod on `node` with `labels`.
    pub async fn pod(&self, ns: &str, name: &str, node: &str, labels: Value) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "serviceAccountName": "app", "containers": [{"name": "app", "image": "app"}]}
        }))
        .unwrap();
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        api.create(&PostParams::default(), &pod).await.unwrap();
        let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.10"}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// An NMI pod of the DaemonSet on `node`, Ready or not, as the kubelet reports it.
    pub async fn nmi(&self, node: &str, ready: bool) {
        let name = format!("nmi-{node}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "kube-system",
                         "labels": {"app.kubernetes.io/component": "nmi"}},
            "spec": {"nodeName": node, "hostNetwork": true, "containers": [{"name": "nmi", "image": "nmi"}]}
        }))
        .unwrap();
        let api = Api::<Pod>::namespaced(self.client.clone(), "kube-system");
        api.create(&PostParams::default(), &pod).await.unwrap();
        let (status, reason, message) = match ready {
            true => ("True", "", ""),
            false => (
                "False",
                "ContainersNotReady",
                "containers with unready status: [nmi]",
            ),
        };
        let patch = json!({"status": {"phase": "Running", "podIP": "10.0.0.4", "conditions": [
            {"type": "Ready", "status": status, "reason": reason, "message": message}
        ]}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// A Role in namespace `shop` that may read what `explain` reads there (pods, Events, the
    /// CRDs' objects), bound to `kind` (`User` or `Group`) `name`.
    pub async fn shop_reader(&self, kind: &str, name: &str) {
        self.apply(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "reader", "namespace": "shop"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["list"]},
                {"apiGroups": ["aadpodidentity.k8s.io"], "resources": ["*"], "verbs": ["get", "list"]}
            ]
        }))
        .await;
        self.apply(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "reader", "namespace": "shop"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}]
        }))
        .await;
    }

    /// A Ready NMI on both nodes.
    pub async fn nmi_everywhere(&self) {
        self.nmi("n-0", true).await;
        self.nmi("n-1", true).await;
    }

    /// An AzureAssignedIdentity as MIC writes it, with `state`.
    pub async fn assigned(&self, ns: &str, pod: &str, identity: &str, node: &str, state: AssignmentState) {
        let id: api::AzureIdentity = Api::namespaced(self.client.clone(), ns)
            .get(identity)
            .await
            .unwrap();
        let mut aai = AzureAssignedIdentity::new(
            &AzureAssignedIdentity::object_name(pod, ns, identity),
            api::AzureAssignedIdentitySpec {
                azure_identity_ref: Some(id),
                pod: pod.into(),
                pod_namespace: ns.into(),
                node_name: node.into(),
                ..Default::default()
            },
        );
        aai.status = Some(api::AzureAssignedIdentityStatus {
            status: Some(state),
            available_replicas: Some(1),
            ..Default::default()
        });
        Api::<AzureAssignedIdentity>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &aai)
            .await
            .unwrap();
    }

    /// Starts MIC in-process (as MIC's own tests do), with ARM at the emulator.
    pub async fn start_mic(&mut self) {
        let ca = reqwest::Certificate::from_pem(self.azure.ca_cert_pem().unwrap().as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let credential = Credential::ClientSecret {
            authority: self.azure.entra_url(),
            tenant: TENANT.into(),
            client_id: MIC_CLIENT_ID.into(),
            secret: "mic-secret".into(),
        };
        let retry = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            poll_interval: Duration::from_millis(200),
            ..RetryPolicy::default()
        };
        let metrics = Arc::new(Metrics::default());
        let arm = ArmClient::new(http, &self.azure.arm_url(), credential, retry, metrics.clone());
        let settings = Settings {
            debounce: Duration::from_millis(50),
            failure_retry: Duration::from_secs(1),
            ..Settings::default()
        };
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let client = self.client.clone();
        self.mic = Some(tokio::spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = controller::run(client, arm, settings, metrics, ready_tx, shutdown).await {
                panic!("MIC stopped: {e}");
            }
        }));
        self.stop = Some(stop_tx);
        tokio::time::timeout(Duration::from_secs(30), ready_rx.wait_for(|r| *r))
            .await
            .expect("MIC synced its caches")
            .unwrap();
    }

    pub async fn stop_mic(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.mic.take() {
            h.await.expect("MIC ended cleanly");
        }
    }

    /// Waits until the plugin's run satisfies `done` (MIC works in the background), and returns it.
    pub async fn plugin_until(&self, args: &[&str], done: impl Fn(&Run) -> bool) -> Run {
        for _ in 0..150 {
            let run = self.plugin(args).await;
            if done(&run) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let run = self.plugin(args).await;
        panic!("the plugin never got there:\n{}\n{}", run.stdout, run.stderr);
    }
}

/// A link's fix, as `-o json` gives it.
pub fn fix(link: &Value) -> String {
    link["fix"].as_str().unwrap_or_default().to_owned()
}

/// A link's facts, one per line, as `-o json` gives them.
pub fn facts(link: &Value) -> String {
    link["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}
