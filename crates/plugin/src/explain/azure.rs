//! The links past matching: MIC's AzureAssignedIdentity and its Events, the identity on the
//! VM or scale set as ARM reports it, and NMI on the pod's node.

use api::{AssignmentState, AzureAssignedIdentity, AzureIdentity, IdentityType};
use matching::ComputeTarget;

use super::Input;
use crate::{
    facts::{RefusalLog, VmIdentities},
    fix::{Failure, assignment_fix, failure_of, last_mic_event},
    report::Link,
};

/// The AzureAssignedIdentity of the chosen identity and, for a user-assigned identity, the VM.
pub(super) fn assignment_links(
    input: &Input<'_>,
    pod: &crate::facts::PodView,
    identity: &AzureIdentity,
) -> Vec<Link> {
    let p = &pod.facts;
    let identity_name = identity.metadata.name.as_deref().unwrap_or_default();
    let name = AzureAssignedIdentity::object_name(&p.name, &p.namespace, identity_name);
    let aai = input
        .assigned
        .iter()
        .find(|a| a.metadata.name.as_deref() == Some(name.as_str()));
    let resource_id = identity.spec.resource_id().unwrap_or_default();
    let msi = identity.spec.identity_type() == Ok(IdentityType::UserAssignedMsi);
    let last_event = last_mic_event(input.events, &p.namespace, &p.name);
    let mut links = Vec::new();
    let assignment = match aai {
        None => Link::fail(
            "assignment",
            format!("no AzureAssignedIdentity {}/{name}", p.namespace),
            "MIC has not recorded the assignment: check that MIC runs and leads (kubectl pod-identity check) and read its log",
        ),
        Some(a) => {
            let state = a.state();
            let title = format!("AzureAssignedIdentity {}/{name}: {state:?}", p.namespace);
            let mut link = match state {
                AssignmentState::Assigned => Link::pass("assignment", title),
                AssignmentState::Unassigned => Link::fail(
                    "assignment",
                    title,
                    "MIC is removing it (the pod or its binding is going away); if the pod stays, check its labels and binding",
                ),
                AssignmentState::Created => {
                    let Failure { reason, message } = failure_of(a, last_event);
                    let fix = match &reason {
                        Some(r) => assignment_fix(r, &message, resource_id),
                        None => {
                            "MIC has not put the identity on the VM or scale set yet: that takes seconds; \
                                 if it stays Created, read MIC's Events (kubectl describe pod) and log"
                                .to_owned()
                        }
                    };
                    let mut l = Link::fail("assignment", title, fix);
                    if let Some(r) = reason {
                        l = l.fact(format!("reason: {r}"));
                    }
                    if !message.is_empty() {
                        l = l.fact(format!("message: {message}"));
                    }
                    l
                }
            };
            link = link.fact(format!("node: {}", a.spec.node_name));
            link
        }
    };
    let assignment = match last_event {
        Some(e) => assignment.fact(format!("last MIC Event: {} {}: {}", e.kind, e.reason, e.note)),
        None => assignment.fact("no MIC Event for the pod"),
    };
    links.push(assignment);
    if msi && p.node.is_some() {
        links.push(vm_link(input, resource_id, aai.map(AzureAssignedIdentity::state)));
    }
    links
}

