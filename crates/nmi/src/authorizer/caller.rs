//! The first step of a request: who asks ([`Caller`]) and which pod that is, waiting for the
//! first lists and for a pod just started. Apart from the decision, which starts once the pod is
//! known; `lookup` is also how the decision checks the caller is still that pod.

use std::{net::IpAddr, sync::Arc, time::Duration};

use axum::http::StatusCode;
use matching::PodFacts;
use tokio::time::Instant;

use super::Authorizer;
use crate::{
    refusal::{PodName, Reason, Refusal},
    state::PodLookup,
    token::TokenSource,
};

/// `Retry-After` while the watched state cannot be proven.
const RETRY_AFTER_STALE: Duration = Duration::from_secs(5);

/// Who a token request is for.
pub(super) enum Caller {
    /// A pod, found by the request's source IP.
    Ip(IpAddr),
    /// `/host/token`: a host process names the pod.
    Named { namespace: String, name: String },
}

impl std::fmt::Display for Caller {
    /// As refusals and the audit line name the caller: `IP <address>` or `pod <namespace>/<name>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "IP {ip}"),
            Self::Named { namespace, name } => write!(f, "pod {namespace}/{name}"),
        }
    }
}

impl Caller {
    /// Names the pod on a refusal given before the pod was found, when the caller named it.
    fn tag(&self, refusal: Refusal) -> Refusal {
        match self {
            Self::Ip(_) => refusal,
            Self::Named { namespace, name } => Refusal {
                pod: Some(PodName {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    uid: None,
                }),
                ..refusal
            },
        }
    }
}

impl<S: TokenSource> Authorizer<S> {
    /// The caller's pod, waiting (woken by the pod watch) up to `--pod-wait` for a pod just
    /// started, or for the deletion of an old pod still claiming the caller's IP. Refuses (503,
    /// retryable) while the watched state is too old to prove anything, and while several pods
    /// claim the IP: NMI never guesses which of them asks.
    pub(super) async fn find_pod(&self, caller: &Caller) -> Result<Arc<PodFacts>, Refusal> {
        if self.state.is_stale() {
            // `aadpodidentity_nmi_state_stale` is kept by `track_staleness`.
            return Err(caller.tag(Refusal::unavailable(
                Reason::StateStale,
                format!(
                    "NMI cannot reach the Kubernetes API (watches failing for {:?}): it cannot prove \
                     which identity {} may use; retry later",
                    self.state.unproven_for().unwrap_or_default(),
                    caller
                ),
                RETRY_AFTER_STALE,
            )));
        }
        if !self.state.is_synced() {
            self.wait_synced(caller).await?;
        }
        // The common case, a known pod, needs no subscription to later changes.
        if let PodLookup::Found(pod) = self.lookup(caller) {
            return Ok(pod);
        }
        let deadline = Instant::now() + self.config.pod_wait;
        // Subscribed before looking again, so that no change after the look is missed.
        let mut changes = self.state.subscribe();
        loop {
            let seen = match self.lookup(caller) {
                PodLookup::Found(pod) => return Ok(pod),
                other => other,
            };
            let timed_out = tokio::select! {
                r = changes.changed() => r.is_err(),
                () = tokio::time::sleep_until(deadline) => true,
            };
            if !timed_out {
                continue;
            }
            return Err(caller.tag(match seen {
                PodLookup::Ambiguous(pods) => Refusal::unavailable(
                    Reason::AmbiguousIp,
                    format!(
                        "{} is claimed by several pods ({}): NMI cannot tell which one asks (an old \
                         pod's deletion not yet seen?); refusing rather than guessing; retry later",
                        caller,
                        pods.join(", ")
                    ),
                    RETRY_AFTER_STALE,
                ),
                _ => Refusal::new(
                    Reason::NoPod,
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "no Pending or Running pod on node {} that is not being deleted matches {}",
                        self.state.node, caller
                    ),
                ),
            }));
        }
    }

    pub(super) fn lookup(&self, caller: &Caller) -> PodLookup {
        match caller {
            Caller::Ip(ip) => self.state.pods.by_addr(*ip),
            Caller::Named { namespace, name } => self
                .state
                .pods
                .by_name(namespace, name)
                .map_or(PodLookup::NotFound, PodLookup::Found),
        }
    }

    /// Waits, up to `--pod-wait`, until every watch has listed once. Until then NMI (just
    /// started) may know a pod but not yet its bindings or identities, and an answer would refuse
    /// a bound pod for good: the SDKs do not retry a 403. Past the wait: 503, retryable.
    async fn wait_synced(&self, caller: &Caller) -> Result<(), Refusal> {
        let deadline = Instant::now() + self.config.pod_wait;
        // Subscribed before looking, so that the last list's change is not missed.
        let mut changes = self.state.subscribe();
        while !self.state.is_synced() {
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                return Err(caller.tag(Refusal::unavailable(
                    Reason::NotSynced,
                    format!(
                        "NMI has not yet read the cluster's pods, bindings and identities (it has just \
                         started): it cannot tell which identity {} may use; retry later",
                        caller
                    ),
                    RETRY_AFTER_STALE,
                )));
            }
        }
        Ok(())
    }
}
