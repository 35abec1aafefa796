//! Federated mode against the real kube-apiserver (its service-account issuer, TokenRequest and
//! OIDC discovery) and the emulator's Entra: a pod labelled `azure.workload.identity/use: "true"`
//! whose ServiceAccount is annotated gets its identity's token through IMDS, with no
//! AzureIdentity, binding or identity on the VM; and everything that must stop it does.

mod common;

use azure_emulator::{
    EndpointKind,
    world::{FederatedCredentialSpec, IdentitySpec},
};
use common::*;
use k8s_openapi::api::{
    authentication::v1::TokenRequest,
    core::v1::{Pod, ServiceAccount},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use matching::PodFacts;
use nmi::state::{PodLookup, State};
use serde_json::{Value, json};

const FED: Uami = Uami {
    name: "id-fed",
    n: 0xf1,
};
const FED2: Uami = Uami {
    name: "id-fed-2",
    n: 0xf2,
};
const CLIENT_ID: &str = "azure.workload.identity/client-id";
const USE: &str = "azure.workload.identity/use";
const EXCHANGE: &str = "api://AzureADTokenExchange";

/// An identity on no VM, trusting the apiserver's tokens for these service accounts.
fn federated(u: Uami, subjects: &[String]) -> IdentitySpec {
    IdentitySpec {
        name: u.name.into(),
        subscription: None,
        resource_group: "identity-rg".into(),
        client_id: u.client(),
        principal_id: u.principal(),
        may_assign: vec![],
        federated_credentials: subjects
            .iter()
            .map(|s| FederatedCredentialSpec {
                issuer: testbed::ApiServer::shared().issuer(),
                subject: s.clone(),
                audience: EXCHANGE.into(),
            })
            .collect(),
        tags: Default::default(),
    }
}

fn subject(ns: &str, sa: &str) -> String {
    format!("system:serviceaccount:{ns}:{sa}")
}

/// A namespace and an NMI whose emulator knows `FED` (and `FED2`) with credentials for the
/// service accounts `app` of that namespace.
async fn fed_env(prefix: &str) -> Env {
    let (client, ns) = testbed::ApiServer::shared()
        .namespace(prefix)
        .await
        .expect("the test kube-apiserver gives a namespace");
    let opts = Opts {
        federated: vec![
            federated(FED, &[subject(&ns, "app")]),
            federated(FED2, &[subject(&ns, "app")]),
        ],
        ..Opts::default()
    };
    env(client, ns, opts).await
}

async fn service_account(env: &Env, ns: &str, name: &str, annotations: Value) {
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}})).unwrap();
    Api::<ServiceAccount>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
}

async fn annotate(env: &Env, name: &str, annotations: Value) {
    Api::<ServiceAccount>::namespaced(env.client.clone(), &env.ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .unwrap();
}

/// A Running pod on the env's node, running as `sa`, and seen by NMI at `ip`.
async fn pod(env: &Env, ns: &str, name: &str, sa: &str, ip: &str, labels: Value) {
    let api = Api::<Pod>::namespaced(env.client.clone(), ns);
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": env.node, "serviceAccountName": sa,
                 "containers": [{"name": "app", "image": "app"}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &p).await.unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})),
    )
    .await
    .unwrap();
    let (ns, name, ip) = (ns.to_owned(), name.to_owned(), ip.to_owned());
    env.until(
        &format!("NMI sees pod {ns}/{name} at {ip}"),
        |s: &State| matches!(s.pods.by_ip(&ip), PodLookup::Found(p) if p.name == name && p.namespace == ns),
    )
    .await;
}

fn is(answer: &Answer, u: Uami) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    let who = answer.who().unwrap();
    assert_eq!(
        who,
        (u.client().to_owned(), resource_id(u.name).to_ascii_lowercase())
    );
}

