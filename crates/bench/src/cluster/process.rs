//! Starting the release `nmi` and `mic` binaries as supervised children and waiting until they
//! are ready: process handling, apart from the Kubernetes objects the benchmarks create.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use testbed::Supervised;

use super::{MIC_CLIENT_ID, MIC_SECRET, SUB, TENANT, free_port, sibling_binary};

/// A started `nmi` or `mic` release binary.
pub struct Child {
    pub process: Supervised,
    pub pid: u32,
}

impl Child {
    /// `(anon, file)` parts of the resident memory, in MiB.
    pub fn rss_parts_mib(&self) -> anyhow::Result<(f64, f64)> {
        Ok(bench::mem::rss_parts_mib(self.pid)?)
    }

    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        Ok(bench::mem::rss_mib(self.pid)?)
    }
}

/// Starts `program` and waits until `GET http://<probe>/readyz` answers 200.
pub async fn spawn_ready(
    name: &str,
    cmd: std::process::Command,
    log: &Path,
    probe: SocketAddr,
) -> anyhow::Result<Child> {
    let mut process = Supervised::spawn_with(name, &cmd, log)?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{probe}/readyz");
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            break;
        }
        if !process.is_running() || started.elapsed() > Duration::from_secs(60) {
            bail!("{name} did not become ready; its log:\n{}", process.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = process.pid().with_context(|| format!("{name} has no pid"))?;
    Ok(Child { process, pid })
}

/// Starts the release `nmi` for `node` in standard mode against `imds`, without iptables, with
/// `extra` flags; on core `cpu` alone when given.
pub async fn start_nmi(
    kubeconfig: &Path,
    node: &str,
    imds: SocketAddr,
    extra: &[&str],
    log: &Path,
    cpu: Option<usize>,
) -> anyhow::Result<(Child, SocketAddr)> {
    let (port, probe, metrics) = (free_port()?, free_port()?, free_port()?);
    let binary = sibling_binary("nmi")?;
    let mut cmd = match cpu {
        Some(cpu) => crate::pinned::on_cpu(cpu, &binary),
        None => std::process::Command::new(binary),
    };
    cmd.env("RUST_LOG", "info,nmi::audit=off,kube=warn")
        .arg(format!("--node={node}"))
        .arg("--nmi-listen-address=127.0.0.1")
        .arg(format!("--nmi-port={port}"))
        .arg(format!("--metadata-ip={}", imds.ip()))
        .arg(format!("--metadata-port={}", imds.port()))
        .arg("--ops-listen-address=127.0.0.1")
        .arg(format!("--http-probe-port={probe}"))
        .arg(format!("--prometheus-port={metrics}"))
        .arg("--manage-iptables=false")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(extra);
    let probe = SocketAddr::from(([127, 0, 0, 1], probe));
    let child = spawn_ready("nmi", cmd, log, probe).await?;
    Ok((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// Starts the release `mic` with the emulator's service principal `mic` and waits until it leads
/// with synced caches.
pub async fn start_mic(
    kubeconfig: &Path,
    emulator: &azure_emulator::RunningEmulator,
    ca_file: &Path,
    log: &Path,
) -> anyhow::Result<Child> {
    let (probe, metrics) = (free_port()?, free_port()?);
    let mut cmd = std::process::Command::new(sibling_binary("mic")?);
    cmd.env("RUST_LOG", "info,kube=warn")
        .env("TENANT_ID", TENANT)
        .env("CLIENT_ID", MIC_CLIENT_ID)
        .env("CLIENT_SECRET", MIC_SECRET)
        .env("SUBSCRIPTION_ID", SUB)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--arm-endpoint={}", emulator.arm_url()))
        .arg(format!("--aad-endpoint={}", emulator.entra_url()))
        .arg(format!("--ca-file={}", ca_file.display()))
        .arg(format!("--http-probe-port={probe}"))
        .arg(format!("--prometheus-port={metrics}"))
        .arg("--leader-election-instance=bench");
    spawn_ready("mic", cmd, log, SocketAddr::from(([127, 0, 0, 1], probe))).await
}
