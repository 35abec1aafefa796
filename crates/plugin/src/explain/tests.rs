use std::collections::{BTreeMap, BTreeSet};

use api::{
    AssignmentState, AzureAssignedIdentity, AzureAssignedIdentitySpec, AzureAssignedIdentityStatus,
    AzureIdentity, AzureIdentityBinding, AzureIdentityBindingSpec, AzureIdentitySpec,
    AzurePodIdentityException, AzurePodIdentityExceptionSpec, LabelValue,
};
use kube::api::ObjectMeta;
use matching::{PodFacts, Policy};

use super::{Input, explain};
use crate::{
    facts::{EventView, NmiPod, NmiView, NodeView, PodView, RefusalLog, VmIdentities},
    nmi_log::Refusal,
    report::{Report, Verdict},
};

const RID: &str =
    "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app";
const VMSS: &str = "azure:///subscriptions/s/resourceGroups/mc/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/0";

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn identity(ns: &str, name: &str, resource_id: &str) -> AzureIdentity {
    AzureIdentity {
        metadata: meta(ns, name),
        spec: AzureIdentitySpec {
            type_: Some(0),
            resource_id: Some(resource_id.into()),
            client_id: Some("00000000-0000-0000-0000-000000000001".into()),
            ..Default::default()
        },
        status: None,
    }
}

fn binding(ns: &str, name: &str, identity: &str, selector: &str) -> AzureIdentityBinding {
    AzureIdentityBinding {
        metadata: meta(ns, name),
        spec: AzureIdentityBindingSpec {
            azure_identity: Some(identity.into()),
            selector: Some(selector.into()),
            ..Default::default()
        },
        status: None,
    }
}

fn assigned(state: AssignmentState, reason: Option<&str>, message: Option<&str>) -> AzureAssignedIdentity {
    AzureAssignedIdentity {
        metadata: meta("shop", "web-shop-app"),
        spec: AzureAssignedIdentitySpec {
            pod: "web".into(),
            pod_namespace: "shop".into(),
            node_name: "n0".into(),
            ..Default::default()
        },
        status: Some(AzureAssignedIdentityStatus {
            status: Some(state),
            available_replicas: Some(1),
            reason: reason.map(Into::into),
            message: message.map(Into::into),
        }),
    }
}

fn pod(ns: &str, label: Option<&str>) -> PodView {
    let mut labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    if let Some(l) = label {
        labels.insert("aadpodidbinding".into(), l.into());
    }
    PodView {
        facts: PodFacts {
            namespace: ns.into(),
            name: "web".into(),
            labels,
            node: Some("n0".into()),
            ip: Some("10.244.0.7".into()),
            host_network: false,
            phase: Some("Running".into()),
            service_account: Some("web-sa".into()),
            ..PodFacts::default()
        },
        identity_ready: None,
    }
}

/// A world where everything holds; each test breaks one thing.
struct World {
    policy: Policy,
    pod: Option<PodView>,
    node: NodeView,
    exceptions: Vec<AzurePodIdentityException>,
    bindings: Vec<AzureIdentityBinding>,
    identities: Vec<AzureIdentity>,
    assigned: Vec<AzureAssignedIdentity>,
    events: Vec<EventView>,
    vm: VmIdentities,
    nmi: NmiView,
}

impl World {
    fn good() -> Self {
        Self {
            policy: Policy::default(),
            pod: Some(pod("shop", Some("app"))),
            node: NodeView {
                name: "n0".into(),
                provider_id: Some(VMSS.into()),
                ready: true,
            },
            exceptions: Vec::new(),
            bindings: vec![binding("shop", "b", "app", "app")],
            identities: vec![identity("shop", "app", RID)],
            assigned: vec![assigned(AssignmentState::Assigned, None, None)],
            events: Vec::new(),
            vm: VmIdentities::Read {
                target: "ss".into(),
                ids: BTreeSet::from([RID.to_ascii_lowercase()]),
            },
            nmi: NmiView {
                pod: Some(NmiPod {
                    namespace: "kube-system".into(),
                    name: "nmi-x".into(),
                    node: "n0".into(),
                    ready: true,
                    detail: String::new(),
                    stale_since: None,
                }),
                selector: "app.kubernetes.io/component=nmi".into(),
                lookup_error: None,
                refusals: RefusalLog::Read {
                    refusals: Vec::new(),
                    stale_since: None,
                },
            },
        }
    }

