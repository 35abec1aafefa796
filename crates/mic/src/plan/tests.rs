//! Snapshots of a small cluster, planned without an apiserver: scale set `ss-a` (instances
//! `ss-a-0` and `ss-a-1`), VM `vm-1`, a node without an Azure provider id, a user-assigned
//! identity `x` and a service principal `sp`, each with a binding selecting the pods labelled
//! with its name. Objects "already written" are built with `ToAssign::spec`, as the worker
//! writes them.

use std::time::Duration;

use api::{
    AssignmentState, AzureAssignedIdentity, AzureAssignedIdentityStatus, AzureIdentityBindingSpec,
    AzureIdentitySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use matching::ComputeKind;

use super::*;
use crate::worker::target_state::{Next, TargetState};

const NS: &str = "ns";
const X: &str =
    "/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/x";
const Y: &str =
    "/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/y";
const X_CLIENT: &str = "00000000-0000-0000-0000-00000000000a";
const Y_CLIENT: &str = "00000000-0000-0000-0000-00000000000b";

fn target(kind: ComputeKind, name: &str) -> ComputeTarget {
    ComputeTarget {
        subscription: "s".into(),
        resource_group: "rg".into(),
        kind,
        name: name.into(),
    }
}

fn ss_a() -> ComputeTarget {
    target(ComputeKind::ScaleSet, "ss-a")
}

fn vm_1() -> ComputeTarget {
    target(ComputeKind::VirtualMachine, "vm-1")
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(NS.into()),
        name: Some(name.into()),
        resource_version: Some("1".into()),
        ..Default::default()
    }
}

/// A user-assigned identity named after the last segment of its resource id (`x`, `y`), or
/// the service principal `sp`.
fn identity(name: &str) -> AzureIdentity {
    let spec = match name {
        "sp" => AzureIdentitySpec {
            type_: Some(1),
            client_id: Some("00000000-0000-0000-0000-0000000000cc".into()),
            tenant_id: Some("t".into()),
            ..Default::default()
        },
        _ => AzureIdentitySpec {
            type_: Some(0),
            resource_id: Some(format!(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
            )),
            client_id: Some(if name == "x" { X_CLIENT } else { Y_CLIENT }.into()),
            ..Default::default()
        },
    };
    AzureIdentity {
        metadata: meta(name),
        spec,
        status: None,
    }
}

/// The binding `b-<identity>`, selecting pods labelled `<identity>`.
fn binding(identity: &str) -> AzureIdentityBinding {
    AzureIdentityBinding {
        metadata: meta(&format!("b-{identity}")),
        spec: AzureIdentityBindingSpec {
            azure_identity: Some(identity.into()),
            selector: Some(identity.into()),
            ..Default::default()
        },
        status: None,
    }
}

/// The cluster, snapshot by snapshot.
struct World {
    snapshot: Snapshot,
    seen: HashMap<Key, Instant>,
    now: Instant,
}

impl World {
    fn new() -> Self {
        let provider = |path: &str| {
            format!("azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/{path}")
        };
        let mut snapshot = Snapshot::default();
        for (node, provider_id) in [
            (
                "ss-a-0",
                provider("virtualMachineScaleSets/ss-a/virtualMachines/0"),
            ),
            (
                "ss-a-1",
                provider("virtualMachineScaleSets/ss-a/virtualMachines/1"),
            ),
            ("vm-1", provider("virtualMachines/vm-1")),
            ("kind-0", "kind://docker/kind/kind-0".to_owned()),
        ] {
            let target = NodeTarget::of(Some(&provider_id));
            snapshot.nodes.insert(node.into(), Arc::new(target));
        }
        for name in ["x", "y", "sp"] {
            snapshot
                .identities
                .insert((NS.into(), name.into()), Arc::new(identity(name)));
            let b = binding(name);
            snapshot
                .bindings
                .insert((NS.into(), b.metadata.name.clone().unwrap()), Arc::new(b));
        }
        Self {
            snapshot,
            seen: HashMap::new(),
            now: Instant::now(),
        }
    }

    /// A running pod on `node` labelled for `identity`.
    fn pod(mut self, name: &str, node: &str, identity: &str) -> Self {
        self.snapshot.pods.push(Arc::new(PodFacts {
            namespace: NS.into(),
            name: name.into(),
            labels: [("aadpodidbinding".to_owned(), identity.to_owned())].into(),
            node: Some(node.into()),
            ip: Some("10.244.0.5".into()),
            host_network: false,
            phase: Some("Running".into()),
            ..Default::default()
        }));
        self
    }