#[tokio::test]
async fn an_annotated_service_account_gives_its_pod_a_token_with_no_binding_and_no_vm_identity() {
    let env = fed_env("fed-happy").await;
    service_account(&env, &env.ns, "app", json!({CLIENT_ID: FED.client()})).await;
    pod(&env, &env.ns, "web", "app", "127.0.40.1", json!({USE: "true"})).await;

    let first = env.ask("127.0.40.1", "").await;
    is(&first, FED);
    // IMDS's shape: string values, the identity's client id echoed.
    let body = first.json();
    assert_eq!(body["client_id"], FED.client());
    assert!(body["expires_on"].is_string() && body["expires_in"].is_string());
    assert_eq!(
        env.token_calls(EndpointKind::Imds),
        0,
        "no IMDS call: the identity is on no VM"
    );
    let exchanges = env.token_calls(EndpointKind::Entra);
    assert_eq!(exchanges, 1);

    // Cached: the same and other spellings of the own identity make no new exchange.
    is(&env.ask("127.0.40.1", "").await, FED);
    is(
        &env.ask(
            "127.0.40.1",
            &format!("&client_id={}", FED.client().to_uppercase()),
        )
        .await,
        FED,
    );
    is(
        &env.ask("127.0.40.1", &format!("&msi_res_id={}", resource_id(FED.name)))
            .await,
        FED,
    );
    is(
        &env.ask("127.0.40.1", &format!("&object_id={}", FED.principal()))
            .await,
        FED,
    );
    assert_eq!(env.token_calls(EndpointKind::Entra), exchanges);

    // Any other identity is refused in IMDS's error shape, even one on the node's VM.
    for other in [
        format!("&client_id={}", uami(0).client()),
        format!("&msi_res_id={}", resource_id(uami(0).name)),
        format!("&object_id={}", uami(0).principal()),
        format!("&client_id={}", FED2.client()),
    ] {
        let a = env.ask("127.0.40.1", &other).await;
        a.refused(403);
        assert_eq!(a.json()["error"], "forbidden", "{other}");
        assert!(a.body.contains("service account"), "{}", a.body);
    }
}

#[tokio::test]
async fn entra_checks_the_apiservers_own_tokens_by_its_discovery() {
    let env = fed_env("fed-entra").await;
    service_account(&env, &env.ns, "app", json!({})).await;
    service_account(&env, &env.ns, "other", json!({})).await;
    let token = |sa: &'static str, audience: &'static str| {
        let api = Api::<ServiceAccount>::namespaced(env.client.clone(), &env.ns);
        async move {
            let tr: TokenRequest =
                serde_json::from_value(json!({"spec": {"audiences": [audience], "expirationSeconds": 600}}))
                    .unwrap();
            api.create_token_request(sa, &PostParams::default(), &tr)
                .await
                .unwrap()
                .status
                .unwrap()
                .token
        }
    };
    let exchange = |assertion: String| {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            env.emulator.entra_url(),
            env.emulator.tenant_id()
        );
        let ca = reqwest::Certificate::from_pem(env.emulator.ca_cert_pem().unwrap().as_bytes()).unwrap();
        async move {
            let r = reqwest::Client::builder()
                .tls_certs_only([ca])
                .build()
                .unwrap()
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &FED.client()),
                    ("scope", "https://storage.azure.com/.default"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v["error_codes"][0].as_u64())
        }
    };
    assert_eq!(exchange(token("app", EXCHANGE).await).await, (200, None));
    assert_eq!(
        exchange(token("app", "https://kubernetes.default.svc").await).await,
        (401, Some(70021)),
        "wrong audience"
    );
    assert_eq!(
        exchange(token("other", EXCHANGE).await).await,
        (401, Some(70021)),
        "wrong subject"
    );
    // A token claiming the apiserver's issuer with a signature its discovery's keys do not verify.
    let real = token("app", EXCHANGE).await;
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    // One character of the signature changed to another base64url one: still well formed.
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    parts[2] = sig.into_iter().collect();
    assert_eq!(exchange(parts.join(".")).await, (401, Some(700027)));
}

