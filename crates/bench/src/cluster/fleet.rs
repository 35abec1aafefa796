//! What the churn and readiness runs share: a private kube-apiserver and the Azure emulator with
//! the run's world, its nodes (with their providerIDs), one namespace with identities `id<n>`
//! bound to pods labelled `app-<n>`, and one NMI process per node.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use azure_emulator::{Emulator, RunningEmulator, World};

use super::{Child, Cluster, start_nmi};

pub struct Fleet {
    pub k8s: Cluster,
    pub emulator: RunningEmulator,
    /// The emulator's CA certificate (it serves TLS), for MIC's `--ca-file`.
    pub ca: PathBuf,
    pub kubeconfig: PathBuf,
}

/// One NMI process per node, and where each listens.
pub struct Nmis {
    pub addrs: BTreeMap<&'static str, SocketAddr>,
    _children: Vec<Child>,
}

/// A world of the emulator for a fleet: identities `id0..id<identities>` (each allowing every
/// namespace), the VMs and scale sets of `computes` (world YAML lines under the top level), MIC's
/// service principal allowed to assign them all, and TLS (MIC requires https).
pub fn world(identities: usize, computes: &str) -> anyhow::Result<World> {
    Ok(World::from_yaml(&format!(
        "tenant_id: {tenant}\nsubscriptions:\n  - id: {sub}\n    resource_groups: [node-rg, identity-rg]\nidentities:\n{ids}{computes}\n{principal}\ntls:\n  enabled: true\n",
        tenant = super::TENANT,
        sub = super::SUB,
        ids = super::identities_yaml(identities),
        principal = super::mic_principal_yaml(identities),
    ))?)
}

impl Fleet {
    /// `nodes` are (name, providerID); `run` names the log files (`<run>-…`).
    pub async fn start(
        world: World,
        nodes: &[(String, String)],
        ns: &str,
        identities: usize,
        logs: &Path,
        run: &str,
    ) -> anyhow::Result<Self> {
        let k8s = Cluster::start().await?;
        let emulator = Emulator::start(world).await?;
        let ca = logs.join(format!("emulator-ca-{run}.pem"));
        std::fs::write(&ca, emulator.ca_cert_pem().context("the emulator serves TLS")?)?;
        k8s.nodes(nodes).await?;
        k8s.namespace(ns).await?;
        for n in 0..identities {
            k8s.identity_and_binding(ns, n, &format!("app-{n}")).await?;
        }
        let kubeconfig = k8s.server.kubeconfig().to_owned();
        Ok(Self {
            k8s,
            emulator,
            ca,
            kubeconfig,
        })
    }

    /// Starts the release `nmi` for each of `nodes`, against that node's IMDS in the emulator.
    pub async fn start_nmis(&self, nodes: &[&'static str], logs: &Path, run: &str) -> anyhow::Result<Nmis> {
        let mut addrs = BTreeMap::new();
        let mut children = Vec::new();
        for &node in nodes {
            let imds = self.emulator.imds_addr(node).context("every node has an IMDS")?;
            let log = logs.join(format!("{run}-nmi-{node}.log"));
            let (child, addr) = start_nmi(&self.kubeconfig, node, imds, &[], &log, None).await?;
            children.push(child);
            addrs.insert(node, addr);
        }
        Ok(Nmis {
            addrs,
            _children: children,
        })
    }
}
