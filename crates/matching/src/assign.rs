//! MIC's decisions: which `AzureAssignedIdentity` objects should exist, how they
//! differ from those that do, and which user-assigned identities each VM or
//! scale set must carry or may lose.

use std::collections::{BTreeMap, BTreeSet};

use api::{AssignmentState, AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, IdentityType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{PodFacts, Policy, candidates};

/// The VM or VM scale set behind a node, from the node's `spec.providerID`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComputeTarget {
    pub subscription: String,
    pub resource_group: String,
    pub kind: ComputeKind,
    /// The VM's or the scale set's name.
    pub name: String,
}

/// Whether a target is a plain VM or a scale set (whose instances share its identities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComputeKind {
    VirtualMachine,
    ScaleSet,
}

/// A `providerID` that names no Azure VM or scale-set instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadProviderId(pub String);

impl std::fmt::Display for BadProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "providerID {:?} is not azure:///subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/(virtualMachines/<vm>|virtualMachineScaleSets/<vmss>/virtualMachines/<instance>)",
            self.0
        )
    }
}

impl ComputeTarget {
    /// Reads a node's providerID. Unlike upstream, which assumed the VM was named
    /// like the node and lived in the cluster's resource group, the VM, its group
    /// and its subscription all come from here.
    pub fn from_provider_id(provider_id: &str) -> Result<Self, BadProviderId> {
        let bad = || BadProviderId(provider_id.to_owned());
        let path = provider_id.strip_prefix("azure://").ok_or_else(bad)?;
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let eq = |i: usize, want: &str| parts.get(i).is_some_and(|p| p.eq_ignore_ascii_case(want));
        if !(eq(0, "subscriptions")
            && eq(2, "resourceGroups")
            && eq(4, "providers")
            && eq(5, "Microsoft.Compute"))
        {
            return Err(bad());
        }
        let (kind, name) = match parts.len() {
            8 if eq(6, "virtualMachines") => (ComputeKind::VirtualMachine, parts[7]),
            10 if eq(6, "virtualMachineScaleSets") && eq(8, "virtualMachines") => {
                (ComputeKind::ScaleSet, parts[7])
            }
            _ => return Err(bad()),
        };
        Ok(Self {
            subscription: parts[1].to_owned(),
            resource_group: parts[3].to_owned(),
            kind,
            name: name.to_owned(),
        })
    }

    /// The ARM resource id of the VM or scale set.
    pub fn arm_id(&self) -> String {
        let kind = match self.kind {
            ComputeKind::VirtualMachine => "virtualMachines",
            ComputeKind::ScaleSet => "virtualMachineScaleSets",
        };
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/{kind}/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

/// One `AzureAssignedIdentity` that should exist: a pod, on a node, using an identity through a binding.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired<'a> {
    /// `<pod>-<podNamespace>-<identity>`, upstream's name.
    pub name: String,
    /// The pod's namespace, where the object lives (upstream put them all in `default`).
    pub namespace: String,
    pub pod: &'a PodFacts,
    pub node: &'a str,
    pub binding: &'a AzureIdentityBinding,
    pub identity: &'a AzureIdentity,
}

impl Desired<'_> {
    /// The lower-cased resource id when this identity must be put on the node's VM or scale set
    /// (type 0 only; service principals need no assignment).
    pub fn arm_identity(&self) -> Option<String> {
        (self.identity.spec.identity_type() == Ok(IdentityType::UserAssignedMsi))
            .then(|| self.identity.spec.resource_id().map(str::to_ascii_lowercase))
            .flatten()
    }
}

/// Whether a text is a user-assigned identity's ARM resource id (case-insensitive), the check
/// upstream's MIC made before assigning.
pub fn is_user_assigned_identity_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    let eq = |i: usize, want: &str| parts.get(i).is_some_and(|p| p.eq_ignore_ascii_case(want));
    parts.len() == 9
        && parts[0].is_empty()
        && eq(1, "subscriptions")
        && eq(3, "resourcegroups")
        && eq(5, "providers")
        && eq(6, "Microsoft.ManagedIdentity")
        && eq(7, "userAssignedIdentities")
        && [2, 4, 8].iter().all(|i| !parts[*i].is_empty())
}

/// Whether MIC can act on an identity at all: a known type, and for type 0 a well-formed
/// resource id. The CRD's validation refuses others, but objects stored before it (or under
/// upstream's CRDs) may still be around; like upstream, MIC skips them.
pub fn is_usable(identity: &AzureIdentity) -> bool {
    match identity.spec.identity_type() {
        Ok(IdentityType::UserAssignedMsi) => identity
            .spec
            .resource_id()
            .is_some_and(is_user_assigned_identity_id),
        Ok(_) => true,
        Err(_) => false,
    }
}

