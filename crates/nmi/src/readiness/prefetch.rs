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
    Error,
    federation::{Federation, Refused, decide::FederatedIdentity},
    token::TokenSource,
    token_cache::{CacheKey, TokenCache},
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
        let results: Vec<(CacheKey, Result<bool, Arc<Error>>)> = stream::iter(due)
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
                    // The condition's message: errors come from IMDS, Entra or the apiserver and
                    // may carry their bodies, so one short line.
                    let error = one_line(&error.to_string(), MAX_MESSAGE / 2);
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
) -> Result<bool, Arc<Error>> {
    match &w.fetch {
        Fetch::Identity(identity) => cache.get(identity, &w.resource).await.map(|c| c.hit),
        Fetch::Federated { pod, identity } => {
            // The reasons federated mode gives no token, as the condition says them.
            let unusable = |why: &str| Arc::new(Error::Identity(why.to_owned()));
            let Some(federation) = federation else {
                return Err(unusable("federated mode is off"));
            };
            match federation
                .issue(pod, identity.clone(), &IdentityRequest::Default, &w.resource)
                .await
            {
                Ok(token) => Ok(token.cached.hit),
                Err(Refused::Upstream(e)) => Err(e),
                Err(Refused::NoUid) => Err(unusable("the pod has no UID to bind a service-account token to")),
                Err(Refused::Changed) => Err(unusable(
                    "the service account's identity changed during the fetch",
                )),
                Err(Refused::OtherIdentity(_)) => Err(unusable("the service account names another identity")),
            }
        }
    }
}
