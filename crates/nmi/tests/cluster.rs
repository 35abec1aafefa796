//! NMI in-process against a real kube-apiserver (its watches, its secrets) and the Azure
//! emulator (per-VM IMDS, Entra over https, injected faults). Pods' source IPs are loopback
//! addresses: each request is sent from the address the test wrote into the pod's status.

mod common;

use std::time::{Duration, Instant};

use api::AzureIdentity;
use azure_emulator::{EndpointKind, Fault, FaultAction};
use common::{Answer, CERT_CLIENT, Env, Opts, SP_CLIENT, SP_SECRET, Uami, VAULT, cert, resource_id, uami};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, api::DeleteParams};
use nmi::state::{Mode, PodLookup};
use serde_json::{Value, json};
use testbed::ApiServer;

const ONE: Uami = uami(0);
const TWO: Uami = uami(1);

async fn env(prefix: &str, mode: Mode, identity_wait: Duration) -> Env {
    common::env_in(
        prefix,
        Opts {
            mode,
            identity_wait,
            pod_wait: Duration::from_secs(2),
            service_principals: vec![common::cert_app()],
            ..Opts::default()
        },
    )
    .await
}

/// The seed: identity, binding, a labelled pod; MIC's AAI marks it Assigned; the pod gets a token
/// of its identity, in IMDS's shape.
#[tokio::test]
async fn seed_scenario_standard_mode() {
    // The request may come before NMI's watch has the AAI: it is held until then (60 s at most).
    let env = env("nmi-seed", Mode::Standard, Duration::from_secs(60)).await;
    let id = env.identity(ONE).await;
    env.binding("myapp-binding", ONE.name, "myapp").await;
    env.pod("myapp", "127.0.10.1", json!({"aadpodidbinding": "myapp"}))
        .await;
    env.assigned("myapp", &id, "Assigned").await;
    let a = env.ask("127.0.10.1", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["client_id"], ONE.client());
    assert_eq!(v["resource"], VAULT);
    assert_eq!(v["token_type"], "Bearer");
    assert!(v.as_object().unwrap().values().all(Value::is_string));
    assert_eq!(
        a.token_claims()["oid"],
        ONE.principal(),
        "the token is the bound identity's"
    );
    // A second request is served from NMI's cache: IMDS saw one call.
    assert_eq!(env.ask("127.0.10.1", "").await.status, 200);
    assert_eq!(env.token_calls(EndpointKind::Imds), 1);
}

#[tokio::test]
async fn several_identities_selected_by_client_id_object_id_or_resource_id() {
    let env = env("nmi-select", Mode::Managed, Duration::from_secs(1)).await;
    env.identity(ONE).await;
    env.identity(TWO).await;
    env.binding("b-one", ONE.name, "app").await;
    env.binding("b-two", TWO.name, "app").await;
    env.pod("p", "127.0.11.1", json!({"aadpodidbinding": "app"}))
        .await;
    let oid = |a: Answer| a.token_claims()["oid"].as_str().unwrap().to_owned();
    assert_eq!(
        oid(env
            .ask("127.0.11.1", &format!("&client_id={}", TWO.client()))
            .await),
        TWO.principal()
    );
    assert_eq!(
        oid(env
            .ask(
                "127.0.11.1",
                &format!("&client_id={}", ONE.client().to_uppercase())
            )
            .await),
        ONE.principal()
    );
    assert_eq!(
        oid(env
            .ask("127.0.11.1", &format!("&object_id={}", TWO.principal()))
            .await),
        TWO.principal()
    );
    assert_eq!(
        oid(env
            .ask("127.0.11.1", &format!("&msi_res_id={}", resource_id(ONE.name)))
            .await),
        ONE.principal()
    );
    assert_eq!(
        oid(env
            .ask("127.0.11.1", &format!("&mi_res_id={}", resource_id(TWO.name)))
            .await),
        TWO.principal()
    );
    // No selector: the oldest binding's identity, every time.
    for _ in 0..3 {
        assert_eq!(oid(env.ask("127.0.11.1", "").await), ONE.principal());
    }
    env.ask(
        "127.0.11.1",
        &format!("&client_id={}", fixtures::ids::client_id(0xff)),
    )
    .await
    .refused(403);
}

