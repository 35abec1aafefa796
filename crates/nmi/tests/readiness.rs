//! Issue 22: the `aadpodidentity.k8s.io/IdentityReady` pod condition and the warm first token,
//! against the real kube-apiserver and the Azure emulator. Each transition is awaited by
//! polling the pod (never a timed assertion); IMDS and Entra calls are counted by the emulator.

mod common;

use std::time::{Duration, Instant};

use api::AzureAssignedIdentity;
use azure_emulator::{
    EndpointKind, Fault, FaultAction,
    world::{FederatedCredentialSpec, IdentitySpec},
};
use common::*;
use k8s_openapi::api::core::v1::{Pod, PodCondition, ServiceAccount};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use nmi::state::{Mode, PodLookup};
use serde_json::{Value, json};

const ID: Uami = uami(0);
const CONDITION: &str = api::v1::IDENTITY_READY_CONDITION;
const STORAGE: &str = "https://storage.azure.com/";

fn opts(mode: Mode) -> Opts {
    Opts {
        mode,
        readiness: Some(nmi::readiness::Config::default()),
        ..Opts::default()
    }
}

/// A Running pod on `node` at `ip`, with labels, annotations and a service account.
async fn pod_on(env: &Env, node: &str, name: &str, ip: &str, labels: Value, annotations: Value) {
    let api = Api::<Pod>::namespaced(env.client.clone(), &env.ns);
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"nodeName": node, "serviceAccountName": "app",
                 "containers": [{"name": "app", "image": "app"}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &p).await.unwrap();
    // A strategic merge patch, as kubelet's: the conditions merge by type. (A JSON merge patch
    // would replace the list, removing an IdentityReady that NMI wrote as soon as the pod was
    // created, Pending; NMI writes it again only after its catch-up window.)
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Strategic(
            json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
    )
    .await
    .unwrap();
    if node == env.node {
        let (name, ip) = (name.to_owned(), ip.to_owned());
        env.until(
            &format!("NMI sees pod {name}"),
            |s| matches!(s.pods.by_ip(&ip), PodLookup::Found(p) if p.name == name),
        )
        .await;
    }
}

async fn condition(env: &Env, pod: &str) -> Option<PodCondition> {
    let p = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .get(pod)
        .await
        .unwrap();
    p.status?.conditions?.into_iter().find(|c| c.type_ == CONDITION)
}

