//! A cluster for MIC: a private kube-apiserver (MIC watches every namespace and node, so
//! tests must not share one), the Azure emulator, Node objects whose providerIDs name the
//! emulator's VMs and scale sets, and MIC itself, in-process.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use api::{AssignmentState, AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding};
use arm::{ArmClient, Credential, RetryPolicy};
use azure_emulator::{Emulator, RunningEmulator, World};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use mic::{
    controller::{self, Settings},
    metrics::Metrics,
};
use serde_json::json;
use testbed::ApiServer;
use tokio::{sync::watch, task::JoinHandle};

/// The tests' per-request ARM timeout.
pub const ARM_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

// `client_id(n)`: client id of identity `id<n>` in [`world`].
#[allow(unused_imports)] // each test binary uses some of them
pub use fixtures::ids::{MIC_CLIENT as MIC_CLIENT_ID, SUBSCRIPTION as SUB, TENANT, client_id};

/// Lower-cased resource id of identity `id<n>`.
pub fn resource_id(n: usize) -> String {
    fixtures::ids::resource_id(&format!("id{n}")).to_ascii_lowercase()
}

/// A world with identities id1..=id7 (MIC may assign all but id5), scale sets `ss-a`
/// (nodes a-0, a-1) and `ss-b` (node b-0), and a VM `vm-c` (node c-0). The owners of id1..=id5
/// let every namespace use them (tag `pod-identity-namespaces: "*"`); id6's owner allows only
/// namespace `victim`, id7's only `evil` (the consent tests).
pub fn world(latency_ms: &BTreeMap<&str, u64>) -> World {
    let lat = |name: &str| latency_ms.get(name).copied().unwrap_or(300);
    let identities: String = (1..=7)
        .map(|n| {
            let allowed = match n {
                6 => "victim",
                7 => "evil",
                _ => "*",
            };
            format!(
                "  - {{name: id{n}, resource_group: identity-rg, client_id: {}, principal_id: {}, tags: {{{}: \"{allowed}\"}}}}\n",
                client_id(n),
                fixtures::ids::principal_id(n),
                arm::consent::NAMESPACES_TAG,
            )
        })
        .collect();
    World::from_yaml(&format!(
        r#"
tenant_id: {TENANT}
location: westeurope
subscriptions:
  - id: {SUB}
    resource_groups: [node-rg, identity-rg]
identities:
{identities}
vms:
  - {{name: vm-c, resource_group: node-rg, node: c-0, imds: "127.0.0.1:0", operation_latency_ms: {}}}
vmss:
  - name: ss-a
    resource_group: node-rg
    operation_latency_ms: {}
    instances:
      - {{name: ss-a_0, node: a-0, imds: "127.0.0.1:0"}}
      - {{name: ss-a_1, node: a-1, imds: "127.0.0.1:0"}}
  - name: ss-b
    resource_group: node-rg
    operation_latency_ms: {}
    instances:
      - {{name: ss-b_0, node: b-0, imds: "127.0.0.1:0"}}
service_principals:
  - name: mic
    client_id: {MIC_CLIENT_ID}
    client_secret: mic-secret
    may_assign: [id1, id2, id3, id4, id6, id7]
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
        lat("vm-c"),
        lat("ss-a"),
        lat("ss-b"),
    ))
    .expect("the test world is valid")
}

/// Node name → providerID, as AKS sets them.
pub fn nodes() -> Vec<(&'static str, String)> {
    let ss = |name: &str, i: u32| {
        format!(
            "azure:///subscriptions/{SUB}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/virtualMachines/{i}"
        )
    };
    vec![
        ("a-0", ss("ss-a", 0)),
        ("a-1", ss("ss-a", 1)),
        ("b-0", ss("ss-b", 0)),
        (
            "c-0",
            format!(
                "azure:///subscriptions/{SUB}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachines/vm-c"
            ),
        ),
    ]
}

