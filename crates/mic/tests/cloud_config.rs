//! MIC configured as upstream's users configure it: the AKS default (the cluster's user-assigned
//! managed identity, `useManagedIdentityExtension` with `userAssignedIdentityID`), a certificate
//! service principal (`aadClientCertPath`, a PKCS#12 file), and an Azure Stack cloud whose
//! endpoints come from a go-autorest environment file. Against a real kube-apiserver and the
//! Azure emulator; the first two run the `mic` binary itself.

#[allow(dead_code)]
mod support;

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use api::AssignmentState::Assigned;
use arm::{
    ArmClient, RetryPolicy,
    cloud::{CloudConfig, ENVIRONMENT_FILEPATH, EndpointOverrides},
};
use azure_emulator::{
    EndpointKind, World,
    world::{IdentitySpec, ServicePrincipalSpec},
};
use mic::{controller, metrics::Metrics};
use serde_json::{Value, json};
use support::{Cluster, SUB, TENANT, resource_id, settings, world};

const LIMIT: Duration = Duration::from_secs(30);
// MIC_IDENTITY_CLIENT: the cluster's own identity (AKS's "kubelet identity"), on the VM MIC runs
// on. MIC_CERT_CLIENT: an app registration whose certificate is the one of `examples/pkcs12/`.
use fixtures::ids::{MIC_CERT_CLIENT, MIC_IDENTITY_CLIENT};
const PKCS12_PASSWORD: &str = "pod-identity-test";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/pkcs12")
        .join(name)
}

/// The MIC tests' world, plus MIC's own managed identity on `vm-c` (node c-0) and its certificate
/// service principal, both allowed to assign id1..id4 (and only they, with the secret app `mic`).
fn cloud_world() -> World {
    let mut w = world(&BTreeMap::new());
    let assignable: Vec<String> = (1..=4).map(|n| format!("id{n}")).collect();
    w.identities.push(IdentitySpec {
        name: "mic-identity".into(),
        subscription: None,
        resource_group: "identity-rg".into(),
        client_id: MIC_IDENTITY_CLIENT.into(),
        principal_id: fixtures::ids::principal_id(0xe),
        may_assign: assignable.clone(),
        federated_credentials: vec![],
        tags: Default::default(),
    });
    let vm = w.vms.iter_mut().find(|v| v.name == "vm-c").expect("vm-c");
    vm.user_assigned.push("mic-identity".into());
    w.service_principals.push(ServicePrincipalSpec {
        name: "mic-cert".into(),
        client_id: MIC_CERT_CLIENT.into(),
        object_id: None,
        client_secret: None,
        certificate_pem: Some(
            std::fs::read_to_string(fixture("sp-cert.pem")).expect("the fixture certificate"),
        ),
        certificate_file: None,
        may_assign: assignable,
        federated_credentials: vec![],
    });
    w
}

/// An identity, a binding, and a pod on a-0 (scale set ss-a) that uses them.
async fn bound_pod(c: &Cluster, ns: &str) {
    c.namespace(ns).await;
    c.identity(ns, "id1", 1).await;
    c.binding(ns, "b1", "id1", "app").await;
    c.pod(ns, "app", "a-0", Some("app")).await;
}

/// The `mic` binary's arguments: `cloud` as its azure.json, the emulator's endpoints and CA, and
/// the IMDS of node c-0 (where MIC's pod would run).
fn mic_args(c: &Cluster, dir: &Path, cloud: &Value, name: &str) -> Vec<String> {
    let config = dir.join(format!("{name}.json"));
    std::fs::write(&config, cloud.to_string()).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, c.azure.ca_cert_pem().unwrap()).unwrap();
    vec![
        format!("--kubeconfig={}", c.server.kubeconfig().display()),
        format!("--cloudconfig={}", config.display()),
        format!("--arm-endpoint={}", c.azure.arm_url()),
        format!("--aad-endpoint={}", c.azure.entra_url()),
        format!(
            "--imds-endpoint={}",
            c.azure.imds_url("c-0").expect("c-0 has an IMDS")
        ),
        format!("--ca-file={}", ca.display()),
        format!("--leader-election-instance={name}"),
        "--http-probe-port=0".into(),
        "--prometheus-port=0".into(),
        "--arm-poll-interval=200ms".into(),
    ]
}

/// The `mic` binary, running as [`mic_args`] say.
fn mic_binary(c: &Cluster, dir: &Path, cloud: &Value, name: &str) -> testbed::Supervised {
    let args = mic_args(c, dir, cloud, name);
    testbed::Supervised::spawn(
        name,
        Path::new(env!("CARGO_BIN_EXE_mic")),
        &args,
        &dir.join(format!("{name}.log")),
    )
    .unwrap()
}

fn token_calls(c: &Cluster, endpoint: EndpointKind) -> usize {
    c.azure
        .admin()
        .calls()
        .iter()
        .filter(|call| call.endpoint == endpoint && call.path.contains("token") && call.status == 200)
        .count()
}