#[tokio::test]
async fn wrong_namespace_binding_rogue_pod_and_unlabelled_pod_are_refused() {
    let env = env("nmi-refuse", Mode::Managed, Duration::from_secs(1)).await;
    let (_, other) = ApiServer::shared().namespace("nmi-rogue").await.unwrap();
    env.identity(ONE).await;
    env.binding("b", ONE.name, "app").await;
    // A binding in another namespace naming our identity's name, for a selector of its own.
    env.binding_in(&other, "cross", ONE.name, "cross").await;
    env.pod("unlabelled", "127.0.12.1", json!({})).await;
    env.pod_in(
        &other,
        "rogue",
        "127.0.12.2",
        json!({"aadpodidbinding": "app"}),
        false,
    )
    .await;
    env.pod_in(
        &other,
        "cross",
        "127.0.12.3",
        json!({"aadpodidbinding": "cross"}),
        false,
    )
    .await;
    env.pod("good", "127.0.12.4", json!({"aadpodidbinding": "app"}))
        .await;
    for ip in ["127.0.12.1", "127.0.12.2", "127.0.12.3"] {
        env.ask(ip, "").await.refused(403);
        env.ask(ip, &format!("&client_id={}", ONE.client()))
            .await
            .refused(403);
    }
    assert_eq!(
        env.token_calls(EndpointKind::Imds),
        0,
        "no token was even fetched for them"
    );
    assert_eq!(env.ask("127.0.12.4", "").await.status, 200);
}

#[tokio::test]
async fn deleted_pods_ip_reused_by_an_unbound_pod_is_refused_despite_a_warm_cache() {
    let env = env("nmi-reuse", Mode::Managed, Duration::from_secs(1)).await;
    env.identity(ONE).await;
    env.binding("b", ONE.name, "app").await;
    env.pod("bound", "127.0.13.1", json!({"aadpodidbinding": "app"}))
        .await;
    assert_eq!(env.ask("127.0.13.1", "").await.status, 200);
    Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    env.until("NMI sees the pod go", |s| {
        s.pods.by_ip("127.0.13.1") == PodLookup::NotFound
    })
    .await;
    env.pod("intruder", "127.0.13.1", json!({})).await;
    let a = env.ask("127.0.13.1", "").await;
    a.refused(403);
    assert!(a.body.contains("intruder"), "{}", a.body);
    assert_eq!(env.token_calls(EndpointKind::Imds), 1);
}

#[tokio::test]
async fn service_principal_with_a_secret_in_its_own_namespace() {
    let env = env("nmi-sp", Mode::Managed, Duration::from_secs(1)).await;
    let tenant = env.emulator.tenant_id().to_owned();
    let _: Secret = env
        .create(json!({"metadata": {"name": "sp"}, "stringData": {"clientSecret": SP_SECRET, "note": "x"}}))
        .await;
    for (name, secret_ns) in [("sp", env.ns.clone()), ("sp-elsewhere", "kube-system".to_owned())] {
        let _: AzureIdentity = env
            .create(json!({
                "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
                "metadata": {"name": name},
                "spec": {"type": 1, "tenantID": tenant, "clientID": SP_CLIENT,
                         "clientPassword": {"name": "sp", "namespace": secret_ns}}
            }))
            .await;
    }
    env.until("NMI sees the identities", |s| {
        s.identities.get(&env.ns, "sp").is_some() && s.identities.get(&env.ns, "sp-elsewhere").is_some()
    })
    .await;
    env.binding("b", "sp", "app").await;
    env.binding("b-elsewhere", "sp-elsewhere", "elsewhere").await;
    env.pod("p", "127.0.14.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.pod("q", "127.0.14.2", json!({"aadpodidbinding": "elsewhere"}))
        .await;
    let a = env.ask("127.0.14.1", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["client_id"], SP_CLIENT);
    assert_eq!(a.token_claims()["appid"], SP_CLIENT);
    let a = env.ask("127.0.14.2", "").await;
    a.refused(403);
    assert!(
        a.body.contains("only from the identity's own namespace"),
        "{}",
        a.body
    );
    // §5.2 case 25: a missing secret is a clear refusal too.
    let _: AzureIdentity = env
        .create(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
            "metadata": {"name": "sp-missing"},
            "spec": {"type": 1, "tenantID": tenant, "clientID": SP_CLIENT, "clientPassword": {"name": "absent"}}
        }))
        .await;
    let ns = env.ns.clone();
    env.until("NMI sees the identity", |s| {
        s.identities.get(&ns, "sp-missing").is_some()
    })
    .await;
    env.binding("b-missing", "sp-missing", "missing").await;
    env.pod("r", "127.0.14.3", json!({"aadpodidbinding": "missing"}))
        .await;
    let a = env.ask("127.0.14.3", "").await;
    a.refused(403);
    assert!(a.body.contains("does not exist"), "{}", a.body);
}

