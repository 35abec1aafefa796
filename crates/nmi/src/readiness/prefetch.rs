//! Fetching tokens ahead of pods' first requests, through NMI's one token cache (so a pod's
//! first request is then a cache hit), once per cache key however many pods share it: a pass
//! collects the keys its pods need and fetches each once ([`Prefetcher::run`]); the cache's
//! single flight covers a request arriving meanwhile. A key whose fetch failed is not fetched
//! again before its back-off ends, so a crowd of pods meeting a failing IMDS makes one call per
//! back-off, not one per pod and pass.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use api::AzureIdentity;
use futures_util::{StreamExt, stream};
use matching::{IdentityRequest, PodFacts};
use mirror::sync;
use tokio::time::Instant;

use super::desired::{MAX_MESSAGE, Outcome, one_line};
use crate::{
    cache::{CacheKey, TokenCache},
    federated::{Federation, Refused, decide::FederatedIdentity},
    token::TokenSource,
};

/// Most keys fetched at once.
const CONCURRENT_FETCHES: usize = 4;
/// First wait before a failed key is fetched again; doubled at each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How a key's token is fetched.
#[derive(Clone)]
pub(super) enum Fetch {
    /// Standard or managed mode: the AzureIdentity's token, as the request path gets it.
    Identity(Arc<AzureIdentity>),
    /// Federated mode: the service account's token, exchanged with a token bound to this pod.
    Federated {
        pod: Arc<PodFacts>,
        identity: FederatedIdentity,
    },
}

/// One token to have: its cache key, how to fetch it, and for which resource.
#[derive(Clone)]
pub(super) struct Wanted {
    pub key: CacheKey,
    pub resource: String,
    pub fetch: Fetch,
}

/// What the last fetch of a key gave.
#[derive(Clone, Debug)]
enum KeyState {
    Obtained,
    Failed {
        error: String,
        retry_at: Instant,
        backoff: Duration,
    },
}

/// The fetch results by key, kept across passes (for back-off) and swept of keys no pod needs.
#[derive(Default)]
pub(super) struct Prefetcher {
    keys: Mutex<HashMap<CacheKey, KeyState>>,
}

/// What one pass of fetches did, for metrics and the next wake-up.
#[derive(Debug, Default)]
pub(super) struct Fetched {
    /// Tokens fetched from IMDS or Entra.
    pub obtained: usize,
    /// Tokens the cache already had.
    pub cached: usize,
    pub failed: usize,
    /// Keys skipped because their back-off has not ended.
    pub backing_off: usize,
    /// More keys were due than a pass fetches: the next pass should run soon.
    pub more: bool,
    /// The earliest end of a back-off, when the pass should run again.
    pub next_retry: Option<Instant>,
}

impl Prefetcher {
    /// Fetches each of `wanted` (distinct keys) whose back-off has ended, at most `max` of them;
    /// then forgets keys not in `wanted`.
    pub async fn run<S: TokenSource>(
        &self,
        cache: &Arc<TokenCache<S>>,
        federation: Option<&Arc<Federation<S>>>,
        wanted: Vec<Wanted>,
        max: usize,
    ) -> Fetched {
        let now = Instant::now();
        let mut done = Fetched::default();
        let mut due: Vec<Wanted> = {
            let keys = sync::lock(&self.keys);
            wanted
                .iter()
                .filter(|w| match keys.get(&w.key) {
                    Some(KeyState::Failed { retry_at, .. }) if *retry_at > now => {
                        done.backing_off += 1;
                        false
                    }
                    _ => true,
                })
                .cloned()
                .collect()
        };
        if due.len() > max {
            done.more = true;
            due.truncate(max);
        }
        let results: Vec<(CacheKey, Result<bool, String>)> = stream::iter(due)
            .map(|w| async move {
                let result = fetch(cache, federation, &w).await;
                (w.key, result)
            })
            .buffer_unordered(CONCURRENT_FETCHES)
            .collect()
            .await;
        let mut keys = sync::lock(&self.keys);
        for (key, result) in results {
            match result {
                Ok(hit) => {
                    if hit {
                        done.cached += 1;
                    } else {
                        done.obtained += 1;
                    }
                    keys.insert(key, KeyState::Obtained);
                }
                Err(error) => {
                    done.failed += 1;
                    let backoff = match keys.get(&key) {
                        Some(KeyState::Failed { backoff, .. }) => (*backoff * 2).min(MAX_BACKOFF),
                        _ => FIRST_BACKOFF,
                    };
                    keys.insert(
                        key,
                        KeyState::Failed {
                            error,
                            retry_at: Instant::now() + backoff,
                            backoff,
                        },
                    );
                }
            }
        }
        let needed: std::collections::HashSet<&CacheKey> = wanted.iter().map(|w| &w.key).collect();
        keys.retain(|k, _| needed.contains(k));
        done.next_retry = keys
            .values()
            .filter_map(|s| match s {
                KeyState::Failed { retry_at, .. } => Some(*retry_at),
                KeyState::Obtained => None,
            })
            .min();
        done
    }

    /// A pod's outcome from its keys' states: failed if any failed, obtained once all were.
    pub fn outcome(&self, wanted: &[Wanted]) -> Outcome {
        let keys = sync::lock(&self.keys);
        let mut resources = Vec::with_capacity(wanted.len());
        for w in wanted {
            match keys.get(&w.key) {
                None => return Outcome::Pending,
                Some(KeyState::Failed { error, .. }) => {
                    return Outcome::Failed {
                        resource: w.resource.clone(),
                        error: error.clone(),
                    };
                }
                Some(KeyState::Obtained) => resources.push(w.resource.clone()),
            }
        }
        if resources.is_empty() {
            return Outcome::Pending;
        }
        Outcome::Obtained { resources }
    }
}

/// One key's token, through the cache the request path uses; `Ok(true)`: a cache hit.
async fn fetch<S: TokenSource>(
    cache: &Arc<TokenCache<S>>,
    federation: Option<&Arc<Federation<S>>>,
    w: &Wanted,
) -> Result<bool, String> {
    // Errors come from IMDS, Entra or the apiserver and may carry their bodies: one short line.
    let short = |e: &dyn std::fmt::Display| one_line(&e.to_string(), MAX_MESSAGE / 2);
    match &w.fetch {
        Fetch::Identity(identity) => cache
            .get(identity, &w.resource)
            .await
            .map(|c| c.hit)
            .map_err(|e| short(&e)),
        Fetch::Federated { pod, identity } => {
            let Some(federation) = federation else {
                return Err("federated mode is off".into());
            };
            match federation
                .issue(pod, identity.clone(), &IdentityRequest::Default, &w.resource)
                .await
            {
                Ok(issued) => Ok(issued.cached.hit),
                Err(Refused::Upstream(e)) => Err(short(&e)),
                Err(Refused::NoUid) => Err("the pod has no UID to bind a service-account token to".into()),
                Err(Refused::Changed) => {
                    Err("the service account's identity changed during the fetch".into())
                }
                Err(Refused::OtherIdentity(_)) => Err("the service account names another identity".into()),
            }
        }
    }
}
