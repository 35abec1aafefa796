//! `explain POD`: the chain from a pod to its token, link by link, decided over plain values.
//! Which bindings select the pod, whether an exception lets it through and which identity it gets
//! are the `matching` crate's answers, the very functions MIC and NMI decide with, so the
//! explanation can never disagree with what they do.

mod azure;

use api::{AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException};
use matching::{Candidate, IdentityRequest, Policy, candidates, choose, is_excepted, is_usable};

use crate::{
    facts::{EventView, NmiView, NodeView, PodView, VmIdentities},
    report::{Link, Report},
};

/// Everything `explain` decides over.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub policy: &'a Policy,
    /// The namespace and name asked about.
    pub namespace: &'a str,
    pub name: &'a str,
    /// `None`: no such pod.
    pub pod: Option<&'a PodView>,
    pub node: Option<&'a NodeView>,
    /// Exceptions in the pod's namespace.
    pub exceptions: &'a [AzurePodIdentityException],
    /// Bindings and identities of every namespace (to spell out the namespaced rule).
    pub bindings: &'a [AzureIdentityBinding],
    pub identities: &'a [AzureIdentity],
    /// AzureAssignedIdentities in the pod's namespace.
    pub assigned: &'a [AzureAssignedIdentity],
    /// MIC's Events in the pod's namespace, oldest first.
    pub events: &'a [EventView],
    pub vm: &'a VmIdentities,
    pub nmi: &'a NmiView,
}

pub fn explain(input: &Input<'_>) -> Report {
    let subject = format!("pod {}/{}", input.namespace, input.name);
    let Some(pod) = input.pod else {
        return Report {
            subject,
            links: vec![Link::fail(
                "pod",
                format!("no pod {} in namespace {}", input.name, input.namespace),
                "check the name and the namespace (-n): kubectl get pods -n <namespace>",
            )],
        };
    };
    let mut links = vec![pod_link(pod), exceptions_link(input, pod)];
    let found = candidates(input.policy, &pod.facts, input.bindings, input.identities);
    links.push(bindings_link(input, pod, &found));
    if let Ok(choice) = choose(&found, &IdentityRequest::Default, |_| None) {
        let chosen = choice.candidate;
        links.push(identity_link(&chosen, &found));
        if is_usable(chosen.identity) {
            links.extend(azure::assignment_links(input, pod, chosen.identity));
        }
    }
    links.push(azure::nmi_link(input, pod));
    Report { subject, links }
}

fn pod_link(pod: &PodView) -> Link {
    let p = &pod.facts;
    let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let facts = vec![
        format!("node: {}", p.node.as_deref().unwrap_or("(not scheduled)")),
        format!("IP: {}", p.ip.as_deref().unwrap_or("(none yet)")),
        format!("phase: {}", p.phase.as_deref().unwrap_or("(unknown)")),
        format!(
            "labels: {}",
            if labels.is_empty() {
                "(none)".to_owned()
            } else {
                labels.join(", ")
            }
        ),
        format!(
            "service account: {}",
            pod.facts.service_account.as_deref().unwrap_or("default")
        ),
        identity_ready_fact(pod),
    ];
    let title = format!("pod {}/{}", p.namespace, p.name);
    let broken = if p.host_network {
        Some((
            "it uses the node's network (hostNetwork: true)",
            "a hostNetwork pod has the node's IP, so NMI cannot tell it from the node and never gives it a pod identity: \
             run it without hostNetwork, or give it the node's identity on purpose with an AzurePodIdentityException",
        ))
    } else if p.node.as_deref().is_none_or(str::is_empty) {
        Some((
            "it is not scheduled on a node",
            "wait for the scheduler; `kubectl describe pod` says why it is pending",
        ))
    } else if matches!(p.phase.as_deref(), Some("Succeeded" | "Failed")) {
        Some((
            "it has finished",
            "a finished pod asks for no token; run it again",
        ))
    } else if p.ip.as_deref().is_none_or(str::is_empty) {
        Some((
            "it has no IP yet",
            "NMI finds a pod by its IP: wait until the pod has one (kubectl get pod -o wide)",
        ))
    } else {
        None
    };
    match broken {
        Some((why, fix)) => Link::fail("pod", format!("{title}: {why}"), fix),
        None => Link::pass("pod", title),
    }
    .facts(facts)
}

