//! MIC against a real kube-apiserver and the Azure emulator.

mod support;

use std::{collections::BTreeMap, time::Duration};

use api::AssignmentState::{Assigned, Created};
use api::AzureAssignedIdentity;
use kube::Api;
use support::{ARM_REQUEST_TIMEOUT, Cluster, MIC_CLIENT_ID, resource_id, settings, world};

const LIMIT: Duration = Duration::from_secs(30);

/// The seed's walkthrough: one identity, one binding, labelled pods on a scale set.
#[tokio::test]
async fn the_seed_walkthrough_assigns_and_releases_the_identity() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("demo").await;
    c.identity("demo", "myapp-identity", 1).await;
    c.binding("demo", "myapp-azure-identity-binding", "myapp-identity", "myapp")
        .await;
    c.start_mic(settings()).await;

    c.pod("demo", "web-0", "a-0", Some("myapp")).await;
    c.pod("demo", "web-1", "a-1", Some("myapp")).await;
    c.pod("demo", "plain", "a-0", None).await;
    c.wait_assigned(
        &[
            ("web-0-demo-myapp-identity", Assigned),
            ("web-1-demo-myapp-identity", Assigned),
        ],
        LIMIT,
    )
    .await;
    // Both instances of the scale set serve the identity; one PATCH did it.
    assert_eq!(c.on_node("a-0"), [resource_id(1)]);
    assert_eq!(c.on_node("a-1"), [resource_id(1)]);
    assert_eq!(c.arm_writes(), BTreeMap::from([("ss-a".to_owned(), 1)]));
    // `kubectl get -o yaml --show-managed-fields` names MIC as the writer of spec and status,
    // both on the object itself (the CRD has no status subresource, as upstream's had none).
    let aai = kube::Api::<api::AzureAssignedIdentity>::namespaced(c.client.clone(), "demo")
        .get("web-0-demo-myapp-identity")
        .await
        .unwrap();
    let managers: Vec<_> = aai
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let fields = serde_json::to_string(&m.fields_v1).unwrap_or_default();
            (
                m.manager.unwrap_or_default(),
                m.subresource.unwrap_or_default(),
                ["f:spec", "f:status"].map(|f| fields.contains(f)),
            )
        })
        .collect();
    let mic_wrote = |field: usize| {
        managers
            .iter()
            .any(|(who, sub, has)| who == mic::FIELD_MANAGER && sub.is_empty() && has[field])
    };
    assert!(mic_wrote(0) && mic_wrote(1), "{managers:?}");
    let events = c
        .events_until("demo", "web-0", LIMIT, |e| e.starts_with("IdentityAssigned"))
        .await;
    assert!(
        events.iter().any(|e| e.starts_with("IdentityAssigned")),
        "{events:?}"
    );

    // One pod goes: the other still needs the identity, so it stays on the scale set.
    c.delete_pod("demo", "web-0").await;
    c.wait_assigned(&[("web-1-demo-myapp-identity", Assigned)], LIMIT)
        .await;
    assert_eq!(c.on_node("a-0"), [resource_id(1)]);
    // The last one goes: the identity is removed, and so is the record.
    c.delete_pod("demo", "web-1").await;
    c.wait_assigned(&[], LIMIT).await;
    wait_until(
        || c.on_node("a-0").is_empty(),
        "the identity leaves the scale set",
    )
    .await
    .unwrap();
    c.stop_mic().await;
}

