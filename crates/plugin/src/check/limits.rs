//! Azure's limits that pod identity runs into: instances per scale set, and user-assigned
//! identities per VM or scale set (upstream issues #813 and #637: "MIC hitting the limit of 150").

use std::collections::{BTreeMap, BTreeSet};

use api::AzureAssignedIdentity;
use matching::{ComputeKind, ComputeTarget};

use crate::{facts::NodeView, report::Link};

/// Instances of one scale set (platform images; 600 with custom images).
pub const MAX_SCALE_SET_INSTANCES: usize = 1000;
/// User-assigned identities on one VM or scale set.
pub const MAX_IDENTITIES_PER_TARGET: usize = 150;

pub(super) fn limits_link(nodes: &[NodeView], assigned: &[AzureAssignedIdentity]) -> Link {
    let mut target_of: BTreeMap<&str, ComputeTarget> = BTreeMap::new();
    let mut not_azure = Vec::new();
    for n in nodes {
        match ComputeTarget::from_provider_id(n.provider_id.as_deref().unwrap_or_default()) {
            Ok(t) => {
                target_of.insert(n.name.as_str(), t);
            }
            Err(_) => not_azure.push(n.name.clone()),
        }
    }
    let mut instances: BTreeMap<&ComputeTarget, usize> = BTreeMap::new();
    for t in target_of.values().filter(|t| t.kind == ComputeKind::ScaleSet) {
        *instances.entry(t).or_default() += 1;
    }
    let mut identities: BTreeMap<&ComputeTarget, BTreeSet<String>> = BTreeMap::new();
    for a in assigned {
        let id = a
            .spec
            .azure_identity_ref
            .as_ref()
            .and_then(|i| i.spec.resource_id())
            .map(str::to_ascii_lowercase);
        if let (Some(t), Some(id)) = (target_of.get(a.spec.node_name.as_str()), id) {
            identities.entry(t).or_default().insert(id);
        }
    }
    let mut facts = vec![format!(
        "{} node(s): {} scale set(s), {} VM(s){}",
        nodes.len(),
        instances.len(),
        target_of
            .values()
            .filter(|t| t.kind == ComputeKind::VirtualMachine)
            .count(),
        if not_azure.is_empty() {
            String::new()
        } else {
            format!(
                ", {} not on Azure VMs ({})",
                not_azure.len(),
                not_azure.join(", ")
            )
        }
    )];
    let mut over = Vec::new();
    for (t, n) in &instances {
        facts.push(format!(
            "scale set {}: {n} of {MAX_SCALE_SET_INSTANCES} instances",
            t.name
        ));
        if *n > MAX_SCALE_SET_INSTANCES {
            over.push(format!("scale set {} has {n} instances", t.name));
        }
    }
    for (t, ids) in &identities {
        facts.push(format!(
            "{}: {} of {MAX_IDENTITIES_PER_TARGET} user-assigned identities in use",
            t.name,
            ids.len()
        ));
        if ids.len() > MAX_IDENTITIES_PER_TARGET {
            over.push(format!("{} needs {} identities", t.name, ids.len()));
        }
    }
    if over.is_empty() {
        return Link::pass("limits", "within Azure's scale-set and identity limits").facts(facts);
    }
    Link::fail(
        "limits",
        format!("over Azure's limits: {}", over.join("; ")),
        format!(
            "spread the pods over more node pools (scale sets): a scale set holds at most {MAX_SCALE_SET_INSTANCES} \
             instances and {MAX_IDENTITIES_PER_TARGET} user-assigned identities"
        ),
    )
    .facts(facts)
}
