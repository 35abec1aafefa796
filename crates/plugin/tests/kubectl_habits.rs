//! What kubectl users reach for, against a real kube-apiserver: `-o yaml` as well as `-o json`,
//! and `--as`/`--as-group` to see the cluster as another user does.

mod support;

use serde_json::{Value, json};
use support::Cluster;

/// A pod in `shop` whose binding is missing (one ✘), and a Role that lets its readers run
/// `explain` there, bound to the group `shop-readers`.
async fn shop() -> Cluster {
    let c = Cluster::start().await;
    c.namespace("shop").await;
    c.nmi_everywhere().await;
    c.identity("shop", "app-id", 1).await;
    c.pod("shop", "web", "n-0", json!({"aadpodidbinding": "app"}))
        .await;
    c.shop_reader("Group", "shop-readers").await;
    c
}

#[tokio::test]
async fn yaml_and_json_carry_the_same_report() {
    let c = shop().await;
    let json_run = c.plugin(&["explain", "web", "-n", "shop", "-o", "json"]).await;
    let yaml_run = c.plugin(&["explain", "web", "-n", "shop", "--output=yaml"]).await;
    assert_eq!(
        (json_run.code, yaml_run.code),
        (1, 1),
        "{}\n{}",
        yaml_run.stdout,
        yaml_run.stderr
    );
    let from_yaml: Value =
        serde_saphyr::from_str(&yaml_run.stdout).unwrap_or_else(|e| panic!("{e}\n{}", yaml_run.stdout));
    assert_eq!(from_yaml, json_run.json());
    assert_eq!(from_yaml["subject"], "pod shop/web");
    assert_eq!(from_yaml["ok"], false);
    let bindings = from_yaml["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "bindings")
        .unwrap();
    assert_eq!(bindings["verdict"], "fail");
    assert!(
        bindings["fix"].as_str().unwrap().contains("selector: app"),
        "{bindings}"
    );

    // `check` speaks YAML too, with the same exit code as its text.
    let check = c.plugin(&["check", "-o", "yaml"]).await;
    let text = c.plugin(&["check"]).await;
    assert_eq!(check.code, text.code);
    let v: Value = serde_saphyr::from_str(&check.stdout).unwrap();
    assert_eq!(v["subject"], "pod identity in this cluster");
    assert!(v["links"].as_array().unwrap().iter().any(|l| l["id"] == "crds"));
}

#[tokio::test]
async fn as_a_user_without_rbac_the_api_server_s_refusal_names_them() {
    let c = shop().await;
    let run = c
        .plugin(&[
            "explain",
            "web",
            "-n",
            "shop",
            "--as",
            "nobody",
            "--request-timeout",
            "30s",
        ])
        .await;
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "no report on a refusal: {}", run.stdout);
    let e = &run.stderr;
    assert!(e.contains("reading pod shop/web is forbidden"), "{e}");
    assert!(e.contains("User \"nobody\" cannot get resource \"pods\""), "{e}");
    assert!(e.contains("kubectl auth can-i --list"), "{e}");
    assert!(
        !e.contains("ErrorResponse"),
        "the refusal, not its debug dump: {e}"
    );

    // The same user in the readers' group gets the report (what it may not read, unchecked).
    let run = c
        .plugin(&[
            "explain",
            "web",
            "-n",
            "shop",
            "-o",
            "json",
            "--as",
            "nobody",
            "--as-group",
            "shop-readers",
            "--as-group",
            "system:authenticated",
        ])
        .await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.failed(), ["bindings"]);
    assert_eq!(run.link("nmi")["verdict"], "unchecked");

    // Groups without a user: refused before asking, as kubectl does.
    let run = c.plugin(&["check", "--as-group", "shop-readers"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("need --as"), "{}", run.stderr);
}