#[tokio::test]
async fn a_deleted_pod_gets_nothing_and_its_bound_token_no_longer_issues() {
    let env = fed_env("fed-deleted").await;
    service_account(&env, &env.ns, "app", json!({CLIENT_ID: FED.client()})).await;
    pod(&env, &env.ns, "web", "app", "127.0.41.1", json!({USE: "true"})).await;
    is(&env.ask("127.0.41.1", "").await, FED);
    let pods = Api::<Pod>::namespaced(env.client.clone(), &env.ns);
    let uid = pods.get("web").await.unwrap().metadata.uid.unwrap();
    pods.delete("web", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    env.until("NMI no longer sees the pod", |s: &State| {
        s.pods.by_name(&env.ns, "web").is_none()
    })
    .await;
    env.ask("127.0.41.1", "").await.refused(404);
    // The apiserver no longer issues a token bound to the deleted pod.
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": [EXCHANGE],
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": uid}}}))
    .unwrap();
    let refused = Api::<ServiceAccount>::namespaced(env.client.clone(), &env.ns)
        .create_token_request("app", &PostParams::default(), &tr)
        .await;
    assert!(refused.is_err(), "a token bound to a deleted pod was issued");

    // A new pod of the same account, at the same IP, gets a freshly exchanged token: the entries
    // fetched with the deleted pod's token were dropped with it.
    let before = env.token_calls(EndpointKind::Entra);
    pod(&env, &env.ns, "web2", "app", "127.0.41.1", json!({USE: "true"})).await;
    is(&env.ask("127.0.41.1", "").await, FED);
    assert_eq!(env.token_calls(EndpointKind::Entra), before + 1);
}

#[tokio::test]
async fn annotation_changes_and_removal_take_effect_at_once() {
    let env = fed_env("fed-annot").await;
    service_account(&env, &env.ns, "app", json!({CLIENT_ID: FED.client()})).await;
    pod(&env, &env.ns, "web", "app", "127.0.42.1", json!({USE: "true"})).await;
    is(&env.ask("127.0.42.1", "").await, FED);

    annotate(&env, "app", json!({CLIENT_ID: FED2.client()})).await;
    let ns = env.ns.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The watch delivers the change; from then on the new identity is served, never the old.
    loop {
        let a = env.ask("127.0.42.1", "").await;
        assert_eq!(a.status, 200, "{}", a.body);
        if a.who().unwrap().0 == FED2.client() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the annotation change never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    is(&env.ask("127.0.42.1", "").await, FED2);
    env.ask("127.0.42.1", &format!("&client_id={}", FED.client()))
        .await
        .refused(403);

    // Removed: the pod opted in, so it is refused, not given some other identity.
    annotate(&env, "app", json!({CLIENT_ID: null})).await;
    loop {
        let a = env.ask("127.0.42.1", "").await;
        if a.status == 403 {
            a.refused(403);
            assert!(a.body.contains(CLIENT_ID), "{}", a.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removal never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Deleted service account: likewise.
    annotate(&env, "app", json!({CLIENT_ID: FED.client()})).await;
    Api::<ServiceAccount>::namespaced(env.client.clone(), &ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    loop {
        let a = env.ask("127.0.42.1", "").await;
        if a.status == 403 && a.body.contains("does not exist") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn another_namespace_naming_the_same_client_id_has_no_credential() {
    let env = fed_env("fed-other-ns").await;
    let (_, other) = testbed::ApiServer::shared()
        .namespace("fed-intruder")
        .await
        .unwrap();
    // Same account name, same annotation: only the subject differs, and no credential names it.
    service_account(&env, &other, "app", json!({CLIENT_ID: FED.client()})).await;
    pod(
        &env,
        &other,
        "intruder",
        "app",
        "127.0.43.1",
        json!({USE: "true"}),
    )
    .await;
    let a = env.ask("127.0.43.1", "").await;
    assert_ne!(a.status, 200, "{}", a.body);
    assert!(!a.body.contains("access_token"), "{}", a.body);
    assert!(
        a.body.contains("AADSTS70021"),
        "Entra's reason reaches the pod: {}",
        a.body
    );
    assert!(
        !a.body.contains("eyJ"),
        "no service-account token in the answer: {}",
        a.body
    );
}

#[tokio::test]
async fn a_pod_with_aadpodidbinding_too_is_served_by_its_binding() {
    let env = fed_env("fed-mixed").await;
    service_account(&env, &env.ns, "app", json!({CLIENT_ID: FED.client()})).await;
    env.identity(uami(0)).await;
    env.binding("legacy", uami(0).name, "legacy").await;
    pod(
        &env,
        &env.ns,
        "both",
        "app",
        "127.0.44.1",
        json!({USE: "true", "aadpodidbinding": "legacy"}),
    )
    .await;
    env.until("NMI sees the binding", |s: &State| !s.bindings.is_empty())
        .await;
    let a = env.ask("127.0.44.1", "").await;
    is(&a, uami(0));
    assert_eq!(env.token_calls(EndpointKind::Entra), 0, "no federated exchange");
    env.ask("127.0.44.1", &format!("&client_id={}", FED.client()))
        .await
        .refused(403);
    // The pod's facts carry what federation needs, but the binding label decides.
    let facts: Option<PodFacts> = match env.state.pods.by_ip("127.0.44.1") {
        PodLookup::Found(p) => Some((*p).clone()),
        _ => None,
    };
    assert_eq!(facts.unwrap().service_account.as_deref(), Some("app"));
}
