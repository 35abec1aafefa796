//! A namespace attacking another through what its own AzureIdentities say (issue 21 §2, §3),
//! against a real kube-apiserver and the Azure emulator:
//! - a managed identity of its own beside the victim's client id, both on the one VM: NMI asks
//!   IMDS by resource id, so the attacker gets only its own identity's token;
//! - a service principal whose `adEndpoint` is a server on the node's loopback pretending to be
//!   Entra: refused before any request, with none of the server's bytes, and the victim (its
//!   tokens and its `object_id` requests) unaffected.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use api::{AzureAssignedIdentity, AzureIdentity};
use common::{Env, Opts, SP_CLIENT, SP_SECRET, Uami, resource_id, uami};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use nmi::state::Mode;
use serde_json::json;
use testbed::ApiServer;

const VICTIM: Uami = uami(0);
/// The attacker's own identity, on the same VM as the victim's.
const OWN: Uami = uami(1);

/// What MIC writes once it has put `identity` on the node for `pod` in `ns`.
async fn assigned_in(env: &Env, ns: &str, pod: &str, identity: &AzureIdentity) {
    let id_name = identity.metadata.name.as_deref().unwrap();
    let name = AzureAssignedIdentity::object_name(pod, ns, id_name);
    let api = Api::<AzureAssignedIdentity>::namespaced(env.client.clone(), ns);
    let aai: AzureAssignedIdentity = serde_json::from_value(json!({
        "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureAssignedIdentity",
        "metadata": {"name": name, "labels": {"nodename": env.node}},
        "spec": {"azureIdentityRef": identity, "pod": pod, "podNamespace": ns, "nodename": env.node}
    }))
    .unwrap();
    api.create(&PostParams::default(), &aai).await.unwrap();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"status": "Assigned", "availableReplicas": 1}})),
    )
    .await
    .unwrap();
}

async fn created_identity(env: &Env, ns: &str, name: &str, spec: serde_json::Value) -> AzureIdentity {
    let id: AzureIdentity = env
        .create_in(
            ns,
            json!({
                "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
                "metadata": {"name": name}, "spec": spec
            }),
        )
        .await;
    let (ns, name) = (ns.to_owned(), name.to_owned());
    env.until("NMI sees the identity", |s| {
        s.identities.get(&ns, &name).is_some()
    })
    .await;
    id
}

/// §2: namespace `evil` names its own identity's resourceID beside the victim's clientID; MIC
/// assigned both identities to the one VM. Evil's pod gets only its own identity's token, however
/// it asks; the victim's pod keeps getting its own, by any selector.
#[tokio::test]
async fn a_claimed_client_id_gets_only_the_claimants_own_identity() {
    let env = common::env_in(
        "attack-victim",
        Opts {
            mode: Mode::Standard,
            // Most a request is held for MIC's record; the watch wakes it as soon as it is seen.
            identity_wait: std::time::Duration::from_secs(60),
            ..Opts::default()
        },
    )
    .await;
    let (_, evil) = ApiServer::shared().namespace("attack-evil").await.unwrap();
    let victim = env.identity(VICTIM).await;
    env.binding("b", VICTIM.name, "app").await;
    env.pod("app", "127.0.70.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.assigned("app", &victim, "Assigned").await;

    let mine = created_identity(
        &env,
        &evil,
        "mine",
        json!({"type": 0, "resourceID": resource_id(OWN.name), "clientID": VICTIM.client()}),
    )
    .await;
    env.binding_in(&evil, "b", "mine", "thief").await;
    env.pod_in(
        &evil,
        "thief",
        "127.0.70.2",
        json!({"aadpodidbinding": "thief"}),
        false,
    )
    .await;
    assigned_in(&env, &evil, "thief", &mine).await;
    let assigned = (evil.clone(), mine.clone());
    env.until("NMI sees evil's assignment", move |s| {
        let pod = s.pods.by_name(&assigned.0, "thief");
        pod.is_some_and(|p| s.assigned_object(&p, &assigned.1).is_some())
    })
    .await;

    let own = (VICTIM.client(), resource_id(OWN.name).to_ascii_lowercase());
    for query in [String::new(), format!("&client_id={}", VICTIM.client())] {
        let a = env.ask("127.0.70.2", &query).await;
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        // The emulator's IMDS issues OWN's token under OWN's client id; the answer's `client_id`
        // echoes the AzureIdentity's claim, the token is what counts.
        let claims = a.token_claims();
        assert_eq!(
            claims["xms_mirid"].as_str().unwrap().to_ascii_lowercase(),
            own.1,
            "{query}"
        );
        assert_eq!(
            claims["oid"],
            OWN.principal(),
            "{query}: never the victim's identity"
        );
        assert_eq!(claims["appid"], OWN.client(), "{query}");
    }
    // Naming the victim's identity any other way is refused: evil is not bound to it.
    for query in [
        format!("&msi_res_id={}", resource_id(VICTIM.name)),
        format!("&object_id={}", VICTIM.principal()),
    ] {
        env.ask("127.0.70.2", &query).await.refused(403);
    }

    // The victim's pod still gets its own identity, also by the object id evil's tokens named
    // nothing for.
    for query in [
        String::new(),
        format!("&client_id={}", VICTIM.client()),
        format!("&object_id={}", VICTIM.principal()),
    ] {
        let a = env.ask("127.0.70.1", &query).await;
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        let who = a.who().unwrap();
        assert_eq!(
            who,
            (VICTIM.client(), resource_id(VICTIM.name).to_ascii_lowercase()),
            "{query}"
        );
    }
    assert_ne!(own.1, resource_id(VICTIM.name).to_ascii_lowercase());
}

/// A loopback server pretending to be Entra: it answers every request with a page of its own and
/// counts the requests.
async fn fake_entra() -> (u16, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "FAKE-ENTRA-PAGE {\"error\":\"invalid_client\",\"oid\":\"planted\"}",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, requests)
}