/// MIC creates an object, then writes its status: a MIC stopped between the two leaves an object
/// with no status, which upstream's legacy rule would read as `Assigned` with the identity never
/// put on the VM. The next MIC finds it `Created` and finishes the job.
#[tokio::test]
async fn an_object_left_without_status_by_a_stopped_mic_is_assigned() {
    use kube::api::Api;
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("crash").await;
    c.identity("crash", "id1", 1).await;
    c.binding("crash", "b1", "id1", "app").await;
    c.pod("crash", "web", "a-0", Some("app")).await;
    // The object exactly as MIC creates it, with the identity and binding as they are now.
    let identity = Api::<api::AzureIdentity>::namespaced(c.client.clone(), "crash")
        .get("id1")
        .await
        .unwrap();
    let binding = Api::<api::AzureIdentityBinding>::namespaced(c.client.clone(), "crash")
        .get("b1")
        .await
        .unwrap();
    let aai: api::AzureAssignedIdentity = serde_json::from_value(serde_json::json!({
        "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureAssignedIdentity",
        "metadata": {
            "name": "web-crash-id1",
            "labels": {api::v1::NODE_NAME_LABEL: "a-0"},
            "finalizers": [api::v1::ASSIGNED_IDENTITY_FINALIZER],
        },
        "spec": {
            "azureIdentityRef": identity, "azureBindingRef": binding,
            "pod": "web", "podNamespace": "crash", "nodename": "a-0",
        },
    }))
    .unwrap();
    Api::<api::AzureAssignedIdentity>::namespaced(c.client.clone(), "crash")
        .create(&mic::post_params(), &aai)
        .await
        .unwrap();
    assert_eq!(
        c.assigned(Some("crash")).await,
        BTreeMap::from([("web-crash-id1".to_owned(), None)])
    );
    assert!(c.on_node("a-0").is_empty());

    c.start_mic(settings()).await;
    c.wait_assigned(&[("web-crash-id1", Assigned)], LIMIT).await;
    assert_eq!(c.on_node("a-0"), [resource_id(1)]);
    c.stop_mic().await;
}

/// Three nodes in two scale sets, many pods: exactly one PATCH per scale set.
#[tokio::test]
async fn one_patch_per_scale_set_for_a_burst_of_pods() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("burst").await;
    for n in 1..=3 {
        c.identity("burst", &format!("id{n}"), n).await;
        c.binding("burst", &format!("b{n}"), &format!("id{n}"), "app")
            .await;
    }
    // The pods exist before MIC starts, as after a MIC restart or a deployment scaling up.
    let mut want = Vec::new();
    for (i, node) in ["a-0", "a-1", "b-0"].iter().enumerate() {
        c.pod("burst", &format!("p{i}"), node, Some("app")).await;
        for n in 1..=3 {
            want.push((format!("p{i}-burst-id{n}"), Assigned));
        }
    }
    c.start_mic(settings()).await;
    let want: Vec<(&str, _)> = want.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    c.wait_assigned(&want, LIMIT).await;
    assert_eq!(
        c.arm_writes(),
        BTreeMap::from([("ss-a".to_owned(), 1), ("ss-b".to_owned(), 1)])
    );
    assert_eq!(c.on_node("b-0"), [resource_id(1), resource_id(2), resource_id(3)]);
    c.stop_mic().await;
}

/// A scale set whose operations take an hour does not hold up another one. The hour passes on
/// the emulator's clock when the test moves it on, so how fast the machine is does not matter.
#[tokio::test]
async fn a_slow_scale_set_does_not_delay_another() {
    let mut c = Cluster::start(world(&BTreeMap::from([("ss-a", 3_600_000)]))).await;
    c.namespace("slow").await;
    c.identity("slow", "id1", 1).await;
    c.binding("slow", "b", "id1", "app").await;
    c.start_mic(settings()).await;
    c.pod("slow", "on-a", "a-0", Some("app")).await;
    c.pod("slow", "on-b", "b-0", Some("app")).await;
    c.wait_assigned(&[("on-a-slow-id1", Created), ("on-b-slow-id1", Assigned)], LIMIT)
        .await;
    // B is done while A's operation is still running.
    assert!(c.on_node("a-0").is_empty());
    c.azure.admin().advance_clock(Duration::from_secs(3600));
    c.wait_assigned(&[("on-a-slow-id1", Assigned), ("on-b-slow-id1", Assigned)], LIMIT)
        .await;
    c.stop_mic().await;
}

