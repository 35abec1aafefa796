//! What the mixed-version tests' Azure holds, and the files upstream's binaries read on a node:
//! azure.json, go-autorest's environment file for an Azure Stack cloud, and the kubelet's
//! defaults file.

use std::path::{Path, PathBuf};

use azure_emulator::{RunningEmulator, World};
use serde_json::json;

// CLIENT_ID and PRINCIPAL_ID are the walkthrough's identity's; MIC_CLIENT_ID is the cluster's
// service principal, which both MICs authenticate as.
pub use fixtures::ids::{
    APP_IDENTITY_CLIENT as CLIENT_ID, APP_IDENTITY_PRINCIPAL as PRINCIPAL_ID, MIC_CLIENT as MIC_CLIENT_ID,
    SUBSCRIPTION as SUB, TENANT,
};
/// The walkthrough's identity.
pub const IDENTITY: &str = "myapp-identity";
pub const MIC_SECRET: &str = "mic-secret-value";
/// The scale set behind the nodes, in the resource group azure.json names.
pub const SCALE_SET: &str = "aks-nodepool1-vmss";
pub const NODE_RG: &str = "mc-rg";

/// The Kubernetes name of node `i` (an AKS-style name; the scale set's instance `i`).
pub fn node_name(i: usize) -> String {
    format!("aks-nodepool1-vmss00000{i}")
}

/// The node's `spec.providerID`, as AKS sets it.
pub fn provider_id(i: usize) -> String {
    format!(
        "azure:///subscriptions/{SUB}/resourceGroups/{NODE_RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{SCALE_SET}/virtualMachines/{i}"
    )
}

/// The identity's ARM id, as `az identity create` prints it.
pub fn resource_id() -> String {
    fixtures::ids::resource_id(IDENTITY)
}

/// Whether the scale set has an identity of its own besides the pods'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeIdentity {
    /// A system-assigned identity, which IMDS hands to a caller that names none: what a pod
    /// reaching IMDS past NMI gets.
    SystemAssigned,
    /// None: the pods' identities are the scale set's only ones, as in the walkthrough.
    Without,
}

/// One scale set of `nodes` instances, the walkthrough's identity (not yet assigned), and the
/// cluster's service principal, which may assign it. ARM also accepts tokens for its own URL,
/// as Azure Stack Hub does, for upstream's MIC.
pub fn world(nodes: usize, node_identity: NodeIdentity) -> World {
    let instances: String = (0..nodes)
        .map(|i| {
            format!(
                "      - {{name: {SCALE_SET}_{i}, node: {}, imds: \"127.0.0.1:0\"}}\n",
                node_name(i)
            )
        })
        .collect();
    World::from_yaml(&format!(
        r#"
tenant_id: {TENANT}
subscriptions:
  - id: {SUB}
    resource_groups: [{NODE_RG}, identity-rg]
identities:
  - {{name: {IDENTITY}, resource_group: identity-rg, client_id: {CLIENT_ID}, principal_id: {PRINCIPAL_ID}, tags: {{pod-identity-namespaces: "*"}}}}
vmss:
  - name: {SCALE_SET}
    resource_group: {NODE_RG}
    system_assigned: {}
    instances:
{instances}
service_principals:
  - name: aks-cluster
    client_id: {MIC_CLIENT_ID}
    client_secret: {MIC_SECRET}
    may_assign: [{IDENTITY}]
arm:
  accept_endpoint_audience: true
tls:
  enabled: true
"#,
        node_identity == NodeIdentity::SystemAssigned
    ))
    .expect("the mixed-version world is valid")
}

/// The files MIC reads: azure.json (upstream's keys, as on an AKS node, with the Azure Stack
/// cloud name), and the go-autorest environment file that cloud name makes upstream's MIC read.
pub struct CloudFiles {
    pub azure_json: PathBuf,
    pub environment: PathBuf,
    pub ca: PathBuf,
}

impl CloudFiles {
    pub fn write(dir: &Path, azure: &RunningEmulator) -> Self {
        let azure_json = dir.join("azure.json");
        let config = json!({
            "cloud": "AzureStackCloud",
            "tenantId": TENANT,
            "aadClientId": MIC_CLIENT_ID,
            "aadClientSecret": MIC_SECRET,
            "subscriptionId": SUB,
            "resourceGroup": NODE_RG,
            "vmType": "vmss",
            "useManagedIdentityExtension": false,
        });
        std::fs::write(&azure_json, config.to_string()).expect("writing azure.json");
        // go-autorest's `azure.Environment` (AZURE_ENVIRONMENT_FILEPATH): upstream's MIC takes
        // ARM's base URL and the token audience from `resourceManagerEndpoint`, and Entra from
        // `activeDirectoryEndpoint`.
        let environment = dir.join("azurestackcloud.json");
        let env = json!({
            "name": "AzureStackCloud",
            "resourceManagerEndpoint": format!("{}/", azure.arm_url()),
            "activeDirectoryEndpoint": format!("{}/", azure.entra_url()),
            "serviceManagementEndpoint": format!("{}/", azure.arm_url()),
            "tokenAudience": format!("{}/", azure.arm_url()),
            "resourceIdentifiers": {"storage": "https://storage.azure.com/"},
        });
        std::fs::write(&environment, env.to_string()).expect("writing the environment file");
        let ca = azure
            .ca_cert_path()
            .expect("the emulator serves https")
            .to_path_buf();
        Self {
            azure_json,
            environment,
            ca,
        }
    }
}

/// The kubelet's defaults file (`/etc/default/kubelet` on AKS) that upstream's NMI greps for
/// `--network-plugin=kubenet` at start, refusing kubenet (and a missing file).
pub fn kubelet_defaults(dir: &Path) -> PathBuf {
    let path = dir.join("kubelet");
    std::fs::write(
        &path,
        "KUBELET_FLAGS=--address=0.0.0.0 --cloud-provider=external --network-plugin=cni --max-pods=110\n",
    )
    .expect("writing the kubelet defaults file");
    path
}
