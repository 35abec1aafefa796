//! `kubectl pod-identity`: walks the chain from a pod to its token (`explain POD`) and the
//! cluster's health (`check`), and says what is wrong and what to do, so that nobody has to
//! piece it together from the pod, the bindings, MIC's Events, ARM and NMI's log by hand.
//!
//! The decisions (what holds, what breaks, the fix) are pure functions over plain values
//! ([`explain::explain`], [`check::check`]), unit-tested; which bindings select a pod and which
//! identity it gets are the `matching` crate's answers, the ones MIC and NMI act on. The
//! Kubernetes and ARM calls live in [`gather`], a thin shell.
#![forbid(unsafe_code)]

pub mod check;
pub mod explain;
pub mod facts;
pub mod fix;
pub mod gather;
pub mod nmi_log;
pub mod report;

/// Everything that keeps the plugin from answering (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("asking the Kubernetes API for {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Usage(String),
}
