//! The token cache: one entry per (identity, resource), refreshed ahead of expiry, filled by a
//! single upstream call however many requests arrive at once, and bounded in size.
//!
//! The cache stores tokens, not decisions: callers look a token up only after deciding, against
//! current state, that the pod may use the identity.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::{AzureIdentity, IdentityType};

use mirror::sync;

use crate::{
    Error,
    metrics::Metrics,
    token::{Token, TokenSource, now},
};

/// What a cached token is for. Managed identities are keyed by resource id alone: NMI asks IMDS
/// by it (see [`crate::token`]), so every AzureIdentity naming it gets that identity's token,
/// whatever client id it claims, and two naming one client id beside different resource ids never
/// share one. Service principals by the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    identity: String,
    resource: String,
}

impl CacheKey {
    pub fn of(identity: &AzureIdentity, resource: &str) -> Self {
        let spec = &identity.spec;
        let client = spec.client_id().unwrap_or_default().to_ascii_lowercase();
        let identity = match spec.identity_type() {
            Ok(IdentityType::UserAssignedMsi) => {
                let resource_id = spec.resource_id().unwrap_or_default().to_ascii_lowercase();
                format!("msi:{resource_id}")
            }
            _ => {
                let secret = spec.client_password();
                format!(
                    "sp:{}:{}/{}:{}:{}:{:?}:{:?}:{:?}",
                    spec.type_.unwrap_or(0),
                    identity.metadata.namespace.as_deref().unwrap_or_default(),
                    identity.metadata.name.as_deref().unwrap_or_default(),
                    client,
                    spec.tenant_id().unwrap_or_default(),
                    spec.ad_endpoint,
                    secret.and_then(|s| s.name.as_deref()),
                    identity.metadata.uid,
                )
            }
        };
        Self {
            identity,
            resource: resource.to_owned(),
        }
    }
}

impl CacheKey {
    /// A federated token (see [`crate::federation`]): per service account, identity and resource.
    pub fn federated(
        namespace: &str,
        service_account: &str,
        client_id: &str,
        tenant: &str,
        resource: &str,
    ) -> Self {
        Self {
            identity: format!(
                "{}{tenant}:{}",
                Self::federated_prefix(namespace, service_account),
                client_id.to_ascii_lowercase()
            ),
            resource: resource.to_owned(),
        }
    }

    /// What every federated key of this service account starts with.
    pub fn federated_prefix(namespace: &str, service_account: &str) -> String {
        format!("fed:{namespace}/{service_account}:")
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// About what the key takes in memory: a pod chooses the resource, up to a request head's
    /// size, so the cache's bound in bytes counts it.
    fn approx_bytes(&self) -> usize {
        self.identity.len() + self.resource.len()
    }
}

/// About what a cache entry takes besides its key and token: the slot, its locks, the map's
/// bucket, the `Arc`s.
const ENTRY_OVERHEAD: usize = 256;

/// About what a token takes in memory.
fn token_bytes(token: &Token) -> usize {
    token.access_token.len()
        + token.token_type.len()
        + token.principal_id.as_ref().map_or(0, String::len)
        + std::mem::size_of::<Token>()
}

/// How long tokens are kept and when they are refreshed.
#[derive(Clone, Copy, Debug)]
pub struct CachePolicy {
    /// A token with less than this left is never handed out: MSAL treats tokens with under five
    /// minutes left as expired and would ask again at once.
    pub min_remaining: Duration,
    /// A token with less than this left is still handed out, and refreshed in the background.
    pub refresh_ahead: Duration,
    /// Most entries kept; the least recently used goes first.
    pub max_entries: usize,
    /// Most bytes the entries take, about (keys, tokens and [`ENTRY_OVERHEAD`] each), evicted as
    /// on count: a pod asking for resources with long names cannot grow the cache past it.
    pub max_bytes: usize,
}

/// Default of [`CachePolicy::max_bytes`]: 4096 entries of a typical 2 to 3 KiB (a JWT of 1.5
/// to 2.5 KiB and its key) are some 12 MiB, so 32 MiB bounds by count for real traffic and by
/// bytes only when keys or tokens are unusually large.
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            min_remaining: Duration::from_secs(6 * 60),
            refresh_ahead: Duration::from_secs(30 * 60),
            max_entries: 4096,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

struct Slot {
    /// Shared with the requests it answers: a token is a kilobyte or two, not copied per request.
    token: RwLock<Option<Arc<Token>>>,
    /// Held while calling upstream, so that concurrent misses make one call.
    fetching: tokio::sync::Mutex<()>,
    /// Bumped after each upstream call; a waiter that sees it move knows the call it waited for is done.
    generation: AtomicU64,
    last_error: Mutex<Option<Arc<Error>>>,
    refreshing: AtomicBool,
    last_used: AtomicU64,
    /// About what the entry's key takes, with [`ENTRY_OVERHEAD`].
    key_bytes: usize,
    /// About what its token takes; 0 until it has one.
    token_bytes: AtomicUsize,
}

impl Slot {
    fn new(key_bytes: usize) -> Self {
        Self {
            token: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            last_error: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            last_used: AtomicU64::new(0),
            key_bytes,
            token_bytes: AtomicUsize::new(0),
        }
    }

