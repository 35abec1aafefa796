//! A pod served in federated mode ([`crate::federation`]): its request goes there when its labels
//! and service account say so; the token is audited like any other, and the refusals of that
//! mode are given in IMDS's error shape.

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use matching::PodFacts;
use tokio::time::Instant;

use super::{Audit, Authorizer, Issued, TokenQuery};
use crate::{
    federation::{Federation, Refused, decide::PodMode},
    refusal::{Reason, Refusal, describe_request},
    token::TokenSource,
};

/// `Retry-After` while the ServiceAccounts are not yet listed.
const RETRY_AFTER_NOT_SYNCED: Duration = Duration::from_secs(5);

impl<S: TokenSource> Authorizer<S> {
    /// `None`: federated mode is off or the pod is not served by it (standard mode decides).
    pub(super) async fn issue_federated(
        &self,
        pod: &Arc<PodFacts>,
        query: &TokenQuery,
    ) -> Option<Result<Issued, Refusal>> {
        let federation = self.federation.get()?;
        // Pods that never opted in take the standard path without a look at ServiceAccounts.
        if !pod.labels.contains_key(crate::federation::decide::USE_LABEL) {
            return None;
        }
        if !federation.is_synced() && !self.wait_accounts(federation).await {
            return Some(Err(Refusal::unavailable(
                Reason::NotSynced,
                format!(
                    "NMI has not yet read the cluster's service accounts (it has just started): it cannot \
                     tell which identity pod {}/{} may use; retry later",
                    pod.namespace, pod.name
                ),
                RETRY_AFTER_NOT_SYNCED,
            )
            .for_pod(pod)));
        }
        let decided_at = self.state.version();
        let identity = match federation.mode(pod) {
            PodMode::Standard => return None,
            PodMode::Misconfigured(text) => {
                return Some(Err(Refusal::new(
                    Reason::Unbound,
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    text,
                )
                .for_pod(pod)));
            }
            PodMode::Federated(identity) => identity,
        };
        let named = format!(
            "service account {}/{}",
            identity.namespace, identity.service_account
        );
        let token = federation
            .issue(pod, identity, &query.identity, &query.resource)
            .await;
        Some(match token {
            Ok(token) => {
                let audit = Audit {
                    pod: pod.name.clone(),
                    namespace: pod.namespace.clone(),
                    identity: named,
                    binding: "federated".into(),
                    client_id: token.identity.client_id.clone(),
                    resource: query.resource.clone(),
                };
                audit.issued(
                    &format_args!("pod {}/{}", pod.namespace, pod.name),
                    token.cached.hit,
                    &self.metrics,
                );
                Ok(Issued {
                    cached: token.cached,
                    audit,
                    decided_at,
                })
            }
            Err(why) => Err(refusal(pod, &named, query, why)),
        })
    }

    /// Waits up to `--pod-wait` for the first list of ServiceAccounts (its arrival moves the
    /// state's version).
    async fn wait_accounts(&self, federation: &Federation<S>) -> bool {
        let deadline = Instant::now() + self.config.pod_wait;
        let mut changes = self.state.subscribe();
        while !federation.is_synced() {
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                return federation.is_synced();
            }
        }
        true
    }
}

fn refusal(pod: &PodFacts, named: &str, query: &TokenQuery, why: Refused) -> Refusal {
    let who = format!("pod {}/{}", pod.namespace, pod.name);
    let r = match why {
        Refused::OtherIdentity(identity) => Refusal::new(
            Reason::NotBound,
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{who} runs as {named}, whose identity is client id {}; it may not use the identity with {}",
                identity.client_id,
                describe_request(&query.identity)
            ),
        ),
        Refused::Upstream(e) => Refusal::upstream(&e),
        Refused::Changed => Refusal::new(
            Reason::ChangedDuringFetch,
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the identity of {named} changed while {who}'s token was fetched"),
        ),
        Refused::NoUid => Refusal::new(
            Reason::NoPod,
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{who} has no UID to bind a service-account token to"),
        ),
    };
    r.for_pod(pod).identity(named.to_owned())
}
