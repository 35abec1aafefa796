//! What the NMI, MIC and soak benchmarks share: a private kube-apiserver, the release binaries
//! of `nmi` and `mic` started as supervised child processes, and bulk creation of objects.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use api::{AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding};
use futures_util::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde_json::json;
use testbed::ApiServer;

mod fleet;
mod process;
pub use fleet::{Fleet, world as fleet_world};
pub use process::{Child, start_mic, start_nmi};

// The test world's GUIDs; `client_id(n)` and `principal_id(n)` are identity `id<n>`'s.
pub use fixtures::ids::{MIC_CLIENT as MIC_CLIENT_ID, SUBSCRIPTION as SUB, TENANT, client_id, principal_id};
pub const MIC_SECRET: &str = "mic-secret";
/// Kubernetes writes in flight when creating many objects.
pub const CONCURRENCY: usize = 32;

pub fn identity_resource_id(n: usize) -> String {
    fixtures::ids::resource_id(&format!("id{n}"))
}

/// World YAML lines for identities `id0..id<count>`, each allowing every namespace to use it
/// (MIC's consent check: `arm::consent`).
pub fn identities_yaml(count: usize) -> String {
    (0..count)
        .map(|n| {
            format!(
                "  - {{name: id{n}, resource_group: identity-rg, client_id: {}, principal_id: {}, tags: {{pod-identity-namespaces: \"*\"}}}}\n",
                client_id(n),
                principal_id(n)
            )
        })
        .collect()
}

/// The loopback address used as the IP of pod number `n` in block `block` (127.<block>.x.y).
pub fn pod_ip(block: u8, n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, block, (n / 250) as u8, (n % 250 + 1) as u8))
}

/// A built binary of this workspace next to the running `bench` (same profile).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (`cargo build --release -p {name}`; `make bench` does)",
            path.display()
        );
    }
    Ok(path)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(testbed::free_port()?)
}

/// Where the benchmarks' child processes log: `<summary dir>/logs`.
pub fn log_dir(summary: &Path) -> anyhow::Result<PathBuf> {
    let dir = summary.parent().unwrap_or(Path::new(".")).join("logs");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub struct Cluster {
    pub server: ApiServer,
    pub client: Client,
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Self> {
        let server = tokio::task::spawn_blocking(ApiServer::start)
            .await?
            .context("starting the private kube-apiserver")?;
        let client = server.client().await?;
        Ok(Self { server, client })
    }

    pub async fn namespace(&self, name: &str) -> anyhow::Result<()> {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(())
    }

    pub async fn nodes(&self, nodes: &[(String, String)]) -> anyhow::Result<()> {
        let api = Api::<Node>::all(self.client.clone());
        stream::iter(nodes.iter().map(|(name, provider)| {
            let api = api.clone();
            async move {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                    "spec": {"providerID": provider}
                }))?;
                api.create(&PostParams::default(), &node).await?;
                anyhow::Ok(())
            }
        }))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
        Ok(())
    }

    /// A user-assigned AzureIdentity `id<n>` and a binding selecting pods labelled `selector`.
    pub async fn identity_and_binding(&self, ns: &str, n: usize, selector: &str) -> anyhow::Result<()> {
        let id: AzureIdentity = serde_json::from_value(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
            "metadata": {"name": format!("id{n}"), "namespace": ns},
            "spec": {"type": 0, "resourceID": identity_resource_id(n), "clientID": client_id(n)}
        }))?;
        Api::<AzureIdentity>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &id)
            .await?;
        let b: AzureIdentityBinding = serde_json::from_value(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
            "metadata": {"name": format!("b{n}"), "namespace": ns},
            "spec": {"azureIdentity": format!("id{n}"), "selector": selector}
        }))?;
        Api::<AzureIdentityBinding>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &b)
            .await?;
        Ok(())
    }

    /// Creates pods concurrently.
    pub async fn pods(&self, ns: &str, pods: Vec<PodSpec>) -> anyhow::Result<()> {
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        stream::iter(pods.into_iter().map(|p| {
            let api = api.clone();
            async move { create_pod(&api, &p).await }
        }))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
        Ok(())
    }

    /// MIC's record of `pod` having `identity`, as MIC writes it, in state `Assigned` (for NMI
    /// benchmarks that run without MIC).
    pub async fn assigned(&self, ns: &str, node: &str, pairs: &[(String, usize)]) -> anyhow::Result<()> {
        let api = Api::<AzureAssignedIdentity>::namespaced(self.client.clone(), ns);
        let ids = Api::<AzureIdentity>::namespaced(self.client.clone(), ns);
        stream::iter(pairs.iter().map(|(pod, n)| {
            let (api, ids) = (api.clone(), ids.clone());
            async move {
                let identity = ids.get(&format!("id{n}")).await?;
                let name = AzureAssignedIdentity::object_name(pod, ns, &format!("id{n}"));
                let aai: AzureAssignedIdentity = serde_json::from_value(json!({
                    "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureAssignedIdentity",
                    "metadata": {"name": name, "labels": {api::v1::NODE_NAME_LABEL: node}},
                    "spec": {"azureIdentityRef": identity, "pod": pod, "podNamespace": ns, "nodename": node}
                }))?;
                api.create(&PostParams::default(), &aai).await?;
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"status": "Assigned", "availableReplicas": 1}})),
                )
                .await?;
                anyhow::Ok(())
            }
        }))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
        Ok(())
    }

    /// AzureAssignedIdentities in every namespace whose status is `Assigned`, and all of them.
    /// Counts `Assigned` AzureAssignedIdentities through a watch. Listing them instead (every
    /// 100 ms, each object carrying copies of its identity and binding) loaded the shared
    /// apiserver more than MIC's own writes did, and slowed the convergence it measured.
    pub fn count_assigned(&self) -> AssignedCounter {
        let (tx, rx) = tokio::sync::watch::channel(0);
        let api = Api::<AzureAssignedIdentity>::all(self.client.clone());
        let task = tokio::spawn(async move {
            let mut assigned = std::collections::HashSet::new();
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                let is_assigned = |a: &AzureAssignedIdentity| {
                    a.status.as_ref().and_then(|s| s.status) == Some(api::AssignmentState::Assigned)
                };
                match event {
                    Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) => {
                        let key = mirror::key_of(&a);
                        if is_assigned(&a) {
                            assigned.insert(key);
                        } else {
                            assigned.remove(&key);
                        }
                    }
                    Ok(watcher::Event::Delete(a)) => {
                        assigned.remove(&mirror::key_of(&a));
                    }
                    Ok(watcher::Event::Init) => assigned.clear(),
                    Ok(watcher::Event::InitDone) => {}
                    Err(e) => eprintln!("watching AzureAssignedIdentities: {e}"),
                }
                tx.send_replace(assigned.len());
            }
        });
        AssignedCounter { rx, task }
    }
}