    fn explain(&self) -> Report {
        explain(&Input {
            policy: &self.policy,
            namespace: "shop",
            name: "web",
            pod: self.pod.as_ref(),
            node: Some(&self.node),
            exceptions: &self.exceptions,
            bindings: &self.bindings,
            identities: &self.identities,
            assigned: &self.assigned,
            events: &self.events,
            vm: &self.vm,
            nmi: &self.nmi,
        })
    }
}

/// The one failed link, and its fix.
fn failed(r: &Report) -> (&'static str, String, String) {
    let failed: Vec<_> = r.links.iter().filter(|l| l.verdict == Verdict::Fail).collect();
    assert_eq!(failed.len(), 1, "{}", r.text());
    let l = failed[0];
    (
        l.id,
        l.title.clone() + "\n" + &l.facts.join("\n"),
        l.fix.clone().unwrap(),
    )
}

#[test]
fn a_healthy_chain_holds_link_by_link() {
    let r = World::good().explain();
    assert!(r.ok(), "{}", r.text());
    let ids: Vec<&str> = r.links.iter().map(|l| l.id).collect();
    assert_eq!(
        ids,
        [
            "pod",
            "exceptions",
            "bindings",
            "identity",
            "assignment",
            "vm",
            "nmi"
        ]
    );
    let text = r.text();
    assert!(
        text.contains("node: n0")
            && text.contains("IP: 10.244.0.7")
            && text.contains("service account: web-sa")
    );
    assert!(text.contains("why this one: its only binding names it"), "{text}");
}

#[test]
fn an_unlabelled_pod_is_told_which_label_to_carry() {
    let mut w = World::good();
    w.pod = Some(pod("shop", None));
    let (id, what, fix) = failed(&w.explain());
    assert_eq!(id, "bindings");
    assert!(
        what.contains("selectors of the bindings in namespace shop: app"),
        "{what}"
    );
    assert!(fix.contains("aadpodidbinding=<selector>"), "{fix}");
}

#[test]
fn a_binding_in_another_namespace_spells_out_the_namespaced_rule() {
    let mut w = World::good();
    w.pod = Some(pod("rogue", Some("app")));
    let (id, what, fix) = failed(&w.explain());
    assert_eq!(id, "bindings");
    assert!(
        what.contains("shop/b in other namespaces have selector app, but bindings are namespaced"),
        "{what}"
    );
    assert!(fix.contains("in namespace rogue"), "{fix}");
    // Cross-namespace (upstream's default) would have matched it.
    w.policy.namespaced = false;
    w.assigned[0].metadata.namespace = Some("rogue".into());
    w.assigned[0].metadata.name = Some("web-rogue-app".into());
    assert_eq!(w.explain().links[2].verdict, Verdict::Pass);
}

#[test]
fn no_binding_with_the_label_s_selector() {
    let mut w = World::good();
    w.pod = Some(pod("shop", Some("other")));
    let (id, what, fix) = failed(&w.explain());
    assert_eq!(id, "bindings");
    assert!(
        what.starts_with("no AzureIdentityBinding has selector other"),
        "{what}"
    );
    assert!(fix.contains("with selector: other"), "{fix}");
}

#[test]
fn a_binding_naming_a_missing_identity() {
    let mut w = World::good();
    w.identities.clear();
    let (id, what, fix) = failed(&w.explain());
    assert_eq!(id, "bindings");
    assert!(
        what.contains("names AzureIdentity app, which does not exist"),
        "{what}"
    );
    assert!(
        fix.starts_with("create AzureIdentity app in namespace shop"),
        "{fix}"
    );
}

#[test]
fn an_excepted_pod_is_told_it_gets_the_node_s_identity() {
    let mut w = World::good();
    w.pod
        .as_mut()
        .unwrap()
        .facts
        .labels
        .insert("noaad".into(), "true".into());
    w.exceptions.push(AzurePodIdentityException {
        metadata: meta("shop", "skip"),
        spec: AzurePodIdentityExceptionSpec {
            pod_labels: Some(BTreeMap::from([("noaad".to_owned(), LabelValue::from("true"))])),
            ..Default::default()
        },
        status: None,
    });
    let (id, what, fix) = failed(&w.explain());
    assert_eq!(id, "exceptions");
    assert!(
        what.contains("excepted by AzurePodIdentityException shop/skip"),
        "{what}"
    );
    assert!(
        fix.contains("node's own identity") && fix.contains("remove the label noaad=true"),
        "{fix}"
    );
}

