//! This node's pods, indexed by IP: which pod a request from an address comes from.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use k8s_openapi::api::core::v1::Pod;
use matching::PodFacts;

use crate::readiness::PodReadiness;
use mirror::sync;
use mirror::{Key, Sink};

/// This node's pods, and which of them may be the source of a request from an IP.
#[derive(Default)]
pub struct PodIndex {
    inner: RwLock<PodIndexInner>,
    ready: AtomicBool,
}

/// What NMI keeps of a pod: the facts the rules decide with, and whether it is being deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchedPod {
    pub facts: PodFacts,
    /// The pod has a `deletionTimestamp`.
    pub terminating: bool,
    /// What the IdentityReady condition's writer needs of it (see [`crate::readiness`]).
    pub readiness: PodReadiness,
}

impl From<&Pod> for WatchedPod {
    fn from(pod: &Pod) -> Self {
        Self {
            facts: PodFacts::from(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            readiness: PodReadiness::from(pod),
        }
    }
}

impl WatchedPod {
    /// Whether a request from this pod's IP may be attributed to it. Only a Pending or Running pod
    /// with its own network namespace, and not being deleted: a pod that shares the node's network
    /// stack has the node's IP; a finished pod's IP, and a terminating pod's once its sandbox is
    /// gone, may already belong to a new pod that NMI has not seen yet. (A terminating pod gets no
    /// new token; the token its SDK already holds lasts through its shutdown.)
    pub fn is_ip_candidate(&self) -> bool {
        self.facts.is_addressable() && !self.terminating
    }
}

#[derive(Clone, Debug)]
struct Indexed {
    facts: Arc<PodFacts>,
    candidate: bool,
    readiness: Arc<PodReadiness>,
}

#[derive(Default)]
struct PodIndexInner {
    by_key: HashMap<Key, Indexed>,
    /// Keyed by the parsed address, so that a request's source needs no formatting to be found
    /// (and IPv6 spellings compare as addresses). Only candidates (see
    /// [`WatchedPod::is_ip_candidate`]) are in it.
    by_ip: HashMap<IpAddr, BTreeSet<Key>>,
}

impl PodIndexInner {
    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.by_key.remove(key)
            && let Some(ip) = old.facts.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok())
            && let Some(set) = self.by_ip.get_mut(&ip)
        {
            set.remove(key);
            if set.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }
    fn insert(&mut self, key: Key, pod: WatchedPod) {
        self.remove(&key);
        let candidate = pod.is_ip_candidate();
        if candidate && let Some(ip) = pod.facts.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()) {
            self.by_ip.entry(ip).or_default().insert(key.clone());
        }
        self.by_key.insert(
            key,
            Indexed {
                facts: Arc::new(pod.facts),
                candidate,
                readiness: Arc::new(pod.readiness),
            },
        );
    }
}

impl Sink<WatchedPod> for PodIndex {
    fn apply(&self, key: Key, item: WatchedPod) {
        sync::write(&self.inner).insert(key, item);
    }
    fn delete(&self, key: &Key) {
        sync::write(&self.inner).remove(key);
    }
    fn replace(&self, items: Vec<(Key, WatchedPod)>) {
        let mut fresh = PodIndexInner::default();
        for (k, v) in items {
            fresh.insert(k, v);
        }
        *sync::write(&self.inner) = fresh;
        self.ready.store(true, Ordering::Release);
    }
}

/// Who sent a request, by source IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodLookup {
    Found(Arc<PodFacts>),
    /// No pod of this node that may send from the IP has it.
    NotFound,
    /// Several pods that may send from the IP claim it (a deleted pod's IP given to a new pod
    /// before NMI saw the deletion); NMI cannot tell which one is asking, so it refuses.
    Ambiguous(Vec<String>),
}

impl PodIndex {
    /// The pod a request from `ip` comes from; an unparsable address matches no pod.
    pub fn by_ip(&self, ip: &str) -> PodLookup {
        ip.parse().map_or(PodLookup::NotFound, |ip| self.by_addr(ip))
    }

    pub fn by_addr(&self, ip: IpAddr) -> PodLookup {
        let inner = sync::read(&self.inner);
        match inner.by_ip.get(&ip) {
            None => PodLookup::NotFound,
            Some(keys) if keys.len() == 1 => {
                let key = keys.iter().next().expect("one key");
                inner
                    .by_key
                    .get(key)
                    .map_or(PodLookup::NotFound, |p| PodLookup::Found(p.facts.clone()))
            }
            Some(keys) => PodLookup::Ambiguous(keys.iter().map(|(ns, n)| format!("{ns}/{n}")).collect()),
        }
    }

    /// A pod by name, for `/host/token`; only pods a request could come from.
    pub fn by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodFacts>> {
        let inner = sync::read(&self.inner);
        inner
            .by_key
            .get(&(namespace.to_owned(), name.to_owned()))
            .filter(|p| p.candidate)
            .map(|p| p.facts.clone())
    }

    /// Every pod a request could come from, with what the IdentityReady writer needs of it.
    pub fn candidates(&self) -> Vec<(Arc<PodFacts>, Arc<PodReadiness>)> {
        let inner = sync::read(&self.inner);
        inner
            .by_key
            .values()
            .filter(|p| p.candidate)
            .map(|p| (p.facts.clone(), p.readiness.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        sync::read(&self.inner).by_key.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
