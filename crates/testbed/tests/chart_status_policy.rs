//! The chart's ValidatingAdmissionPolicy on NMI's pods/status writes
//! (templates/nmi-status-policy.yaml, `nmi.restrictStatusWrites`): rendered where the cluster
//! serves the API, and enforced by the real kube-apiserver. NMI's ServiceAccount, with a token
//! bound to its pod on node n1 as the kubelet would project it, may server-side apply the
//! IdentityReady condition of n1's pods exactly as NMI's writer does, and nothing else: not
//! another node's pod, not another condition, status field or the pod's labels, and not with a
//! token bound to no pod. Everyone else is never evaluated.

mod chart_support;

use std::time::{Duration, Instant};

use api::v1::{IDENTITY_READY_CONDITION, NMI_FIELD_MANAGER};
use chart_support::{chart, find, helm, names, ok, parse};
use k8s_openapi::api::{
    authentication::v1::{SelfSubjectReview, TokenRequest},
    core::v1::{Node, Pod, ServiceAccount},
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};
use testbed::ApiServer;

const VAP: &str = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy";
const POLICY_KINDS: [&str; 2] = ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"];

const OTHER_NODE: &str = "NMI may write the status of pods on its own node only";
const NO_NODE: &str = "names no node";
const OTHER_CONDITION: &str = "NMI may change no pod condition but aadpodidentity.k8s.io/IdentityReady";
const OTHER_STATUS: &str = "NMI may change no pod status field but the condition";
const METADATA: &str = "NMI may change no pod metadata";

/// The kinds of the chart's objects rendered with `args` (namespace `identity-system`).
fn rendered_kinds(args: &[&str]) -> Vec<String> {
    let mut cmd = chart_support::template_command("identity-system");
    cmd.args(args);
    parse(&ok(cmd))
        .iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_owned))
        .collect()
}

fn has_policy(args: &[&str]) -> bool {
    let kinds = rendered_kinds(args);
    let n = POLICY_KINDS
        .iter()
        .filter(|k| kinds.iter().any(|x| x == *k))
        .count();
    assert!(n == 0 || n == 2, "the policy comes with its binding: {kinds:?}");
    n == 2
}

#[test]
fn the_policy_renders_where_the_cluster_serves_it_and_lints() {
    let cases: &[(&str, &[&str], bool)] = &[
        // The chart's oldest Kubernetes (template_command's --kube-version; helm as
        // scripts/testbin.sh builds it would assume 1.20, which the chart refuses).
        ("offline, the chart's oldest version (1.25)", &[], false),
        (
            "offline, --kube-version 1.29",
            &["--kube-version", "1.29.0"],
            false,
        ),
        (
            "offline, --kube-version 1.30",
            &["--kube-version", "1.30.0"],
            true,
        ),
        (
            "offline, --api-versions names the kind",
            &["--api-versions", VAP],
            true,
        ),
        // A cluster's list names kinds; a 1.35 cluster that does not serve the API gets none.
        (
            "cluster without the API",
            &["--api-versions", "v1/Pod", "--kube-version", "1.35.0"],
            false,
        ),
        (
            "cluster with the API",
            &[
                "--api-versions",
                "v1/Pod",
                "--api-versions",
                VAP,
                "--kube-version",
                "1.29.0",
            ],
            true,
        ),
        (
            "turned off",
            &["--api-versions", VAP, "--set", "nmi.restrictStatusWrites=false"],
            false,
        ),
        // It names NMI's ServiceAccount, which the chart then does not create.
        (
            "rbac.enabled=false",
            &["--api-versions", VAP, "--set", "rbac.enabled=false"],
            false,
        ),
        (
            "managed mode",
            &["--api-versions", VAP, "--set", "operationMode=managed"],
            true,
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(_, args, want)| has_policy(args) != *want)
        .map(|(what, _, want)| format!("{what}: policy {}", if *want { "missing" } else { "rendered" }))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The rendered policy: NMI's ServiceAccount of this release, UPDATE of pods/status, Deny.
    let mut cmd = chart_support::template_command("identity-system");
    cmd.args(["--api-versions", VAP]);
    let docs = parse(&ok(cmd));
    let policy = find(
        &docs,
        "ValidatingAdmissionPolicy",
        "pod-identity-nmi-status-writes",
    );
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        policy["spec"]["matchConstraints"]["resourceRules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods/status"]}])
    );
    assert_eq!(
        policy["spec"]["matchConditions"],
        json!([{"name": "nmi-service-account",
                "expression": "request.userInfo.username == 'system:serviceaccount:identity-system:pod-identity-nmi'"}])
    );
    let sa = find(&docs, "ServiceAccount", "pod-identity-nmi");
    assert_eq!(sa["metadata"]["namespace"], "identity-system");
    let binding = find(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        "pod-identity-nmi-status-writes",
    );
    assert_eq!(binding["spec"]["policyName"], "pod-identity-nmi-status-writes");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));

    for args in [&[][..], &["--kube-version", "1.35.0"][..]] {
        let mut cmd = helm();
        cmd.args(["lint", "--strict"]).arg(chart()).args(args);
        let out = ok(cmd);
        assert!(out.contains("0 chart(s) failed"), "helm lint {args:?}:\n{out}");
    }
}