#[test]
fn a_refused_assignment_names_arm_s_reason_and_the_role_to_grant() {
    let mut w = World::good();
    let message = format!(
        "assigning identity {} to ss failed: vmss_update 403: LinkedAuthorizationFailed The client 'mic-client' with object id 'mic-object' ...",
        RID.to_ascii_lowercase()
    );
    w.assigned = vec![assigned(
        AssignmentState::Created,
        Some("LinkedAuthorizationFailed"),
        Some(&message),
    )];
    w.events.push(EventView {
        namespace: "shop".into(),
        kind: "Warning".into(),
        reason: "IdentityAssignmentFailed".into(),
        note: message.clone(),
        regarding: "Pod/web".into(),
        time: Some("2026-01-01T00:00:00Z".into()),
    });
    w.vm = VmIdentities::Read {
        target: "ss".into(),
        ids: BTreeSet::new(),
    };
    let r = w.explain();
    let assignment = r.links.iter().find(|l| l.id == "assignment").unwrap();
    assert_eq!(assignment.verdict, Verdict::Fail);
    assert!(
        assignment
            .facts
            .contains(&"reason: LinkedAuthorizationFailed".to_owned())
    );
    assert!(
        assignment
            .facts
            .iter()
            .any(|f| f.starts_with("last MIC Event: Warning IdentityAssignmentFailed"))
    );
    let fix = assignment.fix.as_deref().unwrap();
    assert!(
        fix.contains(&format!(
            "az role assignment create --role \"Managed Identity Operator\" --assignee mic-object --scope {RID}"
        )),
        "{fix}"
    );
    let vm = r.links.iter().find(|l| l.id == "vm").unwrap();
    assert_eq!(
        vm.fix.as_deref(),
        Some("MIC has not added it yet: see the assignment's fix above")
    );
}

#[test]
fn a_created_object_without_a_reason_falls_back_to_mic_s_event() {
    let mut w = World::good();
    w.assigned = vec![assigned(AssignmentState::Created, None, None)];
    w.events.push(EventView {
        namespace: "shop".into(),
        kind: "Warning".into(),
        reason: "IdentityAssignmentFailed".into(),
        note: "assigning identity x for pod shop/web failed: vmss_update 400: FailedIdentityOperation gone"
            .into(),
        regarding: "Pod/web".into(),
        time: None,
    });
    let (id, what, fix) = failed(&w.explain());
    assert_eq!(id, "assignment");
    assert!(what.contains("reason: FailedIdentityOperation"), "{what}");
    assert!(fix.contains("az identity show --ids"), "{fix}");
}

#[test]
fn an_identity_missing_from_the_vm_after_assignment() {
    let mut w = World::good();
    w.vm = VmIdentities::Read {
        target: "ss".into(),
        ids: BTreeSet::from(["/subscriptions/s/other".to_owned()]),
    };
    let (id, what, fix) = failed(&w.explain());
    assert_eq!(id, "vm");
    assert!(what.starts_with("ARM: ss does not carry the identity"), "{what}");
    assert!(fix.contains("aadpodidentity.k8s.io/identity-missing"), "{fix}");
}

#[test]
fn without_credentials_the_vm_is_not_checked_and_says_why() {
    let mut w = World::good();
    w.vm = VmIdentities::NotAsked("no --cloud-config given".into());
    let r = w.explain();
    assert!(r.ok());
    let vm = r.links.iter().find(|l| l.id == "vm").unwrap();
    assert_eq!(
        (vm.verdict, vm.facts[0].as_str()),
        (Verdict::Unchecked, "no --cloud-config given")
    );
}

