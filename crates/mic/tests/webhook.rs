//! The readiness-gate webhook against a real kube-apiserver: the chart's
//! MutatingWebhookConfiguration (selectors, failure policy) registered with a `url` to the
//! webhook served in-process on 127.0.0.1, and pods created as a user would.

#[path = "webhook/harness.rs"]
mod harness;

use std::{net::SocketAddr, sync::Arc};

use azure_emulator::ca::TestCa;
use base64::Engine as _;
use harness::{GATE, create, gates, pod, until_gated, write_pair};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use mic::metrics::Metrics;
use serde_json::json;
use testbed::ApiServer;

fn url(addr: SocketAddr) -> String {
    format!("https://{addr}/mutate")
}

#[tokio::test]
async fn pods_that_use_an_identity_get_the_gate_once_and_others_do_not() {
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("gate").await.expect("namespace");
    let (_, off) = server.namespace("gate-off").await.expect("namespace");
    Api::<Namespace>::all(client.clone())
        .patch(
            &off,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "labels": { "aadpodidentity.k8s.io/readiness-gate": "disabled" } } }),
            ),
        )
        .await
        .expect("opting the namespace out");
    let ca = TestCa::generate("webhook test CA").expect("CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = harness::loopback_cert(&ca);
    write_pair(dir.path(), &cert.cert, &cert.key);
    let metrics = Arc::new(Metrics::default());
    let hook = harness::start(dir.path(), metrics.clone()).await;
    let name = harness::register(&client, &url(hook.local_addr()), &ca.pem(), &[&ns, &off]).await;
    until_gated(&client, &ns).await;

    let bound = create(
        &client,
        &ns,
        &pod("bound", json!({ "aadpodidbinding": "web" }), json!({})),
    )
    .await;
    assert_eq!(gates(&bound), [GATE]);

    let federated = create(
        &client,
        &ns,
        &pod(
            "federated",
            json!({ "azure.workload.identity/use": "true" }),
            json!({}),
        ),
    )
    .await;
    assert_eq!(gates(&federated), [GATE]);

    let warm = json!({ "readinessGates": [{ "conditionType": "example.com/Warm" }] });
    let other_gate = create(
        &client,
        &ns,
        &pod("other-gate", json!({ "aadpodidbinding": "web" }), warm),
    )
    .await;
    assert_eq!(gates(&other_gate), ["example.com/Warm", GATE]);

    let ours = json!({ "readinessGates": [{ "conditionType": GATE }] });
    let gated = create(
        &client,
        &ns,
        &pod("gated", json!({ "aadpodidbinding": "web" }), ours),
    )
    .await;
    assert_eq!(gates(&gated), [GATE], "not duplicated");

    let plain = create(&client, &ns, &pod("plain", json!({ "app": "web" }), json!({}))).await;
    assert!(gates(&plain).is_empty());

    let empty = create(
        &client,
        &ns,
        &pod("empty", json!({ "aadpodidbinding": "" }), json!({})),
    )
    .await;
    assert!(gates(&empty).is_empty(), "an empty binding label binds nothing");

    let host = create(
        &client,
        &ns,
        &pod(
            "host",
            json!({ "aadpodidbinding": "web" }),
            json!({ "hostNetwork": true }),
        ),
    )
    .await;
    assert!(gates(&host).is_empty(), "NMI cannot serve a hostNetwork pod");

    let opted_out = create(
        &client,
        &off,
        &pod("bound", json!({ "aadpodidbinding": "web" }), json!({})),
    )
    .await;
    assert!(gates(&opted_out).is_empty(), "the namespace opted out");

    let text = metrics.encode();
    assert!(
        text.contains(r#"aadpodidentity_mic_webhook_requests_total{outcome="gate_added"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"aadpodidentity_mic_webhook_requests_total{outcome="skipped"}"#),
        "{text}"
    );
    harness::unregister(&client, &name).await;
}

#[tokio::test]
async fn pods_are_created_without_the_gate_while_the_webhook_is_down() {
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("down").await.expect("namespace");
    let ca = TestCa::generate("webhook test CA").expect("CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = harness::loopback_cert(&ca);
    write_pair(dir.path(), &cert.cert, &cert.key);
    let hook = harness::start(dir.path(), Arc::new(Metrics::default())).await;
    let name = harness::register(&client, &url(hook.local_addr()), &ca.pem(), &[&ns]).await;
    until_gated(&client, &ns).await;

    hook.stop().await;
    let p = create(
        &client,
        &ns,
        &pod("bound", json!({ "aadpodidbinding": "web" }), json!({})),
    )
    .await;
    assert!(
        gates(&p).is_empty(),
        "created, without the gate (failurePolicy Ignore)"
    );
    harness::unregister(&client, &name).await;
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_served_without_a_restart() {
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("rotate").await.expect("namespace");
    let (old_ca, new_ca) = (
        TestCa::generate("old webhook CA").expect("CA"),
        TestCa::generate("new webhook CA").expect("CA"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let old = harness::loopback_cert(&old_ca);
    write_pair(dir.path(), &old.cert, &old.key);
    let hook = harness::start(dir.path(), Arc::new(Metrics::default())).await;

    // The old certificate is what is served now.
    let trusting = |ca: &TestCa| {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA")])
            .build()
            .expect("client")
    };
    let before = trusting(&old_ca)
        .post(url(hook.local_addr()))
        .body("{}")
        .send()
        .await;
    assert_eq!(before.expect("old certificate served").status(), 400);

    // The apiserver trusts only the new CA: a pod gets the gate only once the new pair is served.
    let name = harness::register(&client, &url(hook.local_addr()), &new_ca.pem(), &[&ns]).await;
    let new = harness::loopback_cert(&new_ca);
    write_pair(dir.path(), &new.cert, &new.key);
    until_gated(&client, &ns).await;
    let p = create(
        &client,
        &ns,
        &pod("bound", json!({ "aadpodidbinding": "web" }), json!({})),
    )
    .await;
    assert_eq!(gates(&p), [GATE]);
    harness::unregister(&client, &name).await;
}

#[tokio::test]
async fn the_charts_certificate_is_served_for_the_service_name_and_bad_requests_get_4xx() {
    let docs = harness::chart_webhook_objects();
    let secret = harness::find(&docs, "Secret");
    let config = harness::find(&docs, "MutatingWebhookConfiguration");
    let service = harness::find(&docs, "Service");
    let decode = |v: &serde_json::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 string"))
                .expect("base64"),
        )
        .expect("PEM")
    };
    let ca = decode(&secret["data"]["ca.crt"]);
    for hook in config["webhooks"].as_array().expect("webhooks") {
        assert_eq!(
            decode(&hook["clientConfig"]["caBundle"]),
            ca,
            "caBundle is the Secret's CA"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(
        dir.path(),
        &decode(&secret["data"]["tls.crt"]),
        &decode(&secret["data"]["tls.key"]),
    );
    let hook = harness::start(dir.path(), Arc::new(Metrics::default())).await;

    // The name the apiserver verifies for a `service` clientConfig: <service>.<namespace>.svc.
    let host = format!(
        "{}.{}.svc",
        service["metadata"]["name"].as_str().expect("name"),
        service["metadata"]["namespace"].as_str().expect("namespace")
    );
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA")])
        .resolve(&host, hook.local_addr())
        .build()
        .expect("client");
    let at = format!("https://{host}:{}/mutate", hook.local_addr().port());

    let malformed = http
        .post(&at)
        .body("{not json")
        .send()
        .await
        .expect("TLS as the apiserver dials");
    assert_eq!(malformed.status(), 400);
    let huge = http
        .post(&at)
        .body(vec![b' '; mic::webhook::MAX_BODY + 1])
        .send()
        .await;
    assert_eq!(huge.expect("answered").status(), 413);
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1", "operation": "CREATE", "namespace": "apps",
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "object": serde_json::to_value(pod("p", json!({ "aadpodidbinding": "web" }), json!({}))).expect("json"),
        },
    });
    let answer: serde_json::Value = http
        .post(&at)
        .json(&review)
        .send()
        .await
        .expect("still serving after bad requests")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
}