fn vm_link(input: &Input<'_>, resource_id: &str, state: Option<AssignmentState>) -> Link {
    let node = input.node.map(|n| n.name.as_str()).unwrap_or_default();
    let title = format!("identity on node {node}'s VM or scale set");
    if input.node.is_none() {
        return Link::unchecked(
            "vm",
            title,
            "the pod's Node could not be read (it is gone, or you may not get nodes)",
        );
    }
    let provider = input
        .node
        .and_then(|n| n.provider_id.as_deref())
        .unwrap_or_default();
    if let Err(e) = ComputeTarget::from_provider_id(provider) {
        return Link::fail(
            "vm",
            format!("node {node} is not an Azure VM MIC can assign to"),
            "pod identity needs nodes on Azure VMs or scale sets (spec.providerID azure:///subscriptions/...)",
        )
        .fact(e.to_string());
    }
    match input.vm {
        VmIdentities::NotAsked(why) => Link::unchecked("vm", title, why.clone()),
        VmIdentities::Failed(why) => Link::unchecked("vm", title, format!("ARM could not be asked: {why}")),
        VmIdentities::Read { target, ids } => if ids.contains(&resource_id.to_ascii_lowercase()) {
            Link::pass("vm", format!("ARM: {target} carries the identity"))
        } else {
            let fix = if state == Some(AssignmentState::Assigned) {
                "MIC marked it Assigned, but the VM or scale set no longer carries it (removed outside MIC: \
                     az vmss identity remove, a model update, another controller): NMI reports this to MIC \
                     (annotation aadpodidentity.k8s.io/identity-missing), which puts it back within seconds; \
                     if it stays missing, read MIC's log"
            } else {
                "MIC has not added it yet: see the assignment's fix above"
            };
            Link::fail("vm", format!("ARM: {target} does not carry the identity"), fix)
        }
        .fact(format!("identity: {resource_id}"))
        .fact(format!("{} user-assigned identities on it", ids.len())),
    }
}

pub(super) fn nmi_link(input: &Input<'_>, pod: &crate::facts::PodView) -> Link {
    let node = pod.facts.node.as_deref().unwrap_or_default();
    let nmi = input.nmi;
    let link = match &nmi.pod {
        None if node.is_empty() => return Link::unchecked("nmi", "NMI", "the pod has no node yet"),
        None if nmi.lookup_error.is_some() => {
            return Link::unchecked(
                "nmi",
                format!("NMI on node {node}"),
                format!(
                    "NMI's pods could not be listed: {}",
                    nmi.lookup_error.as_deref().unwrap_or_default()
                ),
            );
        }
        None => Link::fail(
            "nmi",
            format!("no NMI pod on node {node}"),
            format!(
                "NMI runs as a DaemonSet on every node: check its nodeSelector and tolerations (kubectl get daemonset -A), \
                 or give --nmi-selector if yours is labelled other than {}",
                nmi.selector
            ),
        ),
        Some(n) if !n.ready => Link::fail(
            "nmi",
            format!("NMI {}/{} on node {node} is not Ready", n.namespace, n.name),
            format!(
                "NMI is Ready once its iptables rules are in place and its watches have synced; until then pods on this node \
                 get no token: read its log (kubectl logs -n {} {}) and check it can reach the API server",
                n.namespace, n.name
            ),
        )
        .fact(n.detail.clone()),
        Some(n) => Link::pass(
            "nmi",
            format!("NMI {}/{} on node {node} is Ready (rules in place, watches synced)", n.namespace, n.name),
        ),
    };
    let (refusals, stale_since) = match &nmi.refusals {
        RefusalLog::Unread(why) => return link.fact(format!("NMI's refusals not read: {why}")),
        RefusalLog::Read {
            refusals,
            stale_since,
        } => (refusals, stale_since),
    };
    let link = match (stale_since, &nmi.pod) {
        (Some(since), Some(n)) if n.ready => Link::fail(
            "nmi",
            format!("NMI {}/{} on node {node} refuses every token request: its view of the cluster is stale", n.namespace, n.name),
            "a watch of the API server has failed for longer than NMI's --max-state-staleness (its log says since when): \
             check the node's connection to the API server (network policy, firewall, API server load); NMI serves again \
             as soon as its watches are proven",
        )
        .fact(format!("stale since {since} (NMI's log)")),
        _ => link,
    };
    match refusals {
        r if r.is_empty() => link.fact("no refusal of this pod in its Events from NMI"),
        r => {
            let last = &r[r.len() - 1];
            link.fact(format!(
                "{} refusal(s) of this pod in its Events from NMI; the last at {}: {} ({}): {}",
                r.len(),
                last.time,
                last.reason,
                last.detail,
                last.hint
            ))
        }
    }
}
