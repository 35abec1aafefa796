//! `kubectl pod-identity explain` and `check` against a real kube-apiserver and the Azure
//! emulator, one test per way the chain breaks: each asserts the ✘ and the fix a user reads.

mod support;

use api::AssignmentState::Assigned;
use serde_json::json;
use support::{Cluster, MIC_CLIENT_ID, facts, fix, resource_id};

#[tokio::test]
async fn no_binding_with_the_pod_s_selector() {
    let c = Cluster::start().await;
    c.namespace("shop").await;
    c.nmi_everywhere().await;
    c.identity("shop", "app-id", 1).await;
    c.binding("shop", "other", "app-id", "other").await;
    c.pod("shop", "web", "n-0", json!({"aadpodidbinding": "app"}))
        .await;

    let run = c.plugin(&["explain", "web", "-n", "shop", "-o", "json"]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.failed(), ["bindings"]);
    let b = run.link("bindings");
    assert_eq!(b["title"], "no AzureIdentityBinding has selector app");
    assert!(
        facts(&b).contains("selectors of the bindings in namespace shop: other"),
        "{b}"
    );
    assert!(
        fix(&b).contains("create an AzureIdentityBinding in namespace shop with selector: app"),
        "{b}"
    );
    // The pod's own facts come first, as read.
    let pod = facts(&run.link("pod"));
    assert!(
        pod.contains("node: n-0") && pod.contains("IP: 10.244.0.10") && pod.contains("service account: app")
    );

    // The text form says the same, with the marks.
    let text = c.plugin(&["explain", "web", "--namespace", "shop"]).await;
    assert_eq!(text.code, 1);
    assert!(
        text.stdout
            .contains("✘ no AzureIdentityBinding has selector app\n"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("✔ pod shop/web\n"), "{}", text.stdout);
}

#[tokio::test]
async fn a_binding_of_another_namespace_names_the_namespaced_rule() {
    let c = Cluster::start().await;
    c.namespace("shop").await;
    c.namespace("rogue").await;
    c.nmi_everywhere().await;
    c.identity("shop", "app-id", 1).await;
    c.binding("shop", "app-binding", "app-id", "app").await;
    c.pod("rogue", "rogue", "n-1", json!({"aadpodidbinding": "app"}))
        .await;

    let run = c.plugin(&["explain", "rogue", "-n", "rogue", "-o", "json"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.failed(), ["bindings"]);
    let b = run.link("bindings");
    assert_eq!(
        b["title"],
        "no binding in namespace rogue selects aadpodidbinding=app"
    );
    assert!(
        facts(&b)
            .contains("shop/app-binding in other namespaces have selector app, but bindings are namespaced"),
        "{b}"
    );
    assert!(
        fix(&b).starts_with(
            "a binding matches only pods of its own namespace: create an AzureIdentity and an AzureIdentityBinding with selector app in namespace rogue"
        ),
        "{b}"
    );
    // With MIC's and NMI's --allow-cross-namespace, that binding would select it.
    let wide = c
        .plugin(&[
            "explain",
            "rogue",
            "-n",
            "rogue",
            "-o",
            "json",
            "--allow-cross-namespace",
        ])
        .await;
    assert_eq!(wide.link("bindings")["verdict"], "pass", "{}", wide.stdout);
}

#[tokio::test]
async fn an_excepted_pod_gets_the_node_s_identity() {
    let c = Cluster::start().await;
    c.namespace("shop").await;
    c.nmi_everywhere().await;
    c.apply(&json!({
        "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzurePodIdentityException",
        "metadata": {"name": "mic-exception", "namespace": "shop"},
        "spec": {"PodLabels": {"noaad": "true"}}
    }))
    .await;
    c.pod("shop", "agent", "n-0", json!({"noaad": "true"})).await;

    let run = c.plugin(&["explain", "agent", "-n", "shop", "-o", "json"]).await;
    assert_eq!(run.code, 1);
    let e = run.link("exceptions");
    assert_eq!(e["verdict"], "fail");
    assert_eq!(
        e["title"],
        "excepted by AzurePodIdentityException shop/mic-exception"
    );
    assert!(
        fix(&e).starts_with("NMI passes this pod's requests to the node's own identity, not a pod identity: remove the label noaad=true"),
        "{e}"
    );
}

/// MIC may not assign id2 ("Managed Identity Operator" missing): the AzureAssignedIdentity stays
/// Created, and `explain` names ARM's reason, MIC's Event and the `az` command; once the role is
/// granted, the whole chain holds.
#[tokio::test]
async fn an_assignment_arm_refused_names_the_role_to_grant() {
    let mut c = Cluster::start().await;
    c.namespace("shop").await;
    c.nmi_everywhere().await;
    c.identity("shop", "app-id", 2).await;
    c.binding("shop", "app-binding", "app-id", "app").await;
    c.start_mic().await;
    c.pod("shop", "web", "n-0", json!({"aadpodidbinding": "app"}))
        .await;

    let arm = c.arm_flags();
    let mut args = vec!["explain", "web", "-n", "shop", "-o", "json"];
    args.extend(arm.iter().map(String::as_str));
    let run = c
        .plugin_until(&args, |r| {
            r.code == 1 && facts(&r.link("assignment")).contains("reason: LinkedAuthorizationFailed")
        })
        .await;
    let a = run.link("assignment");
    assert_eq!(a["title"], "AzureAssignedIdentity shop/web-shop-app-id: Created");
    // ARM names MIC's principal by its object id, which `az role assignment create` takes.
    let message = facts(&a);
    let oid = message
        .split("with object id '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap_or_else(|| panic!("{message}"));
    assert_eq!(
        fix(&a),
        format!(
            "grant MIC's identity the \"Managed Identity Operator\" role on the identity: az role assignment create \
             --role \"Managed Identity Operator\" --assignee {oid} --scope {} (MIC retries on its own; nothing else to do)",
            resource_id(2)
        )
    );
    let vm = run.link("vm");
    assert_eq!(vm["verdict"], "fail", "{vm}");
    assert!(
        vm["title"]
            .as_str()
            .unwrap()
            .contains("virtualMachineScaleSets/ss does not carry the identity")
    );
    assert_eq!(run.failed(), ["assignment", "vm"]);
    // MIC's Event arrives in the background, after the status.
    let run = c
        .plugin_until(&args, |r| {
            facts(&r.link("assignment")).contains("last MIC Event: Warning IdentityAssignmentFailed")
        })
        .await;
    assert!(facts(&run.link("assignment")).contains("LinkedAuthorizationFailed"));

    c.azure.admin().grant(MIC_CLIENT_ID, "id2").unwrap();
    let run = c.plugin_until(&args, |r| r.code == 0).await;
    assert_eq!(run.link("vm")["verdict"], "pass");
    assert_eq!(run.json()["ok"], true);
    c.stop_mic().await;
}

#[tokio::test]
async fn an_identity_missing_from_the_scale_set() {
    let c = Cluster::start().await;
    c.namespace("shop").await;
    c.nmi_everywhere().await;
    c.identity("shop", "app-id", 1).await;
    c.binding("shop", "app-binding", "app-id", "app").await;
    c.pod("shop", "web", "n-0", json!({"aadpodidbinding": "app"}))
        .await;
    // MIC marked it Assigned; the scale set does not carry it (removed behind MIC's back).
    c.assigned("shop", "web", "app-id", "n-0", Assigned).await;

    let mut args = vec!["explain", "web", "-n", "shop", "-o", "json"];
    let arm = c.arm_flags();
    args.extend(arm.iter().map(String::as_str));
    let run = c.plugin(&args).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.failed(), ["vm"]);
    let vm = run.link("vm");
    assert!(
        fix(&vm).starts_with("MIC marked it Assigned, but the VM or scale set no longer carries it"),
        "{vm}"
    );
    assert!(
        fix(&vm).contains("aadpodidentity.k8s.io/identity-missing"),
        "{vm}"
    );

    // Without credentials, the VM is not checked, and the plugin says why.
    let run = c.plugin(&["explain", "web", "-n", "shop", "-o", "json"]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    let vm = run.link("vm");
    assert_eq!(vm["verdict"], "unchecked");
    assert!(facts(&vm).contains("give --cloud-config"), "{vm}");
}

#[tokio::test]
async fn nmi_not_ready_on_the_pod_s_node() {
    let c = Cluster::start().await;
    c.namespace("shop").await;
    c.nmi("n-0", false).await;
    c.identity("shop", "app-id", 1).await;
    c.binding("shop", "app-binding", "app-id", "app").await;
    c.pod("shop", "web", "n-0", json!({"aadpodidbinding": "app"}))
        .await;
    c.assigned("shop", "web", "app-id", "n-0", Assigned).await;

    let run = c.plugin(&["explain", "web", "-n", "shop", "-o", "json"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.failed(), ["nmi"]);
    let nmi = run.link("nmi");
    assert_eq!(nmi["title"], "NMI kube-system/nmi-n-0 on node n-0 is not Ready");
    assert!(
        facts(&nmi).contains("ContainersNotReady: containers with unready status: [nmi]"),
        "{nmi}"
    );
    assert!(fix(&nmi).contains("kubectl logs -n kube-system nmi-n-0"), "{nmi}");

    // `check` names both nodes: one NMI not Ready, one with none.
    let check = c.plugin(&["check", "-o", "json"]).await;
    assert_eq!(check.code, 1);
    let nmi = check.link("nmi");
    assert_eq!(nmi["title"], "NMI not serving on 2 of 2 node(s)");
    assert!(
        facts(&nmi).contains("n-0: kube-system/nmi-n-0 not Ready"),
        "{nmi}"
    );
    assert!(facts(&nmi).contains("n-1: no NMI pod"), "{nmi}");
    assert_eq!(check.link("crds")["verdict"], "pass");
    // No MIC ever ran here: no Lease.
    assert!(
        check.link("mic")["title"]
            .as_str()
            .unwrap()
            .starts_with("no MIC has ever led")
    );
}

#[tokio::test]
async fn check_reads_the_cloud_config_and_finds_dangling_bindings() {
    let c = Cluster::start().await;
    c.namespace("shop").await;
    c.nmi_everywhere().await;
    c.binding("shop", "orphan", "nothing", "app").await;
    let mut args = vec!["check", "-o", "json"];
    let arm = c.arm_flags();
    args.extend(arm.iter().map(String::as_str));
    let run = c.plugin(&args).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.link("cloud-config")["verdict"], "pass", "{}", run.stdout);
    assert_eq!(run.link("nmi")["verdict"], "pass");
    let b = run.link("bindings");
    assert!(
        facts(&b).contains("shop/orphan → AzureIdentity \"nothing\", not in its namespace"),
        "{b}"
    );
    let bad = c
        .plugin(&["check", "-o", "json", "--cloud-config", "/nonexistent/azure.json"])
        .await;
    assert_eq!(bad.link("cloud-config")["verdict"], "fail");
}

#[tokio::test]
async fn usage_and_connection_errors_exit_2() {
    let c = Cluster::start().await;
    let run = c.plugin(&["explain"]).await;
    assert_eq!(run.code, 2, "a missing POD is a usage error");
    let run = c
        .plugin(&["check", "--kubeconfig", "/nonexistent/kubeconfig"])
        .await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("kubeconfig"), "{}", run.stderr);
    let run = c.plugin(&["check", "--context", "no-such-context"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = c
        .plugin(&["explain", "ghost", "-n", "default", "-o", "json"])
        .await;
    assert_eq!((run.code, run.failed()), (1, vec!["pod".to_owned()]));
}

/// A developer who may read only their namespace (and whose context names it): what they may
/// not read (nodes, NMI's pods in another namespace, bindings elsewhere) is unchecked and said
/// so, never an error; what they may read still gives the ✘ and the fix.
#[tokio::test]
async fn a_namespace_reader_gets_what_they_may_read() {
    let c = Cluster::start().await;
    c.namespace("shop").await;
    c.nmi_everywhere().await;
    c.identity("shop", "app-id", 1).await;
    c.binding("shop", "app-binding", "app-id", "app").await;
    c.pod("shop", "web", "n-0", json!({"aadpodidbinding": "app"}))
        .await;
    c.shop_reader("User", "dev").await;
    // The admin's kubeconfig, with a context acting as `dev` in namespace `shop`.
    let mut kc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.server.kubeconfig()).unwrap()).unwrap();
    let mut dev = kc["users"][0].clone();
    dev["name"] = json!("dev");
    dev["user"]["as"] = json!("dev");
    kc["users"].as_array_mut().unwrap().push(dev);
    kc["contexts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "dev", "context": {"cluster": "test", "user": "dev", "namespace": "shop"}}));
    let path = c.server.kubeconfig().with_file_name("kubeconfig-dev");
    std::fs::write(&path, kc.to_string()).unwrap();

    let run = c
        .plugin(&[
            "explain",
            "web",
            "--kubeconfig",
            path.to_str().unwrap(),
            "--context",
            "dev",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["subject"], "pod shop/web");
    assert_eq!(run.link("bindings")["verdict"], "pass");
    // No AzureAssignedIdentity (no MIC here): the ✘ a developer can act on.
    assert_eq!(run.failed(), ["assignment"]);
    let vm = run.link("vm");
    assert_eq!(vm["verdict"], "unchecked");
    assert!(facts(&vm).contains("the pod's Node could not be read"), "{vm}");
    let nmi = run.link("nmi");
    assert_eq!(nmi["verdict"], "unchecked");
    assert!(facts(&nmi).contains("NMI's pods could not be listed"), "{nmi}");
}