    fn without_pod(mut self, name: &str) -> Self {
        self.snapshot.pods.retain(|p| p.name != name);
        self
    }

    fn phase(mut self, pod: &str, phase: &str) -> Self {
        for p in &mut self.snapshot.pods {
            if p.name == pod {
                Arc::make_mut(p).phase = Some(phase.into());
            }
        }
        self
    }

    /// The object recording that `pod` on `node` uses `identity`, as the worker writes it;
    /// `None`: no status yet.
    fn object(mut self, pod: &str, node: &str, identity: &str, state: Option<AssignmentState>) -> Self {
        let a = self.assigned(pod, node, identity, state);
        self.snapshot.assigned.push(Arc::new(AssignedFacts::from(&a)));
        self
    }

    fn assigned(
        &self,
        pod: &str,
        node: &str,
        identity: &str,
        state: Option<AssignmentState>,
    ) -> AzureAssignedIdentity {
        let name = AzureAssignedIdentity::object_name(pod, NS, identity);
        let to_assign = ToAssign {
            key: (NS.into(), name.clone()),
            arm_id: None,
            pod: pod.into(),
            pod_uid: None,
            node: node.into(),
            identity: self.snapshot.identities[&(NS.to_owned(), identity.to_owned())].clone(),
            binding: self.snapshot.bindings[&(NS.to_owned(), format!("b-{identity}"))].clone(),
            seen: self.now,
            write: ObjectWrite::Create,
            version: None,
        };
        let mut a = AzureAssignedIdentity::new(&name, to_assign.spec());
        a.metadata.namespace = Some(NS.into());
        a.metadata.resource_version = Some(OBJECT_VERSION.into());
        a.status = state.map(|s| AzureAssignedIdentityStatus {
            status: Some(s),
            available_replicas: Some(1),
            ..Default::default()
        });
        a
    }

    /// ARM's reads of the identities, by name (`x`, `y`), with the namespaces their owners allow.
    fn consent(mut self, reads: &[(&str, Option<&str>)]) -> Self {
        let reads = reads
            .iter()
            .map(|(name, namespaces)| {
                let (id, client) = if *name == "x" {
                    (X, X_CLIENT)
                } else {
                    (Y, Y_CLIENT)
                };
                let tags = namespaces.map_or_else(
                    || serde_json::json!({}),
                    |ns| serde_json::json!({arm::consent::NAMESPACES_TAG: ns}),
                );
                let facts = serde_json::json!({"tags": tags, "properties": {"clientId": client}});
                let facts = arm::consent::IdentityFacts::from_arm(&facts).unwrap();
                (id.to_owned(), Read::Facts(facts))
            })
            .collect();
        self.snapshot.consent = ConsentView::Reads(reads);
        self
    }

    fn deleting(mut self, name: &str) -> Self {
        for a in &mut self.snapshot.assigned {
            if a.name == name {
                Arc::make_mut(a).deleting = true;
            }
        }
        self
    }

    fn plan(&self) -> Planned {
        self.plan_protecting(&[])
    }

    fn plan_protecting(&self, client_ids: &[&str]) -> Planned {
        let protected = client_ids.iter().map(|c| c.to_ascii_lowercase()).collect();
        plan(
            &self.snapshot,
            &Policy::default(),
            &protected,
            &self.seen,
            self.now,
        )
    }
}

mod consent;

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn name(pod: &str, identity: &str) -> String {
    AzureAssignedIdentity::object_name(pod, NS, identity)
}

fn key(pod: &str, identity: &str) -> Key {
    (NS.into(), name(pod, identity))
}

/// The objects a picture brings to `Assigned`: name and what to write of the object.
fn assigns(w: &TargetWork) -> Vec<(String, ObjectWrite)> {
    w.assign.iter().map(|a| (a.key.1.clone(), a.write)).collect()
}

fn releases(w: &TargetWork) -> Vec<(String, Option<&str>)> {
    w.release
        .iter()
        .map(|r| (r.key.1.clone(), r.arm_id.as_deref()))
        .collect()
}