/// MIC may not assign id5 (no "Managed Identity Operator" role): that one stays Created with
/// an event naming the ARM error, and the rest of the batch is assigned.
#[tokio::test]
async fn an_unauthorized_identity_does_not_block_the_batch() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("authz").await;
    c.identity("authz", "allowed", 2).await;
    c.identity("authz", "forbidden", 5).await;
    c.binding("authz", "b1", "allowed", "app").await;
    c.binding("authz", "b2", "forbidden", "app").await;
    c.start_mic(settings()).await;
    c.pod("authz", "web", "b-0", Some("app")).await;
    c.wait_assigned(
        &[("web-authz-allowed", Assigned), ("web-authz-forbidden", Created)],
        LIMIT,
    )
    .await;
    assert_eq!(c.on_node("b-0"), [resource_id(2)]);
    let failed = failure_naming("LinkedAuthorizationFailed");
    let events = c.events_until("authz", "web", LIMIT, &failed).await;
    assert!(events.iter().any(|e| failed(e)), "{events:?}");
    // The object itself says why, for `kubectl get` (the Reason column) without the Events.
    let aais = Api::<AzureAssignedIdentity>::namespaced(c.client.clone(), "authz");
    let status = |a: AzureAssignedIdentity| a.status.unwrap_or_default();
    let mut failed = status(aais.get("web-authz-forbidden").await.unwrap());
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::time::Instant::now() < deadline {
        if failed.reason.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        failed = status(aais.get("web-authz-forbidden").await.unwrap());
    }
    assert_eq!(
        failed.reason.as_deref(),
        Some("LinkedAuthorizationFailed"),
        "{failed:?}"
    );
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains(&resource_id(5)) && message.contains("assign/action"),
        "{message}"
    );
    assert_eq!(status(aais.get("web-authz-allowed").await.unwrap()).reason, None);
    // Granting the role is enough: the retry assigns it, and the stale reason goes.
    c.azure.admin().grant(MIC_CLIENT_ID, "id5").unwrap();
    c.wait_assigned(
        &[("web-authz-allowed", Assigned), ("web-authz-forbidden", Assigned)],
        LIMIT,
    )
    .await;
    let healed = status(aais.get("web-authz-forbidden").await.unwrap());
    assert_eq!((healed.reason, healed.message), (None, None));
    c.stop_mic().await;
}

/// Namespaced by default: a binding in one namespace does not reach a pod in another.
#[tokio::test]
async fn bindings_do_not_cross_namespaces() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("team-a").await;
    c.namespace("team-b").await;
    c.identity("team-a", "id1", 1).await;
    c.binding("team-a", "b", "id1", "app").await;
    c.start_mic(settings()).await;
    c.pod("team-b", "rogue", "c-0", Some("app")).await;
    c.pod("team-a", "web", "c-0", Some("app")).await;
    c.wait_assigned(&[("web-team-a-id1", Assigned)], LIMIT).await;
    assert!(c.assigned(Some("team-b")).await.is_empty());
    assert_eq!(c.on_node("c-0"), [resource_id(1)]);
    c.stop_mic().await;
}

/// An identity listed in `--immutable-user-msis` stays on the VM when its last pod goes.
#[tokio::test]
async fn immutable_identities_are_never_removed() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("imm").await;
    c.identity("imm", "id3", 3).await;
    c.binding("imm", "b", "id3", "app").await;
    let mut s = settings();
    s.protected_client_ids = [support::client_id(3)].into();
    c.start_mic(s).await;
    c.pod("imm", "web", "c-0", Some("app")).await;
    c.wait_assigned(&[("web-imm-id3", Assigned)], LIMIT).await;
    c.delete_pod("imm", "web").await;
    c.wait_assigned(&[], LIMIT).await;
    assert_eq!(c.on_node("c-0"), [resource_id(3)]);
    assert_eq!(c.arm_writes(), BTreeMap::from([("vm-c".to_owned(), 1)]));
    c.stop_mic().await;
}

/// A deleted node's assignments are cleaned up without ARM calls.
#[tokio::test]
async fn a_deleted_nodes_assignments_go_without_arm_calls() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("gone").await;
    c.identity("gone", "id1", 1).await;
    c.binding("gone", "b", "id1", "app").await;
    c.start_mic(settings()).await;
    c.pod("gone", "web", "b-0", Some("app")).await;
    c.wait_assigned(&[("web-gone-id1", Assigned)], LIMIT).await;
    let writes = c.arm_writes();
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(c.client.clone())
        .delete("b-0", &Default::default())
        .await
        .unwrap();
    c.wait_assigned(&[], LIMIT).await;
    assert_eq!(c.arm_writes(), writes);
    c.stop_mic().await;
}