/// The plain manifests carry the policy in files of their own (scripts/manifests.sh), for
/// clusters that serve the API: the apiserver accepts them (and compiles their CEL).
#[test]
fn the_committed_policy_manifests_pass_a_server_side_dry_run() {
    let dir = chart_support::root().join("deploy/manifests");
    for (file, namespace) in [
        ("nmi-status-policy.yaml", "default"),
        ("managed-mode-nmi-status-policy.yaml", "kube-system"),
    ] {
        let docs = parse(&chart_support::read(&dir.join(file)));
        let policy = find(
            &docs,
            "ValidatingAdmissionPolicy",
            "pod-identity-nmi-status-writes",
        );
        assert_eq!(
            policy["spec"]["matchConditions"][0]["expression"],
            format!("request.userInfo.username == 'system:serviceaccount:{namespace}:pod-identity-nmi'"),
            "{file}"
        );
        chart_support::dry_run(&dir.join(file));
    }
    // The deployments themselves stay free of it: they apply to Kubernetes 1.25-1.29 too.
    for file in ["deployment-rbac.yaml", "managed-mode-deployment.yaml"] {
        let docs = parse(&chart_support::read(&dir.join(file)));
        assert!(
            !docs.iter().any(|d| POLICY_KINDS.iter().any(|k| d["kind"] == *k)),
            "{file} holds the policy"
        );
    }
}

/// A client that authenticates with `token` only.
async fn token_client(server: &ApiServer, token: &str) -> Client {
    let kc = Kubeconfig::read_from(server.kubeconfig()).expect("the admin kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a config");
    config.auth_info = AuthInfo {
        token: Some(token.to_owned().into()),
        ..AuthInfo::default()
    };
    Client::try_from(config).expect("a client")
}

async fn token(admin: &Client, ns: &str, sa: &str, bound_to: Option<&Pod>) -> String {
    let mut spec = json!({"audiences": [], "expirationSeconds": 600});
    if let Some(pod) = bound_to {
        spec["boundObjectRef"] = json!({"apiVersion": "v1", "kind": "Pod",
            "name": pod.metadata.name, "uid": pod.metadata.uid});
    }
    let req: TokenRequest = serde_json::from_value(json!({"spec": spec})).expect("a TokenRequest");
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .expect("TokenRequest")
        .status
        .expect("a token")
        .token
}