/// §3: a service principal whose adEndpoint is a loopback server is refused before any request,
/// with none of the server's bytes; Entra's own refusals reach the pod as codes only; the victim
/// in another namespace keeps being served, by `object_id` too.
#[tokio::test]
async fn a_service_principal_reaches_only_entra() {
    let env = common::env_in("attack-sp-victim", Opts::default()).await;
    let (_, evil) = ApiServer::shared().namespace("attack-sp-evil").await.unwrap();
    env.identity(VICTIM).await;
    env.binding("b", VICTIM.name, "app").await;
    env.pod("app", "127.0.71.1", json!({"aadpodidbinding": "app"}))
        .await;
    let a = env
        .ask("127.0.71.1", &format!("&object_id={}", VICTIM.principal()))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);

    let (port, requests) = fake_entra().await;
    let tenant = env.emulator.tenant_id().to_owned();
    let _: Secret = env
        .create_in(
            &evil,
            json!({"metadata": {"name": "sp"}, "stringData": {"clientSecret": SP_SECRET}}),
        )
        .await;
    let cases = [
        ("plain", format!("http://127.0.0.1:{port}/"), "127.0.71.2"),
        ("tls", format!("https://127.0.0.1:{port}/"), "127.0.71.3"),
    ];
    for (name, endpoint, ip) in &cases {
        // The victim's client id: a fake answer could otherwise have filed a principal under it.
        created_identity(
            &env,
            &evil,
            name,
            json!({"type": 1, "tenantID": tenant, "clientID": VICTIM.client(),
                   "clientPassword": {"name": "sp"}, "adEndpoint": endpoint}),
        )
        .await;
        env.binding_in(&evil, name, name, name).await;
        env.pod_in(&evil, name, ip, json!({"aadpodidbinding": name}), false)
            .await;
        let a = env.ask(ip, "").await;
        a.refused(403);
        assert_eq!(a.json()["error"], "forbidden", "{}", a.body);
        let text = a.json()["error_description"].as_str().unwrap().to_owned();
        assert!(
            text.contains("adEndpoint") && text.contains(endpoint) && text.contains("--allowed-ad-endpoint"),
            "{text}"
        );
        assert!(
            !a.body.contains("FAKE-ENTRA-PAGE") && !a.body.contains("planted"),
            "{}",
            a.body
        );
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "the fake Entra got no request"
    );

    // Entra itself (NMI's --entra-endpoint, named as adEndpoint) refusing a wrong secret: the pod
    // hears the status and Entra's codes, not Entra's text.
    let _: Secret = env
        .create_in(
            &evil,
            json!({"metadata": {"name": "wrong"}, "stringData": {"clientSecret": "not-the-secret"}}),
        )
        .await;
    created_identity(
        &env,
        &evil,
        "wrong",
        json!({"type": 1, "tenantID": tenant, "clientID": SP_CLIENT,
               "clientPassword": {"name": "wrong"}, "adEndpoint": env.emulator.entra_url()}),
    )
    .await;
    env.binding_in(&evil, "wrong", "wrong", "wrong").await;
    env.pod_in(
        &evil,
        "wrong",
        "127.0.71.4",
        json!({"aadpodidbinding": "wrong"}),
        false,
    )
    .await;
    let a = env.ask("127.0.71.4", "").await;
    a.refused(403);
    let text = a.json()["error_description"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("Entra ID answered 401: invalid_client, AADSTS"),
        "{text}"
    );
    assert!(
        !text.contains("Trace ID"),
        "Entra's own text is not relayed: {text}"
    );

    // The victim is served as before, by object id too.
    for query in [String::new(), format!("&object_id={}", VICTIM.principal())] {
        let a = env.ask("127.0.71.1", &query).await;
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        assert_eq!(a.token_claims()["oid"], VICTIM.principal(), "{query}");
    }
}
