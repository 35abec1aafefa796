//! The chart's `helm test` pod (templates/tests/token-path.yaml) and its `kubeVersion`: the pod
//! runs `nmi test-token-path` from NMI's image where NMI runs, off the host network (so that the
//! interception applies to it), bound to nothing unless `tests.binding` says; the API server
//! accepts it. The chart refuses Kubernetes older than the README says it supports.

mod chart_support;

use chart_support::{chart, dry_run, find, parse, read, run, strings, template};
use serde_json::{Value, json};
use testbed::ApiServer;

const POD: &str = "pod-identity-test-token-path";

fn test_pod(docs: &[Value]) -> &Value {
    find(docs, "Pod", POD)
}

#[test]
fn the_test_pod_asks_from_an_unbound_pod_where_nmi_runs() {
    let docs = parse(&template("pod-identity", &[]));
    let pod = test_pod(&docs);
    let meta = &pod["metadata"];
    assert_eq!(meta["namespace"], "pod-identity");
    assert_eq!(meta["annotations"]["helm.sh/hook"], "test");
    assert_eq!(
        meta["annotations"]["helm.sh/hook-delete-policy"],
        "before-hook-creation,hook-succeeded"
    );
    assert!(
        meta["labels"].get("aadpodidbinding").is_none(),
        "bound to nothing by default: {}",
        meta["labels"]
    );
    let spec = &pod["spec"];
    assert_eq!(spec["hostNetwork"], false, "intercepted like an application pod");
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["automountServiceAccountToken"], false);

    let nmi = &find(&docs, "DaemonSet", "pod-identity-nmi")["spec"]["template"]["spec"];
    for key in ["nodeSelector", "tolerations"] {
        assert_eq!(spec[key], nmi[key], "{key}: where NMI runs");
    }
    let c = &spec["containers"][0];
    assert_eq!(c["image"], nmi["containers"][0]["image"], "NMI's image");
    assert_eq!(strings(&c["args"]), ["test-token-path"]);
    let env: Vec<(String, Value)> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_owned(),
                e["valueFrom"]["fieldRef"]["fieldPath"].clone(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("POD_NAMESPACE".to_owned(), json!("metadata.namespace")),
            ("POD_NAME".to_owned(), json!("metadata.name")),
        ],
        "NMI's refusal must name this pod"
    );
    // Pod Security `restricted`, for any namespace it runs in.
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&c["securityContext"]["capabilities"]["drop"]), ["ALL"]);
}

#[test]
fn with_a_binding_the_test_pod_carries_its_selector_and_needs_a_token() {
    let docs = parse(&template(
        "pod-identity",
        &[
            "tests.binding=myapp",
            "tests.namespace=apps",
            "nmi.nodeSelector.pool=identity",
        ],
    ));
    let pod = test_pod(&docs);
    assert_eq!(pod["metadata"]["namespace"], "apps");
    assert_eq!(pod["metadata"]["labels"]["aadpodidbinding"], "myapp");
    assert_eq!(pod["spec"]["nodeSelector"]["pool"], "identity");
    assert_eq!(
        strings(&pod["spec"]["containers"][0]["args"]),
        ["test-token-path", "--expect-token"]
    );

    let docs = parse(&template("pod-identity", &["tests.enabled=false"]));
    assert!(
        !docs.iter().any(|d| d["metadata"]["name"] == POD),
        "tests.enabled=false renders no test pod"
    );
    let mut bad = chart_support::template_command("pod-identity");
    bad.args(["--set", "tests.bindings=myapp"]);
    assert!(
        !run(bad).status.success(),
        "the schema refuses unknown tests.* keys"
    );
}

/// The API server accepts the bound variant (the default one is dry-run with the whole chart in
/// chart.rs).
#[test]
fn the_bound_test_pod_passes_a_server_side_dry_run() {
    let server = ApiServer::shared();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let app_ns = rt.block_on(async { server.namespace("helm-test").await.expect("namespace").1 });
    let rendered = template(
        "pod-identity",
        &["tests.binding=myapp", &format!("tests.namespace={app_ns}")],
    );
    let docs = parse(&rendered);
    let pod = test_pod(&docs);
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("test-pod.json");
    std::fs::write(&file, pod.to_string()).expect("write");
    dry_run(&file);
}

/// Chart.yaml's `kubeVersion` is the support the chart's README states, and helm enforces it.
#[test]
fn the_chart_refuses_kubernetes_older_than_it_supports() {
    let chart_yaml = read(&chart().join("Chart.yaml"));
    assert!(
        chart_yaml.lines().any(|l| l == r#"kubeVersion: ">=1.25.0-0""#),
        "{chart_yaml}"
    );
    let readme = read(&chart().join("README.md"));
    assert!(
        readme.contains("Kubernetes 1.25 or later"),
        "the README states the same floor"
    );
    assert_eq!(testbed::CHART_KUBE_VERSION, "1.25.0");

    for (version, renders) in [("1.24.17", false), ("1.25.0", true), ("1.35.4", true)] {
        let mut cmd = chart_support::template_command("pod-identity");
        cmd.args(["--kube-version", version]);
        let out = run(cmd);
        assert_eq!(
            out.status.success(),
            renders,
            "Kubernetes {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !renders {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("requires kubeVersion"),
                "helm names the constraint: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
