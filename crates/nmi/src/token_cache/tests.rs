use std::time::Duration;

use super::*;
use crate::testing::{Counting, identity};

fn cache(source: &Arc<Counting>, policy: CachePolicy) -> Arc<TokenCache<Counting>> {
    Arc::new(TokenCache::new(source.clone(), policy, Metrics::new()))
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_call() {
    let source = Counting::new();
    *sync::lock(&source.delay) = Duration::from_millis(100);
    let cache = cache(&source, CachePolicy::default());
    let id = identity("ns", "id", 1);
    let gets: Vec<_> = (0..50)
        .map(|_| {
            let (cache, id) = (cache.clone(), id.clone());
            tokio::spawn(async move { cache.get(&id, "https://vault.azure.net").await.unwrap() })
        })
        .collect();
    let mut tokens = Vec::new();
    for g in gets {
        tokens.push(g.await.unwrap());
    }
    assert_eq!(source.calls(), 1);
    assert!(tokens.iter().all(|t| t.token == tokens[0].token));
    assert_eq!(
        tokens.iter().filter(|t| !t.hit).count(),
        1,
        "exactly one request made the call"
    );
    // A later request is served from the cache.
    assert!(cache.get(&id, "https://vault.azure.net").await.unwrap().hit);
    assert_eq!(source.calls(), 1);
}

#[tokio::test]
async fn keyed_by_identity_and_resource() {
    let source = Counting::new();
    let cache = cache(&source, CachePolicy::default());
    let (a, b) = (identity("ns", "a", 1), identity("ns", "b", 2));
    cache.get(&a, "r1").await.unwrap();
    cache.get(&a, "r2").await.unwrap();
    cache.get(&b, "r1").await.unwrap();
    // Another AzureIdentity naming the same managed identity (its resource id) shares its tokens.
    let mut same = identity("other", "a2", 1);
    same.spec.resource_id = a.spec.resource_id.clone();
    cache.get(&same, "r1").await.unwrap();
    assert_eq!(source.calls(), 3);
    assert_eq!(cache.len(), 3);
}

/// NMI asks IMDS by resource id: an AzureIdentity claiming another's client id beside its own
/// resource id is another identity, and never shares the other's tokens.
#[tokio::test]
async fn one_client_id_beside_two_resource_ids_shares_nothing() {
    let source = Counting::new();
    let cache = cache(&source, CachePolicy::default());
    let victim = identity("team", "victim", 1);
    let evil = identity("evil", "mine", 1);
    assert_eq!(victim.spec.client_id(), evil.spec.client_id());
    assert_ne!(CacheKey::of(&victim, "r"), CacheKey::of(&evil, "r"));
    cache.get(&victim, "r").await.unwrap();
    assert!(!cache.get(&evil, "r").await.unwrap().hit);
    assert_eq!(source.calls(), 2);
}

#[tokio::test]
async fn tokens_close_to_expiry_are_never_handed_out() {
    let source = Counting::new();
    *sync::lock(&source.lifetime) = Some(Duration::from_secs(120));
    let cache = cache(&source, CachePolicy::default());
    let id = identity("ns", "id", 1);
    let first = cache.get(&id, "r").await.unwrap();
    let second = cache.get(&id, "r").await.unwrap();
    assert!(!first.hit && !second.hit);
    assert_eq!(source.calls(), 2);
}

#[tokio::test]
async fn refreshes_ahead_of_expiry_in_the_background() {
    let source = Counting::new();
    *sync::lock(&source.lifetime) = Some(Duration::from_secs(20 * 60));
    let cache = cache(&source, CachePolicy::default());
    let id = identity("ns", "id", 1);
    let first = cache.get(&id, "r").await.unwrap();
    // Within the refresh window: still served at once, and a refresh starts.
    let second = cache.get(&id, "r").await.unwrap();
    assert!(second.hit);
    assert_eq!(second.token, first.token);
    for _ in 0..100 {
        if source.calls() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(source.calls(), 2, "a background refresh ran");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let third = cache.get(&id, "r").await.unwrap();
    assert!(third.hit);
    assert_ne!(
        third.token.access_token, first.token.access_token,
        "the refreshed token is served"
    );
}

#[tokio::test]
async fn bounded_by_evicting_the_least_recently_used() {
    let source = Counting::new();
    let cache = cache(
        &source,
        CachePolicy {
            max_entries: 3,
            ..CachePolicy::default()
        },
    );
    let id = identity("ns", "id", 1);
    for r in ["r0", "r1", "r2", "r3", "r4"] {
        cache.get(&id, r).await.unwrap();
        assert!(cache.len() <= 3);
    }
    assert_eq!(cache.len(), 3);
}

#[tokio::test]
async fn a_failure_is_shared_by_the_requests_waiting_for_it_and_not_cached() {
    let source = Counting::new();
    *sync::lock(&source.delay) = Duration::from_millis(100);
    *sync::lock(&source.fail_with) = Some((429, Some(Duration::from_secs(3))));
    let cache = cache(&source, CachePolicy::default());
    let id = identity("ns", "id", 1);
    let gets: Vec<_> = (0..20)
        .map(|_| {
            let (cache, id) = (cache.clone(), id.clone());
            tokio::spawn(async move { cache.get(&id, "r").await })
        })
        .collect();
    for g in gets {
        let e = g.await.unwrap().unwrap_err();
        assert!(matches!(*e, Error::Upstream { status: 429, .. }), "{e}");
    }
    assert_eq!(source.calls(), 1, "one call for the whole crowd");
    *sync::lock(&source.fail_with) = None;
    assert!(!cache.get(&id, "r").await.unwrap().hit, "errors are not cached");
    assert_eq!(source.calls(), 2);
}

/// A pod names the resource, up to a request head's size: long names are bounded in bytes,
/// evicting as on count.
#[tokio::test]
async fn bounded_in_bytes_as_on_count() {
    let source = Counting::new();
    let cache = cache(
        &source,
        CachePolicy {
            max_bytes: 64 * 1024,
            ..CachePolicy::default()
        },
    );
    let id = identity("ns", "id", 1);
    let long = "r".repeat(10 * 1024);
    for i in 0..20 {
        cache.get(&id, &format!("{long}{i}")).await.unwrap();
        assert!(cache.len() <= 3, "{} entries of over 25 KiB", cache.len());
    }
    // Each entry is some 25 KiB (the test token holds the resource). The bound is checked as a
    // key comes in, before its token is known: two entries and the newest's key fit.
    // (Which goes is the least recently used to the second: not asserted within one.)
    assert!((2..=3).contains(&cache.len()), "{} entries", cache.len());
    // Short names, in as many bytes, are bounded by count alone.
    let cache = self::cache(
        &source,
        CachePolicy {
            max_bytes: 64 * 1024,
            max_entries: 100,
            ..CachePolicy::default()
        },
    );
    for i in 0..100 {
        cache.get(&id, &format!("r{i}")).await.unwrap();
    }
    assert_eq!(cache.len(), 100);
}
