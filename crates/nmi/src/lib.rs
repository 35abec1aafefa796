//! NMI, the node agent of pod identity. It runs on every node, answers pods'
//! requests to the Azure Instance Metadata Service (IMDS) token endpoint
//! exactly as IMDS would, and hands each pod only a token for an identity the
//! pod is bound to: the pod is found by the request's source IP among this
//! node's pods, its bindings and identities are read from watched cluster
//! state, and the token comes from the node's IMDS (managed identities) or
//! from Entra ID (service principals), through a cache that never bypasses
//! that check. Pods reach NMI because iptables rules on the node redirect
//! 169.254.169.254:80 to it; those rules stay in place when NMI stops, so a
//! pod can never reach IMDS directly (fail-closed).
//!
//! The decisions themselves (which binding selects a pod, which identity a
//! request gets, who is excepted) live in the `matching` crate, shared with MIC.
//!
//! Every std lock is taken through [`mirror::sync`], MIC's and the mirrors' policy too: a
//! poisoned lock is used anyway rather than failing every later request, since each guarded
//! structure is consistent wherever a panic can interrupt it (that module says why in full).
#![forbid(unsafe_code)]

pub mod api_version;
pub mod assertion;
pub mod cache;
pub mod conntrack;
pub mod federated;
pub mod flags;
pub mod interception;
pub mod iptables;
pub mod memo;
pub mod metrics;
pub mod missing;
pub mod ratelimit;
pub mod readiness;
pub mod refusal;
pub mod request;
pub mod response;
pub mod server;
pub mod state;
pub mod token;
pub mod token_path_check;

use std::time::Duration;

/// Everything that can go wrong in NMI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("calling {what}: {source}")]
    Http {
        what: &'static str,
        source: reqwest::Error,
    },
    /// IMDS or Entra answered with an error; `status` is theirs.
    #[error("{what} answered {status}: {body}")]
    Upstream {
        what: &'static str,
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    #[error("{what} answered with a body NMI cannot read: {detail}")]
    BadUpstreamBody { what: &'static str, detail: String },
    /// The identity cannot be used as configured (unknown type, missing or unreadable secret, ...).
    #[error("{0}")]
    Identity(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Installing, removing or reading the CNI gate's files (crate `cni`).
    #[error("CNI gate: {0}")]
    Cni(#[from] cni::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod testing;
