//! Test support for pod-identity: a real etcd and kube-apiserver, built from
//! upstream Go modules by `scripts/testbin.sh`, started on free loopback ports
//! with generated certificates and RBAC authorization, with the
//! aadpodidentity.k8s.io CRDs installed.
//!
//! Tests of one binary share one server ([`ApiServer::shared`]) and each works
//! in a namespace of its own ([`ApiServer::namespace`]): a kube-apiserver takes
//! seconds and a few hundred MiB to start, and the machines have two cores, so a
//! server per test would dominate the run. Tests that stop or restart the
//! server start a private one with [`ApiServer::start`].
//!
//! Processes never outlive the test process: each runs under a small shell
//! supervisor that kills it when the pipe from the test process closes, which
//! happens on drop, on panic and on any exit.
//!
//! Tests that need real interception (NMI's iptables rules, upstream's NMI beside
//! ours) run nodes and pods in network namespaces of their own, with [`netns`].
#![forbid(unsafe_code)]

mod apiserver;
mod binaries;
pub mod netns;
mod pki;
mod process;

pub use apiserver::{ApiServer, free_port};
pub use binaries::{Binaries, CHART_KUBE_VERSION, UpstreamPodIdentity, binaries, upstream_pod_identity};
pub use pki::rsa_cert;
pub use process::Supervised;

/// What can go wrong while providing a test environment. Every variant says what was missing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building or locating the test binaries failed: {0}")]
    Binaries(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("generating test certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("{0} did not become ready in time; its log follows:\n{1}")]
    NotReady(&'static str, String),
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