/// AKS's default: MIC authenticates with the cluster's user-assigned identity, through the IMDS
/// of the VM it runs on, and assigns the pod's identity with it.
#[tokio::test]
async fn the_managed_identity_of_the_cloud_config_assigns_identities() {
    let c = Cluster::start(cloud_world()).await;
    bound_pod(&c, "mi").await;
    let dir = tempfile::tempdir().unwrap();
    let cloud = json!({
        "cloud": "AzurePublicCloud", "tenantId": TENANT, "subscriptionId": SUB, "resourceGroup": "node-rg",
        "vmType": "vmss", "useManagedIdentityExtension": true, "userAssignedIdentityID": MIC_IDENTITY_CLIENT,
        "aadClientId": "msi", "aadClientSecret": "msi"
    });
    let mut mic = mic_binary(&c, dir.path(), &cloud, "mic-mi");
    c.wait_assigned(&[("app-mi-id1", Assigned)], LIMIT).await;
    assert!(mic.is_running(), "{}", mic.log_tail());
    assert_eq!(c.on_node("a-0"), [resource_id(1)]);
    // Its ARM token came from IMDS, not from Entra.
    assert!(token_calls(&c, EndpointKind::Imds) >= 1);
    assert_eq!(token_calls(&c, EndpointKind::Entra), 0);
}

/// A service principal with a certificate: the PKCS#12 file of `aadClientCertPath`, opened with
/// `aadClientCertPassword`, signs the client assertion Entra verifies.
#[tokio::test]
async fn a_certificate_service_principal_assigns_identities() {
    let c = Cluster::start(cloud_world()).await;
    bound_pod(&c, "cert").await;
    let dir = tempfile::tempdir().unwrap();
    let cloud = |password: &str| {
        json!({
            "cloud": "AzurePublicCloud", "tenantId": TENANT, "subscriptionId": SUB, "resourceGroup": "node-rg",
            "vmType": "vmss", "useManagedIdentityExtension": false, "aadClientId": MIC_CERT_CLIENT,
            "aadClientCertPath": fixture("sp-aes.p12"), "aadClientCertPassword": password
        })
    };

    // A wrong password stops MIC at start-up, saying which setting to fix.
    let wrong = tokio::process::Command::new(env!("CARGO_BIN_EXE_mic"))
        .args(mic_args(&c, dir.path(), &cloud("nope"), "mic-wrong"))
        .kill_on_drop(true)
        .output();
    let wrong = tokio::time::timeout(LIMIT, wrong)
        .await
        .expect("MIC exits when its certificate cannot be opened")
        .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(
        stderr.contains("aadClientCertPassword") && stderr.contains("wrong"),
        "{stderr}"
    );

    let mut mic = mic_binary(&c, dir.path(), &cloud(PKCS12_PASSWORD), "mic-cert");
    c.wait_assigned(&[("app-cert-id1", Assigned)], LIMIT).await;
    assert!(mic.is_running(), "{}", mic.log_tail());
    assert_eq!(c.on_node("a-0"), [resource_id(1)]);
    assert!(token_calls(&c, EndpointKind::Entra) >= 1);
}

/// `"cloud": "AzureStackCloud"`: ARM, Entra and the token audience all come from the environment
/// file `AZURE_ENVIRONMENT_FILEPATH` names, with no endpoint flags. The file's `tokenAudience` is
/// the audience ARM accepts; upstream asked for the ARM endpoint URL instead, which ARM refused.
#[tokio::test]
async fn an_azure_stack_environment_file_selects_every_endpoint() {
    let c = Cluster::start(cloud_world()).await;
    bound_pod(&c, "stack").await;
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("azurestack.json");
    std::fs::write(
        &env_file,
        json!({
            "name": "AzureStackCloud",
            "resourceManagerEndpoint": format!("{}/", c.azure.arm_url()),
            "activeDirectoryEndpoint": format!("{}/", c.azure.entra_url()),
            "tokenAudience": "https://management.azure.com/",
            "serviceManagementEndpoint": "https://management.azure.com/",
        })
        .to_string(),
    )
    .unwrap();
    let cloud = CloudConfig::parse(
        &json!({
            "cloud": "azurestackcloud", "tenantId": TENANT, "subscriptionId": SUB, "resourceGroup": "node-rg",
            "aadClientId": support::MIC_CLIENT_ID, "aadClientSecret": "mic-secret"
        })
        .to_string(),
    )
    .unwrap();
    let path = env_file.display().to_string();
    let connection = cloud
        .connection(&EndpointOverrides::default(), "http://169.254.169.254", |k| {
            (k == ENVIRONMENT_FILEPATH).then(|| path.clone())
        })
        .unwrap();
    assert_eq!(connection.endpoint, format!("{}/", c.azure.arm_url()));
    let ca = reqwest::Certificate::from_pem(c.azure.ca_cert_pem().unwrap().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let retry = RetryPolicy {
        base: Duration::from_millis(100),
        poll_interval: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let metrics = Arc::new(Metrics::default());
    let arm = ArmClient::connect(http, connection, retry, metrics.clone());
    let (ready_tx, _ready_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = c.client.clone();
    let mic = tokio::spawn(async move {
        let shutdown = async {
            let _ = stop_rx.await;
        };
        controller::run(client, arm, settings(), metrics, ready_tx, shutdown).await
    });
    c.wait_assigned(&[("app-stack-id1", Assigned)], LIMIT).await;
    assert_eq!(c.on_node("a-0"), [resource_id(1)]);
    let _ = stop_tx.send(());
    mic.await.unwrap().expect("MIC ended cleanly");
}
