//! Issuing a pod the token of an identity its bindings give it ([`Authorizer::issue`]): the
//! decision against the watched state, waiting for MIC; the token from the token cache, held
//! while IMDS lacks an identity MIC reports assigned (see `missing`); and the decision checked
//! again once the token is there, since the pod or its binding may have gone meanwhile.

use std::sync::Arc;

use api::AzureIdentity;
use axum::http::StatusCode;
use matching::{IdentityRequest, NotChosen, PodFacts};
use tokio::time::Instant;

use super::{Audit, Authorizer, Issued, TokenQuery, caller::Caller, denials::IdentityName};
use crate::{
    Error,
    refusal::{Reason, Refusal},
    state::{Decision, PodLookup},
    token::TokenSource,
    token_cache::Cached,
};

/// A decision that the pod may use this identity.
struct Authorized {
    pod: Arc<PodFacts>,
    identity: Arc<AzureIdentity>,
    binding: String,
    /// The state version the decision was taken at.
    decided_at: u64,
}

/// A token fetched for an authorized decision, before the decision is checked again.
struct Fetched {
    authorized: Authorized,
    cached: Cached,
    /// How often IMDS answered "Identity not found" before it gave the token.
    held: u32,
}

impl<S: TokenSource> Authorizer<S> {
    /// Authorizes the caller's `pod` and fetches its token, holding the request within
    /// `--identity-wait` while IMDS lacks an identity MIC reports assigned (deciding again after
    /// each pause); re-checks authorization after the fetch, since the pod or its binding may have
    /// gone while NMI talked to Azure (unless nothing changed at all).
    pub(super) async fn issue(
        &self,
        caller: &Caller,
        pod: Arc<PodFacts>,
        query: &TokenQuery,
    ) -> Result<Issued, Refusal> {
        let Fetched {
            authorized:
                Authorized {
                    pod,
                    identity,
                    binding,
                    decided_at,
                },
            cached,
            held,
        } = self.fetch(caller, pod, query).await?;
        self.principals.learn(&identity, &cached);
        // Nothing mirrored changed since the decision (the usual case of a cached token): it holds.
        let still = self.state.version() == decided_at || self.still_decided(caller, &pod, query, &identity);
        let id = IdentityName::of(&identity);
        if !still {
            return Err(Refusal::new(
                Reason::ChangedDuringFetch,
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "pod {}/{} lost its binding to {} while its token was fetched",
                    pod.namespace, pod.name, id.name,
                ),
            )
            .for_pod(&pod)
            .identity(id.to_string()));
        }
        if held > 0 {
            tracing::info!(
                pod = %pod.name, namespace = %pod.namespace, identity = id.name, tries = held + 1,
                "IMDS has the identity again: the held request got its token"
            );
        }
        let audit = Audit {
            pod: pod.name.clone(),
            namespace: pod.namespace.clone(),
            identity: id.to_string(),
            binding,
            client_id: identity.spec.client_id().unwrap_or_default().to_owned(),
            resource: query.resource.clone(),
        };
        audit.issued(caller, cached.hit, &self.metrics);
        Ok(Issued {
            cached,
            audit,
            decided_at,
        })
    }

    /// Decides and fetches from the token cache, pausing (see `missing`) and deciding
    /// again while IMDS lacks an identity MIC reports assigned, until `--identity-wait` runs out.
    async fn fetch(
        &self,
        caller: &Caller,
        pod: Arc<PodFacts>,
        query: &TokenQuery,
    ) -> Result<Fetched, Refusal> {
        let deadline = Instant::now() + self.config.identity_wait;
        let mut pod = pod;
        // Times IMDS answered "Identity not found" for this request.
        let mut held = 0;
        loop {
            let a = self.authorize(caller, pod, query, deadline).await?;
            match self.cache.get(&a.identity, &query.resource).await {
                Ok(cached) => {
                    return Ok(Fetched {
                        authorized: a,
                        cached,
                        held,
                    });
                }
                Err(e) if self.holds_for(&e) => {
                    self.report_missing(&a.pod, &a.identity);
                    let holds = || self.still_decided(caller, &a.pod, query, &a.identity);
                    if !self.pause_for_imds(held, deadline, holds).await {
                        return Err(self.still_missing(&a.pod, &a.identity));
                    }
                    held += 1;
                    pod = self.find_pod(caller).await?;
                }
                Err(e) => {
                    return Err(Refusal::upstream(&e)
                        .for_pod(&a.pod)
                        .identity(IdentityName::of(&a.identity).to_string()));
                }
            }
        }
    }

    /// Decides, waiting for MIC (woken by the AzureAssignedIdentity watch) until `deadline`.
    async fn authorize(
        &self,
        caller: &Caller,
        pod: Arc<PodFacts>,
        query: &TokenQuery,
        deadline: Instant,
    ) -> Result<Authorized, Refusal> {
        // Subscribed only once a wait is needed (then the state is decided again first, so that no
        // change after the subscription is missed).
        let mut changes: Option<tokio::sync::watch::Receiver<u64>> = None;
        let mut pod = pod;
        let mut learned = false;
        let mut learn_failure: Option<Arc<Error>> = None;
        // Times IMDS answered "Identity not found" while principals were learned.
        let mut missing = 0;
        loop {
            // Read before deciding: a change that lands during the decision moves it.
            let version = self.state.version();
            match self
                .state
                .decide(&pod, &query.identity, |c| self.principals.of(c))
            {
                Decision::Use {
                    identity,
                    binding,
                    out_of,
                } => {
                    if out_of > 1 && query.identity == IdentityRequest::Default {
                        tracing::info!(
                            pod = %pod.name, namespace = %pod.namespace, binding,
                            identity = identity.metadata.name.as_deref().unwrap_or_default(),
                            out_of,
                            "request names no identity; chose the identity of the oldest binding"
                        );
                    }
                    return Ok(Authorized {
                        pod,
                        identity,
                        binding,
                        decided_at: version,
                    });
                }
                Decision::LearnPrincipals(identities) if !learned => {
                    learned = true;
                    learn_failure = None;
                    for identity in identities {
                        match self.cache.get(&identity, &query.resource).await {
                            Ok(cached) => self.principals.learn(&identity, &cached),
                            Err(e) => {
                                if self.holds_for(&e) {
                                    self.report_missing(&pod, &identity);
                                }
                                learn_failure = Some(e);
                            }
                        }
                    }
                    continue;
                }
                Decision::LearnPrincipals(_) => match learn_failure.take() {
                    // One of the identities is not on the VM (yet): the one asked for may be it.
                    Some(e) if self.holds_for(&e) => {
                        let learning = || {
                            matches!(
                                self.state
                                    .decide(&pod, &query.identity, |c| self.principals.of(c)),
                                Decision::LearnPrincipals(_)
                            )
                        };
                        if !self.pause_for_imds(missing, deadline, learning).await {
                            return Err(self.not_yet_usable(
                                Reason::IdentityMissingOnVm,
                                &pod,
                                format!(
                                    "pod {}/{} asked for {}, which cannot be told apart yet: an \
                                     identity it is bound to is not yet on node {} ({e}); retry later",
                                    pod.namespace,
                                    pod.name,
                                    crate::refusal::describe_request(&query.identity),
                                    self.state.node
                                ),
                            ));
                        }
                        missing += 1;
                        learned = false;
                    }
                    // An identity whose principal could not be learned may be the one asked for:
                    // a transient failure must stay retryable rather than become a refusal.
                    Some(e) => return Err(Refusal::upstream(&e).for_pod(&pod)),
                    None => {
                        return Err(self.forbidden(&pod, &NotChosen::NotBound(query.identity.clone())));
                    }
                },
                Decision::Refused(why) => return Err(self.forbidden(&pod, &why)),
                Decision::NotAllowed { identity, refusal } => {
                    return Err(self.not_allowed(&pod, identity, &refusal));
                }
                Decision::Waiting { .. } if changes.is_none() => {
                    changes = Some(self.state.subscribe());
                    continue;
                }
                Decision::Waiting { identity } => {
                    let changes = changes.as_mut().expect("subscribed before waiting");
                    let timed_out = tokio::select! {
                        r = changes.changed() => r.is_err(),
                        () = tokio::time::sleep_until(deadline) => true,
                    };
                    if timed_out {
                        let text = format!(
                            "identity {identity} is not yet assigned to pod {}/{} on node {} (waiting for MIC); retry later",
                            pod.namespace, pod.name, self.state.node
                        );
                        let refusal = self.not_yet_usable(Reason::NotAssigned, &pod, text);
                        return Err(refusal.identity(identity));
                    }
                }
            }
            // The pod itself may have gone (or its IP moved) while waiting.
            pod = self.find_pod(caller).await?;
        }
    }

    /// Whether the caller is still `pod`, and the state still gives it `identity` for `query`.
    fn still_decided(
        &self,
        caller: &Caller,
        pod: &PodFacts,
        query: &TokenQuery,
        identity: &AzureIdentity,
    ) -> bool {
        match self.lookup(caller) {
            PodLookup::Found(now) if now.namespace == pod.namespace && now.name == pod.name => {
                match self
                    .state
                    .decide(&now, &query.identity, |c| self.principals.of(c))
                {
                    Decision::Use { identity: again, .. } => again.metadata == identity.metadata,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}
