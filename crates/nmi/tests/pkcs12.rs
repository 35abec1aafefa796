//! Identity type 2 as upstream documents it: the secret holds a PKCS#12 bundle under `certificate`
//! and its password under `password`. NMI against a real kube-apiserver and the emulator's Entra,
//! which verifies the client assertion against the certificate registered for the app.

mod common;

use std::time::Duration;

use api::AzureIdentity;
use azure_emulator::world::ServicePrincipalSpec;
use base64::Engine;
use common::{Env, Opts};
use fixtures::ids::PFX_CLIENT;
use k8s_openapi::api::core::v1::Secret;
use nmi::state::Mode;
use serde_json::json;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../examples/pkcs12/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading the fixture {path}: {e}"))
}

/// The app registration whose certificate is the fixtures' leaf.
fn pfx_app() -> ServicePrincipalSpec {
    ServicePrincipalSpec {
        name: "pfx-app".into(),
        client_id: PFX_CLIENT.into(),
        object_id: None,
        client_secret: None,
        certificate_pem: Some(String::from_utf8(fixture("sp-cert.pem")).unwrap()),
        certificate_file: None,
        may_assign: vec![],
        federated_credentials: vec![],
    }
}

/// An identity of type 2 named `name`, its secret holding `bundle` and `password`, and a binding
/// and a pod (at `ip`) for it.
async fn identity_with_bundle(env: &Env, name: &str, bundle: &[u8], password: Option<&str>, ip: &str) {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut data = json!({"certificate": b64(bundle)});
    if let Some(p) = password {
        data["password"] = json!(b64(p.as_bytes()));
    }
    let _: Secret = env
        .create(json!({"metadata": {"name": name}, "data": data}))
        .await;
    let _: AzureIdentity = env
        .create(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
            "metadata": {"name": name},
            "spec": {"type": 2, "tenantID": env.emulator.tenant_id(), "clientID": PFX_CLIENT,
                     "clientPassword": {"name": name, "namespace": env.ns}}
        }))
        .await;
    let ns = env.ns.clone();
    env.until("NMI sees the identity", |s| s.identities.get(&ns, name).is_some())
        .await;
    env.binding(&format!("b-{name}"), name, name).await;
    env.pod(name, ip, json!({"aadpodidbinding": name})).await;
}

#[tokio::test]
async fn a_pkcs12_identity_gives_its_pod_a_token() {
    let env = common::env_in(
        "nmi-pfx",
        Opts {
            mode: Mode::Managed,
            identity_wait: Duration::from_secs(1),
            pod_wait: Duration::from_secs(2),
            service_principals: vec![pfx_app()],
            ..Opts::default()
        },
    )
    .await;
    // OpenSSL 3's default bundle, and the legacy one older tools write.
    identity_with_bundle(
        &env,
        "aes",
        &fixture("sp-aes.p12"),
        Some("pod-identity-test"),
        "127.0.21.1",
    )
    .await;
    identity_with_bundle(
        &env,
        "legacy",
        &fixture("sp-legacy.p12"),
        Some("pod-identity-test"),
        "127.0.21.2",
    )
    .await;
    for ip in ["127.0.21.1", "127.0.21.2"] {
        let a = env.ask(ip, "").await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.json()["client_id"], PFX_CLIENT);
        assert_eq!(
            a.token_claims()["appid"],
            PFX_CLIENT,
            "Entra issued it to the app"
        );
    }

    // A wrong password, and none at all: the pod is told which key of the secret to fix.
    identity_with_bundle(&env, "wrong", &fixture("sp-aes.p12"), Some("nope"), "127.0.21.3").await;
    identity_with_bundle(&env, "nopass", &fixture("sp-aes.p12"), None, "127.0.21.4").await;
    for ip in ["127.0.21.3", "127.0.21.4"] {
        let a = env.ask(ip, "").await;
        a.refused(403);
        assert_eq!(a.json()["error"], "forbidden", "{}", a.body);
        let text = a.json()["error_description"].as_str().unwrap().to_owned();
        assert!(
            text.contains("wrong or missing password") && text.contains("`password`"),
            "{text}"
        );
    }
    // A bundle of certificates only.
    identity_with_bundle(
        &env,
        "nokey",
        &fixture("certs-only.p12"),
        Some("pod-identity-test"),
        "127.0.21.5",
    )
    .await;
    let a = env.ask("127.0.21.5", "").await;
    a.refused(403);
    assert!(a.body.contains("no private key"), "{}", a.body);
}