async fn wait_until(ok: impl FnMut() -> bool, what: &str) -> Result<(), String> {
    wait_within(LIMIT, ok, what).await
}

async fn wait_within(limit: Duration, mut ok: impl FnMut() -> bool, what: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("timed out after {limit:?} waiting until {what}"))
}

/// A storm of 429s: MIC waits as `Retry-After` says, per subscription, and converges with
/// one accepted write.
#[tokio::test]
async fn an_arm_429_storm_is_ridden_out_as_retry_after_says() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("storm").await;
    c.identity("storm", "id1", 1).await;
    c.binding("storm", "b", "id1", "app").await;
    c.azure.admin().inject(azure_emulator::Fault {
        endpoint: azure_emulator::EndpointKind::Arm,
        target: Some("ss-b".into()),
        action: azure_emulator::FaultAction::Status {
            status: 429,
            retry_after_secs: Some(1),
        },
        count: Some(4),
        rate: None,
    });
    c.start_mic(settings()).await;
    c.pod("storm", "web", "b-0", Some("app")).await;
    c.wait_assigned(&[("web-storm-id1", Assigned)], LIMIT).await;
    assert_eq!(c.arm_writes(), BTreeMap::from([("ss-b".to_owned(), 1)]));
    // After each 429, no ARM call went out before its Retry-After (1 s) had passed.
    let arm: Vec<_> = c
        .azure
        .admin()
        .calls()
        .into_iter()
        .filter(|r| r.endpoint == azure_emulator::EndpointKind::Arm)
        .collect();
    assert_eq!(arm.iter().filter(|r| r.status == 429).count(), 4);
    for pair in arm.windows(2) {
        if pair[0].status == 429 {
            let gap = pair[1].at_ms - pair[0].at_ms;
            assert!(
                gap >= 950,
                "a call went out {gap} ms after a 429 asking for 1 s: {pair:?}"
            );
        }
    }
    c.stop_mic().await;
}

/// Whether an Event (`reason: note`) is MIC's assignment failure naming ARM's error `code`.
fn failure_naming(code: &str) -> impl Fn(&str) -> bool + '_ {
    move |e| e.starts_with("IdentityAssignmentFailed") && e.contains(code)
}

/// 5xx answers are retried with backoff; the real final outcome (success) is reported.
#[tokio::test]
async fn server_errors_are_retried_and_success_is_reported() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("flaky").await;
    c.identity("flaky", "id1", 1).await;
    c.binding("flaky", "b", "id1", "app").await;
    c.azure.admin().inject(azure_emulator::Fault {
        endpoint: azure_emulator::EndpointKind::Arm,
        target: None,
        action: azure_emulator::FaultAction::Status {
            status: 503,
            retry_after_secs: None,
        },
        count: Some(3),
        rate: None,
    });
    c.start_mic(settings()).await;
    c.pod("flaky", "web", "c-0", Some("app")).await;
    c.wait_assigned(&[("web-flaky-id1", Assigned)], LIMIT).await;
    // Events are published in the background, after MIC's writes: wait for the success to show.
    let events = c
        .events_until("flaky", "web", LIMIT, |e| e.starts_with("IdentityAssigned"))
        .await;
    assert!(
        events.iter().all(|e| !e.starts_with("IdentityAssignmentFailed")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("IdentityAssigned")),
        "{events:?}"
    );
    c.stop_mic().await;
}