#[tokio::test]
async fn excepted_pod_passes_through_to_the_nodes_identity() {
    let env = env("nmi-except", Mode::Standard, Duration::from_secs(1)).await;
    env.exception_in(&env.ns, "exception", json!({"noaad": "true"}))
        .await;
    env.pod("system", "127.0.15.1", json!({"noaad": "True"})).await;
    // No binding, no AAI: the node's own identities answer, as IMDS itself would.
    let a = env
        .ask("127.0.15.1", &format!("&client_id={}", TWO.client()))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.token_claims()["oid"], TWO.principal());
    assert_eq!(
        a.content_types.len(),
        1,
        "one Content-Type, as IMDS sends: {:?}",
        a.content_types
    );
    assert!(
        a.content_types[0].starts_with("application/json"),
        "{:?}",
        a.content_types
    );
    let a = env
        .ask("127.0.15.1", &format!("&msi_res_id={}", resource_id(ONE.name)))
        .await;
    assert_eq!(
        a.token_claims()["oid"],
        ONE.principal(),
        "msi_res_id is kept on the way through"
    );
}

/// The request is held until MIC assigns, then answered with the token (a request still held at
/// `--identity-wait` would be a 404). That the answer follows the watch at once, not a poll, is
/// `server::tests::a_held_request_succeeds_once_mic_assigns`, on a paused clock.
#[tokio::test]
async fn a_request_held_while_unassigned_succeeds_once_assigned() {
    let env = env("nmi-held", Mode::Standard, Duration::from_secs(60)).await;
    let id = env.identity(ONE).await;
    env.binding("b", ONE.name, "app").await;
    env.pod("p", "127.0.16.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.assigned("p", &id, "Created").await;
    let ask = async {
        let a = env.ask("127.0.16.1", "").await;
        (a, Instant::now())
    };
    let assign = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let assigning_at = Instant::now();
        env.assigned("p", &id, "Assigned").await;
        assigning_at
    };
    let ((a, answered_at), assigning_at) = tokio::join!(ask, assign);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        answered_at >= assigning_at,
        "held until MIC assigned, then answered"
    );
}

