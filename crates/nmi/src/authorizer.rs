//! The authorizer: which token a caller may have. [`Authorizer`] owns the decision and what it
//! needs: the watched cluster state, the token cache, the principal ids learned from tokens,
//! the holds while IMDS lacks an identity and the reports of that to MIC, and federated mode
//! when it is on. The server (`crate::server`) asks it once per token request and renders what
//! it gives; the tokens themselves come from below it (`crate::token_cache`, `crate::token`,
//! `crate::federation`).
//!
//! A request goes down, in the order it meets them:
//! - [`Authorizer::grant_to_ip`] (a pod's own request) or [`Authorizer::grant_to_named`]
//!   (`/host/token`): the whole decision, read top-down;
//! - `caller`: the caller's pod, by source IP or by name, waiting for the first lists and for a
//!   pod just started; an excepted pod then goes to the node's own identity;
//! - `federated_pod`: a pod that opted in to federated mode gets its service account's
//!   identity (`crate::federation`);
//! - `issue`: otherwise, the decision against the watched state (waiting for MIC), the token
//!   from the cache, held while IMDS lacks an identity MIC reports assigned (`missing`), and the
//!   decision checked again once the token is there;
//! - `audit`: the line and count of each token handed out; `denials`: the refusals of those
//!   steps once the pod is known; `principals`: the principal ids `object_id` requests are
//!   decided with.

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use matching::IdentityRequest;

use crate::{
    federation::Federation,
    metrics::Metrics,
    refusal::Refusal,
    state::State,
    token::TokenSource,
    token_cache::{Cached, TokenCache},
};

pub use audit::Audit;
use caller::Caller;
use missing::MissingReports;
use principals::Principals;

mod audit;
mod caller;
mod denials;
mod federated_pod;
mod issue;
pub mod missing;
mod principals;

/// How long the authorizer waits, and how it answers a wait that ran out.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// On a timed-out wait for MIC: 503 + `Retry-After` instead of 404.
    pub set_retry_after_header: bool,
    /// Longest a request is held for MIC, or while IMDS lacks an identity MIC reports assigned.
    pub identity_wait: Duration,
    /// Longest a request from an unknown pod is held while the pod watch catches up.
    pub pod_wait: Duration,
}

/// What a token request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenQuery {
    pub resource: String,
    pub identity: IdentityRequest,
}

/// A token handed out.
pub struct Issued {
    pub cached: Cached,
    pub audit: Audit,
    /// The state version the authorization was decided at.
    pub decided_at: u64,
}

/// What a pod's own token request is granted.
pub enum Grant {
    /// A token of the identity the pod may use.
    Token(Issued),
    /// An exception sends the pod to the node's own identity: its request goes to IMDS as it is.
    NodeIdentity,
}

/// Who may have which token, and what deciding that needs; one per NMI.
pub struct Authorizer<S> {
    pub state: Arc<State>,
    pub cache: Arc<TokenCache<S>>,
    pub metrics: Metrics,
    config: Config,
    /// Principal (object) ids learned from tokens.
    principals: Principals,
    /// Which findings of identities missing on the VM are written for MIC.
    missing: MissingReports,
    /// Federated mode, when enabled ([`Authorizer::enable_federation`]).
    federation: OnceLock<Arc<Federation<S>>>,
}

impl<S: TokenSource> Authorizer<S> {
    pub fn new(state: Arc<State>, cache: Arc<TokenCache<S>>, config: Config, metrics: Metrics) -> Self {
        Self {
            state,
            cache,
            metrics,
            config,
            principals: Principals::default(),
            missing: MissingReports::default(),
            federation: OnceLock::new(),
        }
    }

    /// Serves pods labelled for federation with their service account's identity (see
    /// [`crate::federation`]). Once only; later calls are ignored.
    pub fn enable_federation(&self, federation: Arc<Federation<S>>) {
        let _ = self.federation.set(federation);
    }

    /// Federated mode, when enabled: [`crate::readiness`] fetches its pods' tokens ahead.
    pub fn federation(&self) -> Option<&Arc<Federation<S>>> {
        self.federation.get()
    }

    /// A pod's own request from `ip`: the pod behind it, sent to the node's identity if
    /// excepted, else issued a token in federated mode if it opted in, else by its bindings.
    pub async fn grant_to_ip(&self, ip: IpAddr, query: &TokenQuery) -> Result<Grant, Refusal> {
        let caller = Caller::Ip(ip);
        let pod = self.find_pod(&caller).await?;
        if self.state.is_excepted(&pod) {
            tracing::info!(
                target: "nmi::audit",
                pod = pod.name.as_str(), namespace = pod.namespace.as_str(), resource = query.resource.as_str(), source = %ip,
                "excepted pod: passed through to the node's identity"
            );
            self.metrics.issued(false);
            return Ok(Grant::NodeIdentity);
        }
        if let Some(federated) = self.issue_federated(&pod, query).await {
            return federated.map(Grant::Token);
        }
        self.issue(&caller, pod, query).await.map(Grant::Token)
    }

    /// `/host/token`: a host process names the pod, which is authorized by its bindings exactly
    /// as its own request would be (exceptions and federated mode are for pods' own requests).
    pub async fn grant_to_named(
        &self,
        namespace: String,
        name: String,
        query: &TokenQuery,
    ) -> Result<Issued, Refusal> {
        let caller = Caller::Named { namespace, name };
        let pod = self.find_pod(&caller).await?;
        self.issue(&caller, pod, query).await
    }
}
