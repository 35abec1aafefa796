//! The picture the planner hands each VM's or scale set's worker: what the target needs, which
//! `AzureAssignedIdentity` objects to bring to `Assigned` and which to release.

use std::{collections::BTreeSet, sync::Arc};

use api::{AzureAssignedIdentitySpec, AzureIdentity, AzureIdentityBinding};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use mirror::Key;
use tokio::time::Instant;

use crate::worker::target_state::Wants;

/// Everything one target needs, recomputed from scratch by each plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetWork {
    /// Identities some pod on the target uses (lower-cased resource ids).
    pub needed: BTreeSet<String>,
    pub assign: Vec<ToAssign>,
    pub release: Vec<ToRelease>,
    /// Resource ids of protected identities known from the cluster's objects (ARM answers
    /// add those whose client id it reports).
    pub protected: BTreeSet<String>,
    /// Identities that objects moved away from this target (new node, new identity).
    pub stale: BTreeSet<String>,
    /// When it moves, the worker reads the target back from Azure.
    pub refresh: Refresh,
}

impl TargetWork {
    /// What the picture wants of ARM, for the target's state machine.
    pub fn wants(&self) -> Wants {
        Wants {
            needed: self.needed.clone(),
            released: self.release.iter().filter_map(|r| r.arm_id.clone()).collect(),
            stale: self.stale.clone(),
            protected: self.protected.clone(),
        }
    }
}

/// Counts that ask a worker to read its target back from Azure whenever either moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refresh {
    /// Bumped by the drift timer, for every target.
    pub periodic: u64,
    /// Bumped for this target when NMI reports one of its identities missing.
    pub reported_missing: u64,
}

/// An `AzureAssignedIdentity` a worker must bring to `Assigned`. The identity and binding are
/// shared with the caches, not copied: at 10,000 pending pods copies cost tens of MiB.
#[derive(Clone, Debug)]
pub struct ToAssign {
    /// The object's namespace (the pod's) and name.
    pub key: Key,
    /// The lower-cased resource id to put on the target; `None` for a service principal,
    /// which needs nothing on the VM. Shared by all the identity's assignments.
    pub arm_id: Option<Arc<str>>,
    pub pod: String,
    /// The pod's uid, for its Events (see `crate::events::pod_ref_with_uid`).
    pub pod_uid: Option<String>,
    pub node: String,
    pub identity: Arc<AzureIdentity>,
    pub binding: Arc<AzureIdentityBinding>,
    /// When the planner first saw the assignment pending, for the latency metric.
    pub seen: Instant,
    /// Whether the object itself must be written before its status.
    pub write: ObjectWrite,
    /// For a rewrite, the `resourceVersion` of the object the planner saw: the rewrite is
    /// conditional on it. From a cache that is behind, the object may record another node by
    /// now, and its identity would be left on a target no object records; the apiserver
    /// refuses the rewrite instead (409), and the next plan, from the caught-up cache, decides
    /// again.
    pub version: Option<String>,
}

/// What an `AzureAssignedIdentity` object (not its status) needs written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectWrite {
    /// It does not exist yet: create it.
    Create,
    /// It records something else (another node, identity or binding version): rewrite it.
    Rewrite,
    /// It exists as it should.
    Nothing,
}

impl ToAssign {
    /// Whether both describe the same object contents (the same pod, node, identity and binding).
    pub fn records_same(&self, other: &Self) -> bool {
        self.key == other.key
            && self.pod == other.pod
            && self.node == other.node
            && (Arc::ptr_eq(&self.identity, &other.identity) || self.identity == other.identity)
            && (Arc::ptr_eq(&self.binding, &other.binding) || self.binding == other.binding)
    }

    /// The object's spec, with copies of the identity and binding as upstream records them (in
    /// upstream's camelCase spelling, which upstream's NMI needs to find the client id).
    pub fn spec(&self) -> AzureAssignedIdentitySpec {
        AzureAssignedIdentitySpec {
            azure_identity_ref: Some(self.identity.in_upstream_spelling()),
            azure_binding_ref: Some(self.binding.in_upstream_spelling()),
            pod: self.pod.clone(),
            pod_namespace: self.key.0.clone(),
            node_name: self.node.clone(),
            replicas: None,
        }
    }

    pub fn binding_ref(&self) -> ObjectReference {
        self.binding.object_ref(&())
    }
}

impl PartialEq for ToAssign {
    fn eq(&self, other: &Self) -> bool {
        self.records_same(other)
            && self.arm_id == other.arm_id
            && self.seen == other.seen
            && self.write == other.write
            && self.version == other.version
    }
}

/// An `AzureAssignedIdentity` whose pod is gone: its identity may be removed, then the object deleted.
#[derive(Clone, Debug, PartialEq)]
pub struct ToRelease {
    pub key: Key,
    pub arm_id: Option<String>,
    /// The `resourceVersion` of the object the planner saw: its deletion is conditional on it
    /// (see [`ToAssign::version`]), so that an object rewritten for another node meanwhile is
    /// released from that node's target, not from the one the cache still shows.
    pub version: Option<String>,
}

/// An assignment whose identity's owner has not consented (see `arm::consent`): its object
/// is written (created when missing) as `Created`, with the refusal as its `reason` and
/// `message`, and its identity is never put on the target.
#[derive(Clone, Debug, PartialEq)]
pub struct ToRefuse {
    pub key: Key,
    pub pod: String,
    /// The pod's uid, for its Event (see `crate::events::pod_ref_with_uid`).
    pub pod_uid: Option<String>,
    pub node: String,
    pub identity: Arc<AzureIdentity>,
    pub binding: Arc<AzureIdentityBinding>,
    /// The object exists (the planner's cache has it).
    pub exists: bool,
    pub refusal: arm::consent::Refusal,
}

impl ToRefuse {
    /// The object as an assignment to create, for the worker's writer.
    pub fn as_new(&self) -> ToAssign {
        ToAssign {
            key: self.key.clone(),
            arm_id: None,
            pod: self.pod.clone(),
            pod_uid: self.pod_uid.clone(),
            node: self.node.clone(),
            identity: self.identity.clone(),
            binding: self.binding.clone(),
            seen: Instant::now(),
            write: ObjectWrite::Create,
            version: None,
        }
    }
}
