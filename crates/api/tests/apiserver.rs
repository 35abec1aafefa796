//! The CRDs against a real kube-apiserver: the seed's YAML applied verbatim with
//! kubectl, camelCase round trips, readable refusals and printer columns.

use std::{path::PathBuf, process::Output};

use api::{
    AssignmentState, AzureAssignedIdentity, AzureAssignedIdentitySpec, AzureAssignedIdentityStatus,
    AzureIdentity, AzureIdentityBinding, AzurePodIdentityException,
};
use fixtures::ids::TENANT;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use testbed::ApiServer;

const RESOURCE_ID: &str = "/subscriptions/9e7f8a2c-1b3d-4e5f-8a9b-0c1d2e3f4a5b/resourcegroups/myresourcegroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/myapp-identity";
const CLIENT_ID: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";

fn seed(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/seed")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The seed's placeholders, filled as a user following the walkthrough would.
fn fill(yaml: &str) -> String {
    yaml.replace("<the managed identity id returned previously>", RESOURCE_ID)
        .replace("<the managed identity clientId returned previously>", CLIENT_ID)
        .replace(
            "<your_managed_identity_name from the previous step>",
            "myapp-identity",
        )
        .replace("<your_managed_identity_name>", "myapp-identity")
        .replace("<your_app_selector_name>", "myapp")
}

fn kubectl(server: &ApiServer, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = server.kubectl().expect("kubectl is available");
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    child.wait_with_output().expect("kubectl runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "kubectl unexpectedly accepted it: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn seed_yaml_applies_verbatim_and_reads_back() {
    let server = ApiServer::shared();
    eprintln!("test kube-apiserver started in {:?}", server.started_in());
    let (client, ns) = server.namespace("seed").await.unwrap();

    ok(&kubectl(
        server,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&fill(&seed("aadpodidentity.yaml"))),
    ));
    ok(&kubectl(
        server,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&fill(&seed("aadpodidentitybinding.yaml"))),
    ));
    ok(&kubectl(
        server,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&seed("aad-identity-exception.yaml")),
    ));

    let id = Api::<AzureIdentity>::namespaced(client.clone(), &ns)
        .get("myapp-identity")
        .await
        .unwrap();
    assert_eq!(id.spec.resource_id(), Some(RESOURCE_ID));
    assert_eq!(id.spec.client_id(), Some(CLIENT_ID));
    assert_eq!(id.spec.identity_type(), Ok(api::IdentityType::UserAssignedMsi));

    let binding = Api::<AzureIdentityBinding>::namespaced(client.clone(), &ns)
        .get("myapp-azure-identity-binding")
        .await
        .unwrap();
    assert_eq!(binding.spec.azure_identity(), Some("myapp-identity"));
    assert_eq!(binding.spec.selector(), Some("myapp"));

    let exception = Api::<AzurePodIdentityException>::namespaced(client, &ns)
        .get("aad-identity-exception")
        .await
        .unwrap();
    assert_eq!(
        exception.spec.pod_labels().collect::<Vec<_>>(),
        vec![("noaad", "true")]
    );

    // Applying the same file again is a no-op, as users expect of `kubectl apply`.
    let again = ok(&kubectl(
        server,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&fill(&seed("aadpodidentity.yaml"))),
    ));
    assert!(again.contains("unchanged"), "{again}");
}

#[tokio::test]
async fn camel_case_objects_round_trip() {
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("camel").await.unwrap();
    let ids = Api::<AzureIdentity>::namespaced(client.clone(), &ns);
    let id: AzureIdentity = serde_json::from_value(json!({
        "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
        "metadata": {"name": "sp"},
        "spec": {
            "type": 1, "clientID": CLIENT_ID, "tenantID": TENANT,
            "clientPassword": {"name": "sp-secret", "namespace": ns},
            "auxiliaryTenantIDs": ["contoso.onmicrosoft.com"], "adEndpoint": "https://login.microsoftonline.com/",
        }
    }))
    .unwrap();
    let created = ids.create(&PostParams::default(), &id).await.unwrap();
    assert_eq!(created.spec, id.spec);
    let read = ids.get("sp").await.unwrap();
    assert_eq!(read.spec, id.spec);
    assert_eq!(read.spec.tenant_id(), Some(TENANT));
    assert_eq!(
        read.spec.client_password().and_then(|s| s.name.as_deref()),
        Some("sp-secret")
    );

    let bindings = Api::<AzureIdentityBinding>::namespaced(client, &ns);
    let b: AzureIdentityBinding = serde_json::from_value(json!({
        "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
        "metadata": {"name": "b"}, "spec": {"azureIdentity": "sp", "selector": "web"}
    }))
    .unwrap();
    bindings.create(&PostParams::default(), &b).await.unwrap();
    assert_eq!(bindings.get("b").await.unwrap().spec, b.spec);
}

