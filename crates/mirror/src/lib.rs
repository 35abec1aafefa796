//! In-memory mirrors of watched Kubernetes kinds, shared by MIC and NMI.
//!
//! Both components decide from what they watch, and both must stay small: at 10,000 pods,
//! whole `Pod` and `AzureAssignedIdentity` objects (2 KB and more each before their strings)
//! would dominate their memory. A watch here converts each object to the few facts its owner
//! decides with as it arrives, and keeps only those, keyed by namespace and name. An owner
//! hears of every change and failure through [`Observer`], so NMI can refuse to decide on a
//! state it can no longer prove and MIC can plan again.
//!
//! [`sync`] holds the lock policy NMI, MIC and the mirrors share: a poisoned lock is used
//! anyway, since every guarded structure is consistent wherever a panic can interrupt it (the
//! module says why in full).
#![forbid(unsafe_code)]

pub mod sync;

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use kube::{Api, Resource, runtime::watcher};
use serde::de::DeserializeOwned;

/// `(namespace, name)`; the namespace is empty for cluster-scoped kinds.
pub type Key = (String, String);

pub fn key_of<K: Resource>(o: &K) -> Key {
    let m = o.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// Receives a watch's objects.
pub trait Sink<T>: Send + Sync {
    fn apply(&self, key: Key, item: T);
    fn delete(&self, key: &Key);
    /// Replaces everything with a fresh list; the mirror is ready from then on.
    fn replace(&self, items: Vec<(Key, T)>);
}

/// Hears how an owner's watches are doing.
pub trait Observer: Send + Sync + 'static {
    /// A list or an event arrived for `kind`: the mirror is current again.
    fn changed(&self, kind: &'static str);
    /// The watch of `kind` failed; it lists again after a backoff.
    fn failed(&self, kind: &'static str, error: &watcher::Error);
}

/// A plain mirror of one kind, keyed by namespace and name.
pub struct Mirror<T> {
    items: RwLock<HashMap<Key, Arc<T>>>,
    ready: AtomicBool,
}

impl<T> Default for Mirror<T> {
    fn default() -> Self {
        Self {
            items: RwLock::default(),
            ready: AtomicBool::new(false),
        }
    }
}

impl<T: Send + Sync> Sink<T> for Mirror<T> {
    fn apply(&self, key: Key, item: T) {
        sync::write(&self.items).insert(key, Arc::new(item));
    }
    fn delete(&self, key: &Key) {
        sync::write(&self.items).remove(key);
    }
    fn replace(&self, items: Vec<(Key, T)>) {
        *sync::write(&self.items) = items.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        self.ready.store(true, Ordering::Release);
    }
}

impl<T> Mirror<T> {
    /// The current items, read-locked while the guard lives.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Arc<T>>> {
        sync::read(&self.items)
    }
    /// Runs `f` over the current items.
    pub fn with<R>(&self, f: impl FnOnce(&HashMap<Key, Arc<T>>) -> R) -> R {
        f(&sync::read(&self.items))
    }
    /// The current items (cheap: the items are shared, not copied).
    pub fn snapshot(&self) -> Vec<Arc<T>> {
        sync::read(&self.items).values().cloned().collect()
    }
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        sync::read(&self.items)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
    pub fn len(&self) -> usize {
        sync::read(&self.items).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the first list has arrived.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Keeps `sink(owner)` current with the objects `api` and `config` select, converted by
/// `convert`, until the returned task is aborted.
///
/// Each error drops the stream and starts a fresh watcher after a backoff (250 ms doubling to
/// 5 s; kube's default grows to minutes, leaving a component blind long after an apiserver
/// outage). The fresh watcher's first success is a full list, which replaces whatever was
/// missed. Resuming from a resourceVersion instead would give no event to prove the state
/// current, which NMI needs.
pub fn spawn<K, T, S, O>(
    owner: Arc<O>,
    api: Api<K>,
    config: watcher::Config,
    sink: fn(&O) -> &S,
    convert: fn(K) -> T,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    T: Send + 'static,
    S: Sink<T> + 'static,
    O: Observer,
{
    tokio::spawn(async move {
        let kind = std::any::type_name::<K>().rsplit("::").next().unwrap_or("object");
        let mut backoff = Duration::from_millis(250);
        loop {
            let mut stream = watcher(api.clone(), config.clone()).boxed();
            let mut buffer: Vec<(Key, T)> = Vec::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(o)) => {
                        let key = key_of(&o);
                        tracing::trace!(kind, ?key, "watch event");
                        sink(&owner).apply(key, convert(o));
                    }
                    Ok(watcher::Event::Delete(o)) => sink(&owner).delete(&key_of(&o)),
                    Ok(watcher::Event::Init) => {
                        buffer.clear();
                        continue;
                    }
                    Ok(watcher::Event::InitApply(o)) => {
                        buffer.push((key_of(&o), convert(o)));
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        sink(&owner).replace(std::mem::take(&mut buffer));
                        tracing::debug!(kind, "watch listed");
                    }
                    Err(e) => {
                        owner.failed(kind, &e);
                        break;
                    }
                }
                backoff = Duration::from_millis(250);
                owner.changed(kind);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_is_ready_after_its_first_list_and_follows_events() {
        let m = Mirror::<u32>::default();
        assert!(!m.is_ready());
        m.apply(("ns".into(), "a".into()), 1);
        assert!(!m.is_ready(), "events before the first list do not make it ready");
        m.replace(vec![(("ns".into(), "b".into()), 2)]);
        assert!(m.is_ready());
        assert_eq!(m.get("ns", "a"), None, "a list replaces what came before");
        assert_eq!(m.get("ns", "b").as_deref(), Some(&2));
        m.apply(("ns".into(), "b".into()), 3);
        assert_eq!(m.get("ns", "b").as_deref(), Some(&3));
        m.delete(&("ns".into(), "b".into()));
        assert!(m.is_empty());
        assert!(m.is_ready());
    }

    #[test]
    fn keys_are_namespace_and_name() {
        let mut pod = k8s_openapi::api::core::v1::Pod::default();
        pod.metadata.name = Some("p".into());
        assert_eq!(key_of(&pod), (String::new(), "p".to_owned()));
        pod.metadata.namespace = Some("ns".into());
        assert_eq!(key_of(&pod), ("ns".to_owned(), "p".to_owned()));
    }
}
