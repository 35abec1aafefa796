//! The `aadpodidentity.k8s.io/IdentityReady` pod condition, and a warm first token.
//!
//! For each pod of this node that uses an identity (an `aadpodidbinding` label, or federated
//! mode's opt-in), NMI works out which condition it should have ([`desired`], pure) and writes
//! it when its status or reason changes (`writer`). A pod whose identity is usable gets its token
//! fetched first, through the very token cache the request path uses (`prefetch`), so that the
//! condition says `True` only once a token was actually obtained, and the pod's first request is
//! a cache hit.
//!
//! **Which resources.** NMI cannot know what a pod will ask for; it fetches, in this order:
//! 1. the resources the pod's `aadpodidentity.k8s.io/token-resources` annotation names
//!    (comma-separated `https://` or `api://` URIs or application ids, at most 8, each spelled
//!    exactly as the pod's SDK asks, since the cache key is the resource as given): the pod
//!    knows best, and all of them must succeed for `True`;
//! 2. else the resources NMI has lately served the same identity (its token cache's entries
//!    holding a token, at most 8, most recent first): the pods of one workload ask the same;
//! 3. else `https://management.azure.com/`: a token of Azure Resource Manager proves the
//!    identity works, whatever the pod then asks.
//!
//! **No extra load on IMDS or Entra.** Tokens are fetched per cache key (identity and resource;
//! federated: service account and resource), once per pass however many pods share the key, and
//! the cache's single flight joins a request arriving meanwhile; a failed key backs off (2 s
//! doubling to 5 min) whatever the number of pods. So 50 pods of one identity make one IMDS call
//! per resource per token lifetime.
//!
//! **When.** A pass runs at every change of the watched state (debounced), at the end of the
//! earliest back-off, and every `resync` otherwise; it skips while the state is not synced or
//! is stale (NMI writes no conclusion it could not act on). A pass fetches at most
//! `max_fetches_per_pass` keys; the rest come in the next pass, at once.

pub mod desired;
pub mod resources;

mod prefetch;
mod writer;

use std::{collections::HashSet, sync::Arc, time::Duration};

use api::v1::{IDENTITY_READY_CONDITION, TOKEN_RESOURCES_ANNOTATION};
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time};
use matching::{IdentityRequest, PodFacts};
use mirror::Key;
use tokio::time::Instant;

use self::{
    desired::{Outcome, Verdict, desired, verdict_of},
    prefetch::{Fetch, Prefetcher, Wanted},
    resources::{MAX_RESOURCES, TokenResources},
    writer::{Job, Writer},
};
use crate::{
    authorizer::Authorizer,
    federation::decide::{PodMode, USE_LABEL},
    state::Decision,
    token::TokenSource,
    token_cache::CacheKey,
};

/// What the writer needs of a pod besides its facts: its IdentityReady condition now, and the
/// resources its annotation names. Kept by the pod watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodReadiness {
    pub condition: Option<ReadyCondition>,
    pub token_resources: TokenResources,
}

/// A pod's IdentityReady condition, as the apiserver has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadyCondition {
    pub status: String,
    pub reason: String,
    pub last_transition: Option<Time>,
}

/// Longest reason kept from a pod's condition (anyone with `pods/status` may write one).
const MAX_KEPT_REASON: usize = 256;

impl From<&Pod> for PodReadiness {
    fn from(pod: &Pod) -> Self {
        let condition = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == IDENTITY_READY_CONDITION))
            .map(|c| ReadyCondition {
                status: c.status.clone(),
                reason: c
                    .reason
                    .clone()
                    .filter(|r| r.len() <= MAX_KEPT_REASON)
                    .unwrap_or_default(),
                last_transition: c.last_transition_time.clone(),
            });
        let token_resources = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOKEN_RESOURCES_ANNOTATION))
            .map(|v| TokenResources::parse(v))
            .unwrap_or_default();
        Self {
            condition,
            token_resources,
        }
    }
}

/// How often and how much.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Longest time between passes when nothing changes.
    pub resync: Duration,
    /// Most keys fetched in one pass.
    pub max_fetches_per_pass: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(60),
            max_fetches_per_pass: 64,
        }
    }
}

/// Bursts of changes (a deployment's pods starting) make one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Starts keeping the condition of this node's pods (and their first tokens warm), with the
/// authorizer's state, token cache and federated mode. Runs until the runtime stops.
pub fn spawn<S: TokenSource>(authorizer: Arc<Authorizer<S>>, client: kube::Client, config: Config) {
    let writer = Writer::start(authorizer.state.clone(), client, authorizer.metrics.clone());
    let worker = Worker {
        authorizer,
        prefetcher: Prefetcher::default(),
        writer,
        config,
    };
    tokio::spawn(worker.run());
}

struct Worker<S> {
    authorizer: Arc<Authorizer<S>>,
    prefetcher: Prefetcher,
    writer: Arc<Writer>,
    config: Config,
}

/// One pod's part in a pass.
struct Plan {
    key: Key,
    uid: Option<String>,
    current: Option<ReadyCondition>,
    verdict: Verdict,
    /// The tokens to have, when the verdict is usable.
    wanted: Vec<Wanted>,
}

impl<S: TokenSource> Worker<S> {
    async fn run(self) {
        let mut changes = self.authorizer.state.subscribe();
        loop {
            let next = self.pass().await;
            let resync = Instant::now() + self.config.resync;
            let wake = next.map_or(resync, |n| n.min(resync));
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(wake) => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            changes.borrow_and_update();
        }
    }