/// NMI's applied configuration of `pod`'s status, shaped as its writer's (crates/nmi
/// readiness/writer.rs `apply_body`): the pod's UID and its one condition, plus `extra` merged
/// into `status`.
fn nmi_apply(pod: &Pod, ready: bool, extra: Value) -> Value {
    let mut status = json!({"conditions": [{
        "type": IDENTITY_READY_CONDITION,
        "status": if ready { "True" } else { "False" },
        "reason": if ready { "TokenObtained" } else { "TokenUnavailable" },
        "message": "written by the status-policy test",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]});
    if let (Value::Object(s), Value::Object(e)) = (&mut status, extra) {
        for (k, v) in e {
            if k == "conditions" {
                let mut all = v.as_array().cloned().unwrap_or_default();
                all.extend(s["conditions"].as_array().cloned().unwrap_or_default());
                s.insert(k, Value::Array(all));
            } else {
                s.insert(k, v);
            }
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace,
                     "uid": pod.metadata.uid},
        "status": status,
    })
}

async fn apply_status(client: &Client, pod: &Pod, body: &Value, dry_run: bool) -> Result<Pod, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().expect("namespace");
    let name = pod.metadata.name.as_deref().expect("name");
    let mut params = PatchParams::apply(NMI_FIELD_MANAGER).force();
    params.dry_run = dry_run;
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(name, &params, &Patch::Apply(body))
        .await
}

/// The denial's message, or a panic saying what happened instead.
fn denied(what: &str, r: Result<Pod, kube::Error>, want: &str) -> String {
    match r {
        Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains(want) => e.message.to_string(),
        Err(e) => panic!("{what}: refused, but not by the policy's {want:?}: {e}"),
        Ok(_) => panic!("{what}: allowed; the policy should refuse it with {want:?}"),
    }
}

fn conditions(pod: &Pod) -> Vec<(String, String)> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect()
}

