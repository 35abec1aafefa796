//! `check`: the cluster-wide health of pod identity, decided over plain values.

mod consent;
mod limits;

use std::collections::BTreeSet;

use api::{AssignmentState, AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use matching::is_usable;

pub use self::{
    consent::{ConsentReads, InUse, in_use},
    limits::{MAX_IDENTITIES_PER_TARGET, MAX_SCALE_SET_INSTANCES},
};
use crate::{
    explain::name_of,
    facts::{EventView, NmiPod, NodeView},
    fix::{Failure, assignment_fix, failure_of, last_mic_event},
    report::{Link, Report},
};

/// How long an AzureAssignedIdentity may stay `Created` before `check` calls it stuck.
pub const STUCK_AFTER_SECS: i64 = 60;

/// MIC's leader-election Lease, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    Found {
        holder: Option<String>,
        /// Seconds since the holder last renewed it.
        renewed_ago: Option<i64>,
        duration: Option<i64>,
    },
    /// No such Lease (`namespace/name`).
    Missing(String),
    Unread(String),
}

/// The cloud config `check` was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloudConfigState {
    NotGiven,
    /// Read and parsed; what it selects (cloud, subscription, credential kind).
    Readable(String),
    Unreadable(String),
}

/// Everything `check` decides over.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// Now, in seconds since the epoch (ages are computed against it).
    pub now: i64,
    pub crds: &'a [CustomResourceDefinition],
    pub lease: &'a LeaseState,
    pub nodes: &'a [NodeView],
    pub nmi_pods: &'a [NmiPod],
    pub nmi_selector: &'a str,
    /// Why NMI's logs (for staleness) could not be read, when they could not.
    pub nmi_logs_unread: Option<&'a str>,
    pub cloud_config: &'a CloudConfigState,
    pub identities: &'a [AzureIdentity],
    pub bindings: &'a [AzureIdentityBinding],
    pub assigned: &'a [AzureAssignedIdentity],
    pub events: &'a [EventView],
    /// What ARM said of the user-assigned identities in use ([`in_use`]).
    pub consent: &'a ConsentReads,
}

pub fn check(input: &Input<'_>) -> Report {
    Report {
        subject: "pod identity in this cluster".into(),
        links: vec![
            crds_link(input.crds),
            mic_link(input.lease),
            nmi_link(input),
            cloud_config_link(input.cloud_config),
            identities_link(input.identities),
            bindings_link(input.bindings, input.identities),
            consent::consent_link(
                &in_use(input.identities, input.bindings, input.assigned),
                input.consent,
            ),
            stuck_link(input),
            limits::limits_link(input.nodes, input.assigned),
        ],
    }
}

/// Each CRD, and the fields whose two spellings (upstream v1.8's and ≤ 1.5's) its schema must both declare.
const CRDS: [(&str, [&str; 2]); 4] = [
    (
        "azureidentities.aadpodidentity.k8s.io",
        ["resourceID", "ResourceID"],
    ),
    (
        "azureidentitybindings.aadpodidentity.k8s.io",
        ["selector", "Selector"],
    ),
    (
        "azureassignedidentities.aadpodidentity.k8s.io",
        ["pod", "podNamespace"],
    ),
    (
        "azurepodidentityexceptions.aadpodidentity.k8s.io",
        ["podLabels", "PodLabels"],
    ),
];

fn crds_link(crds: &[CustomResourceDefinition]) -> Link {
    let mut missing = Vec::new();
    let mut one_spelling = Vec::new();
    for (name, fields) in CRDS {
        let Some(crd) = crds.iter().find(|c| c.metadata.name.as_deref() == Some(name)) else {
            missing.push(name);
            continue;
        };
        let spec_fields: BTreeSet<&str> = crd
            .spec
            .versions
            .iter()
            .filter_map(|v| {
                v.schema
                    .as_ref()?
                    .open_api_v3_schema
                    .as_ref()?
                    .properties
                    .as_ref()?
                    .get("spec")
            })
            .filter_map(|s| s.properties.as_ref())
            .flat_map(|p| p.keys().map(String::as_str))
            .collect();
        if !fields.iter().all(|f| spec_fields.contains(f)) {
            one_spelling.push(format!("{name} lacks {}", fields.join(" or ")));
        }
    }
    let apply = "kubectl apply -f deploy/crds/aadpodidentity.k8s.io.yaml (or helm upgrade the chart)";
    if !missing.is_empty() {
        return Link::fail(
            "crds",
            format!("CRDs missing: {}", missing.join(", ")),
            apply.to_owned(),
        );
    }
    if !one_spelling.is_empty() {
        return Link::fail(
            "crds",
            "the CRDs do not declare both spellings (upstream v1.8's CRDs prune ResourceID, ClientID, Selector, ...)",
            format!("replace them with ours, which accept both: {apply}"),
        )
        .facts(one_spelling);
    }
    Link::pass("crds", "4 CRDs installed, with both spellings")
}