/// Every assignment the cluster's pods need. Pods without a node, host-network pods and
/// finished pods (`Succeeded`, `Failed`: they can ask for no token) need none, and neither do
/// unusable identities ([`is_usable`]).
pub fn desired<'a>(
    policy: &Policy,
    pods: impl IntoIterator<Item = &'a PodFacts>,
    bindings: impl IntoIterator<Item = &'a AzureIdentityBinding> + Clone,
    identities: impl IntoIterator<Item = &'a AzureIdentity> + Clone,
) -> Vec<Desired<'a>> {
    let mut out = Vec::new();
    for pod in pods {
        let Some(node) = pod.node.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        if pod.host_network || matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        for c in candidates(policy, pod, bindings.clone(), identities.clone())
            .into_iter()
            .filter(|c| is_usable(c.identity))
        {
            let identity_name = c.identity.metadata.name.as_deref().unwrap_or_default();
            out.push(Desired {
                name: AzureAssignedIdentity::object_name(&pod.name, &pod.namespace, identity_name),
                namespace: pod.namespace.clone(),
                pod,
                node,
                binding: c.binding,
                identity: c.identity,
            });
        }
    }
    out
}

/// What MIC and NMI decide with about an `AzureAssignedIdentity`: a few hundred bytes instead
/// of the whole object with its copies of the identity and the binding (2 KB and more), which
/// at 10,000 pods would dominate MIC's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignedFacts {
    pub namespace: String,
    pub name: String,
    pub pod: String,
    pub pod_namespace: String,
    pub node: String,
    /// The recorded identity: name, namespace and resourceVersion.
    pub identity: Option<Recorded>,
    /// The recorded binding: name, namespace and resourceVersion.
    pub binding: Option<Recorded>,
    /// The recorded identity's lower-cased resource id, for user-assigned identities (type 0)
    /// only: what MIC put on the VM or scale set.
    pub arm_id: Option<String>,
    /// The recorded identity's lower-cased client id.
    pub client_id: Option<String>,
    /// A missing status counts as `Assigned` (upstream's legacy rule).
    pub state: AssignmentState,
    /// The object has a deletion timestamp.
    pub deleting: bool,
    /// The object's `resourceVersion`: MIC's rewrites and deletions are conditional on it, so
    /// that a decision made from a cache that is behind (the object records another node or
    /// identity by now) is refused by the apiserver instead of acting on the wrong target.
    pub resource_version: Option<String>,
    /// The value of [`api::v1::IDENTITY_MISSING_ANNOTATION`]: NMI's latest finding that IMDS
    /// did not know the identity (an opaque token, new at each finding). MIC reads the target
    /// back from ARM when it changes.
    pub identity_missing: Option<String>,
    /// MIC's refusal to assign (a `Created` object whose `status.reason` is one of
    /// [`api::v1::REFUSAL_REASONS`]): NMI answers the pod with it at once.
    pub refusal: Option<MicRefusal>,
    /// Why a `Created` object is not assigned yet, whatever the reason MIC recorded (ARM's error
    /// code, `IdentityReadFailed`, or a refusal): NMI shows it on the pod's IdentityReady
    /// condition, while it keeps holding the pod's requests for all but refusals.
    pub failure: Option<MicRefusal>,
}

/// Why MIC will not assign an identity as things stand: `status.reason` and `status.message`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MicRefusal {
    pub reason: String,
    pub message: String,
}

impl MicRefusal {
    /// The refusal an object records, if it records one.
    pub fn of(a: &AzureAssignedIdentity) -> Option<Self> {
        let status = a.status.as_ref()?;
        let reason = status.reason.as_deref()?;
        (status.status == Some(AssignmentState::Created) && api::v1::REFUSAL_REASONS.contains(&reason)).then(
            || Self {
                reason: reason.to_owned(),
                message: status.message.clone().unwrap_or_default(),
            },
        )
    }
}

impl MicRefusal {
    /// The `reason` and `message` of a `Created` object's status, whatever the reason.
    pub fn failure_of(a: &AzureAssignedIdentity) -> Option<Self> {
        let status = a.status.as_ref()?;
        let reason = status.reason.as_deref().filter(|r| !r.is_empty())?;
        (a.state() == AssignmentState::Created).then(|| Self {
            reason: reason.to_owned(),
            message: status.message.clone().unwrap_or_default(),
        })
    }
}

/// Which version of an object an `AzureAssignedIdentity` recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
}

impl From<&ObjectMeta> for Recorded {
    fn from(m: &ObjectMeta) -> Self {
        Self {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            resource_version: m.resource_version.clone(),
        }
    }
}