/// Each invalid object is refused by the apiserver with a message a user can act on.
#[tokio::test]
async fn invalid_objects_are_refused_with_readable_messages() {
    let server = ApiServer::shared();
    let (_client, ns) = server.namespace("invalid").await.unwrap();
    let identity = |spec: &str| {
        format!(
            "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\nmetadata:\n  name: bad\nspec:\n{spec}"
        )
    };
    let cases = [
        (
            identity(&format!("  type: 0\n  clientID: {CLIENT_ID}\n")),
            "type 0 (user-assigned managed identity) needs resourceID",
        ),
        (
            identity(&format!("  type: 0\n  resourceID: /subscriptions/x/resourceGroups/rg/vm1\n  clientID: {CLIENT_ID}\n")),
            "resourceID must be a user-assigned identity's resource id",
        ),
        (
            identity(&format!("  type: 0\n  ResourceID: {RESOURCE_ID}\n  ClientID: not-a-guid\n")),
            "clientID must be a GUID",
        ),
        (
            identity(&format!("  type: 5\n  resourceID: {RESOURCE_ID}\n  clientID: {CLIENT_ID}\n")),
            "type must be 0 (user-assigned managed identity), 1 (service principal with a client secret) or 2",
        ),
        (identity(&format!("  type: 1\n  clientID: {CLIENT_ID}\n")), "types 1 and 2 (service principal) need tenantID, clientID and clientPassword"),
        (
            identity(&format!(
                "  type: 0\n  resourceID: {RESOURCE_ID}\n  ResourceID: {}\n  clientID: {CLIENT_ID}\n",
                RESOURCE_ID.replace("myapp-identity", "other")
            )),
            "resourceID and ResourceID are two spellings of one field and must not differ",
        ),
        (
            "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata:\n  name: bad\nspec:\n  azureIdentity: x\n".to_owned(),
            "selector is required",
        ),
        (
            "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata:\n  name: bad\nspec:\n  Selector: web\n".to_owned(),
            "azureIdentity is required",
        ),
        (
            "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata:\n  name: bad\nspec:\n  azureIdentity: a\n  AzureIdentity: b\n  selector: web\n".to_owned(),
            "azureIdentity and AzureIdentity are two spellings of one field and must not differ",
        ),
    ];
    for (yaml, message) in cases {
        let stderr = refused(&kubectl(server, &["apply", "-n", &ns, "-f", "-"], Some(&yaml)));
        assert!(
            stderr.contains(message),
            "expected {message:?} for\n{yaml}\ngot: {stderr}"
        );
    }
    // Nothing invalid was stored.
    let listed = ok(&kubectl(
        server,
        &[
            "get",
            "azureidentities,azureidentitybindings",
            "-n",
            &ns,
            "-o",
            "name",
        ],
        None,
    ));
    assert_eq!(listed.trim(), "", "an invalid object was stored");
}

