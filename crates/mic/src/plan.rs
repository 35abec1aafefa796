//! The planner's decisions, as pure functions: from one snapshot of MIC's caches to each VM's or
//! scale set's picture ([`TargetWork`]) and the `AzureAssignedIdentity` objects to delete at once
//! (orphans). The async planner (`controller`) takes the snapshot, feeds it here, and sends the
//! pictures to the targets' workers; no I/O here.
//!
//! Two steps, because one input is shared with the workers: [`plan`] decides everything the
//! snapshot says, including the identities that rewritten objects leave behind on their old
//! target ([`Planned::left_behind`]); the planner adds those to the set the workers share and
//! clear, and [`Planned::complete`] then adds what the planner remembers beyond the snapshot (that
//! set, the read-back counts, the targets that have a worker).

mod work;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use api::{AzureIdentity, AzureIdentityBinding};
use matching::{AssignedFacts, BadProviderId, ComputeTarget, Desired, PodFacts, Policy};
use mirror::Key;
use tokio::time::Instant;

pub use work::{ObjectWrite, Refresh, TargetWork, ToAssign, ToRefuse, ToRelease};

use arm::consent::{self, Claim, Read, Verdict};

/// The VM or scale set behind a node, or why there is none (a node without one gets no
/// identities: its pods wait).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeTarget {
    /// The VM or scale set its providerID names.
    Compute(ComputeTarget),
    /// No providerID (yet: the cloud provider sets it once it knows the node).
    NoProviderId,
    /// A providerID that names no Azure VM or scale set (a kind node, another cloud).
    NotAzure(BadProviderId),
}

impl NodeTarget {
    /// What a node's providerID names.
    pub fn of(provider_id: Option<&str>) -> Self {
        match provider_id.map(ComputeTarget::from_provider_id) {
            None => Self::NoProviderId,
            Some(Ok(target)) => Self::Compute(target),
            Some(Err(bad)) => Self::NotAzure(bad),
        }
    }

    pub fn target(&self) -> Option<&ComputeTarget> {
        match self {
            Self::Compute(target) => Some(target),
            Self::NoProviderId | Self::NotAzure(_) => None,
        }
    }
}

/// The cluster as MIC's caches held it at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Pods carrying `aadpodidbinding`.
    pub pods: Vec<Arc<PodFacts>>,
    pub identities: HashMap<Key, Arc<AzureIdentity>>,
    pub bindings: HashMap<Key, Arc<AzureIdentityBinding>>,
    pub assigned: Vec<Arc<AssignedFacts>>,
    /// By node name.
    pub nodes: HashMap<String, Arc<NodeTarget>>,
    /// What ARM said of the identities, for their owners' consent.
    pub consent: ConsentView,
}

/// Whether assignments need their identity owner's consent, and the reads that decide it.
#[derive(Clone, Debug, Default)]
pub enum ConsentView {
    /// `--identity-consent=false`: every identity a namespace names is assigned, as upstream.
    #[default]
    NotChecked,
    /// The latest read of each identity (lower-cased resource id) from ARM.
    Reads(HashMap<String, Read>),
}

impl ConsentView {
    fn verdict(&self, d: &Desired<'_>, arm_id: &str) -> Verdict {
        let Self::Reads(reads) = self else {
            return Verdict::Allowed;
        };
        let claim = Claim {
            resource_id: d.identity.spec.resource_id().unwrap_or(arm_id),
            client_id: d.identity.spec.client_id(),
            identity_name: d.identity.metadata.name.as_deref().unwrap_or_default(),
            identity_namespace: d.identity.metadata.namespace.as_deref().unwrap_or_default(),
            pod_namespace: &d.pod.namespace,
        };
        consent::verdict(&claim, reads.get(arm_id))
    }
}

impl Snapshot {
    /// The VM or scale set behind a node, when the node is known and names one.
    pub fn target_of(&self, node: &str) -> Option<&ComputeTarget> {
        self.nodes.get(node).and_then(|t| t.target())
    }
}

/// What one snapshot decides.
#[derive(Debug, Default)]
pub struct Planned {
    /// Per target: the identities it needs, the objects to bring to `Assigned`, those to release.
    pub work: BTreeMap<ComputeTarget, TargetWork>,
    /// Objects to delete with no ARM call: their node is gone (as upstream), or they put
    /// nothing on it (a service principal, an identity without a resource id).
    pub orphans: Vec<ToRelease>,
    /// Per old target, identities that objects rewritten for a new node or identity leave
    /// behind: the objects themselves go to the new target's worker, so the old identity must
    /// be remembered until the old target's worker has dealt with it.
    pub left_behind: BTreeMap<ComputeTarget, BTreeSet<String>>,
    /// When each pending assignment was first seen: only pending ones are remembered.
    pub seen: HashMap<Key, Instant>,
    /// Resource ids of protected identities known from the cluster's objects.
    protected: BTreeSet<String>,
    /// Assignments whose identity's owner has not consented: recorded, never assigned.
    pub refused: Vec<ToRefuse>,
    /// The identities (lower-cased resource ids) of [`Planned::refused`].
    pub refused_ids: BTreeSet<String>,
}