/// The targets with a picture, by name.
fn targets(p: &Planned) -> Vec<&str> {
    let mut names: Vec<&str> = p.work.keys().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names
}

/// ARM's answer: the target carries `ids`.
fn carrying(ids: &[&str]) -> arm::IdentityState {
    arm::IdentityState {
        system_assigned: false,
        user_assigned: ids
            .iter()
            .map(|id| ((*id).to_owned(), Default::default()))
            .collect(),
        provisioning_state: Some("Succeeded".into()),
    }
}

#[test]
fn a_new_pod_makes_its_target_need_the_identity_and_its_object_be_created() {
    let p = World::new().pod("p1", "ss-a-0", "x").plan();
    assert_eq!(targets(&p), ["ss-a"]);
    let w = &p.work[&ss_a()];
    assert_eq!(w.needed, set(&[X]));
    assert_eq!(assigns(w), [(name("p1", "x"), ObjectWrite::Create)]);
    let a = &w.assign[0];
    assert_eq!(
        (a.pod.as_str(), a.node.as_str(), a.arm_id.as_deref()),
        ("p1", "ss-a-0", Some(X))
    );
    assert!(w.release.is_empty() && p.orphans.is_empty() && p.left_behind.is_empty());
}

#[test]
fn pods_on_instances_of_one_scale_set_share_its_picture_and_the_identity_id() {
    let p = World::new()
        .pod("p1", "ss-a-0", "x")
        .pod("p2", "ss-a-1", "x")
        .pod("p3", "vm-1", "x")
        .plan();
    assert_eq!(targets(&p), ["ss-a", "vm-1"]);
    let w = &p.work[&ss_a()];
    assert_eq!(w.needed, set(&[X]));
    assert_eq!(w.assign.len(), 2);
    // One allocation per identity, however many pods use it.
    let (a, b) = (&w.assign[0].arm_id, &w.assign[1].arm_id);
    assert!(Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap()));
    assert_eq!(p.work[&vm_1()].needed, set(&[X]));
}

#[test]
fn a_service_principal_is_assigned_with_nothing_needed_from_arm() {
    let p = World::new().pod("p1", "vm-1", "sp").plan();
    let w = &p.work[&vm_1()];
    assert!(w.needed.is_empty());
    assert_eq!(assigns(w), [(name("p1", "sp"), ObjectWrite::Create)]);
    assert_eq!(w.assign[0].arm_id, None);
}

#[test]
fn pods_on_unknown_or_non_azure_nodes_wait_without_work() {
    let p = World::new()
        .pod("p1", "not-yet-seen", "x")
        .pod("p2", "kind-0", "x")
        .plan();
    assert!(p.work.is_empty() && p.orphans.is_empty() && p.seen.is_empty());
}

#[test]
fn unlabelled_pods_and_finished_pods_need_nothing() {
    let p = World::new()
        .pod("p1", "ss-a-0", "nobody")
        .pod("p2", "ss-a-0", "x")
        .phase("p2", "Succeeded")
        .plan();
    assert!(p.work.is_empty());
}

#[test]
fn an_assigned_object_that_matches_is_left_alone_but_its_identity_stays_needed() {
    let p = World::new()
        .pod("p1", "ss-a-0", "x")
        .object("p1", "ss-a-0", "x", Some(AssignmentState::Assigned))
        .plan();
    let w = &p.work[&ss_a()];
    assert_eq!(w.needed, set(&[X]));
    assert!(w.assign.is_empty() && w.release.is_empty());
    assert!(p.seen.is_empty(), "only pending assignments are remembered");
}

#[test]
fn an_object_still_created_is_retried_without_rewriting_it() {
    let p = World::new()
        .pod("p1", "ss-a-0", "x")
        .object("p1", "ss-a-0", "x", Some(AssignmentState::Created))
        .plan();
    assert_eq!(
        assigns(&p.work[&ss_a()]),
        [(name("p1", "x"), ObjectWrite::Nothing)]
    );
}

#[test]
fn an_object_recording_another_node_is_rewritten_and_its_old_target_remembers_the_identity() {
    // The object says vm-1 (a node renamed, an object restored from a backup): the pod is on ss-a.
    let p = World::new()
        .pod("p1", "ss-a-0", "x")
        .object("p1", "vm-1", "x", Some(AssignmentState::Assigned))
        .plan();
    assert_eq!(
        assigns(&p.work[&ss_a()]),
        [(name("p1", "x"), ObjectWrite::Rewrite)]
    );
    assert_eq!(p.left_behind, BTreeMap::from([(vm_1(), set(&[X]))]));
    assert!(
        !p.work.contains_key(&vm_1()),
        "until complete() adds the shared left-behind set"
    );
}

