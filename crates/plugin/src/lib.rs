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
pub mod cli;
pub mod completion;
pub mod explain;
pub mod facts;
pub mod fix;
pub mod gather;
pub mod kube_flags;
pub mod nmi_events;
pub mod nmi_log;
pub mod output;
pub mod report;

/// Everything that keeps the plugin from answering (exit code 2), and what keeps it from reading
/// ARM (which `check` reports as its `cloud-config` link, and `explain` as unasked).
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
    /// The API server's 403, apart: its message names the user it refused (as impersonated
    /// with `--as`), which is the answer, not a stack of wrappers around it.
    #[error(
        "reading {what} is forbidden: {message} (`kubectl auth can-i --list` shows what this user may do)"
    )]
    Forbidden { what: String, message: String },
    #[error("{0}")]
    Usage(String),
    /// `--request-timeout` in no spelling kubectl takes.
    #[error("--request-timeout {value:?}: {}", kube_flags::TIMEOUT_HINT)]
    RequestTimeout { value: String },
    /// `--cloud-config` cannot be used (unreadable, an unknown cloud, no credentials), in the
    /// words MIC uses for the same file. Not a `#[source]`: its message is already in this one's.
    #[error("configuration: {0}")]
    CloudConfig(arm::Error),
    #[error("reading --ca-file {}: {source}", .path.display())]
    ReadCaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// `--ca-file` holds no PEM certificate.
    #[error("--ca-file {}: {source}", .path.display())]
    CaFile {
        path: std::path::PathBuf,
        source: reqwest::Error,
    },
    /// The HTTP client for ARM cannot be built.
    #[error(transparent)]
    Http(reqwest::Error),
}

impl Error {
    /// A failed API call while reading `what`.
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        match source {
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden {
                what: what.into(),
                message: status.message,
            },
            source => Self::Kube {
                what: what.into(),
                source,
            },
        }
    }
}
