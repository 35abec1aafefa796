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
//!
//! # Layers, top-down
//!
//! Each layer calls only the ones below it:
//! 1. [`server`]: HTTP. The accept loop and its per-pod limits, routing by path, the rate
//!    limit and `Metadata` header, the token endpoints, the memo of answers, the rendering of
//!    answers and refusals, and the refusals' log lines and Events; also the pass-through to
//!    IMDS and the probe and metrics servers.
//! 2. [`authorizer`]: who may have which token. One [`authorizer::Authorizer`] holds the
//!    watched state, the token cache, the principals learned from tokens, the holds while IMDS
//!    lacks an identity and the reports of that to MIC, and federated mode; it finds the
//!    caller's pod and decides, waiting for MIC where needed. Its refusals are [`refusal`]s.
//! 3. Below it: [`state`] (the watched cluster state, and the rules in `matching`),
//!    [`token_cache`] (one entry per identity and resource, refreshed ahead, single flight),
//!    [`token`] (IMDS and Entra ID, through `azure_token`) and [`federation`] (federated mode's
//!    ServiceAccounts and token exchange).
//!
//! Beside the request path: [`readiness`] (the IdentityReady condition, fetching first tokens
//! through the same authorizer's cache), [`interception`] with [`iptables`] and [`conntrack`]
//! (the redirect of 169.254.169.254 to NMI), [`flags`], [`metrics`], and [`token_path_check`]
//! (`nmi test-token-path`, the chart's `helm test`).
//!
//! # One token request
//!
//! A pod's `GET /metadata/identity/oauth2/token` (standard mode, a token not yet cached) goes
//! down, each file once:
//! 1. `server::accept`: the connection, admitted under the per-pod cap;
//! 2. `server::route`: the path's route, then `server::rate_limit`, then the `Metadata` header;
//! 3. `server::pod_token`: no answer kept for it in `server::answer_memo`; the query read by
//!    `server::token_query`;
//! 4. [`authorizer::Authorizer::grant_to_ip`]: `caller` finds the pod by its IP in
//!    [`state::PodIndex`]; it is not excepted ([`state::State::is_excepted`]) nor federated
//!    (`federated_pod`); `issue` decides with [`state::State::decide`] (the rules in
//!    `matching`);
//! 5. [`token_cache::TokenCache::get`]: a miss, so [`token::Azure`] asks IMDS;
//! 6. back in the authorizer, `principals` learns the token's principal id and `audit` writes
//!    the `nmi::audit` line;
//! 7. back in `server::pod_token`, `server::response` renders the answer, which the answer memo
//!    keeps for the pod's next identical request; `server::route` times it.
//!
#![forbid(unsafe_code)]

pub mod authorizer;
pub mod conntrack;
pub mod federation;
pub mod flags;
pub mod interception;
pub mod iptables;
pub mod metrics;
pub mod readiness;
pub mod refusal;
pub mod server;
pub mod state;
pub mod token;
pub mod token_cache;
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
    /// The identity cannot be used as configured (unknown type, missing secret, ...).
    #[error("{0}")]
    Identity(String),
    /// A service principal's Kubernetes secret (`secret` is `<namespace>/<name>`) holds no
    /// usable credential; `problem` names the key to fix.
    #[error("secret {secret}: {problem}")]
    UnusableSecret { secret: String, problem: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A flag's value, or flags that cannot be used together; the text names them.
    #[error("{0}")]
    Flags(String),
    /// Installing, removing or reading the CNI gate's files (crate `cni`).
    #[error("CNI gate: {0}")]
    Cni(#[from] cni::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod testing;