/// ARM never answers a PATCH (the request times out on MIC's side) and then a long-running
/// operation ends `Failed`: each time the AAI stays `Created` (with a Warning event naming the
/// failure for the failed operation), MIC retries, and the identity ends up on the scale set
/// with the AAI `Assigned`.
#[tokio::test]
async fn arm_timeouts_and_failed_operations_are_retried_until_assigned() {
    use azure_emulator::{EndpointKind, Fault, FaultAction};
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("lro").await;
    c.identity("lro", "id1", 1).await;
    c.identity("lro", "id2", 2).await;
    c.binding("lro", "b1", "id1", "one").await;
    c.binding("lro", "b2", "id2", "two").await;
    let admin = c.azure.admin();
    // Scale set "a": the first PATCH is held unanswered (longer than the client waits).
    admin.inject(Fault {
        endpoint: EndpointKind::Arm,
        target: Some("virtualMachineScaleSets/ss-a".into()),
        action: FaultAction::Timeout {
            ms: Some(3 * ARM_REQUEST_TIMEOUT.as_millis() as u64),
        },
        count: Some(1),
        rate: None,
    });
    c.start_mic(settings()).await;
    c.pod("lro", "web", "a-0", Some("one")).await;
    c.wait_assigned(&[("web-lro-id1", Assigned)], LIMIT).await;
    assert_eq!(c.on_node("a-0"), vec![resource_id(1).to_ascii_lowercase()]);

    // Scale set "b": the first write is accepted, but its operation ends Failed.
    admin.inject(Fault {
        endpoint: EndpointKind::Arm,
        target: Some("virtualMachineScaleSets/ss-b".into()),
        action: FaultAction::OperationFailed {
            code: Some("InternalExecutionError".into()),
            message: Some("An internal execution error occurred.".into()),
        },
        count: Some(1),
        rate: None,
    });
    let writes_before = c.arm_writes().get("ss-b").copied().unwrap_or(0);
    c.pod("lro", "api", "b-0", Some("two")).await;
    // Until the retry (settings: 2 s), the object stays Created and says why.
    c.wait_assigned(&[("web-lro-id1", Assigned), ("api-lro-id2", Created)], LIMIT)
        .await;
    let failed = failure_naming("InternalExecutionError");
    let events = c.events_until("lro", "api", LIMIT, &failed).await;
    assert!(events.iter().any(|e| failed(e)), "no failure event: {events:?}");
    c.wait_assigned(&[("web-lro-id1", Assigned), ("api-lro-id2", Assigned)], LIMIT)
        .await;
    assert_eq!(c.on_node("b-0"), vec![resource_id(2).to_ascii_lowercase()]);
    assert_eq!(
        c.arm_writes().get("ss-b").copied().unwrap_or(0),
        writes_before + 2,
        "the failed write, then one successful retry"
    );
    c.stop_mic().await;
}

/// Edits: a pod recreated on another node, an identity pointed at another Azure identity,
/// a binding deleted.
#[tokio::test]
async fn moves_and_edits_are_followed() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("edit").await;
    c.identity("edit", "id", 1).await;
    c.binding("edit", "b", "id", "app").await;
    c.start_mic(settings()).await;
    c.pod("edit", "web", "a-0", Some("app")).await;
    c.wait_assigned(&[("web-edit-id", Assigned)], LIMIT).await;

    // The pod comes back on another node (a StatefulSet pod keeps its name).
    c.delete_pod("edit", "web").await;
    c.pod("edit", "web", "b-0", Some("app")).await;
    c.wait_assigned(&[("web-edit-id", Assigned)], LIMIT).await;
    wait_until(
        || c.on_node("b-0") == [resource_id(1)] && c.on_node("a-0").is_empty(),
        "the identity follows the pod",
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: a-0 {:?}, b-0 {:?}, writes {:?}",
            c.on_node("a-0"),
            c.on_node("b-0"),
            c.arm_writes()
        )
    });

    // The AzureIdentity now names another Azure identity.
    let api = kube::Api::<api::AzureIdentity>::namespaced(c.client.clone(), "edit");
    let patch = serde_json::json!({"spec": {
        "resourceID": resource_id(2).replace("resourcegroups", "resourceGroups"),
        "clientID": support::client_id(2)}});
    api.patch("id", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    wait_until(
        || c.on_node("b-0") == [resource_id(2)],
        "the new identity replaces the old",
    )
    .await
    .unwrap();
    c.wait_assigned(&[("web-edit-id", Assigned)], LIMIT).await;

    // The binding goes: so do the assignment and the identity.
    kube::Api::<api::AzureIdentityBinding>::namespaced(c.client.clone(), "edit")
        .delete("b", &Default::default())
        .await
        .unwrap();
    c.wait_assigned(&[], LIMIT).await;
    wait_until(|| c.on_node("b-0").is_empty(), "the identity leaves")
        .await
        .unwrap();
    c.stop_mic().await;
}

