//! The shell: reads what `explain` and `check` decide over from the Kubernetes API (and ARM,
//! when given credentials) into the plain values of `crate::facts`. No decisions here.

mod nmi;

use std::collections::BTreeSet;

use api::{AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException};
use arm::ArmClient;
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Node, Pod},
        events::v1::Event,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    jiff::Timestamp,
};
use kube::{Api, Client, Resource, api::ListParams};
use matching::{ComputeTarget, PodFacts, Policy};
use serde::de::DeserializeOwned;

use self::nmi::{nmi_on, nmi_pods, read_staleness};
use crate::{
    Error,
    check::{self, CloudConfigState, LeaseState},
    explain,
    facts::{ConditionView, EventView, NodeView, PodView, VmIdentities},
    report::Report,
};

/// The name MIC's Lease has unless `--leader-election-name` says otherwise.
pub const DEFAULT_LEASE: &str = "aad-pod-identity-mic";

/// How the shell looks for things, from the command line.
#[derive(Clone)]
pub struct Options {
    pub policy: Policy,
    /// Label selector of NMI's pods.
    pub nmi_selector: String,
    /// How far back NMI's log is read for refusals, in seconds.
    pub nmi_log_seconds: i64,
    /// MIC's Lease: `namespace/name`, or a name looked for in every namespace.
    pub lease: String,
    /// ARM, when the user gave credentials (`--cloud-config`).
    pub arm: Option<ArmClient>,
    /// The cloud config as read (for `check`).
    pub cloud_config: CloudConfigState,
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::kube(what, source)
}

async fn list<K>(api: Api<K>, what: &str) -> Result<Vec<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(kube_err(what))?
        .items)
}

/// Every object of a kind, or those of `namespace` when the user may not list them all.
async fn list_wide<K>(client: &Client, namespace: &str, what: &str) -> Result<Vec<K>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match Api::<K>::all(client.clone()).list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            list(Api::namespaced(client.clone(), namespace), what).await
        }
        Err(e) => Err(kube_err(what)(e)),
    }
}

/// `explain POD`: reads the chain's facts and decides.
pub async fn explain(client: &Client, opts: &Options, namespace: &str, name: &str) -> Result<Report, Error> {
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kube_err(format!("pod {namespace}/{name}")))?;
    let pod_view = pod.as_ref().map(|p| PodView {
        facts: PodFacts::from(p),
        identity_ready: identity_ready(p),
    });
    let node_name = pod_view.as_ref().and_then(|p| p.facts.node.clone());
    let node = match &node_name {
        // Not fatal: a user who may not read nodes still learns the rest (the VM link says why
        // it was not checked).
        Some(n) => Api::<Node>::all(client.clone())
            .get_opt(n)
            .await
            .ok()
            .flatten()
            .map(|n| node_view(&n)),
        None => None,
    };
    let exceptions: Vec<AzurePodIdentityException> = list(
        Api::namespaced(client.clone(), namespace),
        "AzurePodIdentityExceptions",
    )
    .await?;
    let bindings: Vec<AzureIdentityBinding> = list_wide(client, namespace, "AzureIdentityBindings").await?;
    let identities: Vec<AzureIdentity> = list_wide(client, namespace, "AzureIdentities").await?;
    let assigned: Vec<AzureAssignedIdentity> = list(
        Api::namespaced(client.clone(), namespace),
        "AzureAssignedIdentities",
    )
    .await?;
    let events = events_in(client, namespace).await?;
    let vm = vm_identities(opts, node.as_ref()).await;
    let nmi = nmi_on(client, opts, node_name.as_deref(), namespace, name).await?;
    Ok(explain::explain(&explain::Input {
        policy: &opts.policy,
        namespace,
        name,
        pod: pod_view.as_ref(),
        node: node.as_ref(),
        exceptions: &exceptions,
        bindings: &bindings,
        identities: &identities,
        assigned: &assigned,
        events: &events,
        vm: &vm,
        nmi: &nmi,
    }))
}

/// `check`: reads the cluster's state and decides.
pub async fn check(client: &Client, opts: &Options) -> Result<Report, Error> {
    let crd_api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut crds = Vec::new();
    for crd in api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        if let Some(c) = crd_api
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("CRD {name}")))?
        {
            crds.push(c);
        }
    }
    let crd_installed = |plural: &str| crds.iter().any(|c| c.spec.names.plural == plural);
    let (has_identities, has_bindings, has_assigned) = (
        crd_installed("azureidentities"),
        crd_installed("azureidentitybindings"),
        crd_installed("azureassignedidentities"),
    );
    let lease = lease_state(client, &opts.lease).await;
    let nodes: Vec<NodeView> = list(Api::<Node>::all(client.clone()), "nodes")
        .await?
        .iter()
        .map(node_view)
        .collect();
    let mut nmi_pods = nmi_pods(client, &opts.nmi_selector, None).await?;
    let nmi_logs_unread = read_staleness(client, opts, &mut nmi_pods).await;
    let identities: Vec<AzureIdentity> = match has_identities {
        true => list(Api::all(client.clone()), "AzureIdentities").await?,
        false => Vec::new(),
    };
    let bindings: Vec<AzureIdentityBinding> = match has_bindings {
        true => list(Api::all(client.clone()), "AzureIdentityBindings").await?,
        false => Vec::new(),
    };
    let assigned: Vec<AzureAssignedIdentity> = match has_assigned {
        true => list(Api::all(client.clone()), "AzureAssignedIdentities").await?,
        false => Vec::new(),
    };
    // Events only where some assignment waits: they are what `check` shows for stuck ones.
    let waiting: BTreeSet<String> = assigned
        .iter()
        .filter(|a| a.state() == api::AssignmentState::Created)
        .filter_map(|a| a.metadata.namespace.clone())
        .collect();
    let mut events = Vec::new();
    for ns in &waiting {
        events.extend(events_in(client, ns).await?);
    }
    let consent = consent_reads(opts, &identities, &bindings, &assigned).await;
    Ok(check::check(&check::Input {
        now: Timestamp::now().as_second(),
        crds: &crds,
        lease: &lease,
        nodes: &nodes,
        nmi_pods: &nmi_pods,
        nmi_selector: &opts.nmi_selector,
        nmi_logs_unread: nmi_logs_unread.as_deref(),
        cloud_config: &opts.cloud_config,
        identities: &identities,
        bindings: &bindings,
        assigned: &assigned,
        events: &events,
        consent: &consent,
    }))
}