/// NMI's IdentityReady condition, one line: status, reason, since when, and its message.
fn identity_ready_fact(pod: &PodView) -> String {
    let Some(c) = &pod.identity_ready else {
        return format!(
            "{}: not set (the pod uses no identity, NMI has not decided yet, or runs with \
             --identity-ready-condition=false)",
            api::v1::IDENTITY_READY_CONDITION
        );
    };
    let since = c
        .last_transition
        .as_deref()
        .map(|t| format!(" since {t}"))
        .unwrap_or_default();
    // The message is written by whoever may patch the pod's status: shown on one line, escaped.
    let message: String = c.message.chars().flat_map(char::escape_debug).take(512).collect();
    format!(
        "{}: {} ({}){since}: {message}",
        api::v1::IDENTITY_READY_CONDITION,
        c.status,
        c.reason
    )
}

fn exceptions_link(input: &Input<'_>, pod: &PodView) -> Link {
    let matching: Vec<&AzurePodIdentityException> = input
        .exceptions
        .iter()
        .filter(|e| is_excepted(input.policy, &pod.facts, std::iter::once(*e)))
        .collect();
    if matching.is_empty() {
        return Link::pass("exceptions", "no AzurePodIdentityException matches the pod").fact(format!(
            "{} exception(s) in namespace {}",
            input.exceptions.len(),
            pod.facts.namespace
        ));
    }
    let names: Vec<String> = matching.iter().map(|e| name_of(&e.metadata)).collect();
    let labels: Vec<String> = matching
        .iter()
        .flat_map(|e| e.spec.pod_labels())
        .filter(|(k, v)| {
            pod.facts
                .labels
                .get(*k)
                .is_some_and(|have| have.eq_ignore_ascii_case(v))
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Link::fail(
        "exceptions",
        format!("excepted by AzurePodIdentityException {}", names.join(", ")),
        format!(
            "NMI passes this pod's requests to the node's own identity, not a pod identity: \
             remove the label {} from the pod, or the exception, if the pod should use its own identity",
            labels.join(", ")
        ),
    )
    .fact(format!("matching labels: {}", labels.join(", ")))
}

fn bindings_link(input: &Input<'_>, pod: &PodView, found: &[Candidate<'_>]) -> Link {
    let p = &pod.facts;
    let ns = p.namespace.as_str();
    let in_ns = |b: &&AzureIdentityBinding| b.metadata.namespace.as_deref() == Some(ns);
    let selectors: Vec<&str> = input
        .bindings
        .iter()
        .filter(in_ns)
        .filter_map(|b| b.spec.selector())
        .collect();
    let selectors_fact = if selectors.is_empty() {
        format!("no AzureIdentityBinding in namespace {ns}")
    } else {
        format!(
            "selectors of the bindings in namespace {ns}: {}",
            selectors.join(", ")
        )
    };
    if p.host_network {
        return Link::unchecked("bindings", "bindings", "hostNetwork pods are never bound");
    }
    let Some(label) = p.binding_label() else {
        return Link::fail(
            "bindings",
            format!("the pod has no {} label", api::v1::BINDING_LABEL),
            format!(
                "label the pod (its Deployment's template) {}=<selector>, the selector of an AzureIdentityBinding in namespace {ns}",
                api::v1::BINDING_LABEL
            ),
        )
        .fact(selectors_fact);
    };
    if !found.is_empty() {
        return Link::pass(
            "bindings",
            format!(
                "{} binding(s) in namespace {ns} select {}={label}",
                found.len(),
                api::v1::BINDING_LABEL
            ),
        )
        .facts(found.iter().map(|c| {
            format!(
                "AzureIdentityBinding {} → AzureIdentity {}",
                name_of(&c.binding.metadata),
                name_of(&c.identity.metadata)
            )
        }));
    }
    let anywhere = Policy {
        namespaced: false,
        ..input.policy.clone()
    };
    let elsewhere = candidates(&anywhere, p, input.bindings, input.identities);
    if input.policy.namespaced && !elsewhere.is_empty() {
        let names: Vec<String> = elsewhere.iter().map(|c| name_of(&c.binding.metadata)).collect();
        let other_ns = elsewhere[0]
            .binding
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default();
        return Link::fail(
            "bindings",
            format!("no binding in namespace {ns} selects {}={label}", api::v1::BINDING_LABEL),
            format!(
                "a binding matches only pods of its own namespace: create an AzureIdentity and an AzureIdentityBinding \
                 with selector {label} in namespace {ns} (as {} does in {other_ns}), or run the pod in namespace {other_ns}",
                names[0]
            ),
        )
        .fact(format!(
            "binding(s) {} in other namespaces have selector {label}, but bindings are namespaced: \
             MIC and NMI match a pod only with bindings of its own namespace (upstream's --forceNamespaced, our default; \
             --allow-cross-namespace turns it off)",
            names.join(", ")
        ))
        .fact(selectors_fact);
    }
    let dangling: Vec<&AzureIdentityBinding> = input
        .bindings
        .iter()
        .filter(in_ns)
        .filter(|b| b.spec.selector() == Some(label))
        .collect();
    if let Some(b) = dangling.first() {
        let wanted = b.spec.azure_identity().unwrap_or_default();
        return Link::fail(
            "bindings",
            format!(
                "binding {} names AzureIdentity {wanted}, which does not exist in namespace {ns}",
                name_of(&b.metadata)
            ),
            format!(
                "create AzureIdentity {wanted} in namespace {ns}, or correct the binding's azureIdentity"
            ),
        );
    }
    Link::fail(
        "bindings",
        format!("no AzureIdentityBinding has selector {label}"),
        format!(
            "create an AzureIdentityBinding in namespace {ns} with selector: {label} and azureIdentity: <an AzureIdentity in {ns}>, \
             or label the pod with the selector of an existing binding"
        ),
    )
    .fact(selectors_fact)
}

fn identity_link(chosen: &Candidate<'_>, found: &[Candidate<'_>]) -> Link {
    let id = chosen.identity;
    let kind = match id.spec.identity_type() {
        Ok(api::IdentityType::UserAssignedMsi) => "user-assigned managed identity".to_owned(),
        Ok(api::IdentityType::ServicePrincipal) => "service principal (secret)".to_owned(),
        Ok(api::IdentityType::ServicePrincipalCertificate) => "service principal (certificate)".to_owned(),
        Err(code) => format!("unknown type {code}"),
    };
    let why = if found.len() == 1 {
        "its only binding names it".to_owned()
    } else {
        format!(
            "the oldest of its {} bindings names it; a request naming client_id, object_id or msi_res_id gets that identity instead",
            found.len()
        )
    };
    let title = format!("identity: AzureIdentity {} ({kind})", name_of(&id.metadata));
    let facts = [
        format!("clientID: {}", chosen.client_id().unwrap_or("(none)")),
        format!("resourceID: {}", chosen.resource_id().unwrap_or("(none)")),
        format!("why this one: {why}"),
    ];
    if is_usable(id) {
        Link::pass("identity", title).facts(facts)
    } else {
        Link::fail(
            "identity",
            format!("{title}: MIC cannot use it"),
            "set type to 0, 1 or 2 and, for type 0, resourceID to the identity's ARM id: \
             /subscriptions/<subscription>/resourcegroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name> \
             (az identity show -g <group> -n <name> --query id)",
        )
        .facts(facts)
    }
}

/// `namespace/name` of an object.
pub(crate) fn name_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests;