fn mic_link(lease: &LeaseState) -> Link {
    match lease {
        LeaseState::Unread(e) => {
            Link::unchecked("mic", "MIC leader", format!("the Lease could not be read: {e}"))
        }
        LeaseState::Missing(name) => Link::fail(
            "mic",
            format!("no MIC has ever led: no Lease {name}"),
            "check that MIC's Deployment runs (kubectl get deploy -A -l app.kubernetes.io/component=mic) and read its log; \
             give --mic-lease if its --leader-election-namespace/-name differ",
        ),
        LeaseState::Found {
            holder,
            renewed_ago,
            duration,
        } => {
            let holder = holder.as_deref().unwrap_or("(nobody)");
            let lag = renewed_ago.map_or("never renewed".to_owned(), |s| format!("renewed {s}s ago"));
            let lease = duration.map_or(String::new(), |d| format!(" (lease {d}s)"));
            let expired = match (renewed_ago, duration) {
                (Some(ago), Some(d)) => *ago > *d,
                _ => true,
            };
            if expired {
                Link::fail(
                    "mic",
                    format!("MIC leader {holder}: lease expired, {lag}{lease}"),
                    "no MIC is leading, so no identity is assigned or removed: check MIC's pods and log",
                )
            } else {
                Link::pass("mic", format!("MIC leader {holder}, {lag}{lease}"))
            }
        }
    }
}

fn nmi_link(input: &Input<'_>) -> Link {
    let mut bad = Vec::new();
    for node in input.nodes {
        match input.nmi_pods.iter().find(|p| p.node == node.name) {
            None => bad.push(format!("{}: no NMI pod", node.name)),
            Some(p) if !p.ready => bad.push(format!(
                "{}: {}/{} not Ready: {}",
                node.name, p.namespace, p.name, p.detail
            )),
            Some(p) => {
                if let Some(since) = &p.stale_since {
                    bad.push(format!(
                        "{}: {}/{} Ready, but its view of the cluster is stale since {since} (it refuses every token request)",
                        node.name, p.namespace, p.name
                    ));
                }
            }
        }
    }
    let n = input.nodes.len();
    let unread = input
        .nmi_logs_unread
        .map(|why| format!("NMI's logs not read, so staleness is not checked: {why}"));
    if bad.is_empty() {
        return Link::pass(
            "nmi",
            format!("NMI Ready on all {n} node(s) (rules in place, watches synced)"),
        )
        .facts(unread);
    }
    Link::fail(
        "nmi",
        format!("NMI not serving on {} of {n} node(s)", bad.len()),
        format!(
            "pods on those nodes get no token: NMI is Ready once its iptables rules are in place and its watches synced, \
             and serves while its watches are proven (--max-state-staleness); read its log (kubectl logs -n <namespace> \
             <nmi pod>) and check the node's connection to the API server; without a pod, check the DaemonSet's \
             nodeSelector and tolerations, or give --nmi-selector (now {})",
            input.nmi_selector
        ),
    )
    .facts(bad)
    .facts(unread)
}