/// The `resourceVersion` of every object in [`World`]'s snapshots.
const OBJECT_VERSION: &str = "7";

/// From a cache that is behind, an object may record another node by now: the rewrite and the
/// deletion carry the version the plan saw, so that the apiserver refuses them then.
#[test]
fn rewrites_and_releases_carry_the_version_the_plan_saw() {
    let p = World::new()
        .pod("p1", "ss-a-0", "x")
        .object("p1", "vm-1", "x", Some(AssignmentState::Assigned))
        .object("p2", "ss-a-1", "x", Some(AssignmentState::Assigned))
        .object("p3", "ss-a-1", "x", Some(AssignmentState::Created))
        .pod("p3", "ss-a-1", "x")
        .plan();
    let w = &p.work[&ss_a()];
    let versions: Vec<(&str, Option<&str>)> = w
        .assign
        .iter()
        .map(|a| (a.pod.as_str(), a.version.as_deref()))
        .collect();
    // A retry writes only the status: nothing to guard.
    assert_eq!(versions, [("p1", Some(OBJECT_VERSION)), ("p3", None)]);
    assert_eq!(w.release.len(), 1);
    assert_eq!(w.release[0].version.as_deref(), Some(OBJECT_VERSION));
}

#[test]
fn an_object_whose_pod_is_gone_is_released_on_its_target() {
    let p = World::new()
        .object("p1", "ss-a-1", "x", Some(AssignmentState::Assigned))
        .plan();
    let w = &p.work[&ss_a()];
    assert_eq!(releases(w), [(name("p1", "x"), Some(X))]);
    assert!(w.needed.is_empty());
    assert!(p.orphans.is_empty());
}

#[test]
fn objects_with_nothing_on_a_vm_to_remove_are_deleted_at_once() {
    let p = World::new()
        // Its node is gone: as upstream, no ARM call.
        .object("p1", "ss-a-0", "x", Some(AssignmentState::Assigned))
        .object("p2", "vm-1", "sp", Some(AssignmentState::Assigned))
        .plan_nodes_removed(&["ss-a-0"]);
    let orphans: Vec<&Key> = p.orphans.iter().map(|o| &o.key).collect();
    assert_eq!(orphans, [&key("p1", "x"), &key("p2", "sp")]);
    assert!(p.work.is_empty());
}

impl World {
    fn plan_nodes_removed(mut self, nodes: &[&str]) -> Planned {
        for n in nodes {
            self.snapshot.nodes.remove(*n);
        }
        self.plan()
    }
}

#[test]
fn an_object_being_deleted_is_released_and_its_pod_waits_for_a_new_one() {
    let world = World::new()
        .pod("p1", "ss-a-0", "x")
        .object("p1", "ss-a-0", "x", Some(AssignmentState::Assigned))
        .deleting(&name("p1", "x"));
    let p = world.plan();
    let w = &p.work[&ss_a()];
    assert_eq!(releases(w), [(name("p1", "x"), Some(X))]);
    assert!(w.assign.is_empty(), "no second object while the first one goes");
    // Not needed by the pod meanwhile: the release may remove the identity, and the new object
    // then puts it back.
    assert!(w.needed.is_empty());
}

#[test]
fn first_sightings_are_kept_while_pending_and_forgotten_after() {
    let mut world = World::new().pod("p1", "ss-a-0", "x");
    let first = world.plan();
    assert_eq!(first.seen, HashMap::from([(key("p1", "x"), world.now)]));
    let earlier = world.now;
    world.seen = first.seen;
    world.now += Duration::from_secs(3);
    world = world.pod("p2", "ss-a-1", "x");
    let second = world.plan();
    let seen: BTreeMap<&str, Instant> = second.work[&ss_a()]
        .assign
        .iter()
        .map(|a| (a.pod.as_str(), a.seen))
        .collect();
    assert_eq!(seen, BTreeMap::from([("p1", earlier), ("p2", world.now)]));
    world.seen = second.seen;
    let third = world
        .object("p1", "ss-a-0", "x", Some(AssignmentState::Assigned))
        .plan();
    assert_eq!(third.seen.keys().collect::<Vec<_>>(), [&key("p2", "x")]);
}

