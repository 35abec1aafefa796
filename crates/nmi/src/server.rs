//! The HTTP side: the pod-facing server (token endpoint, `/host/token`, instance-metadata
//! blocking, pass-through to IMDS), and the probe and metrics servers.
//!
//! One module per concern, each calling only the ones below it. A token request goes down:
//! - `accept`: the accept loop, one HTTP/1.1 connection per pod connection, graceful shutdown,
//!   and the limits a hostile pod meets there (head timeout and size, `connections` per IP);
//!   [`listener`] binds the listeners that the old and the new NMI share during an update;
//! - `route`: rate limit, `Metadata` header, which answer the path gets; refusals counted
//!   and logged;
//! - `pod_token` (or `host_token`): the endpoint, with the memo's replay of unchanged
//!   answers, and the rendering of the token answer;
//! - `authorize`: the caller's pod, the decision against the watched state with its waits,
//!   the token from the cache ([`crate::cache`], [`crate::token`]), held while IMDS lacks an
//!   identity MIC reports assigned (`hold`);
//! - [`crate::response`] and [`crate::refusal`]: the bytes of answers and refusals.
//!
//! `passthrough` forwards other paths to IMDS; `probes` serves `/healthz`, `/readyz` and
//! `/metrics` on their own ports and tracks staleness.

use std::{sync::Arc, time::Duration};

pub use accept::{
    ConnectionLimits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_POD, MAX_HEAD_BYTES, serve,
    serve_with,
};
pub use listener::{bind_pod_facing, bind_retrying};
pub use probes::{is_ready, metrics_router, probe_router, track_staleness};
pub use route::handle;

use crate::{
    cache::TokenCache, memo::AnswerMemo, metrics::Metrics, missing::MissingReports,
    ratelimit::PodRateLimiter, refusal::RefusalLog, state::State, token::TokenSource,
};

mod accept;
mod authorize;
mod connections;
mod federated;
mod hold;
mod host_token;
pub mod listener;
mod passthrough;
mod pod_token;
mod principals;
mod probes;
mod route;

/// How the pod-facing server behaves.
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
    pub state: Arc<State>,
    pub cache: Arc<TokenCache<S>>,
    pub config: Config,
    pub metrics: Metrics,
    /// For pass-through requests; has the upstream timeout and no proxy.
    pub http: reqwest::Client,
    /// Per-source-IP token buckets (`--pod-rate-limit`); off until configured.
    pub rate_limit: PodRateLimiter,
    /// Principal (object) ids learned from tokens.
    principals: principals::Principals,
    /// Token answers authorized at the current state version, for pods asking the same again.
    memo: AnswerMemo,
    /// Which refusals are logged (one line per pod and reason per window).
    refusals: RefusalLog,
    /// Which findings of identities missing on the VM are written for MIC.
    missing: MissingReports,
    /// Federated mode, when enabled ([`Nmi::enable_federation`]).
    federation: std::sync::OnceLock<Arc<crate::federated::Federation<S>>>,
    /// Refusals as Events on their pods, when enabled ([`Nmi::enable_refusal_events`]).
    refusal_events: std::sync::OnceLock<crate::refusal::event::RefusalEvents>,
}

impl<S: TokenSource> Nmi<S> {
    pub fn new(
        state: Arc<State>,
        cache: Arc<TokenCache<S>>,
        config: Config,
        metrics: Metrics,
        http: reqwest::Client,
    ) -> Arc<Self> {
        Arc::new(Self {
            state,
            cache,
            config,
            metrics,
            http,
            rate_limit: PodRateLimiter::default(),
            principals: principals::Principals::default(),
            memo: AnswerMemo::default(),
            refusals: RefusalLog::default(),
            missing: MissingReports::default(),
            federation: std::sync::OnceLock::new(),
            refusal_events: std::sync::OnceLock::new(),
        })
    }

    /// Serves pods labelled for federation with their service account's identity (see
    /// [`crate::federated`]). Once only; later calls are ignored.
    pub fn enable_federation(&self, federation: Arc<crate::federated::Federation<S>>) {
        let _ = self.federation.set(federation);
    }

    /// Publishes refusals of known pods as Events on them (`--refusal-events`). Once only.
    pub fn enable_refusal_events(&self, events: crate::refusal::event::RefusalEvents) {
        let _ = self.refusal_events.set(events);
    }

    /// Federated mode, when enabled: [`crate::readiness`] fetches its pods' tokens ahead.
    pub fn federation(&self) -> Option<&Arc<crate::federated::Federation<S>>> {
        self.federation.get()
    }
}

#[cfg(test)]
mod tests;
