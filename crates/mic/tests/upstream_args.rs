//! Upstream's deployments start our `mic` (issue 14 §2): the binary runs with the exact argument
//! list and environment of upstream v1.8.17's `deploy/infra/deployment-rbac.yaml` and of its Helm
//! chart with every optional argument on, `/etc/kubernetes/azure.json` (the hostPath both mount)
//! holding the emulator's service principal, against the real test kube-apiserver and the Azure
//! emulator. Each gets past start-up, serves the liveness probe upstream's manifest points at,
//! `/readyz` (leader, caches synced) and `/metrics`, holds the Lease its flags name, and assigns a
//! pod's identity on the emulator's VM; flags it does differently are one warning line each. The
//! lists are `examples/upstream-args/*.pod`; each container runs in a network namespace of its own
//! (see `examples/upstream-args/kubelet.rs`). Only the emulator's ARM and Entra endpoints and CA
//! are appended (our own flags), since azure.json cannot name them for the public cloud.

#[path = "../../../examples/upstream-args/kubelet.rs"]
mod kubelet;

use std::{net::SocketAddr, time::Duration};

use api::{AssignmentState, AzureAssignedIdentity};
use azure_emulator::{Emulator, RunningEmulator, World};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Namespace};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use kubelet::{Harness, Pod, PodMeta};
use serde_json::{Value, json};
use testbed::ApiServer;

use fixtures::ids::{
    APP_IDENTITY_CLIENT as CLIENT, APP_IDENTITY_PRINCIPAL as PRINCIPAL, MIC_CLIENT as MIC_CLIENT_ID,
    SUBSCRIPTION as SUB, TENANT,
};

const MIC_SECRET: &str = "mic-secret";
const VM: &str = "vm-upstream";
const NODE: &str = "aks-upstream-0";

fn world() -> World {
    World::from_yaml(&format!(
        r#"
tenant_id: {TENANT}
subscriptions: [{{id: {SUB}, resource_groups: [node-rg, identity-rg]}}]
identities: [{{name: app-identity, resource_group: identity-rg, client_id: {CLIENT}, principal_id: {PRINCIPAL}, tags: {{pod-identity-namespaces: "*"}}}}]
vms: [{{name: {VM}, resource_group: node-rg, node: {NODE}, imds: "127.0.0.1:0"}}]
service_principals: [{{name: mic, client_id: {MIC_CLIENT_ID}, client_secret: {MIC_SECRET}, may_assign: [app-identity]}}]
"#
    ))
    .unwrap()
}

/// An AKS azure.json for the emulator's tenant, subscription and MIC service principal.
fn azure_json() -> String {
    json!({
        "cloud": "AzurePublicCloud", "tenantId": TENANT, "subscriptionId": SUB,
        "aadClientId": MIC_CLIENT_ID, "aadClientSecret": MIC_SECRET,
        "resourceGroup": "node-rg", "vmType": "standard", "useManagedIdentityExtension": false
    })
    .to_string()
}

async fn create(client: &Client, ns: Option<&str>, object: Value) {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), object["apiVersion"].as_str().unwrap().to_owned()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, object["kind"].as_str().unwrap());
    let resource = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let obj: DynamicObject = serde_json::from_value(object).unwrap();
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating {gvk:?}: {e}"),
    }
}

/// A pod labelled for a binding to the emulator's identity, running on the emulator's VM.
async fn bound_pod(client: &Client, ns: &str) {
    create(client, Some(ns), json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
        "metadata": {"name": "app-identity"},
        "spec": {"type": 0, "clientID": CLIENT, "resourceID": format!("/subscriptions/{SUB}/resourceGroups/identity-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app-identity")}}))
    .await;
    create(
        client,
        Some(ns),
        json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
        "metadata": {"name": "app-binding"}, "spec": {"azureIdentity": "app-identity", "selector": "app"}}),
    )
    .await;
    create(
        client,
        Some(ns),
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "labels": {"aadpodidbinding": "app"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "app"}]}}),
    )
    .await;
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .patch_status(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.244.0.10"}})),
        )
        .await
        .unwrap();
}

async fn assigned(client: &Client, ns: &str) -> bool {
    Api::<AzureAssignedIdentity>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|a| a.status.as_ref().and_then(|s| s.status) == Some(AssignmentState::Assigned))
}