#[test]
fn protected_identities_come_from_identities_and_objects_and_reach_every_picture() {
    let mut world =
        World::new()
            .pod("p1", "ss-a-0", "x")
            .object("gone", "vm-1", "y", Some(AssignmentState::Assigned));
    // `y` is known only from the object that recorded it.
    world.snapshot.identities.remove(&(NS.to_owned(), "y".to_owned()));
    let mut p = world.plan_protecting(&[&X_CLIENT.to_uppercase(), Y_CLIENT]);
    p.complete(&Memory {
        stale: &HashMap::new(),
        periodic: 0,
        reported_missing: &HashMap::new(),
        workers: Vec::new(),
    });
    assert_eq!(targets(&p), ["ss-a", "vm-1"]);
    for w in p.work.values() {
        assert_eq!(w.protected, set(&[X, Y]));
    }
}

#[test]
fn completing_adds_left_behind_identities_read_back_counts_and_idle_workers() {
    let mut p = World::new().pod("p1", "ss-a-0", "x").plan();
    let stale = HashMap::from([(vm_1(), set(&[Y]))]);
    let reported = HashMap::from([(ss_a(), 2)]);
    let idle = target(ComputeKind::VirtualMachine, "vm-idle");
    p.complete(&Memory {
        stale: &stale,
        periodic: 7,
        reported_missing: &reported,
        workers: vec![&idle, &ss_a()],
    });
    assert_eq!(targets(&p), ["ss-a", "vm-1", "vm-idle"]);
    let refresh = |t: &ComputeTarget| p.work[t].refresh;
    assert_eq!(
        refresh(&ss_a()),
        Refresh {
            periodic: 7,
            reported_missing: 2
        }
    );
    assert_eq!(
        refresh(&vm_1()),
        Refresh {
            periodic: 7,
            reported_missing: 0
        }
    );
    assert_eq!(p.work[&vm_1()].stale, set(&[Y]));
    assert!(p.work[&ss_a()].stale.is_empty());
    // An idle worker gets an empty picture: it finishes its releases and then rests.
    assert_eq!(
        p.work[&idle],
        TargetWork {
            refresh: refresh(&idle),
            ..TargetWork::default()
        }
    );
}

// --- Issue 13's churn, as the planner sees it: pod 1 on one instance of `ss-a` ends, pod 2 on
// the other instance starts, and both land in one snapshot. ---

/// Pod 1 (on ss-a-1, assigned) is deleted and pod 2 (on ss-a-0) created in the same snapshot:
/// the scale set's one picture releases pod 1's object and needs the identity for pod 2, so
/// the target's state machine sends no removal, and pod 2 may be marked at once.
#[test]
fn churn_a_pod_deleted_and_another_created_on_the_same_scale_set_in_one_snapshot() {
    let p = World::new()
        .object("p1", "ss-a-1", "x", Some(AssignmentState::Assigned))
        .pod("p2", "ss-a-0", "x")
        .plan();
    assert_eq!(targets(&p), ["ss-a"]);
    let w = &p.work[&ss_a()];
    assert_eq!(w.needed, set(&[X]));
    assert_eq!(releases(w), [(name("p1", "x"), Some(X))]);
    assert_eq!(assigns(w), [(name("p2", "x"), ObjectWrite::Create)]);

    let mut state = TargetState::new(BTreeSet::new());
    state.want(w.wants());
    state.read(carrying(&[X]));
    assert_eq!(
        state.next(),
        Next::Nothing,
        "no PATCH: the release is needed again"
    );
    assert!(state.may_mark_assigned(Some(X)));
    assert!(
        state.let_go(X),
        "pod 1's object may go: the identity stays for pod 2"
    );
}

/// The same when pod 1 has only finished (Succeeded, not yet deleted): a finished pod can ask
/// for no token, so its object is released like a deleted pod's.
#[test]
fn churn_a_pod_finished_and_another_created_on_the_same_scale_set_in_one_snapshot() {
    let p = World::new()
        .pod("p1", "ss-a-1", "x")
        .phase("p1", "Succeeded")
        .object("p1", "ss-a-1", "x", Some(AssignmentState::Assigned))
        .pod("p2", "ss-a-0", "x")
        .plan();
    let w = &p.work[&ss_a()];
    assert_eq!(w.needed, set(&[X]));
    assert_eq!(releases(w), [(name("p1", "x"), Some(X))]);
    assert_eq!(assigns(w), [(name("p2", "x"), ObjectWrite::Create)]);
}