#[tokio::test]
async fn unassigned_identity_times_out_as_404_not_400() {
    let env = env("nmi-timeout", Mode::Standard, Duration::from_millis(500)).await;
    let id = env.identity(ONE).await;
    env.binding("b", ONE.name, "app").await;
    env.pod("p", "127.0.17.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.assigned("p", &id, "Created").await;
    let a = env.ask("127.0.17.1", "").await;
    a.refused(404);
    assert!(a.body.contains("not yet assigned"), "{}", a.body);
}

#[tokio::test]
async fn imds_throttling_and_errors_reach_the_pod_as_retryable() {
    let env = env("nmi-faults", Mode::Managed, Duration::from_secs(1)).await;
    env.identity(ONE).await;
    env.binding("b", ONE.name, "app").await;
    env.pod("p", "127.0.18.1", json!({"aadpodidbinding": "app"}))
        .await;
    let admin = env.emulator.admin();
    let fault = |status, retry_after_secs| Fault {
        endpoint: EndpointKind::Imds,
        target: Some(env.node.clone()),
        action: FaultAction::Status {
            status,
            retry_after_secs,
        },
        count: Some(1),
        rate: None,
    };
    admin.inject(fault(429, Some(3)));
    let a = env.ask("127.0.18.1", "").await;
    a.refused(429);
    assert_eq!(a.retry_after.as_deref(), Some("3"));
    admin.inject(fault(500, None));
    env.ask("127.0.18.1", "").await.refused(500);
    admin.inject(fault(503, None));
    env.ask("127.0.18.1", "").await.refused(503);
    // Faults spent: the retry the SDK makes succeeds.
    assert_eq!(env.ask("127.0.18.1", "").await.status, 200);
}

#[tokio::test]
async fn service_principal_with_a_certificate() {
    let env = env("nmi-cert", Mode::Managed, Duration::from_secs(1)).await;
    let tenant = env.emulator.tenant_id().to_owned();
    let (cert_pem, key_pem) = cert();
    let _: Secret = env
        .create(
            json!({"metadata": {"name": "cert"}, "stringData": {"certificate": cert_pem, "key": key_pem}}),
        )
        .await;
    // Upstream's layout: a PKCS#12 bundle and its password.
    let _: Secret = env
        .create(json!({"metadata": {"name": "pfx"}, "data": {"certificate": "MIIKAgEDMIIJvAYJKoZIhvcNAQcBoII=", "password": "cGFzcw=="}}))
        .await;
    for (name, secret) in [("cert", "cert"), ("pfx", "pfx")] {
        let _: AzureIdentity = env
            .create(json!({
                "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
                "metadata": {"name": name},
                "spec": {"type": 2, "tenantID": tenant, "clientID": CERT_CLIENT,
                         "clientPassword": {"name": secret}}
            }))
            .await;
        let ns = env.ns.clone();
        env.until("NMI sees the identity", |s| s.identities.get(&ns, name).is_some())
            .await;
        env.binding(&format!("b-{name}"), name, name).await;
    }
    env.pod("p", "127.0.19.1", json!({"aadpodidbinding": "cert"}))
        .await;
    env.pod("q", "127.0.19.2", json!({"aadpodidbinding": "pfx"}))
        .await;
    let a = env.ask("127.0.19.1", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.token_claims()["appid"], CERT_CLIENT);
    let a = env.ask("127.0.19.2", "").await;
    a.refused(403);
    assert!(a.body.contains("PKCS#12"), "{}", a.body);
}

/// §5.2 cases 33 and 34 against a real IMDS: other paths pass through, `X-Forwarded-For` (which IMDS
/// refuses) is stripped, and the header rule still applies.
#[tokio::test]
async fn other_paths_pass_through_to_imds() {
    let env = env("nmi-pass", Mode::Standard, Duration::from_secs(1)).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut req = http.get(format!("http://{}{path}", env.nmi));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let md = [("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")];
    let (status, body) = get("/metadata/instance/compute?api-version=2021-02-01", &md).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&env.node), "IMDS's own answer: {body}");
    assert_eq!(get("/doesnotexist", &md).await.0, 404);
    let (status, body) = get("/doesnotexist", &[]).await;
    assert_eq!(status, 400);
    assert!(body.contains("Required metadata header not specified"));
    // IMDS reads paths in any letter case: passing these through would give any caller the node's
    // own token. NMI answers them itself (here: no pod has the caller's IP) or refuses them.
    for path in [
        "/metadata/Identity/oauth2/token?api-version=2018-02-01&resource=r",
        "/metadata/identity/oauth2//token?api-version=2018-02-01&resource=r",
        "/x/../metadata/identity/oauth2/token?api-version=2018-02-01&resource=r",
    ] {
        let (status, body) = get(path, &md).await;
        assert!(!body.contains("access_token"), "{path} reached IMDS: {body}");
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
    }
}
