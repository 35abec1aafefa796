use super::*;
use crate::fixtures::{binding, identity, pod};

use ::fixtures::ids::APP_IDENTITY_CLIENT as A;

fn on(node: &str, mut p: PodFacts) -> PodFacts {
    p.node = Some(node.into());
    p
}

#[test]
fn provider_ids_name_the_vm_or_scale_set() {
    let vmss = ComputeTarget::from_provider_id(
        "azure:///subscriptions/sub-1/resourceGroups/MC_rg_aks_westeurope/providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-123-vmss/virtualMachines/3",
    )
    .unwrap();
    assert_eq!(vmss.kind, ComputeKind::ScaleSet);
    assert_eq!(vmss.name, "aks-nodepool1-123-vmss");
    assert_eq!(vmss.resource_group, "MC_rg_aks_westeurope");
    assert_eq!(
        vmss.arm_id(),
        "/subscriptions/sub-1/resourceGroups/MC_rg_aks_westeurope/providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-123-vmss"
    );
    let vm = ComputeTarget::from_provider_id(
        "azure:///subscriptions/s/resourcegroups/other-rg/providers/microsoft.compute/virtualmachines/vm-7",
    )
    .unwrap();
    assert_eq!(
        (vm.kind, vm.name.as_str(), vm.resource_group.as_str()),
        (ComputeKind::VirtualMachine, "vm-7", "other-rg")
    );
    for bad in [
        "",
        "aws:///us-east-1a/i-0123",
        "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v",
        "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss",
        "kind://docker/kind/kind-control-plane",
    ] {
        assert!(ComputeTarget::from_provider_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn desired_assignments_follow_the_matching_rules() {
    let ids = [identity("ns", "id", A)];
    let bindings = [binding("ns", "b", "id", "app", 1)];
    let mut finished = on("n1", pod("ns", "done", Some("app")));
    finished.phase = Some("Succeeded".into());
    let mut host = on("n1", pod("ns", "host", Some("app")));
    host.host_network = true;
    let pods = [
        on("n1", pod("ns", "web-0", Some("app"))),
        pod("ns", "unscheduled", Some("app")).tap(|p| p.node = None),
        finished,
        host,
        on("n1", pod("other", "rogue", Some("app"))),
        on("n2", pod("ns", "plain", None)),
    ];
    let d = desired(&Policy::default(), &pods, &bindings, &ids);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].name.as_str(), d[0].namespace.as_str(), d[0].node),
        ("web-0-ns-id", "ns", "n1")
    );
    assert_eq!(
        d[0].arm_identity(),
        Some(::fixtures::ids::resource_id("id").to_ascii_lowercase())
    );
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}
impl<T> Tap for T {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

/// The object recording `d`, as stored (MIC's worker writes its spec with `ToAssign::spec`).
fn recorded(d: &Desired<'_>, state: Option<api::AssignmentState>) -> AzureAssignedIdentity {
    let spec = api::AzureAssignedIdentitySpec {
        azure_identity_ref: Some(d.identity.clone()),
        azure_binding_ref: Some(d.binding.clone()),
        pod: d.pod.name.clone(),
        pod_namespace: d.pod.namespace.clone(),
        node_name: d.node.to_owned(),
        replicas: None,
    };
    let mut a = AzureAssignedIdentity::new(&d.name, spec);
    a.metadata.namespace = Some(d.namespace.clone());
    a.status = state.map(|s| api::AzureAssignedIdentityStatus {
        status: Some(s),
        available_replicas: Some(1),
        ..Default::default()
    });
    a
}

#[test]
fn the_plan_creates_updates_retries_and_deletes() {
    let ids = [identity("ns", "id", A)];
    let bindings = [binding("ns", "b", "id", "app", 1)];
    let pods = [
        on("n1", pod("ns", "new", Some("app"))),
        on("n1", pod("ns", "moved", Some("app"))),
        on("n1", pod("ns", "stuck", Some("app"))),
        on("n1", pod("ns", "fine", Some("app"))),
    ];
    let d = desired(&Policy::default(), &pods, &bindings, &ids);
    let mut moved = recorded(&d[1], Some(api::AssignmentState::Assigned));
    moved.spec.node_name = "n0".into();
    let existing = [
        moved,
        recorded(&d[2], Some(api::AssignmentState::Created)),
        recorded(&d[3], Some(api::AssignmentState::Assigned)),
        recorded(&d[3], None).tap(|a| a.metadata.name = Some("gone-ns-id".into())),
    ];
    let existing: Vec<AssignedFacts> = existing.iter().map(AssignedFacts::from).collect();
    let p = plan(d, &existing);
    assert_eq!(
        p.create.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["new-ns-id"]
    );
    assert_eq!(
        p.update
            .iter()
            .map(|(_, d)| (d.name.as_str(), d.node))
            .collect::<Vec<_>>(),
        [("moved-ns-id", "n1")]
    );
    assert_eq!(
        p.retry.iter().map(|(_, d)| d.name.as_str()).collect::<Vec<_>>(),
        ["stuck-ns-id"]
    );
    assert_eq!(
        p.delete.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["gone-ns-id"]
    );
}

#[test]
fn an_edited_identity_is_assigned_afresh() {
    let mut edited = identity("ns", "id", A);
    edited.metadata.resource_version = Some("2".into());
    let ids = [edited];
    let bindings = [binding("ns", "b", "id", "app", 1)];
    let pods = [on("n1", pod("ns", "web", Some("app")))];
    let d = desired(&Policy::default(), &pods, &bindings, &ids);
    let mut old = recorded(&d[0], Some(api::AssignmentState::Assigned));
    old.spec
        .azure_identity_ref
        .as_mut()
        .unwrap()
        .metadata
        .resource_version = Some("1".into());
    let existing = [AssignedFacts::from(&old)];
    let p = plan(d, &existing);
    assert_eq!(p.update.len(), 1);
    assert!(p.create.is_empty() && p.delete.is_empty());
}

#[test]
fn facts_keep_what_the_decisions_read() {
    let ids = [identity("ns", "id", A)];
    let bindings = [binding("ns", "b", "id", "app", 1)];
    let pods = [on("n1", pod("ns", "web", Some("app")))];
    let d = desired(&Policy::default(), &pods, &bindings, &ids);
    let mut a = recorded(&d[0], None);
    let f = AssignedFacts::from(&a);
    assert_eq!(
        (
            f.namespace.as_str(),
            f.name.as_str(),
            f.pod.as_str(),
            f.node.as_str()
        ),
        ("ns", "web-ns-id", "web", "n1")
    );
    assert_eq!(
        f.state,
        api::AssignmentState::Assigned,
        "no status counts as assigned"
    );
    assert_eq!(f.arm_id, d[0].arm_identity());
    assert_eq!(f.client_id.as_deref(), Some(A));
    assert!(!f.deleting);
    a.spec.azure_identity_ref.as_mut().unwrap().spec.type_ = Some(1);
    a.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    let f = AssignedFacts::from(&a);
    assert_eq!(f.arm_id, None, "a service principal is never on a VM");
    assert!(f.deleting);
}

/// NMI's finding that IMDS did not know the identity reaches MIC's planner through the facts;
/// other annotations do not.
#[test]
fn facts_carry_nmis_identity_missing_finding() {
    let ids = [identity("ns", "id", A)];
    let bindings = [binding("ns", "b", "id", "app", 1)];
    let pods = [on("n1", pod("ns", "web", Some("app")))];
    let d = desired(&Policy::default(), &pods, &bindings, &ids);
    let mut a = recorded(&d[0], Some(api::AssignmentState::Assigned));
    a.metadata.annotations = Some([("team".to_owned(), "a".to_owned())].into());
    assert_eq!(AssignedFacts::from(&a).identity_missing, None);
    a.metadata.annotations.as_mut().unwrap().insert(
        api::v1::IDENTITY_MISSING_ANNOTATION.to_owned(),
        "2026-11-30T05:00:00Z".to_owned(),
    );
    let f = AssignedFacts::from(&a);
    assert_eq!(f.identity_missing.as_deref(), Some("2026-11-30T05:00:00Z"));
    // The finding changes nothing of what the object records: it is planned like before.
    let p = plan(d.clone(), [&f]);
    assert!(p.create.is_empty() && p.update.is_empty() && p.delete.is_empty() && p.retry.is_empty());
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn identities_are_removed_only_when_released_unused_and_unprotected() {
    let change = target_change(
        &set(&["a", "b"]),
        &set(&["b", "c", "d", "e"]),
        &set(&["b", "c", "d", "x"]),
        &set(&["d"]),
    );
    // a is needed and missing; b is still needed by another pod; c is released and unused;
    // d is protected; e was already gone; x was put there by someone else.
    assert_eq!(
        change,
        TargetChange {
            add: set(&["a"]),
            remove: set(&["c"])
        }
    );
    assert!(target_change(&set(&["a"]), &set(&[]), &set(&["a"]), &set(&[])).is_empty());
}

#[test]
fn unusable_identities_get_no_assignment() {
    let mut bad_id = identity("ns", "bad", A);
    bad_id.spec.resource_id =
        Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm".into());
    let mut no_id = identity("ns", "none", A);
    no_id.spec.resource_id = None;
    let mut odd_type = identity("ns", "odd", A);
    odd_type.spec.type_ = Some(7);
    let ids = [bad_id, no_id, odd_type, identity("ns", "good", A)];
    let bindings: Vec<_> = ["bad", "none", "odd", "good"]
        .iter()
        .map(|n| binding("ns", &format!("b-{n}"), n, "app", 1))
        .collect();
    let pods = [on("n1", pod("ns", "web", Some("app")))];
    let d = desired(&Policy::default(), &pods, &bindings, &ids);
    assert_eq!(
        d.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["web-ns-good"]
    );
    assert!(is_user_assigned_identity_id(
        "/subscriptions/S/resourcegroups/RG/providers/microsoft.managedidentity/userassignedidentities/x"
    ));
    assert!(!is_user_assigned_identity_id(
        "/subscriptions//resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"
    ));
}

#[test]
fn only_a_created_object_with_one_of_mics_refusal_reasons_records_a_refusal() {
    let status = |state, reason: &str| api::AzureAssignedIdentityStatus {
        status: Some(state),
        reason: Some(reason.to_owned()),
        message: Some("the owner grants it with: az tag update ...".into()),
        ..Default::default()
    };
    let mut a = AzureAssignedIdentity::new("x", Default::default());
    a.status = Some(status(
        api::AssignmentState::Created,
        api::v1::REASON_CONSENT_MISSING,
    ));
    assert_eq!(
        AssignedFacts::from(&a).refusal,
        Some(MicRefusal {
            reason: api::v1::REASON_CONSENT_MISSING.into(),
            message: "the owner grants it with: az tag update ...".into(),
        })
    );
    // ARM's failures are retried: NMI keeps holding for them.
    a.status = Some(status(api::AssignmentState::Created, "LinkedAuthorizationFailed"));
    assert_eq!(AssignedFacts::from(&a).refusal, None);
    a.status = Some(status(
        api::AssignmentState::Assigned,
        api::v1::REASON_CONSENT_MISSING,
    ));
    assert_eq!(AssignedFacts::from(&a).refusal, None);
}