fn start(server: &ApiServer, emulator: &RunningEmulator, case: &str, namespace: &str) -> Pod {
    let spec = kubelet::spec(case);
    let api = SocketAddr::from(([127, 0, 0, 1], server.port()));
    let meta = PodMeta {
        name: format!("mic-{}", case.replace('.', "-")),
        namespace: namespace.to_owned(),
        node: "aks-system-0".to_owned(),
        ip: "10.244.1.5".to_owned(),
    };
    Pod::start(
        env!("CARGO_BIN_EXE_mic").as_ref(),
        &spec,
        &meta,
        Harness {
            files: vec![("/etc/kubernetes/azure.json", azure_json())],
            env: vec![("KUBECONFIG", server.kubeconfig().display().to_string())],
            args: vec![
                format!("--arm-endpoint={}", emulator.arm_url()),
                format!("--aad-endpoint={}", emulator.entra_url()),
                format!("--ca-file={}", emulator.ca_cert_path().unwrap().display()),
            ],
            forwards: vec![
                (api, api),
                (emulator.arm_addr(), emulator.arm_addr()),
                (emulator.entra_addr(), emulator.entra_addr()),
            ],
        },
    )
}

/// Starts `case`, checks its probes, Lease, an assignment and its warnings, then stops it.
async fn starts_and_assigns(
    server: &ApiServer,
    emulator: &RunningEmulator,
    case: &str,
    namespace: &str,
    lease: (&str, &str, &str),
    prometheus_port: u16,
    warnings: &[&str],
) {
    let client = server.client().await.unwrap();
    let spec = kubelet::spec(case);
    let (probe_port, probe_path) = spec.liveness.clone();
    let pod = start(server, emulator, case, namespace);
    pod.wait_until("upstream's liveness probe passes", 60, || {
        pod.get(probe_port, &probe_path, &[]).map(|r| r.0) == Some(200)
    });
    pod.wait_until("MIC leads with synced caches", 60, || {
        pod.get(probe_port, "/readyz", &[]) == Some((200, "leader".to_owned()))
    });
    assert_eq!(
        pod.get(prometheus_port, "/metrics", &[]).map(|r| r.0),
        Some(200),
        "{case}: /metrics"
    );
    let (lease_ns, lease_name, holder) = lease;
    let held = Api::<Lease>::namespaced(client.clone(), lease_ns)
        .get(lease_name)
        .await
        .unwrap_or_else(|e| panic!("{case}: Lease {lease_ns}/{lease_name}: {e}"));
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(holder),
        "{case}: the Lease's holder"
    );

    bound_pod(&client, namespace).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !assigned(&client, namespace).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{case}: the pod's identity was never Assigned; MIC's log:\n{}",
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let log = pod.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("upstream flag ")).collect();
    assert_eq!(lines.len(), warnings.len(), "{case}: warnings:\n{log}");
    for (line, flag) in lines.iter().zip(warnings) {
        assert!(line.contains(&format!("upstream flag {flag}:")), "{case}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_deployment_rbac_yaml_and_chart_start_mic() {
    kubelet::require_prerequisites();
    // MIC watches every namespace, so this binary's server is for these MICs alone, one at a time.
    let server = ApiServer::shared();
    let emulator = Emulator::start(world()).await.unwrap();
    let client = server.client().await.unwrap();
    create(&client, None, json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE},
        "spec": {"providerID": format!("azure:///subscriptions/{SUB}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachines/{VM}")}}))
    .await;

    // deployment-rbac.yaml deploys MIC in `default`; the Lease is in MIC_POD_NAMESPACE, held by
    // HOSTNAME (the pod's name).
    starts_and_assigns(
        server,
        &emulator,
        "deployment-rbac.mic",
        "default",
        ("default", "aad-pod-identity-mic", "mic-deployment-rbac-mic"),
        8888,
        &[],
    )
    .await;

    // The chart's release namespace, which its values also name for the Lease.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "pi-upstream-chart"}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    starts_and_assigns(
        server,
        &emulator,
        "chart-all-args.mic",
        "pi-upstream-chart",
        (
            "pi-upstream-chart",
            "aad-pod-identity-mic-chart",
            "mic-upstream-chart",
        ),
        8889,
        &[
            "--syncRetryDuration",
            "--createDeleteBatch",
            "--clientQps",
            "--update-user-msi-max-retry",
            "--update-user-msi-retry-interval",
        ],
    )
    .await;
}
