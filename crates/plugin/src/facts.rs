//! The plain values `explain` and `check` decide over, as the shell (`crate::gather`) reads
//! them from the cluster and ARM. Nothing here does I/O.

use std::collections::BTreeSet;

use matching::PodFacts;
use serde::Serialize;

use crate::nmi_log::Refusal;

/// The pod under examination (its service account is in `facts`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub facts: PodFacts,
    /// NMI's `aadpodidentity.k8s.io/IdentityReady` condition on the pod, if it has one.
    pub identity_ready: Option<ConditionView>,
}

/// A pod condition, as `kubectl describe` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConditionView {
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339, when known.
    pub last_transition: Option<String>,
}

/// A node: its name, providerID and Ready condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub provider_id: Option<String>,
    pub ready: bool,
}

/// An Event, as `kubectl describe` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventView {
    pub namespace: String,
    /// `Normal` or `Warning`.
    pub kind: String,
    pub reason: String,
    pub note: String,
    /// `Pod/web-0`, `AzureIdentityBinding/b`.
    pub regarding: String,
    /// When it happened (RFC 3339), when known; Events sort by it.
    pub time: Option<String>,
}

/// What ARM says the node's VM or scale set carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmIdentities {
    /// ARM answered: the target's ARM id and its user-assigned identities, lower-cased.
    Read { target: String, ids: BTreeSet<String> },
    /// Not asked, and why (no `--cloud-config`, not a user-assigned identity, ...).
    NotAsked(String),
    /// Asked, without an answer.
    Failed(String),
}

/// An NMI pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NmiPod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Its Ready condition: NMI's readiness probe (`/readyz`) is rules in place and watches synced.
    pub ready: bool,
    /// The Ready condition's reason and message, or the container state, when not Ready.
    pub detail: String,
    /// When its log says its view of the cluster went stale (`crate::nmi_log::stale_since`);
    /// `check` reads it, `explain` has it in [`RefusalLog`].
    pub stale_since: Option<String>,
}

/// NMI's refusals of the pod (its Events), and NMI's view of the cluster (NMI's log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalLog {
    Read {
        refusals: Vec<Refusal>,
        /// NMI's view of the cluster has been stale since then (`crate::nmi_log::stale_since`);
        /// `None` too when NMI's log could not be read (RBAC `pods/log`, no kubelet).
        stale_since: Option<String>,
    },
    /// The pod's Events could not be listed (RBAC `events.k8s.io` `list`, ...).
    Unread(String),
}

/// NMI on the pod's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NmiView {
    pub pod: Option<NmiPod>,
    /// How NMI pods were looked for, for the fix when none is found.
    pub selector: String,
    /// Why NMI's pods could not be listed (RBAC: `list pods` in every namespace), when they could not.
    pub lookup_error: Option<String>,
    pub refusals: RefusalLog,
}