#[test]
fn nmi_not_ready_or_absent_breaks_the_chain() {
    let mut w = World::good();
    let nmi = w.nmi.pod.as_mut().unwrap();
    nmi.ready = false;
    nmi.detail = "ContainersNotReady: containers with unready status: [nmi]".into();
    let (id, what, fix) = failed(&w.explain());
    assert_eq!(id, "nmi");
    assert!(
        what.contains("NMI kube-system/nmi-x on node n0 is not Ready"),
        "{what}"
    );
    assert!(fix.contains("kubectl logs -n kube-system nmi-x"), "{fix}");
    w.nmi.pod = None;
    let (_, what, fix) = failed(&w.explain());
    assert!(what.starts_with("no NMI pod on node n0"), "{what}");
    assert!(fix.contains("app.kubernetes.io/component=nmi"), "{fix}");
}

#[test]
fn nmi_s_refusals_of_the_pod_are_shown() {
    let mut w = World::good();
    w.nmi.refusals = RefusalLog::Read {
        refusals: vec![Refusal {
            time: "t1".into(),
            reason: "not_assigned".into(),
            detail: "identity not assigned yet".into(),
            hint: "wait".into(),
            identity: String::new(),
        }],
        stale_since: None,
    };
    let r = w.explain();
    let nmi = r.links.iter().find(|l| l.id == "nmi").unwrap();
    assert!(
        nmi.facts[0]
            .starts_with("1 refusal(s) of this pod in its Events from NMI; the last at t1: not_assigned")
    );
}

#[test]
fn a_missing_pod_or_a_host_network_pod() {
    let mut w = World::good();
    w.pod = None;
    let (id, _, _) = failed(&w.explain());
    assert_eq!(id, "pod");
    let mut w = World::good();
    w.pod.as_mut().unwrap().facts.host_network = true;
    let (id, what, _) = failed(&w.explain());
    assert_eq!(id, "pod");
    assert!(what.contains("hostNetwork"));
}

#[test]
fn an_unusable_identity_is_named() {
    let mut w = World::good();
    w.identities = vec![identity("shop", "app", "not-an-id")];
    let (id, _, fix) = failed(&w.explain());
    assert_eq!(id, "identity");
    assert!(fix.contains("az identity show"), "{fix}");
}

#[test]
fn a_ready_nmi_with_a_stale_view_breaks_the_chain() {
    let mut w = World::good();
    w.nmi.refusals = RefusalLog::Read {
        refusals: Vec::new(),
        stale_since: Some("2026-01-01T00:00:01Z".into()),
    };
    let (id, what, fix) = failed(&w.explain());
    assert_eq!(id, "nmi");
    assert!(
        what.contains("refuses every token request: its view of the cluster is stale"),
        "{what}"
    );
    assert!(what.contains("stale since 2026-01-01T00:00:01Z"), "{what}");
    assert!(fix.contains("--max-state-staleness"), "{fix}");
}

#[test]
fn what_the_user_may_not_read_is_unchecked_not_broken() {
    let mut w = World::good();
    w.nmi.pod = None;
    w.nmi.lookup_error = Some("pods is forbidden".into());
    let r = w.explain();
    let nmi = r.links.iter().find(|l| l.id == "nmi").unwrap();
    assert_eq!(nmi.verdict, Verdict::Unchecked);
    assert_eq!(nmi.facts[0], "NMI's pods could not be listed: pods is forbidden");
    assert!(r.ok(), "{}", r.text());
}

#[test]
fn the_pod_link_shows_nmi_s_identity_ready_condition() {
    let mut w = World::good();
    let pod_facts = |w: &World| {
        w.explain()
            .links
            .iter()
            .find(|l| l.id == "pod")
            .unwrap()
            .facts
            .clone()
    };
    let unset = pod_facts(&w);
    assert!(
        unset
            .iter()
            .any(|f| f.starts_with("aadpodidentity.k8s.io/IdentityReady: not set")),
        "{unset:?}"
    );
    w.pod.as_mut().unwrap().identity_ready = Some(crate::facts::ConditionView {
        status: "False".into(),
        reason: "TokenRequestFailed".into(),
        message: "IMDS answered 500\nforged".into(),
        last_transition: Some("2026-01-01T00:00:00Z".into()),
    });
    let set = pod_facts(&w);
    assert!(
        set.contains(
            &"aadpodidentity.k8s.io/IdentityReady: False (TokenRequestFailed) since 2026-01-01T00:00:00Z: \
              IMDS answered 500\\nforged"
                .to_owned()
        ),
        "{set:?}"
    );
}