/// How many AzureAssignedIdentities are `Assigned`, kept by a watch.
pub struct AssignedCounter {
    rx: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl AssignedCounter {
    /// Waits until at least `want` are `Assigned`.
    pub async fn wait_for(&mut self, want: usize, limit: Duration) -> anyhow::Result<()> {
        let seen = tokio::time::timeout(limit, self.rx.wait_for(|n| *n >= want))
            .await
            .map(|r| r.map(drop));
        match seen {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => bail!("the AzureAssignedIdentity watch ended"),
            Err(_) => bail!(
                "timed out after {limit:?} waiting until {want} AzureAssignedIdentities are Assigned ({} are)",
                *self.rx.borrow()
            ),
        }
    }
}

impl Drop for AssignedCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pod to create: Running with `ip` when given (as a kubelet would report it), else Pending.
pub struct PodSpec {
    pub name: String,
    pub node: String,
    pub label: Option<String>,
    pub ip: Option<IpAddr>,
}

pub async fn create_pod(api: &Api<Pod>, p: &PodSpec) -> anyhow::Result<()> {
    let labels = p
        .label
        .as_ref()
        .map_or(json!({}), |l| json!({"aadpodidbinding": l}));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": p.name, "labels": labels},
        "spec": {"nodeName": p.node, "containers": [{"name": "app", "image": "app"}]}
    }))?;
    api.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {}", p.name))?;
    if let Some(ip) = p.ip {
        api.patch_status(
            &p.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]}})),
        )
        .await?;
    }
    Ok(())
}

pub async fn delete_pod(api: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    api.delete(name, &DeleteParams::default().grace_period(0)).await?;
    Ok(())
}

/// Polls `probe` every `every` until it is true, for at most `limit`.
pub async fn wait_for<F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    loop {
        if probe().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// The MIC service principal's world lines, allowed to assign identities `id0..id<count>`.
pub fn mic_principal_yaml(count: usize) -> String {
    let ids: Vec<String> = (0..count).map(|n| format!("id{n}")).collect();
    format!(
        "service_principals:\n  - name: mic\n    client_id: {MIC_CLIENT_ID}\n    client_secret: {MIC_SECRET}\n    may_assign: [{}]\n",
        ids.join(", ")
    )
}

/// A token request path for identity `n` and `resource`.
pub fn token_path(n: usize, resource: &str) -> String {
    format!(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}&client_id={}",
        form_urlencoded::byte_serialize(resource.as_bytes()).collect::<String>(),
        client_id(n)
    )
}
