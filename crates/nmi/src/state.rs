//! The cluster state NMI decides with, mirrored from watches: this node's pods (indexed by IP),
//! bindings, identities, exceptions and, in standard mode, this node's AzureAssignedIdentities.
//! Every change bumps a counter that requests waiting for MIC listen to.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use api::{
    AssignmentState, AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException,
};
use matching::{AssignedFacts, IdentityRequest, NotChosen, PodFacts, Policy};
use mirror::key_of;
use mirror::sync;
pub use mirror::{Key, Mirror};
use tokio::sync::watch;

mod pods;
#[cfg(test)]
mod test_support;
mod watches;
pub use pods::{PodIndex, PodLookup, WatchedPod};

/// Where NMI gets identities from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// MIC assigns identities to the node; NMI also requires an `Assigned` AzureAssignedIdentity.
    Standard,
    /// Identities are pre-assigned to the VMs by the operator; no MIC, no AzureAssignedIdentity.
    Managed,
}

/// What the watched state says about a pod's request for an identity.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The pod may use this identity now.
    Use {
        identity: Arc<AzureIdentity>,
        binding: String,
        out_of: usize,
    },
    /// The pod is bound to this identity, but MIC has not yet assigned it to the node.
    Waiting {
        identity: String,
    },
    /// The pod is bound to this identity, and MIC has recorded that it will not assign it as
    /// things stand (the identity's owner has not consented, ...): no wait would help.
    NotAllowed {
        identity: String,
        refusal: matching::MicRefusal,
    },
    /// The request names an object id whose owner among the pod's identities is not yet known:
    /// these identities' principal ids must be learned first.
    LearnPrincipals(Vec<Arc<AzureIdentity>>),
    Refused(NotChosen),
}

/// All the mirrored state and the rules NMI applies to it.
pub struct State {
    pub node: String,
    pub mode: Mode,
    pub policy: Policy,
    pub pods: PodIndex,
    pub bindings: Mirror<AzureIdentityBinding>,
    pub identities: Mirror<AzureIdentity>,
    pub exceptions: Mirror<AzurePodIdentityException>,
    pub assigned: Mirror<AssignedFacts>,
    changes: watch::Sender<u64>,
    /// Bumped with every change, like `changes`, but read without subscribing: a request that
    /// sees it unchanged after fetching a token knows its decision still holds.
    version: AtomicU64,
    /// Whether `failing_since` has an entry; lets the common case skip its lock.
    any_failing: AtomicBool,
    /// Since when each failing watch has failed (by kind); a watch is proven again by its next
    /// successful list or event.
    failing_since: Mutex<HashMap<&'static str, Instant>>,
    /// How long a failing watch's last-known state is still used (ms); 0: forever.
    max_staleness_ms: AtomicU64,
    /// Set by `spawn_watches`.
    client: OnceLock<kube::Client>,
}

/// Default of `--max-state-staleness`.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(30);

impl State {
    pub fn new(node: impl Into<String>, mode: Mode, policy: Policy) -> Self {
        Self {
            node: node.into(),
            mode,
            policy,
            pods: PodIndex::default(),
            bindings: Mirror::default(),
            identities: Mirror::default(),
            exceptions: Mirror::default(),
            assigned: Mirror::default(),
            changes: watch::channel(0).0,
            version: AtomicU64::new(0),
            any_failing: AtomicBool::new(false),
            failing_since: Mutex::default(),
            max_staleness_ms: AtomicU64::new(DEFAULT_MAX_STALENESS.as_millis() as u64),
            client: OnceLock::new(),
        }
    }