    /// About what the entry takes in memory.
    fn bytes(&self) -> usize {
        self.key_bytes + self.token_bytes.load(Ordering::Relaxed)
    }

    fn usable(&self, now: u64, min_remaining: u64) -> Option<Arc<Token>> {
        sync::read(&self.token)
            .as_ref()
            .filter(|t| t.expires_on > now + min_remaining)
            .cloned()
    }
}

/// A token, and whether it came from the cache (no upstream call made for this request).
#[derive(Clone, Debug)]
pub struct Cached {
    pub token: Arc<Token>,
    pub hit: bool,
}

pub struct TokenCache<S> {
    source: Arc<S>,
    policy: CachePolicy,
    slots: RwLock<HashMap<CacheKey, Arc<Slot>>>,
    metrics: Metrics,
}

impl<S: TokenSource> TokenCache<S> {
    pub fn new(source: Arc<S>, policy: CachePolicy, metrics: Metrics) -> Self {
        Self {
            source,
            policy,
            slots: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    pub fn source(&self) -> &Arc<S> {
        &self.source
    }

    pub fn policy(&self) -> CachePolicy {
        self.policy
    }

    pub fn len(&self) -> usize {
        sync::read(&self.slots).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, key: &CacheKey) -> Arc<Slot> {
        if let Some(s) = sync::read(&self.slots).get(key) {
            return s.clone();
        }
        let mut slots = sync::write(&self.slots);
        if let Some(s) = slots.get(key) {
            return s.clone();
        }
        // Summed here rather than kept as a running total: a slot evicted while its token is
        // fetched still stores the token, which a total would count for an entry gone. A new
        // key is rare (a miss, itself an upstream call), and the sum is a few thousand loads.
        let key_bytes = key.approx_bytes() + ENTRY_OVERHEAD;
        let mut used: usize = slots.values().map(|s| s.bytes()).sum();
        while !slots.is_empty()
            && (slots.len() >= self.policy.max_entries.max(1) || used + key_bytes > self.policy.max_bytes)
        {
            let oldest = slots
                .iter()
                .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(gone) = oldest.and_then(|k| slots.remove(&k)) {
                used = used.saturating_sub(gone.bytes());
            }
        }
        let slot = Arc::new(Slot::new(key_bytes));
        slots.insert(key.clone(), slot.clone());
        self.metrics.cache_entries.set(slots.len() as i64);
        slot
    }

    /// A token for `identity` and `resource`. The caller must already have authorized the request.
    pub async fn get(
        self: &Arc<Self>,
        identity: &AzureIdentity,
        resource: &str,
    ) -> Result<Cached, Arc<Error>> {
        let key = CacheKey::of(identity, resource);
        // Cloned only when an upstream call is due, not for every cached answer.
        self.get_or_fill(key, || {
            let (source, identity, resource) = (self.source.clone(), identity.clone(), resource.to_owned());
            async move { source.fetch(&identity, &resource).await }
        })
        .await
    }

    /// A token under `key`, fetched by `fill` when none is usable, with the same refresh-ahead,
    /// single flight and error sharing as every token. The caller must already have authorized
    /// the request.
    pub async fn get_or_fill<F, Fut>(self: &Arc<Self>, key: CacheKey, fill: F) -> Result<Cached, Arc<Error>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = crate::Result<Token>> + Send + 'static,
    {
        let slot = self.slot(&key);
        let now = now();
        slot.last_used.store(now, Ordering::Relaxed);
        let min = self.policy.min_remaining.as_secs();
        if let Some(token) = slot.usable(now, min) {
            if token.expires_on <= now + self.policy.refresh_ahead.as_secs()
                && !slot.refreshing.swap(true, Ordering::AcqRel)
            {
                let (slot, call) = (slot.clone(), fill());
                tokio::spawn(async move {
                    let _guard = slot.fetching.lock().await;
                    let _ = Self::store(&slot, call.await);
                    slot.refreshing.store(false, Ordering::Release);
                });
            }
            return Ok(Cached { token, hit: true });
        }
        let seen = slot.generation.load(Ordering::Acquire);
        let _guard = slot.fetching.lock().await;
        if let Some(token) = slot.usable(crate::token::now(), min) {
            return Ok(Cached { token, hit: true });
        }
        // The call this request waited for failed: share its answer rather than call again, so a
        // crowd of requests meeting an IMDS 429 makes one more call, not one each.
        if slot.generation.load(Ordering::Acquire) != seen
            && let Some(e) = sync::lock(&slot.last_error).clone()
        {
            return Err(e);
        }
        // Boxed: only the request that calls upstream holds the call's state (an HTTP client's
        // future, some KiB); those waiting for the lock above do not carry room for it.
        Self::store(&slot, Box::pin(fill()).await).map(|token| Cached { token, hit: false })
    }

    /// The resources of the entries of `identity` (a key's [`CacheKey::identity`]) that hold a
    /// token, most recently used first, at most `max`: what NMI has lately served that identity,
    /// which [`crate::readiness`] fetches ahead for its next pods.
    pub fn resources_of(&self, identity: &str, max: usize) -> Vec<String> {
        let slots = sync::read(&self.slots);
        let mut found: Vec<(u64, &str)> = slots
            .iter()
            .filter(|(k, s)| k.identity == identity && sync::read(&s.token).is_some())
            .map(|(k, s)| (s.last_used.load(Ordering::Relaxed), k.resource.as_str()))
            .collect();
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        found.into_iter().take(max).map(|(_, r)| r.to_owned()).collect()
    }

    /// Drops every entry whose key's identity starts with `prefix`, at once: a token that must no
    /// longer be handed out is not kept for a later request to find.
    pub fn forget(&self, prefix: &str) -> usize {
        let mut slots = sync::write(&self.slots);
        let before = slots.len();
        slots.retain(|k, _| !k.identity.starts_with(prefix));
        self.metrics.cache_entries.set(slots.len() as i64);
        before - slots.len()
    }

    fn store(slot: &Slot, result: crate::Result<Token>) -> Result<Arc<Token>, Arc<Error>> {
        let result = result.map(Arc::new).map_err(Arc::new);
        match &result {
            Ok(t) => {
                slot.token_bytes.store(token_bytes(t), Ordering::Relaxed);
                *sync::write(&slot.token) = Some(t.clone());
                *sync::lock(&slot.last_error) = None;
            }
            Err(e) => *sync::lock(&slot.last_error) = Some(e.clone()),
        }
        slot.generation.fetch_add(1, Ordering::AcqRel);
        result
    }
}

#[cfg(test)]
mod tests;