/// What the planner knows beyond the snapshot, for [`Planned::complete`].
#[derive(Debug)]
pub struct Memory<'a> {
    /// Per target, identities left behind that its worker has not dealt with yet (this plan's
    /// [`Planned::left_behind`] included).
    pub stale: &'a HashMap<ComputeTarget, BTreeSet<String>>,
    /// Drift read-backs asked by the timer so far.
    pub periodic: u64,
    /// Per target, NMI's reports of a missing identity acted on so far.
    pub reported_missing: &'a HashMap<ComputeTarget, u64>,
    /// Targets that have a worker.
    pub workers: Vec<&'a ComputeTarget>,
}

/// Decides, from one snapshot, what each target needs and which objects to create, rewrite,
/// retry or release. `protected_client_ids` are lower-cased; `seen` holds when each pending
/// assignment was first seen by earlier plans, `now` stands for those seen first here.
pub fn plan(
    snapshot: &Snapshot,
    policy: &Policy,
    protected_client_ids: &BTreeSet<String>,
    seen: &HashMap<Key, Instant>,
    now: Instant,
) -> Planned {
    let Snapshot {
        pods,
        identities,
        bindings,
        assigned,
        nodes: _,
        consent,
    } = snapshot;
    let target_of = |node: &str| snapshot.target_of(node);
    let protects = |client_id: Option<&str>| {
        client_id.is_some_and(|c| protected_client_ids.contains(&c.to_ascii_lowercase()))
    };
    let protected: BTreeSet<String> = identities
        .values()
        .filter(|i| protects(i.spec.client_id()))
        .filter_map(|i| i.spec.resource_id().map(str::to_ascii_lowercase))
        .chain(
            assigned
                .iter()
                .filter(|a| protects(a.client_id.as_deref()))
                .filter_map(|a| a.arm_id.clone()),
        )
        .collect();

    let deleting: BTreeSet<(&str, &str)> = assigned
        .iter()
        .filter(|a| a.deleting)
        .map(|a| (a.namespace.as_str(), a.name.as_str()))
        .collect();
    let mut desired: Vec<Desired<'_>> = matching::desired(
        policy,
        pods.iter().map(AsRef::as_ref),
        bindings.values().map(AsRef::as_ref),
        identities.values().map(AsRef::as_ref),
    )
    .into_iter()
    .filter(|d| {
        let known = target_of(d.node).is_some();
        if !known {
            tracing::debug!(pod = %d.pod.name, node = d.node, "no VM known for the node yet");
        }
        // An object being deleted is released first; its pod gets a new one afterwards.
        known && !deleting.contains(&(d.namespace.as_str(), d.name.as_str()))
    })
    .collect();

    // The owner's consent (see `arm::consent`): a refused assignment is recorded as such and
    // its identity is not needed; one not decided yet is left as it is. Either way its object
    // is kept out of the comparison below, which would otherwise delete it.
    // Namespace → object names: probed for every AzureAssignedIdentity below without allocating.
    let mut undecided: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut refused: Vec<(Desired<'_>, consent::Refusal)> = Vec::new();
    desired.retain(|d| {
        let Some(arm_id) = d.arm_identity() else {
            return true;
        };
        match consent.verdict(d, &arm_id) {
            Verdict::Allowed => true,
            Verdict::Unknown => {
                undecided
                    .entry(d.namespace.clone())
                    .or_default()
                    .insert(d.name.clone());
                false
            }
            Verdict::Refused(r) => {
                undecided
                    .entry(d.namespace.clone())
                    .or_default()
                    .insert(d.name.clone());
                refused.push((d.clone(), r));
                false
            }
        }
    });
    let live = || {
        assigned.iter().map(AsRef::as_ref).filter(|a| {
            !a.deleting
                && !undecided
                    .get(a.namespace.as_str())
                    .is_some_and(|names| names.contains(a.name.as_str()))
        })
    };

    // Per target: what it needs, what to bring to Assigned, what to release.
    let mut work: BTreeMap<ComputeTarget, TargetWork> = BTreeMap::new();
    for d in &desired {
        if let (Some(target), Some(id)) = (target_of(d.node), d.arm_identity()) {
            work.entry(target.clone()).or_default().needed.insert(id);
        }
    }
    let objects = matching::plan(desired, live());
    let pending = objects
        .create
        .iter()
        .map(|d| (d, ObjectWrite::Create, None))
        .chain(
            objects
                .update
                .iter()
                .map(|(old, d)| (d, ObjectWrite::Rewrite, old.resource_version.clone())),
        )
        .chain(objects.retry.iter().map(|(_, d)| (d, ObjectWrite::Nothing, None)));
    let mut first_seen = HashMap::new();
    let mut arm_ids: HashMap<Key, Option<Arc<str>>> = HashMap::new();
    for (d, write, version) in pending {
        let Some(target) = target_of(d.node) else { continue };
        let key = (d.namespace.clone(), d.name.clone());
        let seen_at = seen.get(&key).copied().unwrap_or(now);
        let (Some(identity), Some(binding)) = (
            identities.get(&mirror::key_of(d.identity)),
            bindings.get(&mirror::key_of(d.binding)),
        ) else {
            continue;
        };
        work.entry(target.clone()).or_default().assign.push(ToAssign {
            key: key.clone(),
            arm_id: arm_ids
                .entry(mirror::key_of(d.identity))
                .or_insert_with(|| d.arm_identity().map(Arc::from))
                .clone(),
            pod: d.pod.name.clone(),
            pod_uid: d.pod.uid.clone(),
            node: d.node.to_owned(),
            identity: identity.clone(),
            binding: binding.clone(),
            seen: seen_at,
            write,
            version,
        });
        first_seen.insert(key, seen_at);
    }

    let mut orphans = Vec::new();
    let released = objects
        .delete
        .iter()
        .copied()
        .chain(assigned.iter().map(AsRef::as_ref).filter(|a| a.deleting));
    for a in released {
        let release = ToRelease {
            key: (a.namespace.clone(), a.name.clone()),
            arm_id: a.arm_id.clone(),
            version: a.resource_version.clone(),
        };
        match target_of(&a.node) {
            Some(target) if release.arm_id.is_some() => {
                work.entry(target.clone()).or_default().release.push(release)
            }
            // No VM to touch (node gone, as upstream: no ARM call), or nothing on it to remove.
            _ => orphans.push(release),
        }
    }
    let mut left_behind: BTreeMap<ComputeTarget, BTreeSet<String>> = BTreeMap::new();
    for (old, _) in &objects.update {
        if let (Some(target), Some(arm_id)) = (target_of(&old.node), old.arm_id.clone()) {
            left_behind.entry(target.clone()).or_default().insert(arm_id);
        }
    }
    let (refused, refused_ids) = refusals(snapshot, refused, &mut left_behind);
    Planned {
        work,
        orphans,
        left_behind,
        seen: first_seen,
        protected,
        refused,
        refused_ids,
    }
}