/// The owners' consent for the identities in use, read from ARM as MIC reads it.
async fn consent_reads(
    opts: &Options,
    identities: &[AzureIdentity],
    bindings: &[AzureIdentityBinding],
    assigned: &[AzureAssignedIdentity],
) -> check::ConsentReads {
    let Some(arm) = &opts.arm else {
        return check::ConsentReads::NotRead(
            "no --cloud-config given: the identities' tags are read from ARM with MIC's credentials".into(),
        );
    };
    let ids: BTreeSet<String> = check::in_use(identities, bindings, assigned)
        .iter()
        .map(|u| u.resource_id.to_ascii_lowercase())
        .collect();
    let mut reads = std::collections::BTreeMap::new();
    for id in ids {
        let read = arm.read_identity(&id).await;
        reads.insert(id, read);
    }
    check::ConsentReads::Read(reads)
}

/// NMI's IdentityReady condition on the pod.
fn identity_ready(p: &Pod) -> Option<ConditionView> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == api::v1::IDENTITY_READY_CONDITION)?;
    Some(ConditionView {
        status: c.status.clone(),
        reason: c.reason.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
        last_transition: c.last_transition_time.as_ref().map(|t| t.0.to_string()),
    })
}

fn node_view(n: &Node) -> NodeView {
    NodeView {
        name: n.metadata.name.clone().unwrap_or_default(),
        provider_id: n.spec.as_ref().and_then(|s| s.provider_id.clone()),
        ready: n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
    }
}

async fn events_in(client: &Client, namespace: &str) -> Result<Vec<EventView>, Error> {
    let events: Vec<Event> = list(Api::namespaced(client.clone(), namespace), "Events").await?;
    Ok(events
        .into_iter()
        .map(|e| {
            let regarding = e.regarding.as_ref();
            let time = e
                .event_time
                .as_ref()
                .map(|t| t.0.to_string())
                .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0.to_string()))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()));
            EventView {
                namespace: namespace.to_owned(),
                kind: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                note: e.note.clone().unwrap_or_default(),
                regarding: format!(
                    "{}/{}",
                    regarding.and_then(|r| r.kind.as_deref()).unwrap_or_default(),
                    regarding.and_then(|r| r.name.as_deref()).unwrap_or_default()
                ),
                time,
            }
        })
        .collect())
}

async fn vm_identities(opts: &Options, node: Option<&NodeView>) -> VmIdentities {
    let Some(arm) = &opts.arm else {
        return VmIdentities::NotAsked(
            "not asked of ARM: give --cloud-config <azure.json> (credentials with read access to the node's VM or scale set)"
                .into(),
        );
    };
    let Some(target) = node
        .and_then(|n| n.provider_id.as_deref())
        .and_then(|p| ComputeTarget::from_provider_id(p).ok())
    else {
        return VmIdentities::NotAsked("the node names no Azure VM".into());
    };
    match arm.get(&target).await {
        Ok(state) => VmIdentities::Read {
            target: target.arm_id(),
            ids: state.ids(),
        },
        Err(e) => VmIdentities::Failed(e.to_string()),
    }
}

async fn lease_state(client: &Client, lease: &str) -> LeaseState {
    let found = match lease.split_once('/') {
        Some((ns, name)) => Api::<Lease>::namespaced(client.clone(), ns).get_opt(name).await,
        None => Api::<Lease>::all(client.clone())
            .list(&ListParams::default().fields(&format!("metadata.name={lease}")))
            .await
            .map(|l| l.items.into_iter().next()),
    };
    match found {
        Err(e) => LeaseState::Unread(e.to_string()),
        Ok(None) => LeaseState::Missing(lease.to_owned()),
        Ok(Some(l)) => {
            let spec = l.spec.unwrap_or_default();
            LeaseState::Found {
                holder: spec.holder_identity,
                renewed_ago: spec
                    .renew_time
                    .map(|t| Timestamp::now().as_second() - t.0.as_second()),
                duration: spec.lease_duration_seconds.map(i64::from),
            }
        }
    }
}