    /// One pass over this node's pods; the time the next should run at the latest.
    ///
    /// A pod whose verdict needs no token (not assigned, refused, no match) has its condition
    /// offered at once; only the plans of usable pods are kept while their tokens are fetched. (A
    /// pass runs at every change of the watched state, over every pod of the node: the plans of
    /// all of them, kept across the fetches, held some 0.5 MB at 1,000 pods while their
    /// conditions were being written.)
    async fn pass(&self) -> Option<Instant> {
        let state = &self.authorizer.state;
        if !state.is_synced() || state.is_stale() {
            return None;
        }
        let candidates = state.pods.candidates();
        // The pods that use an identity, by (namespace, name): the writer forgets the others.
        let mut live: HashSet<(&str, &str)> = HashSet::new();
        let mut usable: Vec<Plan> = Vec::new();
        for (pod, readiness) in &candidates {
            let Some(plan) = self.plan(pod, readiness) else {
                continue;
            };
            live.insert((pod.namespace.as_str(), pod.name.as_str()));
            if matches!(plan.verdict, Verdict::Usable { .. }) {
                usable.push(plan);
            } else {
                self.offer(plan, &Outcome::Pending);
            }
        }
        let mut seen = HashSet::new();
        let wanted: Vec<Wanted> = usable
            .iter()
            .flat_map(|p| p.wanted.iter())
            .filter(|w| seen.insert(w.key.clone()))
            .cloned()
            .collect();
        drop(seen);
        let fetched = self
            .prefetcher
            .run(
                &self.authorizer.cache,
                self.authorizer.federation(),
                wanted,
                self.config.max_fetches_per_pass,
            )
            .await;
        let metrics = &self.authorizer.metrics;
        metrics.prefetched("fetched", fetched.obtained);
        metrics.prefetched("cached", fetched.cached);
        metrics.prefetched("failed", fetched.failed);
        metrics.prefetched("backing_off", fetched.backing_off);
        for plan in usable {
            let outcome = self.prefetcher.outcome(&plan.wanted);
            self.offer(plan, &outcome);
        }
        self.writer
            .sweep(|(namespace, name)| live.contains(&(namespace.as_str(), name.as_str())));
        if fetched.more {
            return Some(Instant::now());
        }
        fetched.next_retry
    }

    /// Queues the condition `plan` calls for, given what fetching its tokens gave.
    fn offer(&self, plan: Plan, outcome: &Outcome) {
        if let Some(want) = desired(&plan.verdict, outcome) {
            let job = Job {
                uid: plan.uid,
                desired: want,
                current: plan.current,
            };
            self.writer.offer(plan.key, job);
        }
    }

    /// What a pod needs, or `None` for a pod that uses no identity (or not yet decidable).
    fn plan(&self, pod: &Arc<PodFacts>, readiness: &PodReadiness) -> Option<Plan> {
        let state = &self.authorizer.state;
        if pod.node.as_deref() != Some(state.node.as_str()) {
            return None;
        }
        let plan = |verdict: Verdict, wanted: Vec<Wanted>| Plan {
            key: (pod.namespace.clone(), pod.name.clone()),
            uid: pod.uid.clone(),
            current: readiness.condition.clone(),
            verdict,
            wanted,
        };
        if let Some(federation) = self.authorizer.federation()
            && pod.labels.contains_key(USE_LABEL)
        {
            if !federation.is_synced() {
                return None;
            }
            match federation.mode(pod) {
                PodMode::Federated(identity) => {
                    let prefix = CacheKey::federated(
                        &identity.namespace,
                        &identity.service_account,
                        &identity.client_id,
                        &identity.tenant_id,
                        "",
                    );
                    let wanted = self
                        .resources(readiness, prefix.identity())
                        .into_iter()
                        .map(|resource| Wanted {
                            key: CacheKey::federated(
                                &identity.namespace,
                                &identity.service_account,
                                &identity.client_id,
                                &identity.tenant_id,
                                &resource,
                            ),
                            resource,
                            fetch: Fetch::Federated {
                                pod: pod.clone(),
                                identity: identity.clone(),
                            },
                        })
                        .collect();
                    let name = format!(
                        "{} (service account {}/{})",
                        identity.client_id, identity.namespace, identity.service_account
                    );
                    return Some(plan(Verdict::Usable { identity: name }, wanted));
                }
                PodMode::Misconfigured(detail) => return Some(plan(Verdict::NoMatch { detail }, vec![])),
                PodMode::Standard => {}
            }
        }
        if pod.binding_label().is_none() || state.is_excepted(pod) {
            return None;
        }
        let decision = state.decide(pod, &IdentityRequest::Default, |_| None);
        let identity = match &decision {
            Decision::Use { identity, .. } => Some(identity.clone()),
            _ => None,
        };
        let verdict = verdict_of(decision, |id| state.assignment_failure(pod, id))?;
        let wanted = identity
            .map(|identity| {
                let prefix = CacheKey::of(&identity, "");
                self.resources(readiness, prefix.identity())
                    .into_iter()
                    .map(|resource| Wanted {
                        key: CacheKey::of(&identity, &resource),
                        resource,
                        fetch: Fetch::Identity(identity.clone()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(plan(verdict, wanted))
    }

    fn resources(&self, readiness: &PodReadiness, identity_key: &str) -> Vec<String> {
        let recent = if readiness.token_resources.resources.is_empty() {
            self.authorizer.cache.resources_of(identity_key, MAX_RESOURCES)
        } else {
            vec![]
        };
        resources::choose(&readiness.token_resources, recent)
    }
}

#[cfg(test)]
mod tests;