/// The refused assignments' writes. An object that was `Assigned` before the refusal (consent
/// revoked, or given by an MIC that did not check) loses its identity from the target like a
/// moved object: left behind, removed once no consenting pod there needs it.
fn refusals(
    snapshot: &Snapshot,
    refused: Vec<(Desired<'_>, consent::Refusal)>,
    left_behind: &mut BTreeMap<ComputeTarget, BTreeSet<String>>,
) -> (Vec<ToRefuse>, BTreeSet<String>) {
    let existing: HashMap<(&str, &str), &AssignedFacts> = snapshot
        .assigned
        .iter()
        .filter(|a| !a.deleting)
        .map(|a| ((a.namespace.as_str(), a.name.as_str()), a.as_ref()))
        .collect();
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for (d, refusal) in refused {
        let (Some(identity), Some(binding), Some(arm_id)) = (
            snapshot.identities.get(&mirror::key_of(d.identity)),
            snapshot.bindings.get(&mirror::key_of(d.binding)),
            d.arm_identity(),
        ) else {
            continue;
        };
        let found = existing.get(&(d.namespace.as_str(), d.name.as_str()));
        if let Some(a) = found.filter(|a| a.state == api::AssignmentState::Assigned)
            && let (Some(target), Some(old)) = (snapshot.target_of(&a.node), a.arm_id.clone())
        {
            left_behind.entry(target.clone()).or_default().insert(old);
        }
        ids.insert(arm_id);
        out.push(ToRefuse {
            key: (d.namespace.clone(), d.name.clone()),
            pod: d.pod.name.clone(),
            pod_uid: d.pod.uid.clone(),
            node: d.node.to_owned(),
            identity: identity.clone(),
            binding: binding.clone(),
            exists: found.is_some(),
            refusal,
        });
    }
    (out, ids)
}

impl Planned {
    /// Adds what the planner knows beyond the snapshot: each target's left-behind identities
    /// and read-back counts, and a picture for every target that has a worker or left-behind
    /// identities, even an empty one (a target that needs nothing now must still finish its
    /// releases). Every picture gets the protected identities.
    pub fn complete(&mut self, memory: &Memory<'_>) {
        for (target, ids) in memory.stale {
            self.work.entry(target.clone()).or_default().stale = ids.clone();
        }
        for target in memory
            .reported_missing
            .keys()
            .chain(memory.workers.iter().copied())
        {
            self.work.entry(target.clone()).or_default();
        }
        for (target, w) in &mut self.work {
            w.refresh = Refresh {
                periodic: memory.periodic,
                reported_missing: memory.reported_missing.get(target).copied().unwrap_or_default(),
            };
            w.protected.clone_from(&self.protected);
        }
    }
}

#[cfg(test)]
mod tests;