/// Waits until `pod`'s IdentityReady condition has `status` and `reason`; returns it.
async fn until_condition(env: &Env, pod: &str, status: &str, reason: &str) -> PodCondition {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = condition(env, pod).await;
        if let Some(c) = c
            .as_ref()
            .filter(|c| c.status == status && c.reason.as_deref() == Some(reason))
        {
            let message = c.message.as_deref().unwrap_or_default();
            assert!(message.len() <= 512 && !message.contains('\n'), "{message:?}");
            return c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "pod {pod}: IdentityReady never became {status}/{reason}; it is {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// MIC's object for `pod` with this status, reason and message.
async fn mic_status(env: &Env, pod: &str, status: Value) {
    let name = AzureAssignedIdentity::object_name(pod, &env.ns, ID.name);
    Api::<AzureAssignedIdentity>::namespaced(env.client.clone(), &env.ns)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
}

fn issued_from_cache(env: &Env) -> u64 {
    env.metrics
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix("aadpodidentity_nmi_tokens_issued_total{cache_hit=\"true\"} ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn standard_mode_condition_follows_mic_and_the_first_request_is_a_cache_hit() {
    let env = env_in("ready-std", opts(Mode::Standard)).await;
    let identity = env.identity(ID).await;
    env.binding("b", ID.name, "app").await;
    let vault = json!({"aadpodidentity.k8s.io/token-resources": VAULT});
    pod_on(
        &env,
        &env.node,
        "p",
        "127.0.60.1",
        json!({"aadpodidbinding": "app"}),
        vault,
    )
    .await;
    pod_on(
        &env,
        &env.node,
        "stray",
        "127.0.60.2",
        json!({"aadpodidbinding": "nothing"}),
        json!({}),
    )
    .await;

    until_condition(&env, "p", "False", "IdentityNotAssigned").await;
    until_condition(&env, "stray", "False", "NoMatchingIdentity").await;
    assert_eq!(
        env.token_calls(EndpointKind::Imds),
        0,
        "no token before MIC assigns"
    );

    env.assigned("p", &identity, "Assigned").await;
    until_condition(&env, "p", "True", "TokenObtained").await;
    assert_eq!(
        env.token_calls(EndpointKind::Imds),
        1,
        "one fetch, for the annotated resource"
    );
    // The kubelet's condition is untouched.
    let pod = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .get("p")
        .await
        .unwrap();
    let conditions = pod.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{conditions:?}"
    );

    let hits = issued_from_cache(&env);
    let first = env.ask("127.0.60.1", "").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        env.token_calls(EndpointKind::Imds),
        1,
        "the first request made no IMDS call"
    );
    assert_eq!(
        issued_from_cache(&env),
        hits + 1,
        "the first request was a cache hit"
    );

    // MIC's refusal, then an ARM failure it records, each passed through.
    let refused = json!({"status": "Created", "reason": "IdentityConsentMissing",
        "message": "the owner has not allowed namespace x\nforged line"});
    mic_status(&env, "p", refused).await;
    let c = until_condition(&env, "p", "False", "IdentityConsentMissing").await;
    assert!(
        c.message.unwrap().contains("\\u{a}forged"),
        "the line break is escaped"
    );
    let arm = json!({"status": "Created", "reason": "LinkedAuthorizationFailed", "message": "no role"});
    mic_status(&env, "p", arm).await;
    until_condition(&env, "p", "False", "LinkedAuthorizationFailed").await;
    mic_status(
        &env,
        "p",
        json!({"status": "Assigned", "reason": null, "message": null}),
    )
    .await;
    until_condition(&env, "p", "True", "TokenObtained").await;
    assert_eq!(
        env.token_calls(EndpointKind::Imds),
        1,
        "the token was still cached"
    );
}

#[tokio::test]
async fn imds_failing_is_token_request_failed_then_ready_once_fixed() {
    let env = env_in("ready-fault", opts(Mode::Managed)).await;
    env.identity(ID).await;
    env.binding("b", ID.name, "app").await;
    let admin = env.emulator.admin();
    admin.inject(Fault {
        endpoint: EndpointKind::Imds,
        target: Some(env.node.clone()),
        action: FaultAction::Status {
            status: 500,
            retry_after_secs: None,
        },
        count: None,
        rate: None,
    });
    pod_on(
        &env,
        &env.node,
        "p",
        "127.0.61.1",
        json!({"aadpodidbinding": "app"}),
        json!({}),
    )
    .await;
    let c = until_condition(&env, "p", "False", "TokenRequestFailed").await;
    assert!(
        c.message
            .unwrap()
            .contains(nmi::readiness::resources::DEFAULT_RESOURCE)
    );
    admin.clear_faults();
    until_condition(&env, "p", "True", "TokenObtained").await;
}

#[tokio::test]
async fn twenty_pods_of_one_identity_make_one_imds_call_per_resource_and_other_nodes_are_untouched() {
    let env = env_in("ready-crowd", opts(Mode::Managed)).await;
    env.identity(ID).await;
    env.binding("b", ID.name, "app").await;
    let label = json!({"aadpodidbinding": "app"});
    let two = json!({"aadpodidentity.k8s.io/token-resources": format!("{VAULT}, {STORAGE}")});
    pod_on(
        &env,
        "elsewhere",
        "other",
        "127.0.62.200",
        label.clone(),
        two.clone(),
    )
    .await;
    let names: Vec<String> = (1..=20).map(|i| format!("p{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let ip = format!("127.0.62.{}", i + 1);
        pod_on(&env, &env.node, name, &ip, label.clone(), two.clone()).await;
    }
    for name in &names {
        until_condition(&env, name, "True", "TokenObtained").await;
    }
    assert_eq!(
        env.token_calls(EndpointKind::Imds),
        2,
        "one call per resource, not per pod"
    );
    for i in [1, 7, 20] {
        let a = env.ask(&format!("127.0.62.{i}"), "").await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(
        env.token_calls(EndpointKind::Imds),
        2,
        "first requests are cache hits"
    );
    assert_eq!(
        condition(&env, "other").await,
        None,
        "a pod of another node is never written"
    );
    let writes = env.metrics.encode();
    assert!(
        writes.contains("aadpodidentity_nmi_identity_ready_writes_total{status=\"True\",result=\"ok\"}"),
        "{writes}"
    );
}

/// Federated mode: the condition turns True after the pod's own TokenRequest was exchanged, with
/// one exchange per service account and resource however many pods run as it.
#[tokio::test]
async fn federated_pods_are_ready_after_one_exchange_per_service_account_and_resource() {
    const FED: Uami = Uami {
        name: "id-fed",
        n: 0xf1,
    };
    let apiserver = testbed::ApiServer::shared();
    let (client, ns) = apiserver.namespace("ready-fed").await.unwrap();
    let credential = FederatedCredentialSpec {
        issuer: apiserver.issuer(),
        subject: format!("system:serviceaccount:{ns}:app"),
        audience: "api://AzureADTokenExchange".into(),
    };
    let fed = IdentitySpec {
        name: FED.name.into(),
        subscription: None,
        resource_group: "identity-rg".into(),
        client_id: FED.client(),
        principal_id: FED.principal(),
        may_assign: vec![],
        federated_credentials: vec![credential],
        tags: Default::default(),
    };
    let env = env(
        client,
        ns,
        Opts {
            federated: vec![fed],
            ..opts(Mode::Managed)
        },
    )
    .await;
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "app",
        "annotations": {"azure.workload.identity/client-id": FED.client()}}}))
    .unwrap();
    Api::<ServiceAccount>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let label = json!({"azure.workload.identity/use": "true"});
    let vault = json!({"aadpodidentity.k8s.io/token-resources": VAULT});
    for i in 1..=3 {
        let ip = format!("127.0.63.{i}");
        pod_on(
            &env,
            &env.node,
            &format!("f{i}"),
            &ip,
            label.clone(),
            vault.clone(),
        )
        .await;
    }
    for i in 1..=3 {
        until_condition(&env, &format!("f{i}"), "True", "TokenObtained").await;
    }
    assert_eq!(
        env.token_calls(EndpointKind::Entra),
        1,
        "one exchange for the service account"
    );
    assert_eq!(env.token_calls(EndpointKind::Imds), 0);
    let a = env.ask("127.0.63.2", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        env.token_calls(EndpointKind::Entra),
        1,
        "the first request was a cache hit"
    );
}
