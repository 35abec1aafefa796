//! A cluster of `n` nodes for the mixed-version tests: a private kube-apiserver (both MICs
//! watch every namespace), the emulator, Azurite, node and pod network namespaces, and the
//! walkthrough's objects; NMI and MIC of either version are started and swapped by the test.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use api::{AssignmentState, AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding};
use azure_emulator::{Emulator, EndpointKind, RunningEmulator};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use testbed::{
    ApiServer, Supervised,
    netns::{self, Netns},
};

use crate::{
    peers::{self, Version},
    pods::{self, PodNs},
    world::{self, CloudFiles, NodeIdentity},
};

mod daemons;

/// The walkthrough's namespace for the identity, the binding and the pods.
pub const APP_NAMESPACE: &str = "demo";
/// The walkthrough's selector.
pub const SELECTOR: &str = "myapp";
/// Where each node namespace forwards to Azurite (a local address of every node).
const AZURITE_IP: &str = "10.99.0.1";

/// How the walkthrough's AzureIdentity and AzureIdentityBinding are spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// Upstream v1.8's camelCase (`resourceID`, `clientID`, `azureIdentity`, `selector`), the
    /// only one upstream's binaries read.
    Upstream,
    /// The walkthrough's as written (`ResourceID`, `ClientID`, `AzureIdentity`, `Selector`),
    /// which our CRD keeps and our binaries read.
    Seed,
}

/// A node: its namespace, its forwarders, and the NMI running there.
pub struct NodeNs {
    pub name: String,
    pub ns: Netns,
    _forwarders: Vec<Supervised>,
    nmi: Option<(Version, Supervised)>,
}

impl Drop for NodeNs {
    fn drop(&mut self) {
        // Killed, not stopped: upstream's NMI waits 10 s after SIGTERM, for nothing here.
        if let Some((_, mut nmi)) = self.nmi.take() {
            nmi.kill();
        }
    }
}

pub struct Cluster {
    // Field order is drop order: processes and namespaces before the servers they talk to.
    pub pods: Vec<PodNs>,
    pub nodes: Vec<NodeNs>,
    mic: Option<(Version, Supervised)>,
    _azurite: Supervised,
    pub azure: RunningEmulator,
    pub server: ApiServer,
    pub client: Client,
    pub cloud: CloudFiles,
    pub python: PathBuf,
    kubelet_defaults: PathBuf,
    tag: String,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Everything but NMI and MIC. Fails the test when a prerequisite is missing.
    pub async fn start(nodes: usize, node_identity: NodeIdentity, spelling: Spelling) -> Self {
        netns::require_prerequisites();
        let python = pods::python();
        pods::script("azurite.sh", &["install"]);
        peers::upstream();
        peers::ours("nmi");
        peers::ours("mic");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "mv{}{}",
            std::process::id() % 1000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("pod-identity-mixed-")
            .tempdir()
            .expect("a temporary directory");
        let server = tokio::task::spawn_blocking(ApiServer::start)
            .await
            .expect("the apiserver's start")
            .expect("the test kube-apiserver starts");
        let client = server.client().await.expect("an apiserver client");
        let azure = Emulator::start(world::world(nodes, node_identity))
            .await
            .expect("the emulator starts");
        let cloud = CloudFiles::write(dir.path(), &azure);
        let kubelet_defaults = world::kubelet_defaults(dir.path());

        // Azurite, as the walkthrough's storage account, checking the pods' bearer tokens.
        let (cert, key) = azure
            .issue_server_cert(&[], &[AZURITE_IP.parse().expect("an IP")])
            .expect("a certificate for Azurite");
        for (name, body) in [("azurite.crt", cert), ("azurite.key", key)] {
            std::fs::write(dir.path().join(name), body).expect("writing Azurite's certificate");
        }
        let azurite_port = testbed::free_port().expect("a free port");
        let mut cmd = std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/azurite.sh"),
        );
        cmd.arg("run")
            .arg(dir.path().join("azurite"))
            .arg(azurite_port.to_string())
            .arg(dir.path().join("azurite.crt"))
            .arg(dir.path().join("azurite.key"));
        std::fs::create_dir_all(dir.path().join("azurite")).expect("Azurite's directory");
        let azurite = Supervised::spawn_with("azurite", &cmd, &dir.path().join("azurite.log"))
            .expect("starting Azurite");

