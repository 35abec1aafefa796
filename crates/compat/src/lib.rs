//! Mixed versions: upstream aad-pod-identity v1.8.17's own `nmi` and `mic` (built from the Go
//! module proxy by `scripts/testbin.sh`) beside ours, against a private kube-apiserver, the Azure
//! emulator and Azurite, with each node in a network namespace of its own.
//!
//! The topology, per test: the test process's namespace holds the kube-apiserver, the emulator
//! (ARM, Entra, one IMDS per scale-set instance), Azurite and MIC (either version). Each node is
//! a namespace where `169.254.169.254:80` is that node's IMDS (a forwarder back to the emulator)
//! and `127.0.0.1:<apiserver port>` the apiserver, and where NMI (either version) runs with its
//! iptables rules. Each pod is a namespace of its own, joined to its node by a veth pair and
//! routed through it, so its calls to `169.254.169.254` meet the node's DNAT to NMI, as on a
//! real node. The root namespace's routes and netfilter rules are never touched; namespaces and
//! processes are removed on drop, when a test fails too.
//!
//! Upstream NMI needs what it needs on a node: `--kubelet-config` naming a file with
//! `KUBELET_FLAGS` (it refuses to start without one, and on kubenet), `KUBECONFIG` (it has no
//! flag), and a namespace of its own (it rewrites the `aad-metadata` chain where it runs, and
//! removes it on SIGTERM). Upstream MIC reaches the emulator as an Azure Stack cloud: azure.json
//! with `"cloud": "AzureStackCloud"`, `AZURE_ENVIRONMENT_FILEPATH` naming a go-autorest
//! environment file with the emulator's ARM and Entra URLs, and `SSL_CERT_FILE` its CA; it then
//! asks Entra for tokens whose audience is the ARM URL itself, which the emulator accepts with
//! `arm.accept_endpoint_audience` (Azure Stack Hub does; public Azure does not).
//!
//! Every prerequisite missing (root, `ip`, `iptables`, `socat`, `curl`, the Python venv,
//! Azurite, upstream's binaries, ours) fails the test with a message saying what to do.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod peers;
pub mod pods;
pub mod world;

pub use cluster::Cluster;
pub use peers::Version;

/// What a pod's program ended with instead of an answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The walkthrough's `pod.py` failed: its exit status and standard error, where Python prints
    /// the Azure SDK's exception.
    #[error("pod.py exited with {status}: {stderr}")]
    Pod {
        status: std::process::ExitStatus,
        stderr: String,
    },
}