#[tokio::test]
async fn printer_columns_show_in_kubectl_get() {
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("columns").await.unwrap();
    let camel = fill(&seed("aadpodidentity.yaml"))
        .replace("ResourceID", "resourceID")
        .replace("ClientID", "clientID");
    ok(&kubectl(server, &["apply", "-n", &ns, "-f", "-"], Some(&camel)));
    let binding = fill(&seed("aadpodidentitybinding.yaml"))
        .replace("AzureIdentity:", "azureIdentity:")
        .replace("Selector:", "selector:");
    ok(&kubectl(server, &["apply", "-n", &ns, "-f", "-"], Some(&binding)));

    let ids = ok(&kubectl(server, &["get", "azureidentity", "-n", &ns], None));
    let mut lines = ids.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "TYPE", "CLIENTID", "AGE"]
    );
    assert_eq!(
        lines
            .next()
            .unwrap()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>(),
        ["myapp-identity", "0", CLIENT_ID]
    );

    let bindings = ok(&kubectl(
        server,
        &["get", "azureidentitybinding", "-n", &ns],
        None,
    ));
    let mut lines = bindings.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "IDENTITY", "SELECTOR", "AGE"]
    );
    assert_eq!(
        lines
            .next()
            .unwrap()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>(),
        ["myapp-azure-identity-binding", "myapp-identity", "myapp"]
    );

    // An AzureAssignedIdentity as upstream's MIC v1.8.17 writes it: created with its status in
    // the body, which the apiserver keeps (there is no status subresource, as upstream had none).
    let id = Api::<AzureIdentity>::namespaced(client.clone(), &ns)
        .get("myapp-identity")
        .await
        .unwrap();
    let name = AzureAssignedIdentity::object_name("web-0", &ns, "myapp-identity");
    let mut aai = AzureAssignedIdentity::new(
        &name,
        AzureAssignedIdentitySpec {
            azure_identity_ref: Some(id),
            azure_binding_ref: None,
            pod: "web-0".into(),
            pod_namespace: ns.clone(),
            node_name: "aks-nodepool1-0".into(),
            replicas: None,
        },
    );
    aai.status = Some(AzureAssignedIdentityStatus {
        status: Some(AssignmentState::Created),
        available_replicas: Some(1),
        ..Default::default()
    });
    let aais = Api::<AzureAssignedIdentity>::namespaced(client, &ns);
    let created = aais.create(&PostParams::default(), &aai).await.unwrap();
    assert_eq!(
        created.state(),
        AssignmentState::Created,
        "the status sent with the create is kept: {:?}",
        created.status
    );
    // Upstream's MIC then JSON-patches `/status/status` on the main resource.
    ok(&kubectl(
        server,
        &[
            "patch",
            "azureassignedidentity",
            &name,
            "-n",
            &ns,
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/status/status","value":"Assigned"}]"#,
        ],
        None,
    ));
    assert_eq!(aais.get(&name).await.unwrap().state(), AssignmentState::Assigned);
    // Ours writes it with a merge patch of the main resource; the `/status` endpoint is gone.
    let status = json!({"status": {"status": "Created", "availableReplicas": 1,
        "reason": "LinkedAuthorizationFailed", "message": "assigning identity x failed: no role"}});
    let patched = aais
        .patch(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(patched.state(), AssignmentState::Created);
    let err = aais
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 404),
        "AzureAssignedIdentity has no status subresource: {err}"
    );

    let out = ok(&kubectl(
        server,
        &["get", "azureassignedidentity", "-n", &ns],
        None,
    ));
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "POD",
            "NAMESPACE",
            "IDENTITY",
            "NODE",
            "STATUS",
            "REASON",
            "AGE"
        ]
    );
    assert_eq!(
        lines
            .next()
            .unwrap()
            .split_whitespace()
            .take(7)
            .collect::<Vec<_>>(),
        [
            name.as_str(),
            "web-0",
            ns.as_str(),
            "myapp-identity",
            "aks-nodepool1-0",
            "Created",
            "LinkedAuthorizationFailed"
        ]
    );
    // `-o wide` adds the message.
    let wide = ok(&kubectl(
        server,
        &["get", "azureassignedidentity", "-n", &ns, "-o", "wide"],
        None,
    ));
    assert!(wide.lines().next().unwrap().ends_with("MESSAGE"), "{wide}");
    assert!(wide.contains("assigning identity x failed: no role"), "{wide}");

    // A status outside Created/Assigned/Unassigned is refused.
    let bad = json!({"status": {"status": "Bogus"}});
    let err = aais
        .patch(&name, &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Unsupported value: \"Bogus\""), "{err}");
}
