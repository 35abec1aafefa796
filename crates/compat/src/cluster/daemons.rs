//! Starting, stopping and reading the logs of NMI and MIC of either version on the cluster: what
//! the tests swap between steps, apart from building the cluster itself.

use std::time::{Duration, Instant};

use super::Cluster;
use crate::peers::{self, MicLaunch, NmiLaunch, Version};

impl Cluster {
    /// Starts NMI of `version` on node `i` and waits until it says it is ready.
    pub fn start_nmi(&mut self, i: usize, version: Version) {
        let log = self
            .dir
            .path()
            .join(format!("nmi-{i}-{}.log", self.nmi_starts(i)));
        let kubeconfig = self.server.kubeconfig().to_path_buf();
        let node = &mut self.nodes[i];
        let launch = NmiLaunch {
            node: &node.name,
            ns: &node.ns,
            kubeconfig: &kubeconfig,
            kubelet_defaults: &self.kubelet_defaults,
        };
        let process = peers::start_nmi(version, &launch, &log);
        node.nmi = Some((version, process));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !peers::nmi_ready(version, &self.nodes[i].ns) {
            let node = &mut self.nodes[i];
            let (_, p) = node.nmi.as_mut().expect("just started");
            assert!(
                p.is_running() && Instant::now() < deadline,
                "{version} NMI on {} never became ready; its log:\n{}",
                node.name,
                p.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn nmi_starts(&self, i: usize) -> usize {
        std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("nmi-{i}-")))
            .count()
    }

    /// Stops node `i`'s NMI as a DaemonSet rollout does: SIGTERM, then its grace period
    /// (upstream's NMI removes its iptables rules and waits 10 s before exiting; ours leaves
    /// them). Returns the version that ran.
    pub fn stop_nmi(&mut self, i: usize) -> Version {
        let (version, mut nmi) = self.nodes[i].nmi.take().expect("an NMI runs there");
        nmi.stop(Duration::from_secs(30));
        version
    }

    /// The NMI log of node `i` (the running one's).
    pub fn nmi_log(&self, i: usize) -> String {
        self.nodes[i]
            .nmi
            .as_ref()
            .map(|(_, p)| p.log_tail())
            .unwrap_or_default()
    }

    /// Starts MIC of `version` and waits until it says it is healthy.
    pub fn start_mic(&mut self, version: Version) {
        let (probe_port, metrics_port) = (
            testbed::free_port().expect("a port"),
            testbed::free_port().expect("a port"),
        );
        let launch = MicLaunch {
            kubeconfig: self.server.kubeconfig(),
            cloud: &self.cloud,
            arm_url: &self.azure.arm_url(),
            entra_url: &self.azure.entra_url(),
            probe_port,
            metrics_port,
        };
        let log = self.dir.path().join(format!("mic-{version:?}.log"));
        let process = peers::start_mic(version, &launch, &log);
        self.mic = Some((version, process));
    }

    /// Stops MIC as a Deployment rollout does (SIGTERM, grace period).
    pub fn stop_mic(&mut self) {
        if let Some((_, mut mic)) = self.mic.take() {
            mic.stop(Duration::from_secs(30));
        }
    }

    /// The running MIC's log.
    pub fn mic_log(&self) -> String {
        self.mic.as_ref().map(|(_, p)| p.log_tail()).unwrap_or_default()
    }

    /// Every log that may explain a failure.
    pub fn logs(&self) -> String {
        let mut out = format!("--- MIC\n{}", self.mic_log());
        for (i, n) in self.nodes.iter().enumerate() {
            out.push_str(&format!("\n--- NMI on {}\n{}", n.name, self.nmi_log(i)));
        }
        out
    }
}