/// Someone removes an identity behind MIC's back: the periodic repair puts it back.
#[tokio::test]
async fn drift_is_repaired() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("drift").await;
    c.identity("drift", "id1", 1).await;
    c.binding("drift", "b", "id1", "app").await;
    let mut s = settings();
    s.drift_interval = Duration::from_secs(2);
    c.start_mic(s).await;
    c.pod("drift", "web", "c-0", Some("app")).await;
    c.wait_assigned(&[("web-drift-id1", Assigned)], LIMIT).await;

    // The removal's effect on IMDS may last only until the next pass (2 s): rather than race to
    // see it, count the writes. One is MIC's first, one the removal; a third (MIC's) puts the
    // identity back.
    assert_eq!(c.arm_writes(), BTreeMap::from([("vm-c".to_owned(), 1)]));
    c.strip_vm_c().await;
    wait_until(
        || c.arm_writes()["vm-c"] == 3 && c.on_node("c-0") == [resource_id(1)],
        "the identity is back",
    )
    .await
    .unwrap();
    c.stop_mic().await;
}

/// Two MIC processes: the leader is killed (SIGKILL, no goodbye); the standby takes over once
/// the leader's lease (6 s) lapses, repeats no PATCH, loses no AzureAssignedIdentity, and serves
/// new pods. (How long that takes on this machine is printed, not asserted.)
#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    let c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("ha").await;
    c.identity("ha", "id1", 1).await;
    c.identity("ha", "id2", 2).await;
    c.binding("ha", "b1", "id1", "one").await;
    c.binding("ha", "b2", "id2", "two").await;
    let dir = tempfile::tempdir().unwrap();
    let cloud = dir.path().join("azure.json");
    std::fs::write(
        &cloud,
        serde_json::json!({
            "cloud": "AzurePublicCloud", "tenantId": support::TENANT, "subscriptionId": support::SUB,
            "resourceGroup": "node-rg", "aadClientId": support::MIC_CLIENT_ID, "aadClientSecret": "mic-secret",
            "useManagedIdentityExtension": false, "vmType": "vmss"
        })
        .to_string(),
    )
    .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, c.azure.ca_cert_pem().unwrap()).unwrap();
    let mic = |name: &str| {
        let args: Vec<String> = vec![
            format!("--kubeconfig={}", c.server.kubeconfig().display()),
            format!("--cloudconfig={}", cloud.display()),
            format!("--arm-endpoint={}", c.azure.arm_url()),
            format!("--aad-endpoint={}", c.azure.entra_url()),
            format!("--ca-file={}", ca.display()),
            format!("--leader-election-instance={name}"),
            "--leader-election-duration=6s".into(),
            "--http-probe-port=0".into(),
            "--prometheus-port=0".into(),
            "--arm-poll-interval=200ms".into(),
        ];
        testbed::Supervised::spawn(
            name,
            std::path::Path::new(env!("CARGO_BIN_EXE_mic")),
            &args,
            &dir.path().join(format!("{name}.log")),
        )
        .unwrap()
    };
    let mut first = mic("mic-1");
    c.pod("ha", "one", "a-0", Some("one")).await;
    c.wait_assigned(&[("one-ha-id1", Assigned)], LIMIT).await;
    let mut second = mic("mic-2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = c.arm_writes();
    first.kill();
    let killed = tokio::time::Instant::now();
    c.pod("ha", "two", "a-1", Some("two")).await;
    c.wait_assigned(
        &[("one-ha-id1", Assigned), ("two-ha-id2", Assigned)],
        Duration::from_secs(60),
    )
    .await;
    let took = killed.elapsed();
    assert!(second.is_running(), "the standby died: {}", second.log_tail());
    // The new leader patched once, for the new identity only.
    assert_eq!(
        c.arm_writes(),
        BTreeMap::from([("ss-a".to_owned(), writes["ss-a"] + 1)])
    );
    assert_eq!(c.on_node("a-0"), [resource_id(1), resource_id(2)]);
    eprintln!("failover to the standby and a new assignment took {took:?}");
}