    /// How long NMI keeps deciding with the state of a failing watch (0: forever, upstream's way).
    pub fn set_max_staleness(&self, d: Duration) {
        self.max_staleness_ms
            .store(d.as_millis().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    /// How long the state has not been provable: since the oldest still-failing watch first failed.
    /// `None` when every watch's last list or event came after its last error.
    pub fn unproven_for(&self) -> Option<Duration> {
        let failing = sync::lock(&self.failing_since);
        failing.values().min().map(Instant::elapsed)
    }

    /// Whether the state is too old to authorize with: a watch has failed for longer than
    /// `--max-state-staleness`, so a pod deleted (and its IP reused), or a binding or identity
    /// removed, in the meantime would not be known. NMI then refuses token requests with 503.
    pub fn is_stale(&self) -> bool {
        let max = self.max_staleness_ms.load(Ordering::Relaxed);
        max > 0
            && self.any_failing.load(Ordering::Acquire)
            && self
                .unproven_for()
                .is_some_and(|d| d.as_millis() > u128::from(max))
    }

    /// A receiver that sees every later change of any mirrored kind.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
        self.changes.send_modify(|n| *n += 1);
    }

    /// A number that moves whenever any mirrored kind changes.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Whether every watch has listed its objects at least once.
    pub fn is_synced(&self) -> bool {
        self.pods.is_ready()
            && self.bindings.is_ready()
            && self.identities.is_ready()
            && self.exceptions.is_ready()
            && (self.mode == Mode::Managed || self.assigned.is_ready())
    }

    /// Whether an exception sends this pod to the node's own identity.
    pub fn is_excepted(&self, pod: &PodFacts) -> bool {
        self.exceptions
            .with(|e| matching::is_excepted(&self.policy, pod, e.values().map(|a| a.as_ref())))
    }

    /// Decides a pod's request against the current state. `principal_of(identity)` gives the
    /// principal ids NMI has learned from the identity's tokens.
    pub fn decide(
        &self,
        pod: &PodFacts,
        request: &IdentityRequest,
        principal_of: impl Fn(&AzureIdentity) -> Option<String>,
    ) -> Decision {
        let bindings = self.bindings.read();
        let identities = self.identities.read();
        let candidates = matching::candidates(
            &self.policy,
            pod,
            bindings.values().map(|b| b.as_ref()),
            identities.values().map(|i| i.as_ref()),
        );
        let chosen = matching::choose(&candidates, request, |c| principal_of(c.identity));
        let choice = match chosen {
            Ok(c) => c,
            Err(NotChosen::NotBound(IdentityRequest::ObjectId(_))) => {
                let unknown: Vec<_> = candidates
                    .iter()
                    .filter(|c| principal_of(c.identity).is_none())
                    .filter_map(|c| find_arc(&identities, c.identity))
                    .collect();
                if unknown.is_empty() {
                    return Decision::Refused(chosen.expect_err("refused above"));
                }
                return Decision::LearnPrincipals(unknown);
            }
            Err(e) => return Decision::Refused(e),
        };
        let identity =
            find_arc(&identities, choice.candidate.identity).expect("a candidate comes from the mirror");
        let binding = choice.candidate.binding.metadata.name.clone().unwrap_or_default();
        let id_name = identity.metadata.name.clone().unwrap_or_default();
        if self.mode == Mode::Standard && !self.is_assigned(pod, &identity) {
            if let Some(refusal) = self.mic_refusal(pod, &identity) {
                return Decision::NotAllowed {
                    identity: id_name,
                    refusal,
                };
            }
            return Decision::Waiting { identity: id_name };
        }
        Decision::Use {
            identity,
            binding,
            out_of: choice.out_of,
        }
    }

    /// Whether MIC reports this pod's use of this identity as assigned on this node.
    fn is_assigned(&self, pod: &PodFacts, identity: &AzureIdentity) -> bool {
        self.assigned_object(pod, identity).is_some()
    }

    /// MIC's refusal recorded on its object for this pod's use of this identity, if any.
    fn mic_refusal(&self, pod: &PodFacts, identity: &AzureIdentity) -> Option<matching::MicRefusal> {
        let key = self.find_object(pod, identity, |a| a.refusal.is_some())?;
        self.assigned
            .with(|aais| aais.get(&key).and_then(|a| a.refusal.clone()))
    }

    /// Why MIC has not assigned the identity named `identity` for this pod on this node yet, as
    /// its `Created` object records (ARM's error code, `IdentityReadFailed`, ...), if it says.
    pub fn assignment_failure(&self, pod: &PodFacts, identity: &str) -> Option<matching::MicRefusal> {
        self.assigned.with(|aais| {
            aais.values()
                .find(|a| {
                    a.pod == pod.name
                        && a.pod_namespace == pod.namespace
                        && a.node == self.node
                        && a.failure.is_some()
                        && a.identity
                            .as_ref()
                            .is_some_and(|r| r.name.as_deref() == Some(identity))
                })
                .and_then(|a| a.failure.clone())
        })
    }

    /// The `Assigned` AzureAssignedIdentity (namespace, name) by which MIC reports this pod's use
    /// of this identity on this node, if there is one.
    pub fn assigned_object(&self, pod: &PodFacts, identity: &AzureIdentity) -> Option<Key> {
        let client_id = identity.spec.client_id().map(str::to_ascii_lowercase);
        self.find_object(pod, identity, |a| {
            a.state == AssignmentState::Assigned
                // An AAI for an identity whose client id has since changed is stale: MIC re-assigns.
                && a.client_id == client_id
        })
    }

    /// The AzureAssignedIdentity recording this pod's use of this identity on this node for
    /// which `also` holds.
    fn find_object(
        &self,
        pod: &PodFacts,
        identity: &AzureIdentity,
        also: impl Fn(&AssignedFacts) -> bool,
    ) -> Option<Key> {
        let id_ns = identity.metadata.namespace.as_deref();
        let id_name = identity.metadata.name.as_deref();
        let matches = |a: &AssignedFacts| {
            a.pod == pod.name
                && a.pod_namespace == pod.namespace
                && a.node == self.node
                && a.identity.as_ref().is_some_and(|r| {
                    r.name.as_deref() == id_name && r.namespace.as_deref().is_none_or(|ns| Some(ns) == id_ns)
                })
                && also(a)
        };
        // MIC names the object after the pod and identity, in the pod's namespace: look there
        // first, since scanning every object of a busy node on each request is what costs. Others
        // (an upstream MIC's, kept elsewhere) are still found by the scan.
        let likely = (
            pod.namespace.clone(),
            AzureAssignedIdentity::object_name(&pod.name, &pod.namespace, id_name.unwrap_or_default()),
        );
        self.assigned.with(|aais| {
            if aais.get(&likely).is_some_and(|a| matches(a)) {
                return Some(likely);
            }
            aais.iter().find(|(_, a)| matches(a)).map(|(k, _)| k.clone())
        })
    }
}

fn find_arc(map: &HashMap<Key, Arc<AzureIdentity>>, identity: &AzureIdentity) -> Option<Arc<AzureIdentity>> {
    map.get(&key_of(identity)).cloned()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod staleness_tests;
