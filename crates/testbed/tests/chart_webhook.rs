//! The chart's readiness-gate webhook (templates/webhook.yaml): on by default in standard mode,
//! with a Service on MIC's `webhook` port, a TLS Secret whose CA is the caBundle, MIC mounting
//! that Secret, and the selectors and policies that keep pods' creation safe; off entirely with
//! `webhook.enabled=false` and in managed mode. The MutatingWebhookConfiguration passes the real
//! apiserver's validation (server-side dry run).

mod chart_support;

use chart_support::{chart, dry_run, find, helm, ok, parse, strings, template};
use serde_json::{Value, json};
use testbed::ApiServer;

const NAME: &str = "pod-identity-mic-webhook";

fn mic_container(docs: &[Value]) -> &Value {
    &find(docs, "Deployment", "pod-identity-mic")["spec"]["template"]["spec"]["containers"][0]
}

fn webhook_objects(docs: &[Value]) -> Vec<String> {
    chart_support::names(docs)
        .into_iter()
        .filter(|n| n.contains("webhook"))
        .collect()
}

#[test]
fn the_webhook_is_on_by_default_with_its_certificate_service_and_safe_policies() {
    let docs = parse(&template("identity-system", &[]));
    let secret = find(&docs, "Secret", "pod-identity-mic-webhook-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let config = find(&docs, "MutatingWebhookConfiguration", NAME);
    let hooks = config["webhooks"].as_array().expect("webhooks");
    assert_eq!(hooks.len(), 1, "no federated entry without nmi.federatedTenantID");
    let hook = &hooks[0];
    assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
    assert_eq!(
        hook["clientConfig"]["service"],
        json!({ "name": NAME, "namespace": "identity-system", "path": "/mutate", "port": 443 })
    );
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["timeoutSeconds"], 5);
    assert_eq!(hook["reinvocationPolicy"], "Never");
    assert_eq!(strings(&hook["admissionReviewVersions"]), ["v1"]);
    assert_eq!(
        hook["rules"],
        json!([{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced" }])
    );
    assert_eq!(
        hook["objectSelector"]["matchExpressions"],
        json!([{ "key": "aadpodidbinding", "operator": "Exists" }])
    );
    assert_eq!(
        hook["namespaceSelector"]["matchExpressions"],
        json!([
            { "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["identity-system", "kube-system"] },
            { "key": "aadpodidentity.k8s.io/readiness-gate", "operator": "NotIn", "values": ["disabled"] },
        ])
    );

    // The Service reaches every MIC replica on the container port MIC serves the webhook on.
    let service = find(&docs, "Service", NAME);
    let deployment = find(&docs, "Deployment", "pod-identity-mic");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
    let mic = mic_container(&docs);
    assert!(
        mic["ports"]
            .as_array()
            .expect("ports")
            .contains(&json!({ "name": "webhook", "containerPort": 9443, "protocol": "TCP" }))
    );
    let args = strings(&mic["args"]);
    assert!(args.contains(&"--webhook-port=9443".to_owned()), "{args:?}");
    assert!(args.contains(&"--webhook-cert-dir=/etc/pod-identity/webhook".to_owned()));
    assert!(
        mic["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["name"] == "webhook-tls" && m["mountPath"] == "/etc/pod-identity/webhook")
    );
    assert!(
        deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["secret"]["secretName"] == "pod-identity-mic-webhook-tls")
    );
}

#[test]
fn federated_pods_get_their_own_entry_and_values_are_honoured() {
    let docs = parse(&template(
        "kube-system",
        &[
            "nmi.federatedTenantID=72f988bf-86f1-41af-91ab-2d7cd011db47",
            "webhook.failurePolicy=Fail",
            "webhook.timeoutSeconds=3",
            "webhook.port=10443",
        ],
    ));
    let hooks = find(&docs, "MutatingWebhookConfiguration", NAME)["webhooks"]
        .as_array()
        .cloned()
        .expect("webhooks");
    assert_eq!(hooks.len(), 2);
    assert_eq!(
        hooks[1]["objectSelector"]["matchExpressions"],
        json!([{ "key": "azure.workload.identity/use", "operator": "In", "values": ["true"] }])
    );
    for h in &hooks {
        assert_eq!(h["failurePolicy"], "Fail");
        assert_eq!(h["timeoutSeconds"], 3);
        assert_eq!(
            h["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system"]),
            "the release namespace is kube-system: listed once"
        );
    }
    assert!(strings(&mic_container(&docs)["args"]).contains(&"--webhook-port=10443".to_owned()));
}

#[test]
fn the_webhook_is_absent_when_disabled_and_in_managed_mode() {
    for sets in [&["webhook.enabled=false"][..], &["operationMode=managed"][..]] {
        let docs = parse(&template("default", sets));
        assert!(
            webhook_objects(&docs).is_empty(),
            "{sets:?}: {:?}",
            webhook_objects(&docs)
        );
    }
    let docs = parse(&template("default", &["webhook.enabled=false"]));
    let mic = mic_container(&docs).to_string();
    assert!(!mic.contains("webhook"), "MIC without the webhook: {mic}");
    let mut lint = helm();
    lint.arg("lint")
        .arg("--strict")
        .arg(chart())
        .args(["--set", "webhook.enabled=false"]);
    assert!(ok(lint).contains("0 chart(s) failed"));
    let mut bad = chart_support::template_command("default");
    bad.args(["--set", "webhook.failurePolicy=Deny"]);
    assert!(
        !chart_support::run(bad).status.success(),
        "the schema refuses other policies"
    );
}

#[test]
fn the_rendered_webhook_passes_a_server_side_dry_run() {
    let server = ApiServer::shared();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let release_ns = rt.block_on(async { server.namespace("webhook-chart").await.expect("namespace").1 });
    let mut cmd = chart_support::template_command(&release_ns);
    cmd.args(["--show-only", "templates/webhook.yaml"]).args([
        "--set",
        "nmi.federatedTenantID=72f988bf-86f1-41af-91ab-2d7cd011db47",
    ]);
    let rendered = ok(cmd);
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("webhook.yaml");
    std::fs::write(&file, rendered).expect("write");
    dry_run(&file);
}