fn cloud_config_link(state: &CloudConfigState) -> Link {
    match state {
        CloudConfigState::NotGiven => Link::unchecked(
            "cloud-config",
            "cloud config",
            "no --cloud-config given (the azure.json MIC reads, /etc/kubernetes/azure.json on AKS nodes)",
        ),
        CloudConfigState::Readable(what) => Link::pass("cloud-config", "cloud config readable").fact(what.clone()),
        CloudConfigState::Unreadable(e) => Link::fail(
            "cloud-config",
            "cloud config unreadable",
            "MIC fails the same way at start-up: fix the file (JSON with tenantId, subscriptionId, aadClientId and \
             aadClientSecret, or useManagedIdentityExtension: true)",
        )
        .fact(e.clone()),
    }
}

fn identities_link(identities: &[AzureIdentity]) -> Link {
    let bad: Vec<String> = identities
        .iter()
        .filter(|i| !is_usable(i))
        .map(|i| {
            format!(
                "{}: type {:?}, resourceID {:?}",
                name_of(&i.metadata),
                i.spec.type_.unwrap_or(0),
                i.spec.resource_id().unwrap_or_default()
            )
        })
        .collect();
    if bad.is_empty() {
        return Link::pass(
            "identities",
            format!("{} AzureIdentity(s), every one usable", identities.len()),
        );
    }
    Link::fail(
        "identities",
        format!("{} AzureIdentity(s) MIC skips", bad.len()),
        "set resourceID to the identity's ARM id: az identity show -g <group> -n <name> --query id",
    )
    .facts(bad)
}

fn bindings_link(bindings: &[AzureIdentityBinding], identities: &[AzureIdentity]) -> Link {
    let dangling: Vec<String> = bindings
        .iter()
        .filter(|b| {
            let name = b.spec.azure_identity();
            !identities
                .iter()
                .any(|i| i.metadata.name.as_deref() == name && i.metadata.namespace == b.metadata.namespace)
        })
        .map(|b| {
            format!(
                "{} → AzureIdentity {:?}, not in its namespace",
                name_of(&b.metadata),
                b.spec.azure_identity().unwrap_or_default()
            )
        })
        .collect();
    if dangling.is_empty() {
        return Link::pass(
            "bindings",
            format!("{} binding(s), each naming an AzureIdentity", bindings.len()),
        );
    }
    Link::fail(
        "bindings",
        format!("{} binding(s) point at nothing", dangling.len()),
        "create the AzureIdentity in the binding's namespace, or correct the binding's azureIdentity",
    )
    .facts(dangling)
}

fn stuck_link(input: &Input<'_>) -> Link {
    let stuck: Vec<&AzureAssignedIdentity> = input
        .assigned
        .iter()
        .filter(|a| a.state() == AssignmentState::Created)
        .filter(|a| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| input.now - t.0.as_second() > STUCK_AFTER_SECS)
        })
        .collect();
    if stuck.is_empty() {
        return Link::pass(
            "stuck",
            format!("no AzureAssignedIdentity Created for more than {STUCK_AFTER_SECS}s"),
        );
    }
    let mut facts = Vec::new();
    let mut fixes = BTreeSet::new();
    for a in &stuck {
        let ns = a.metadata.namespace.as_deref().unwrap_or_default();
        let last = last_mic_event(input.events, ns, &a.spec.pod);
        let Failure { reason, message } = failure_of(a, last);
        let resource_id = a
            .spec
            .azure_identity_ref
            .as_ref()
            .and_then(|i| i.spec.resource_id())
            .unwrap_or_default();
        facts.push(format!(
            "{} (pod {}): {}",
            name_of(&a.metadata),
            a.spec.pod,
            reason.as_deref().unwrap_or("no reason recorded")
        ));
        if let Some(e) = last {
            facts.push(format!("    last MIC Event: {} {}: {}", e.kind, e.reason, e.note));
        }
        if let Some(r) = &reason {
            fixes.insert(assignment_fix(r, &message, resource_id));
        }
    }
    let fix = if fixes.is_empty() {
        "read MIC's log: it has not reported why (is it leading? kubectl pod-identity check's MIC link)"
            .to_owned()
    } else {
        fixes.into_iter().collect::<Vec<_>>().join("; ")
    };
    Link::fail(
        "stuck",
        format!(
            "{} AzureAssignedIdentity(s) Created for more than {STUCK_AFTER_SECS}s",
            stuck.len()
        ),
        fix,
    )
    .facts(facts)
}

#[cfg(test)]
mod tests;