        let mut cluster = Self {
            pods: Vec::new(),
            nodes: Vec::new(),
            mic: None,
            _azurite: azurite,
            azure,
            server,
            client,
            cloud,
            python,
            kubelet_defaults,
            tag,
            dir,
        };
        for i in 0..nodes {
            cluster.add_node(i, azurite_port).await;
        }
        cluster.walkthrough_objects(spelling).await;
        wait("Azurite listens", 60, || {
            std::net::TcpStream::connect(("127.0.0.1", azurite_port)).is_ok()
        });
        cluster
    }

    async fn add_node(&mut self, i: usize, azurite_port: u16) {
        let name = world::node_name(i);
        let ns = Netns::create(&format!("{}n{i}", self.tag));
        ns.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
        ns.ip(&["addr", "add", &format!("{AZURITE_IP}/32"), "dev", "lo"]);
        // NMI's DNAT to 127.0.0.1 from PREROUTING needs it, as kube-proxy sets on real nodes.
        ns.ok(&["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"]);
        let imds = self.azure.imds_addr(&name).expect("the node's IMDS");
        let port = self.server.port();
        let log = |what: &str| self.dir.path().join(format!("fwd-{what}-{i}.log"));
        let forwarders = vec![
            ns.forwarder(
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{port}"),
                &log("api"),
            ),
            ns.forwarder("169.254.169.254:80", &imds.to_string(), &log("imds")),
            ns.forwarder(
                &format!("{AZURITE_IP}:10000"),
                &format!("127.0.0.1:{azurite_port}"),
                &log("azurite"),
            ),
        ];
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux"}},
            "spec": {"providerID": world::provider_id(i)}
        }))
        .expect("a node literal");
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("creating the node");
        self.nodes.push(NodeNs {
            name,
            ns,
            _forwarders: forwarders,
            nmi: None,
        });
    }

    /// The walkthrough's identity and binding, in the given spelling.
    async fn walkthrough_objects(&self, spelling: Spelling) {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": APP_NAMESPACE}}))
            .expect("a namespace literal");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the app namespace");
        let identity: AzureIdentity = serde_json::from_value(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
            "metadata": {"name": world::IDENTITY},
            "spec": match spelling {
                Spelling::Upstream => json!({"type": 0, "resourceID": world::resource_id(), "clientID": world::CLIENT_ID}),
                Spelling::Seed => json!({"type": 0, "ResourceID": world::resource_id(), "ClientID": world::CLIENT_ID}),
            }
        }))
        .expect("an identity literal");
        Api::<AzureIdentity>::namespaced(self.client.clone(), APP_NAMESPACE)
            .create(&PostParams::default(), &identity)
            .await
            .expect("creating the AzureIdentity");
        let binding: AzureIdentityBinding = serde_json::from_value(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
            "metadata": {"name": "myapp-azure-identity-binding"},
            "spec": match spelling {
                Spelling::Upstream => json!({"azureIdentity": world::IDENTITY, "selector": SELECTOR}),
                Spelling::Seed => json!({"AzureIdentity": world::IDENTITY, "Selector": SELECTOR}),
            }
        }))
        .expect("a binding literal");
        Api::<AzureIdentityBinding>::namespaced(self.client.clone(), APP_NAMESPACE)
            .create(&PostParams::default(), &binding)
            .await
            .expect("creating the AzureIdentityBinding");
    }

    /// A running pod labelled `aadpodidbinding: myapp` on node `node`, with a namespace of its
    /// own routed through the node's. Returns its index in [`Cluster::pods`].
    pub async fn pod(&mut self, node: usize, name: &str) -> usize {
        let k = self.pods.iter().filter(|p| p.node == node).count();
        let ns = Netns::create(&format!("{}p{node}{k}", self.tag));
        let subnet = format!("10.77.{}", node * 16 + k);
        netns::join(
            &self.nodes[node].ns,
            &ns,
            &format!("{}{node}{k}", self.tag),
            &subnet,
        );
        let ip = format!("{subnet}.2");
        let api = Api::<Pod>::namespaced(self.client.clone(), APP_NAMESPACE);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"aadpodidbinding": SELECTOR}},
            "spec": {"nodeName": self.nodes[node].name,
                     "containers": [{"name": "app", "image": "python"}]}
        }))
        .expect("a pod literal");
        api.create(&PostParams::default(), &pod)
            .await
            .expect("creating the pod");
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})),
        )
        .await
        .expect("setting the pod's IP");
        self.pods.push(PodNs {
            name: name.to_owned(),
            ip,
            node,
            ns,
        });
        self.pods.len() - 1
    }

    /// The AzureAssignedIdentities of pod `pod`, wherever they are: (namespace, name, state).
    pub async fn assigned(&self, pod: &str) -> Vec<(String, String, AssignmentState)> {
        Api::<AzureAssignedIdentity>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .expect("listing AzureAssignedIdentities")
            .items
            .into_iter()
            .filter(|a| a.spec.pod == pod)
            .map(|a| {
                (
                    a.metadata.namespace.clone().unwrap_or_default(),
                    a.metadata.name.clone().unwrap_or_default(),
                    a.state(),
                )
            })
            .collect()
    }

    /// Waits until MIC has recorded the pod's identity (an AzureAssignedIdentity in any state).
    pub async fn wait_recorded(&self, pod: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.assigned(pod).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "no MIC recorded {pod}'s identity; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes identity writes to the scale set take `ms` (real scale sets take 20 to 60 s).
    pub fn slow_scale_set(&self, ms: u64) {
        self.azure
            .admin()
            .set_arm_latency(Some(world::SCALE_SET), ms)
            .expect("setting the scale set's latency");
    }

    /// Waits until MIC reports the pod's identity `Assigned`, with the status it wrote.
    pub async fn wait_assigned(&self, pod: &str) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let found = self.assigned(pod).await;
            if let Some((ns, name, _)) = found.iter().find(|(_, _, s)| *s == AssignmentState::Assigned) {
                return (ns.clone(), name.clone());
            }
            assert!(
                Instant::now() < deadline,
                "{pod}'s identity was never Assigned ({found:?}); logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The emulator's call counter now, to look at later calls only.
    pub fn call_seq(&self) -> u64 {
        self.azure.admin().calls().last().map_or(0, |c| c.seq)
    }

    /// IMDS token calls after `since` ([`Cluster::call_seq`]) that no NMI made: NMIs always name
    /// the identity (upstream's by its client id, ours by its resource id), the walkthrough's pod
    /// reaching IMDS past the interception names none.
    pub fn imds_calls_bypassing_nmi(&self, since: u64) -> Vec<String> {
        self.azure
            .admin()
            .calls()
            .into_iter()
            .filter(|c| c.seq > since)
            .filter(|c| c.endpoint == EndpointKind::Imds && c.path.contains("/identity/oauth2/token"))
            .filter(|c| !c.path.contains("client_id=") && !c.path.contains("msi_res_id="))
            .map(|c| format!("{} {} -> {}", c.target, c.path, c.status))
            .collect()
    }

    /// The walkthrough's storage account as pods reach it.
    pub fn account_url(&self) -> String {
        format!("https://{AZURITE_IP}:10000/devstoreaccount1")
    }
}

/// Polls `cond` every 100 ms for up to `secs` seconds; fails the test saying `what` otherwise.
pub fn wait(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