/// The apiserver is down for 30 s: MIC's watches resume, nothing is lost or repeated, and
/// new pods are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mic_rides_out_an_apiserver_outage() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("outage").await;
    c.identity("outage", "id1", 1).await;
    c.binding("outage", "b", "id1", "app").await;
    c.start_mic(settings()).await;
    c.pod("outage", "before", "b-0", Some("app")).await;
    c.wait_assigned(&[("before-outage-id1", Assigned)], LIMIT).await;
    let writes = c.arm_writes();

    tokio::task::block_in_place(|| c.server.stop_apiserver());
    tokio::time::sleep(Duration::from_secs(30)).await;
    tokio::task::block_in_place(|| c.server.start_apiserver()).expect("the apiserver restarts");

    c.pod("outage", "after", "c-0", Some("app")).await;
    c.wait_assigned(
        &[("before-outage-id1", Assigned), ("after-outage-id1", Assigned)],
        Duration::from_secs(60),
    )
    .await;
    let mut want = writes.clone();
    want.insert("vm-c".into(), 1);
    assert_eq!(c.arm_writes(), want, "only the new VM was patched");
    c.stop_mic().await;
}

/// etcd restarts under a running apiserver: MIC's writes fail meanwhile and are retried;
/// nothing is lost and a new pod is served afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mic_rides_out_an_etcd_restart() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("etcd").await;
    c.identity("etcd", "id1", 1).await;
    c.binding("etcd", "b", "id1", "app").await;
    c.start_mic(settings()).await;
    c.pod("etcd", "before", "b-0", Some("app")).await;
    c.wait_assigned(&[("before-etcd-id1", Assigned)], LIMIT).await;

    tokio::task::block_in_place(|| c.server.stop_etcd());
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::task::block_in_place(|| c.server.start_etcd()).expect("etcd restarts");

    // The apiserver needs a moment to reconnect; the test's own writes retry like a user would.
    let mut created = false;
    for _ in 0..60 {
        if c.try_pod("etcd", "after", "c-0", Some("app")).await {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(created, "the apiserver never accepted writes again");
    c.wait_assigned(
        &[("before-etcd-id1", Assigned), ("after-etcd-id1", Assigned)],
        Duration::from_secs(60),
    )
    .await;
    c.stop_mic().await;
}

/// Issue 13: short-lived pods with one binding alternate between the two instances of a scale
/// set. Pod 1 on a-1 ends; MIC removes the identity from `ss-a`; pod 2 on a-0 starts while that
/// removal's operation runs (ARM takes 3 s here; the emulator's clock stands still until MIC has
/// seen pod 2, so the removal is sure to be running then however slow the machine). Pod 2's
/// object must not read `Assigned` until the identity is back: NMI would otherwise ask IMDS for
/// it and hand the pod IMDS's 400 "Identity not found". MIC puts it back as soon as the removal
/// returns, not at the periodic drift pass (60 s).
#[tokio::test]
async fn a_pod_arriving_while_its_identity_is_removed_waits_until_it_is_back() {
    use futures_util::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let mut c = Cluster::start(world(&BTreeMap::from([("ss-a", 3_000)]))).await;
    c.namespace("churn").await;
    c.identity("churn", "id1", 1).await;
    c.binding("churn", "b", "id1", "job").await;
    c.start_mic(settings()).await;

    // Each time pod 2's object reads `Assigned`, what ARM (model) and IMDS (effective) show of
    // the scale set right then. A removal in flight shows as the identity missing from the model.
    let seen_assigned = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watch = {
        let api = kube::Api::<api::AzureAssignedIdentity>::namespaced(c.client.clone(), "churn");
        let admin = c.azure.admin();
        let seen = seen_assigned.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).applied_objects().boxed();
            while let Some(Ok(aai)) = events.next().await {
                let assigned = aai.status.as_ref().and_then(|s| s.status) == Some(Assigned);
                if aai.metadata.name.as_deref() == Some("job-2-churn-id1") && assigned {
                    let a0 = admin
                        .node_identities()
                        .into_iter()
                        .find(|n| n.node == "a-0")
                        .unwrap();
                    seen.lock().unwrap().push((a0.model, a0.effective));
                }
            }
        })
    };

    c.pod("churn", "job-1", "a-1", Some("job")).await;
    c.wait_assigned(&[("job-1-churn-id1", Assigned)], LIMIT).await;
    let admin = c.azure.admin();
    admin.freeze_clock();
    c.delete_pod("churn", "job-1").await;
    wait_until(|| c.in_arm_model("a-0").is_empty(), "ARM accepts the removal")
        .await
        .unwrap();
    assert_eq!(
        c.on_node("a-0"),
        [resource_id(1)],
        "the removal's operation must still run when pod 2 arrives"
    );
    c.pod("churn", "job-2", "a-0", Some("job")).await;
    // MIC creates pod 2's object (with no status yet) while the removal runs.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !c.assigned(Some("churn")).await.contains_key("job-2-churn-id1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "MIC never created pod 2's object"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.on_node("a-0"), [resource_id(1)], "the removal still runs");
    admin.resume_clock();

    c.wait_assigned(&[("job-2-churn-id1", Assigned)], LIMIT).await;
    assert_eq!(c.on_node("a-0"), [resource_id(1)]);
    assert_eq!(c.in_arm_model("a-0"), [resource_id(1)]);
    // Added for pod 1, removed, added back for pod 2: nothing waited for the periodic pass.
    assert_eq!(c.arm_writes(), BTreeMap::from([("ss-a".to_owned(), 3)]));
    // The watch has seen the final `Assigned` (it reads the same apiserver), and every time the
    // object read `Assigned` the identity was on the scale set, in ARM and in IMDS alike.
    wait_until(
        || !seen_assigned.lock().unwrap().is_empty(),
        "the watch sees pod 2 assigned",
    )
    .await
    .unwrap();
    watch.abort();
    for (model, effective) in seen_assigned.lock().unwrap().iter() {
        let lower = |ids: &Vec<String>| ids.iter().map(|i| i.to_ascii_lowercase()).collect::<Vec<_>>();
        assert_eq!(
            (lower(model), lower(effective)),
            (vec![resource_id(1)], vec![resource_id(1)]),
            "pod 2 read Assigned while the identity was not (or no longer) on the scale set"
        );
    }
    c.stop_mic().await;
}

