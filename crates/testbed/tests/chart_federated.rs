//! The chart's federated mode (`nmi.federatedTenantID`): off by default, with none of its RBAC;
//! when set, NMI gets the flag and exactly the two grants it needs, which the real apiserver then
//! honours (`kubectl auth can-i` as NMI's service account).

mod chart_support;

use chart_support::{find, ok, parse, strings, template};
use serde_json::Value;
use testbed::ApiServer;

fn nmi_rules(docs: &[Value]) -> Vec<Value> {
    find(docs, "ClusterRole", "pod-identity-nmi")["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn grants(rules: &[Value], resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        strings(&r["resources"]).iter().any(|x| x == resource)
            && strings(&r["verbs"]).iter().any(|x| x == verb)
    })
}

fn nmi_args(docs: &[Value]) -> Vec<String> {
    strings(&find(docs, "DaemonSet", "pod-identity-nmi")["spec"]["template"]["spec"]["containers"][0]["args"])
}

#[test]
fn federated_mode_is_off_by_default_and_adds_only_its_two_grants_when_on() {
    let off = parse(&template("kube-system", &[]));
    assert!(!grants(&nmi_rules(&off), "serviceaccounts/token", "create"));
    assert!(!grants(&nmi_rules(&off), "serviceaccounts", "watch"));
    assert!(
        !nmi_args(&off)
            .iter()
            .any(|a| a.starts_with("--federated-tenant-id"))
    );

    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let on_yaml = template("kube-system", &[&format!("nmi.federatedTenantID={tenant}")]);
    let on = parse(&on_yaml);
    let rules = nmi_rules(&on);
    assert!(grants(&rules, "serviceaccounts/token", "create"));
    assert!(grants(&rules, "serviceaccounts", "list") && grants(&rules, "serviceaccounts", "watch"));
    assert!(
        !grants(&rules, "serviceaccounts", "get"),
        "no reading of tokens' secrets"
    );
    assert_eq!(rules.len(), nmi_rules(&off).len() + 2);
    assert!(nmi_args(&on).contains(&format!("--federated-tenant-id={tenant}")));

    // Installed on the real apiserver, the grants are what NMI can do, and no more.
    let server = ApiServer::shared();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let release_ns = rt.block_on(async { server.namespace("fed-rbac").await.expect("namespace").1 });
    let release = format!("fed{}", std::process::id());
    let mut cmd = chart_support::template_release(&release);
    cmd.args(["--namespace", &release_ns, "--set"])
        .arg(format!("nmi.federatedTenantID={tenant}"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("chart.yaml");
    std::fs::write(&file, ok(cmd)).expect("write");
    let mut apply = server.kubectl().expect("kubectl");
    apply
        .args(["apply", "--server-side", "--field-manager=chart-test", "-f"])
        .arg(&file);
    ok(apply);
    let nmi = format!("system:serviceaccount:{release_ns}:{release}-pod-identity-nmi");
    let can = |args: &[&str]| {
        let mut cmd = server.kubectl().expect("kubectl");
        cmd.args(["auth", "can-i", "--as", &nmi]).args(args);
        chart_support::run(cmd).status.code() == Some(0)
    };
    let results = [
        can(&[
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "default",
        ]),
        can(&["watch", "serviceaccounts", "--all-namespaces"]),
        !can(&["create", "serviceaccounts", "-n", "default"]),
        !can(&["patch", "serviceaccounts", "-n", "default"]),
        !can(&["get", "secrets", "-n", "default"]),
    ];
    let mut delete = server.kubectl().expect("kubectl");
    delete
        .args(["delete", "--ignore-not-found", "--wait=false", "-f"])
        .arg(&file);
    ok(delete);
    assert_eq!(results, [true; 5], "NMI's federated RBAC as installed");
}