/// Pod 1 goes in one snapshot (its removal is planned), pod 2 arrives in the next before the
/// removal was sent: the second picture needs the identity again, and the state machine drops
/// the removal instead of sending it.
#[test]
fn churn_a_removal_planned_then_needed_again_in_the_next_snapshot_is_not_sent() {
    let world = World::new().object("p1", "ss-a-1", "x", Some(AssignmentState::Assigned));
    let first = world.plan();
    let mut state = TargetState::new(BTreeSet::new());
    state.want(first.work[&ss_a()].wants());
    state.read(carrying(&[X]));
    assert_eq!(
        state.next(),
        Next::Send(matching::TargetChange {
            add: BTreeSet::new(),
            remove: set(&[X]),
        })
    );
    let second = world.pod("p2", "ss-a-0", "x").plan();
    state.want(second.work[&ss_a()].wants());
    assert_eq!(state.next(), Next::Nothing);
    assert!(state.may_mark_assigned(Some(X)));
}

/// Pod 2 arrives in the snapshot after pod 1's removal was sent: its object is planned (and
/// created), but it may not be marked `Assigned` until the removal has returned and the
/// identity has been added back.
#[test]
fn churn_a_pod_created_while_the_removal_is_in_flight_waits_for_the_identity_to_come_back() {
    let world = World::new().object("p1", "ss-a-1", "x", Some(AssignmentState::Assigned));
    let mut state = TargetState::new(BTreeSet::new());
    state.want(world.plan().work[&ss_a()].wants());
    state.read(carrying(&[X]));
    assert_eq!(state.send().map(|c| c.remove), Some(set(&[X])));

    let p = world.pod("p2", "ss-a-0", "x").plan();
    let w = &p.work[&ss_a()];
    assert_eq!(assigns(w), [(name("p2", "x"), ObjectWrite::Create)]);
    state.want(w.wants());
    assert!(!state.may_mark_assigned(Some(X)), "the flight removes it");
    state.landed(crate::worker::target_state::Landing::Answered(carrying(&[])));
    assert_eq!(
        state.send().map(|c| c.add),
        Some(set(&[X])),
        "added back in the next batch"
    );
    state.landed(crate::worker::target_state::Landing::Answered(carrying(&[X])));
    assert!(state.may_mark_assigned(Some(X)));
}

/// Pod 1 on ss-a ends as pod 2 starts on vm-1: two targets, one releasing, one needing.
#[test]
fn churn_across_targets_releases_on_one_and_adds_on_the_other() {
    let p = World::new()
        .object("p1", "ss-a-1", "x", Some(AssignmentState::Assigned))
        .pod("p2", "vm-1", "x")
        .plan();
    assert_eq!(releases(&p.work[&ss_a()]), [(name("p1", "x"), Some(X))]);
    assert!(p.work[&ss_a()].needed.is_empty());
    assert_eq!(p.work[&vm_1()].needed, set(&[X]));
    assert_eq!(
        assigns(&p.work[&vm_1()]),
        [(name("p2", "x"), ObjectWrite::Create)]
    );
}

/// Pods that come and go many times between two plans: only the last snapshot counts, one
/// object per live pod, one release per object whose pod is gone.
#[test]
fn churn_many_pods_in_one_snapshot_leave_one_picture_per_target() {
    let mut world = World::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { "ss-a-0" } else { "ss-a-1" };
        world = world.object(&format!("old-{i}"), node, "x", Some(AssignmentState::Assigned));
    }
    for i in 0..3 {
        world = world.pod(&format!("new-{i}"), "ss-a-1", "x");
    }
    let world = world.without_pod("new-1");
    let p = world.plan();
    let w = &p.work[&ss_a()];
    assert_eq!(w.needed, set(&[X]));
    assert_eq!(w.release.len(), 6);
    assert_eq!(
        assigns(w),
        [
            (name("new-0", "x"), ObjectWrite::Create),
            (name("new-2", "x"), ObjectWrite::Create),
        ]
    );
}