#[test]
fn nmi_may_write_only_identity_ready_of_its_own_nodes_pods() {
    let server = ApiServer::shared();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (admin, ns) = server.namespace("status-policy").await.expect("namespace");
        let release = format!("sp{}", std::process::id());
        let sa = format!("{release}-pod-identity-nmi");
        let policy = format!("{sa}-status-writes");

        // NMI's ServiceAccount, ClusterRole (patch pods/status) and binding, and the policy, as
        // the chart renders them for a cluster that serves the API. The DaemonSet and the rest
        // are left out: no kubelet runs here.
        let mut cmd = chart_support::template_release(&release);
        cmd.args(["--namespace", &ns, "--api-versions", VAP]);
        let docs = parse(&ok(cmd));
        let wanted: Vec<Value> = docs
            .iter()
            .filter(|d| {
                let (kind, name) = (d["kind"].as_str(), d["metadata"]["name"].as_str());
                matches!(
                    (kind, name),
                    (Some("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding"), Some(n)) if n == sa
                ) || matches!((kind, name), (Some(k), Some(n)) if POLICY_KINDS.contains(&k) && n == policy)
            })
            .cloned()
            .collect();
        assert_eq!(
            wanted.len(),
            5,
            "NMI's RBAC and the policy among {:?}",
            names(&docs)
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("nmi.json");
        std::fs::write(
            &file,
            json!({"apiVersion": "v1", "kind": "List", "items": wanted}).to_string(),
        )
        .expect("write");
        let mut apply = server.kubectl().expect("kubectl");
        apply
            .args(["apply", "--server-side", "--field-manager=chart-test", "-f"])
            .arg(&file);
        ok(apply);

        // Two nodes; pods p1 on n1 and p2 on n2, each with a status as a kubelet writes it (its
        // conditions around a copy of IdentityReady, as kubelet keeps other components' ones);
        // p3 on n1 with the status the apiserver gives a new pod (no conditions); p4 on n1, being
        // deleted; and NMI's pod on n1.
        let nodes = Api::<Node>::all(admin.clone());
        for n in ["n1", "n2"] {
            let node: Node = serde_json::from_value(json!({"metadata": {"name": n}})).expect("node");
            nodes.create(&PostParams::default(), &node).await.expect("node");
        }
        let pods = Api::<Pod>::namespaced(admin.clone(), &ns);
        let mut made = Vec::new();
        for (name, node, account, running) in [
            ("p1", "n1", "default", true),
            ("p2", "n2", "default", true),
            ("p3", "n1", "default", false),
            ("p4", "n1", "default", true),
            ("nmi-n1", "n1", sa.as_str(), true),
        ] {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": {"nodeName": node, "serviceAccountName": account,
                         "containers": [{"name": "c", "image": "app"}]},
            }))
            .expect("pod");
            let mut p = pods.create(&PostParams::default(), &p).await.expect("pod");
            if running {
                p = pods
                    .patch_status(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {
                        "phase": "Running", "podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.1"}],
                        "conditions": [
                            {"type": "PodScheduled", "status": "True"},
                            {"type": IDENTITY_READY_CONDITION, "status": "False", "reason": "Pending"},
                            {"type": "Ready", "status": "False"},
                        ]}})),
                    )
                    .await
                    .expect("status");
            }
            made.push(p);
        }
        let [p1, p2, p3, p4, nmi_pod] = <[Pod; 5]>::try_from(made).expect("five pods");
        // A running pod bound to a node stays, terminating, until its kubelet confirms.
        pods.delete("p4", &Default::default()).await.expect("delete p4");
        assert!(
            pods.get("p4")
                .await
                .expect("p4 is terminating")
                .metadata
                .deletion_timestamp
                .is_some()
        );

        // The token the kubelet would project into NMI's pod, and one bound to nothing.
        let nmi = token_client(server, &token(&admin, &ns, &sa, Some(&nmi_pod)).await).await;
        let unbound = token_client(server, &token(&admin, &ns, &sa, None).await).await;

        // The apiserver puts the pod's node in the user's extra (ServiceAccountTokenPodNodeInfo):
        // what the policy compares with.
        let review: SelfSubjectReview = serde_json::from_value(json!({})).expect("review");
        let who = Api::<SelfSubjectReview>::all(nmi.clone())
            .create(&PostParams::default(), &review)
            .await
            .expect("SelfSubjectReview")
            .status
            .and_then(|s| s.user_info)
            .expect("user info");
        assert_eq!(
            who.username.as_deref(),
            Some(format!("system:serviceaccount:{ns}:{sa}").as_str())
        );
        let extra = who.extra.unwrap_or_default();
        assert_eq!(
            extra.get("authentication.kubernetes.io/node-name"),
            Some(&vec!["n1".to_owned()]),
            "the pod-bound token's extra: {extra:?}"
        );

        // The apiserver loads policies asynchronously: wait until a write it must refuse is
        // refused (a dry run, so that nothing is written meanwhile).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match apply_status(&nmi, &p2, &nmi_apply(&p2, true, json!({})), true).await {
                Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains(OTHER_NODE) => break,
                r => assert!(
                    Instant::now() < deadline,
                    "the policy is not enforced 30 s after its creation: {:?}",
                    r.map(|_| "allowed")
                ),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // NMI's own write on its node: the condition changes, every other one stays in place.
        let written = apply_status(&nmi, &p1, &nmi_apply(&p1, true, json!({})), false)
            .await
            .expect("NMI writes IdentityReady of a pod on its node");
        assert_eq!(
            conditions(&written),
            [
                ("PodScheduled".to_owned(), "True".to_owned()),
                (IDENTITY_READY_CONDITION.to_owned(), "True".to_owned()),
                ("Ready".to_owned(), "False".to_owned()),
            ]
        );
        assert!(
            written
                .metadata
                .managed_fields
                .unwrap_or_default()
                .iter()
                .any(|m| m.manager.as_deref() == Some(NMI_FIELD_MANAGER)
                    && m.subresource.as_deref() == Some("status")),
            "NMI owns its condition"
        );
        // A new pod's first condition, and a terminating pod's (whose deletionTimestamp the
        // apiserver keeps through the write).
        for p in [&p3, &p4] {
            let written = apply_status(&nmi, p, &nmi_apply(p, true, json!({})), false)
                .await
                .unwrap_or_else(|e| panic!("NMI writes IdentityReady of {:?}: {e}", p.metadata.name));
            assert!(conditions(&written).contains(&(IDENTITY_READY_CONDITION.to_owned(), "True".to_owned())));
        }
        // ... and back to False (a second write of the same condition).
        let written = apply_status(&nmi, &p1, &nmi_apply(&p1, false, json!({})), false)
            .await
            .expect("NMI rewrites IdentityReady of a pod on its node");
        assert!(conditions(&written).contains(&(IDENTITY_READY_CONDITION.to_owned(), "False".to_owned())));

        let refused = [
            (
                "a pod on another node",
                denied(
                    "p2",
                    apply_status(&nmi, &p2, &nmi_apply(&p2, true, json!({})), false).await,
                    OTHER_NODE,
                ),
            ),
            (
                "another condition",
                denied(
                    "Ready on p1",
                    apply_status(
                        &nmi,
                        &p1,
                        &nmi_apply(
                            &p1,
                            true,
                            json!({"conditions": [{"type": "Ready", "status": "True"}]}),
                        ),
                        false,
                    )
                    .await,
                    OTHER_CONDITION,
                ),
            ),
            (
                "status.phase",
                denied(
                    "phase of p1",
                    apply_status(
                        &nmi,
                        &p1,
                        &nmi_apply(&p1, true, json!({"phase": "Failed"})),
                        false,
                    )
                    .await,
                    OTHER_STATUS,
                ),
            ),
            (
                "status.message (a field no rule names)",
                denied(
                    "message of p1",
                    apply_status(
                        &nmi,
                        &p1,
                        &nmi_apply(&p1, true, json!({"message": "evicted"})),
                        false,
                    )
                    .await,
                    OTHER_STATUS,
                ),
            ),
            (
                "a label (pods/status lets metadata through)",
                denied(
                    "label of p1",
                    apply_status(
                        &nmi,
                        &p1,
                        &{
                            let mut b = nmi_apply(&p1, true, json!({}));
                            b["metadata"]["labels"] = json!({"aadpodidbinding": "someone-elses"});
                            b
                        },
                        false,
                    )
                    .await,
                    METADATA,
                ),
            ),
            (
                "a token bound to no pod",
                denied(
                    "unbound token",
                    apply_status(&unbound, &p1, &nmi_apply(&p1, true, json!({})), false).await,
                    NO_NODE,
                ),
            ),
        ];
        for (what, message) in &refused {
            assert!(
                message.contains(&policy),
                "{what}: refused by another policy: {message}"
            );
        }
        // Nothing refused was written.
        let p1_now = pods.get("p1").await.expect("p1");
        assert_eq!(
            conditions(&p1_now),
            [
                ("PodScheduled".to_owned(), "True".to_owned()),
                (IDENTITY_READY_CONDITION.to_owned(), "False".to_owned()),
                ("Ready".to_owned(), "False".to_owned()),
            ]
        );
        assert_eq!(
            p1_now.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
        );
        assert_eq!(
            p1_now
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("aadpodidbinding")),
            None
        );

        // Anyone else is not evaluated: the admin changes p2's condition, phase and, through
        // pods/status, its labels (what the metadata rule keeps NMI from doing).
        let mut body = nmi_apply(&p2, true, json!({"phase": "Succeeded"}));
        body["metadata"]["labels"] = json!({"changed": "through-status"});
        let after = pods
            .patch_status(
                "p2",
                &PatchParams::apply("chart-test-admin").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("the admin is not restricted");
        assert_eq!(
            after.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded")
        );
        assert_eq!(
            after
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("changed"))
                .map(String::as_str),
            Some("through-status")
        );

        // Cluster-scoped objects leave the (per-binary) shared server as they came.
        let mut delete = server.kubectl().expect("kubectl");
        delete
            .args(["delete", "--ignore-not-found", "--wait=false", "-f"])
            .arg(&file);
        ok(delete);
    });
}