pub struct Cluster {
    /// Kept for its lifetime: dropping it stops the apiserver.
    pub server: ApiServer,
    pub azure: RunningEmulator,
    pub client: Client,
    pub metrics: Arc<Metrics>,
    mic: Option<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Cluster {
    pub async fn start(world: World) -> Self {
        // `RUST_LOG=mic=debug cargo test …` shows MIC's logs of a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server = tokio::task::spawn_blocking(ApiServer::start)
            .await
            .unwrap()
            .expect("the test apiserver starts");
        let azure = Emulator::start(world).await.expect("the emulator starts");
        let client = server.client().await.unwrap();
        for (name, provider) in nodes() {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {"providerID": provider}
            }))
            .unwrap();
            Api::<Node>::all(client.clone())
                .create(&PostParams::default(), &node)
                .await
                .unwrap();
        }
        Self {
            server,
            azure,
            client,
            metrics: Arc::new(Metrics::default()),
            mic: None,
            stop: None,
        }
    }

    pub fn arm(&self, metrics: Arc<Metrics>) -> ArmClient {
        let ca = reqwest::Certificate::from_pem(self.azure.ca_cert_pem().unwrap().as_bytes()).unwrap();
        // As in production (60 s there), a request ARM never answers times out and is retried.
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(ARM_REQUEST_TIMEOUT)
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
        ArmClient::new(http, &self.azure.arm_url(), credential, retry, metrics)
    }

    /// Starts MIC in-process and waits until its caches are synced.
    pub async fn start_mic(&mut self, settings: Settings) {
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let arm = self.arm(self.metrics.clone());
        let (client, metrics) = (self.client.clone(), self.metrics.clone());
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

    pub async fn namespace(&self, name: &str) {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }

    pub async fn identity(&self, ns: &str, name: &str, n: usize) {
        let id: AzureIdentity = serde_json::from_value(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": 0, "resourceID": resource_id(n).replace("resourcegroups", "resourceGroups"), "clientID": client_id(n)}
        }))
        .unwrap();
        Api::<AzureIdentity>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &id)
            .await
            .unwrap();
    }

    pub async fn binding(&self, ns: &str, name: &str, identity: &str, selector: &str) {
        let b: AzureIdentityBinding = serde_json::from_value(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"azureIdentity": identity, "selector": selector}
        }))
        .unwrap();
        Api::<AzureIdentityBinding>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &b)
            .await
            .unwrap();
    }

    /// Like [`Cluster::pod`], but reports a refused write instead of panicking.
    pub async fn try_pod(&self, ns: &str, name: &str, node: &str, label: Option<&str>) -> bool {
        let labels = label.map(|l| json!({"aadpodidbinding": l})).unwrap_or(json!({}));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]}
        }))
        .unwrap();
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(_) => return false,
        }
        let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.10"}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .is_ok()
    }

    /// A running pod on `node`, labelled `aadpodidbinding: <label>` when given.
    pub async fn pod(&self, ns: &str, name: &str, node: &str, label: Option<&str>) {
        assert!(
            self.try_pod(ns, name, node, label).await,
            "creating pod {ns}/{name} failed"
        );
    }

    pub async fn delete_pod(&self, ns: &str, name: &str) {
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        api.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }

    pub async fn assigned(&self, ns: Option<&str>) -> BTreeMap<String, Option<AssignmentState>> {
        let api = match ns {
            Some(ns) => Api::<AzureAssignedIdentity>::namespaced(self.client.clone(), ns),
            None => Api::<AzureAssignedIdentity>::all(self.client.clone()),
        };
        api.list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.name_any(), a.status.as_ref().and_then(|s| s.status)))
            .collect()
    }

    /// Waits until the AzureAssignedIdentity objects (all namespaces) are exactly `want`.
    pub async fn wait_assigned(&self, want: &[(&str, AssignmentState)], limit: Duration) {
        let want: BTreeMap<String, Option<AssignmentState>> =
            want.iter().map(|(n, s)| ((*n).to_owned(), Some(*s))).collect();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let have = self.assigned(None).await;
            if have == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "AzureAssignedIdentities are {have:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The identities IMDS serves on a node's VM, lower-cased.
    pub fn on_node(&self, node: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .azure
            .admin()
            .node_identities()
            .into_iter()
            .find(|n| n.node == node)
            .map(|n| n.effective.iter().map(|i| i.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The identities ARM's GET shows for a node's VM or scale set (its model, changed as soon as
    /// ARM accepts a write, while IMDS keeps serving the old set until the operation ends),
    /// lower-cased.
    pub fn in_arm_model(&self, node: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .azure
            .admin()
            .node_identities()
            .into_iter()
            .find(|n| n.node == node)
            .map(|n| n.model.iter().map(|i| i.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Removes every user-assigned identity from VM `vm-c` behind MIC's back, as `az vm identity
    /// remove` would: an ARM PATCH with a token the emulator's admin API mints for MIC's own
    /// service principal (any principal allowed to write the VM would do).
    pub async fn strip_vm_c(&self) {
        let token = self
            .azure
            .admin()
            .app_token("mic", "https://management.azure.com/")
            .unwrap();
        let ca = reqwest::Certificate::from_pem(self.azure.ca_cert_pem().unwrap().as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let vm = format!(
            "{}/subscriptions/{SUB}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachines/vm-c?api-version=2023-09-01",
            self.azure.arm_url(),
        );
        let body = json!({"identity": {"type": "SystemAssigned", "userAssignedIdentities": null}});
        let resp = http
            .patch(&vm)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// Sets `IDENTITY_MISSING_ANNOTATION` on an `AzureAssignedIdentity` as NMI does when IMDS
    /// answered "Identity not found" for it: a new token (the time) at each finding.
    pub async fn report_identity_missing(&self, ns: &str, name: &str, token: &str) {
        let patch = json!({"metadata": {"annotations": {api::v1::IDENTITY_MISSING_ANNOTATION: token}}});
        Api::<AzureAssignedIdentity>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// ARM writes accepted per VM or scale set name.
    pub fn arm_writes(&self) -> BTreeMap<String, u64> {
        self.azure
            .admin()
            .counters()
            .arm_writes
            .into_iter()
            .map(|(id, n)| (id.rsplit('/').next().unwrap_or_default().to_owned(), n))
            .collect()
    }

    /// Events recorded about an object, as "reason: note".
    pub async fn events(&self, ns: &str, name: &str) -> Vec<String> {
        let api = Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), ns);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// The Events regarding `name` once one of them satisfies `wanted` (MIC publishes Events in
    /// the background, after its writes), or what there is after `limit`.
    pub async fn events_until(
        &self,
        ns: &str,
        name: &str,
        limit: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let events = self.events(ns, name).await;
            if events.iter().any(|e| wanted(e)) || tokio::time::Instant::now() >= deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn settings() -> Settings {
    Settings {
        debounce: Duration::from_millis(50),
        failure_retry: Duration::from_secs(2),
        // Short, so that tests of removals do not wait the default 30 s; long enough that
        // the grace's path (the object waits, the worker wakes when it is due) is exercised.
        removal_grace: Duration::from_secs(1),
        ..Settings::default()
    }
}