impl From<&AzureAssignedIdentity> for AssignedFacts {
    fn from(a: &AzureAssignedIdentity) -> Self {
        let identity = a.spec.azure_identity_ref.as_ref();
        Self {
            namespace: a.metadata.namespace.clone().unwrap_or_default(),
            name: a.metadata.name.clone().unwrap_or_default(),
            pod: a.spec.pod.clone(),
            pod_namespace: a.spec.pod_namespace.clone(),
            node: a.spec.node_name.clone(),
            identity: identity.map(|i| Recorded::from(&i.metadata)),
            binding: a
                .spec
                .azure_binding_ref
                .as_ref()
                .map(|b| Recorded::from(&b.metadata)),
            arm_id: identity.and_then(|i| {
                (i.spec.identity_type() == Ok(IdentityType::UserAssignedMsi))
                    .then(|| i.spec.resource_id().map(str::to_ascii_lowercase))
                    .flatten()
            }),
            client_id: identity.and_then(|i| i.spec.client_id().map(str::to_ascii_lowercase)),
            state: a.state(),
            deleting: a.metadata.deletion_timestamp.is_some(),
            resource_version: a.metadata.resource_version.clone(),
            identity_missing: a
                .metadata
                .annotations
                .as_ref()
                .and_then(|m| m.get(api::v1::IDENTITY_MISSING_ANNOTATION))
                .cloned(),
            refusal: MicRefusal::of(a),
            failure: MicRefusal::failure_of(a),
        }
    }
}

/// What to do to the `AzureAssignedIdentity` objects.
#[derive(Debug, Default, PartialEq)]
pub struct Plan<'a, 'e> {
    /// Assignments with no object yet.
    pub create: Vec<Desired<'a>>,
    /// Objects whose identity, binding or node changed: rewritten in place and assigned again.
    pub update: Vec<(&'e AssignedFacts, Desired<'a>)>,
    /// Objects nothing needs any more.
    pub delete: Vec<&'e AssignedFacts>,
    /// Objects that match but are still `Created`: their assignment must be retried.
    pub retry: Vec<(&'e AssignedFacts, Desired<'a>)>,
}

/// Compares the desired assignments with the existing objects, by name and namespace.
///
/// An object is unchanged when it records the same pod, node, identity and binding, at the
/// same `resourceVersion`s (upstream's rule: an edited identity is assigned afresh).
pub fn plan<'a, 'e>(
    desired: Vec<Desired<'a>>,
    existing: impl IntoIterator<Item = &'e AssignedFacts>,
) -> Plan<'a, 'e> {
    // By namespace, then name: looking up `str`s needs no copy of the desired object's names.
    let mut by_key: BTreeMap<&'e str, BTreeMap<&'e str, &'e AssignedFacts>> = BTreeMap::new();
    for a in existing {
        by_key
            .entry(a.namespace.as_str())
            .or_default()
            .insert(a.name.as_str(), a);
    }
    let mut plan = Plan::default();
    for d in desired {
        let found = by_key
            .get_mut(d.namespace.as_str())
            .and_then(|names| names.remove(d.name.as_str()));
        match found {
            None => plan.create.push(d),
            Some(a) if !same(a, &d) => plan.update.push((a, d)),
            Some(a) if a.state == AssignmentState::Created => plan.retry.push((a, d)),
            Some(_) => {}
        }
    }
    plan.delete = by_key.into_values().flat_map(BTreeMap::into_values).collect();
    plan
}

fn same(a: &AssignedFacts, d: &Desired<'_>) -> bool {
    a.pod == d.pod.name
        && a.pod_namespace == d.pod.namespace
        && a.node == d.node
        && a.identity.as_ref() == Some(&Recorded::from(&d.identity.metadata))
        && a.binding.as_ref() == Some(&Recorded::from(&d.binding.metadata))
}

/// The identity changes one VM or scale set needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetChange {
    /// Lower-cased resource ids to add.
    pub add: BTreeSet<String>,
    /// Lower-cased resource ids to remove.
    pub remove: BTreeSet<String>,
}

impl TargetChange {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Decides what one VM or scale set must gain and lose.
///
/// `needed`: identities some remaining pod on this target uses. `released`: identities this
/// controller assigned for pods that are gone. `current`: what Azure says the target carries.
/// An identity is removed only when it was released, is still present, no remaining pod on
/// the target needs it, and it is not protected (`--immutable-user-msis`, the cluster's own
/// identity). Identities someone else put on the VM are never touched.
pub fn target_change(
    needed: &BTreeSet<String>,
    released: &BTreeSet<String>,
    current: &BTreeSet<String>,
    protected: &BTreeSet<String>,
) -> TargetChange {
    TargetChange {
        add: needed.difference(current).cloned().collect(),
        remove: released
            .iter()
            .filter(|id| current.contains(*id) && !needed.contains(*id) && !protected.contains(*id))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests;
