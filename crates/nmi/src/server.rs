//! The HTTP side: the pod-facing server (token endpoint, `/host/token`, instance-metadata
//! blocking, pass-through to IMDS), and the probe and metrics servers. Everything about HTTP is
//! here; who may have which token is the authorizer's ([`crate::authorizer`]), asked once per
//! token request.
//!
//! One module per concern, each calling only the ones below it. A token request goes down:
//! - `accept`: the accept loop, one HTTP/1.1 connection per pod connection, graceful shutdown,
//!   and the limits a hostile pod meets there (head timeout and size, connections per IP);
//!   [`listener`] binds the listeners that the old and the new NMI share during an update;
//! - `route`: which route the path takes, the per-pod `rate_limit`, the `Metadata` header;
//!   refusals counted, logged (`refusal_log`) and published (`refusal_events`);
//! - `pod_token` (or `host_token`): the endpoint. An answer the pod got for this very query is
//!   replayed from the `answer_memo` while the watched state is unchanged; otherwise the query
//!   is read (`token_query`, with IMDS's api-version rule), the authorizer grants a token or refuses, and the
//!   answer is rendered and kept;
//! - `response`: the bytes of answers and refusals.
//!
//! `passthrough` forwards other paths (and excepted pods' token requests) to IMDS; `probes`
//! serves `/healthz`, `/readyz` and `/metrics` on their own ports and tracks staleness;
//! [`ready_socket`] answers the readiness of this one process, for the kubelet's probe, on a Unix
//! socket of its pod (the ports are shared during an update).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

pub use accept::{
    ConnectionLimits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_POD, MAX_HEAD_BYTES, serve,
    serve_with,
};
pub use listener::{PodPort, bind_pod_facing, bind_retrying};
pub use probes::{answers_ready, is_ready, metrics_router, probe_router, track_staleness};
pub use refusal_events::RefusalEvents;
pub use route::{Route, classify, decode_path, handle};

use crate::{
    authorizer::{self, Authorizer},
    metrics::Metrics,
    state::State,
    token::TokenSource,
    token_cache::TokenCache,
};
use answer_memo::AnswerMemo;
use rate_limit::PodRateLimiter;
use refusal_log::RefusalLog;

mod accept;
mod answer_memo;
mod host_token;
pub mod listener;
mod passthrough;
mod pod_token;
mod probes;
pub mod rate_limit;
pub mod ready_socket;
pub mod refusal_events;
mod refusal_log;
pub(crate) mod response;
mod route;
pub mod token_query;

/// How the pod-facing server behaves. The waits are the authorizer's, handed to it by
/// [`Nmi::new`].
#[derive(Clone, Debug)]
pub struct Config {
    pub metadata_header_required: bool,
    pub block_instance_metadata: bool,
    /// On a timed-out wait for MIC: 503 + `Retry-After` instead of 404.
    pub set_retry_after_header: bool,
    pub identity_wait: Duration,
    pub pod_wait: Duration,
    /// `http://<metadata-ip>:<metadata-port>`, for pass-through requests and exceptions.
    pub imds: String,
}

/// What the handlers share.
pub struct Nmi<S> {
    /// Who may have which token: the decision, with the state and token cache it uses.
    pub authorizer: Arc<Authorizer<S>>,
    pub config: Config,
    pub metrics: Metrics,
    /// For pass-through requests; has the upstream timeout and no proxy.
    pub http: reqwest::Client,
    /// Per-source-IP token buckets (`--pod-rate-limit`); off until configured.
    pub rate_limit: PodRateLimiter,
    /// Token answers authorized at the current state version, for pods asking the same again.
    memo: AnswerMemo,
    /// Which refusals are logged (one line per pod and reason per window).
    refusals: RefusalLog,
    /// Refusals as Events on their pods, when enabled ([`Nmi::enable_refusal_events`]).
    refusal_events: OnceLock<RefusalEvents>,
}

impl<S: TokenSource> Nmi<S> {
    pub fn new(
        state: Arc<State>,
        cache: Arc<TokenCache<S>>,
        config: Config,
        metrics: Metrics,
        http: reqwest::Client,
    ) -> Arc<Self> {
        let waits = authorizer::Config {
            set_retry_after_header: config.set_retry_after_header,
            identity_wait: config.identity_wait,
            pod_wait: config.pod_wait,
        };
        Arc::new(Self {
            authorizer: Arc::new(Authorizer::new(state, cache, waits, metrics.clone())),
            config,
            metrics,
            http,
            rate_limit: PodRateLimiter::default(),
            memo: AnswerMemo::default(),
            refusals: RefusalLog::default(),
            refusal_events: OnceLock::new(),
        })
    }

    /// Publishes refusals of known pods as Events on them (`--refusal-events`). Once only.
    pub fn enable_refusal_events(&self, events: RefusalEvents) {
        let _ = self.refusal_events.set(events);
    }
}

#[cfg(test)]
mod tests;