/// Issue 13 §2: someone removes the identity behind MIC's back; NMI, told "Identity not found"
/// by IMDS, marks the object (`IDENTITY_MISSING_ANNOTATION`); MIC reads the VM back and puts the
/// identity back within seconds. The periodic read-back is set to an hour, so only the finding
/// can explain the repair. A second finding (a new token) is acted on again.
#[tokio::test]
async fn an_identity_nmi_finds_missing_is_put_back_at_once() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("gone").await;
    c.identity("gone", "id1", 1).await;
    c.binding("gone", "b", "id1", "app").await;
    let mut s = settings();
    s.drift_interval = Duration::from_secs(3600);
    c.start_mic(s).await;
    c.pod("gone", "web", "c-0", Some("app")).await;
    c.wait_assigned(&[("web-gone-id1", Assigned)], LIMIT).await;

    for finding in 1..=2 {
        c.strip_vm_c().await;
        wait_until(|| c.on_node("c-0").is_empty(), "the identity is gone")
            .await
            .unwrap();
        let token = k8s_openapi::jiff::Timestamp::now().to_string();
        c.report_identity_missing("gone", "web-gone-id1", &token).await;
        wait_within(
            LIMIT,
            || c.on_node("c-0") == [resource_id(1)],
            &format!("the identity is back after finding {finding}"),
        )
        .await
        .unwrap();
        c.wait_assigned(&[("web-gone-id1", Assigned)], LIMIT).await;
    }
    // One write to assign, one per repair; none of the test's own removals repeated by MIC.
    assert_eq!(c.arm_writes(), BTreeMap::from([("vm-c".to_owned(), 5)]));
    c.stop_mic().await;
}
