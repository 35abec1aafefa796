//! The Helm chart (`deploy/charts/pod-identity`) and the plain manifests rendered from it
//! (`deploy/manifests/`): `helm lint`, `helm template` in both modes, a server-side dry-run of
//! everything on the real test kube-apiserver, the committed files against what the chart renders
//! now, the properties an operator relies on (NMI's capabilities, MIC's replicas and Lease
//! RBAC, no cluster-wide Secret access by default, the uninstall hook), and the installed RBAC
//! checked with `kubectl auth can-i` as each service account.
//!
//! helm is the one `scripts/testbin.sh` builds from its Go module; it only lints and renders
//! (no repositories, no network).

mod chart_support;

use std::process::Command;

use chart_support::{chart, dry_run, find, helm, names, ok, parse, read, root, run, strings, template};
use serde_json::Value;
use testbed::{ApiServer, binaries};

/// Every rule of every ClusterRole (with its name).
fn cluster_rules(docs: &[Value]) -> Vec<(String, Value)> {
    docs.iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .flat_map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            d["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |r| (name.clone(), r))
        })
        .collect()
}

#[test]
fn helm_lint_passes_in_both_modes() {
    for mode in ["standard", "managed"] {
        let mut cmd = helm();
        cmd.arg("lint")
            .arg("--strict")
            .arg(chart())
            .arg("--set")
            .arg(format!("operationMode={mode}"));
        let out = ok(cmd);
        assert!(out.contains("0 chart(s) failed"), "helm lint ({mode}):\n{out}");
    }
}

#[test]
fn committed_crds_and_manifests_match_the_chart() {
    let crds = read(&root().join("deploy/crds/aadpodidentity.k8s.io.yaml"));
    let in_chart = read(&chart().join("crds/aadpodidentity.k8s.io.yaml"));
    assert!(
        crds == in_chart,
        "deploy/charts/pod-identity/crds/ differs from deploy/crds/aadpodidentity.k8s.io.yaml: run `make manifests`"
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("scripts/manifests.sh"))
        .arg(dir.path())
        .env("HELM", &binaries().expect("helm").helm);
    ok(cmd);
    let committed = root().join("deploy/manifests");
    let mut rendered: Vec<_> = std::fs::read_dir(dir.path())
        .expect("rendered manifests")
        .map(|e| e.expect("entry").file_name())
        .collect();
    rendered.sort();
    let mut on_disk: Vec<_> = std::fs::read_dir(&committed)
        .expect("deploy/manifests/ exists: run `make manifests`")
        .map(|e| e.expect("entry").file_name())
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk, rendered,
        "deploy/manifests/ holds other files than the chart renders: run `make manifests`"
    );
    for file in rendered {
        let now = read(&dir.path().join(&file));
        let then = read(&committed.join(&file));
        assert!(
            now == then,
            "deploy/manifests/{} is not what the chart renders now: run `make manifests` and commit the result",
            file.to_string_lossy()
        );
    }
    for must in ["deployment-rbac.yaml", "managed-mode-deployment.yaml"] {
        assert!(
            committed.join(must).is_file(),
            "deploy/manifests/{must} is missing"
        );
    }
}

#[test]
fn committed_manifests_pass_a_server_side_dry_run() {
    let dir = root().join("deploy/manifests");
    for file in [
        "deployment-rbac.yaml",
        "managed-mode-deployment.yaml",
        "nmi-cleanup.yaml",
        "managed-mode-nmi-cleanup.yaml",
    ] {
        dry_run(&dir.join(file));
    }
}

#[test]
fn the_chart_with_hooks_and_secret_roles_passes_a_server_side_dry_run() {
    let server = ApiServer::shared();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (release_ns, app_ns, sp_ns) = rt.block_on(async {
        let (_, a) = server.namespace("chart-release").await.expect("namespace");
        let (_, b) = server.namespace("chart-app").await.expect("namespace");
        let (_, c) = server.namespace("chart-sp").await.expect("namespace");
        (a, b, c)
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let cases = [
        (
            "standard",
            vec![
                format!("nmi.secretNamespaces[0]={app_ns}"),
                format!("nmi.secretNamespaces[1].namespace={sp_ns}"),
                "nmi.secretNamespaces[1].names[0]=sp-secret".to_owned(),
                "mic.immutableUserMSIs={00000000-0000-0000-0000-000000000001}".to_owned(),
                format!("exceptionNamespaces={{{app_ns}}}"),
            ],
        ),
        (
            "managed",
            vec![
                "operationMode=managed".to_owned(),
                "nmi.iptablesMode=legacy".to_owned(),
            ],
        ),
        (
            "secret-cloudconfig",
            vec![
                "mic.cloudConfig.secretName=azure-json".to_owned(),
                "logFormat=json".to_owned(),
            ],
        ),
    ];
    for (name, sets) in cases {
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let rendered = template(&release_ns, &sets);
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered).expect("writing the rendered chart");
        dry_run(&file);
        // The DaemonSet the uninstall Job applies is valid too.
        let docs = parse(&rendered);
        let cm = find(&docs, "ConfigMap", "pod-identity-nmi-cleanup");
        let ds = dir.path().join(format!("{name}-cleanup-ds.yaml"));
        std::fs::write(
            &ds,
            cm["data"]["daemonset.yaml"]
                .as_str()
                .expect("daemonset.yaml in the ConfigMap"),
        )
        .expect("write");
        dry_run(&ds);
    }
}

#[test]
fn nmi_runs_on_the_host_network_with_net_admin_only() {
    let docs = parse(&template("default", &[]));
    let ds = find(&docs, "DaemonSet", "pod-identity-nmi");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(
        strings(&sc["capabilities"]["add"]),
        ["NET_ADMIN"],
        "NMI's added capabilities"
    );
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    // Readiness is asked of this pod's own NMI process, on a socket in the pod's own emptyDir: the
    // probe port is shared with the NMI an update replaces, which would answer for the new pod.
    let socket = "/run/nmi/ready.sock";
    assert_eq!(
        strings(&c["readinessProbe"]["exec"]["command"]),
        ["/usr/local/bin/nmi", "probe", &format!("--ready-socket={socket}")]
    );
    assert!(strings(&c["args"]).contains(&format!("--ready-socket={socket}")));
    let run = c["volumeMounts"]
        .as_array()
        .expect("volume mounts")
        .iter()
        .find(|m| m["mountPath"] == "/run/nmi")
        .expect("the socket's directory is mounted");
    let run_volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == run["name"])
        .expect("its volume");
    assert!(
        run_volume["emptyDir"].is_object(),
        "the pod's own directory: {run_volume}"
    );
    assert!(strings(&c["args"]).contains(&"--node=$(NODE_NAME)".to_owned()));
    let vol = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "xtables-lock")
        .expect("xtables lock volume");
    assert_eq!(vol["hostPath"]["path"], "/run/xtables.lock");
    assert!(
        c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string()
    );

    // The legacy iptables backend opens a raw socket: NET_RAW is added for it, and PATH picks it.
    let docs = parse(&template("default", &["nmi.iptablesMode=legacy"]));
    let c = &find(&docs, "DaemonSet", "pod-identity-nmi")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        strings(&c["securityContext"]["capabilities"]["add"]),
        ["NET_ADMIN", "NET_RAW"]
    );
    assert!(c["env"].as_array().expect("env").iter().any(|e| {
        e["name"] == "PATH"
            && e["value"]
                .as_str()
                .is_some_and(|p| p.starts_with("/usr/lib/pod-identity/iptables-legacy:"))
    }));
}

#[test]
fn mic_has_two_replicas_probes_and_a_lease_role_only() {
    let docs = parse(&template("identity", &[]));
    let dep = find(&docs, "Deployment", "pod-identity-mic");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        pod["affinity"]["podAntiAffinity"].is_object(),
        "the replicas should prefer different nodes"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&c["securityContext"]["capabilities"]["drop"]), ["ALL"]);
    assert!(
        c["securityContext"]["capabilities"]["add"].is_null(),
        "MIC needs no capability"
    );
    assert!(strings(&c["args"]).contains(&"--cloudconfig=/etc/kubernetes/azure.json".to_owned()));
    assert!(
        c["env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "MIC_POD_NAMESPACE"),
        "the Lease's namespace comes from MIC_POD_NAMESPACE"
    );

    let role = find(&docs, "Role", "pod-identity-mic-leader-election");
    assert_eq!(role["metadata"]["namespace"], "identity");
    let rules = role["rules"].as_array().expect("rules");
    assert!(rules.iter().all(
        |r| strings(&r["apiGroups"]) == ["coordination.k8s.io"] && strings(&r["resources"]) == ["leases"]
    ));
    assert!(
        rules
            .iter()
            .any(|r| strings(&r["resourceNames"]) == ["aad-pod-identity-mic"]
                && strings(&r["verbs"]).contains(&"update".to_owned()))
    );
    let binding = find(&docs, "RoleBinding", "pod-identity-mic-leader-election");
    assert_eq!(binding["subjects"][0]["name"], "pod-identity-mic");
    // Leases are never granted cluster-wide.
    assert!(
        cluster_rules(&docs)
            .iter()
            .all(|(_, r)| !strings(&r["resources"]).contains(&"leases".to_owned()))
    );

    // The MIC exception matches MIC's pods by a label only they carry.
    let exc = find(&docs, "AzurePodIdentityException", "pod-identity-mic-exception");
    let label = &dep["spec"]["template"]["metadata"]["labels"]["aadpodidentity.k8s.io/mic-exception"];
    assert_eq!(
        &exc["spec"]["podLabels"]["aadpodidentity.k8s.io/mic-exception"],
        label
    );

    // With azure.json from a Secret, MIC runs as non-root.
    let docs2 = parse(&template("identity", &["mic.cloudConfig.secretName=azure-json"]));
    let pod = &find(&docs2, "Deployment", "pod-identity-mic")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "azure-json");
}

#[test]
fn no_cluster_wide_secret_access_by_default_and_roles_where_listed() {
    for sets in [&[][..], &["operationMode=managed"][..]] {
        let docs = parse(&template("default", sets));
        for (role, rule) in cluster_rules(&docs) {
            let res = strings(&rule["resources"]);
            assert!(
                !res.iter().any(|r| r == "secrets" || r == "*"),
                "ClusterRole {role} grants {res:?} with {sets:?}"
            );
        }
        assert!(
            !docs
                .iter()
                .any(|d| d["kind"] == "Role" && d["metadata"]["name"] == "pod-identity-nmi-secrets")
        );
    }
    let docs = parse(&template(
        "default",
        &[
            "nmi.secretNamespaces[0]=team-a",
            "nmi.secretNamespaces[1].namespace=team-b",
            "nmi.secretNamespaces[1].names[0]=sp",
        ],
    ));
    let roles: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" && d["metadata"]["name"] == "pod-identity-nmi-secrets")
        .collect();
    assert_eq!(roles.len(), 2);
    for role in &roles {
        assert_eq!(
            strings(&role["rules"][0]["verbs"]),
            ["get"],
            "NMI only GETs secrets"
        );
    }
    let team_b = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "team-b")
        .expect("team-b Role");
    assert_eq!(strings(&team_b["rules"][0]["resourceNames"]), ["sp"]);
    assert!(
        roles
            .iter()
            .any(|r| r["metadata"]["namespace"] == "team-a" && r["rules"][0]["resourceNames"].is_null())
    );
}

#[test]
fn managed_mode_is_nmi_only_without_assigned_identities() {
    let docs = parse(&template("kube-system", &["operationMode=managed"]));
    assert!(
        !docs.iter().any(|d| d["kind"] == "Deployment"),
        "no MIC in managed mode: {:?}",
        names(&docs)
    );
    assert!(!docs.iter().any(|d| d["kind"] == "AzurePodIdentityException"));
    let ds = find(&docs, "DaemonSet", "pod-identity-nmi");
    assert!(
        strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"])
            .contains(&"--operation-mode=managed".to_owned())
    );
    for (role, rule) in cluster_rules(&docs) {
        assert!(
            !strings(&rule["resources"]).contains(&"azureassignedidentities".to_owned()),
            "{role} reads AzureAssignedIdentities in managed mode"
        );
    }
    let committed = parse(&read(
        &root().join("deploy/manifests/managed-mode-deployment.yaml"),
    ));
    let crds: Vec<_> = committed
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| d["metadata"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(crds.len(), 3, "{crds:?}");
    assert!(!crds.iter().any(|c| c.starts_with("azureassignedidentities.")));
    let standard = parse(&read(&root().join("deploy/manifests/deployment-rbac.yaml")));
    assert_eq!(
        standard
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .count(),
        4
    );
    assert!(
        standard
            .iter()
            .all(|d| d["metadata"]["namespace"].is_null() || d["metadata"]["namespace"] == "default")
    );
}

#[test]
fn uninstall_hook_deletes_nmi_then_runs_nmi_cleanup_on_every_node() {
    let docs = parse(&template("default", &[]));
    let job = find(&docs, "Job", "pod-identity-nmi-cleanup");
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    let pod = &job["spec"]["template"]["spec"];
    let steps: Vec<Vec<String>> = pod["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .chain(pod["containers"].as_array().expect("containers"))
        .map(|c| strings(&c["args"]))
        .collect();
    assert_eq!(
        steps[0][..3],
        ["delete", "daemonset", "pod-identity-nmi"],
        "NMI goes first, or it re-adds the rules"
    );
    assert_eq!(steps[1][0], "apply");
    assert_eq!(steps[2][..2], ["rollout", "status"]);
    assert_eq!(steps[3][..3], ["delete", "daemonset", "pod-identity-nmi-cleanup"]);
    let cm = find(&docs, "ConfigMap", "pod-identity-nmi-cleanup");
    let ds = parse(cm["data"]["daemonset.yaml"].as_str().expect("daemonset.yaml"));
    let spec = &ds[0]["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let init = &spec["initContainers"][0];
    // The CNI gate's plugin is taken out with the rules (its directories mounted as NMI's are).
    assert_eq!(
        strings(&init["args"]),
        [
            "--cni-conf-dir=/etc/cni/net.d",
            "--cni-bin-dir=/opt/cni/bin",
            "--cni-ready-file=/run/pod-identity/interception-ready",
            "cleanup"
        ]
    );
    assert_eq!(
        strings(&init["securityContext"]["capabilities"]["add"]),
        ["NET_ADMIN"]
    );
    assert_eq!(
        spec["tolerations"][0]["operator"], "Exists",
        "cleanup must reach every node NMI ran on"
    );
    // The hook's own RBAC is namespaced and limited to DaemonSets.
    let role = find(&docs, "Role", "pod-identity-nmi-cleanup");
    assert!(
        role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .all(|r| strings(&r["resources"]) == ["daemonsets"])
    );
}

/// NMI installs the CNI gate by default, in the node paths the values name, mounted at the same
/// paths; `nmi.cni.enabled=false` makes it take the plugin out (`--cni-plugin=false`).
#[test]
fn nmi_installs_the_cni_gate_unless_opted_out() {
    let nmi = |sets: &[&str]| {
        let docs = parse(&template("default", sets));
        find(&docs, "DaemonSet", "pod-identity-nmi")["spec"]["template"]["spec"].clone()
    };
    let spec = nmi(&["nmi.cni.readyDir=/run/pi/"]);
    let args = strings(&spec["containers"][0]["args"]);
    for want in [
        "--cni-conf-dir=/etc/cni/net.d",
        "--cni-bin-dir=/opt/cni/bin",
        "--cni-ready-file=/run/pi/interception-ready",
    ] {
        assert!(args.contains(&want.to_owned()), "{want} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--cni-plugin=")), "{args:?}");
    for (name, path) in [
        ("cni-conf", "/etc/cni/net.d"),
        ("cni-bin", "/opt/cni/bin"),
        ("cni-ready", "/run/pi/"),
    ] {
        let vol = spec["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"));
        assert_eq!(vol["hostPath"]["path"], path);
        let mount = spec["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("mount {name}"));
        assert_eq!(
            mount["mountPath"], path,
            "the same path in the container as on the node"
        );
    }
    let off = strings(&nmi(&["nmi.cni.enabled=false"])["containers"][0]["args"]);
    assert!(off.contains(&"--cni-plugin=false".to_owned()), "{off:?}");
}

#[test]
fn contradictory_values_fail_to_render() {
    for sets in [
        &[
            "operationMode=managed",
            "allowCrossNamespace=true",
            "forceNamespaced=false",
        ][..],
        &["allowCrossNamespace=true"][..],
        &["operationMode=other"][..],
        &["nmi.iptablesMode=auto"][..],
    ] {
        let mut cmd = chart_support::template_release("pod-identity");
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        let out = run(cmd);
        assert!(!out.status.success(), "helm template accepted {sets:?}");
    }
    // Cross-namespace matching, when really wanted, reaches both components.
    let docs = parse(&template(
        "default",
        &["allowCrossNamespace=true", "forceNamespaced=false"],
    ));
    for (kind, name) in [
        ("Deployment", "pod-identity-mic"),
        ("DaemonSet", "pod-identity-nmi"),
    ] {
        let args = strings(&find(&docs, kind, name)["spec"]["template"]["spec"]["containers"][0]["args"]);
        assert!(
            args.contains(&"--allow-cross-namespace".to_owned()),
            "{kind} args: {args:?}"
        );
    }
}

/// `kubectl auth can-i VERB RESOURCE [-n NS] [--subresource=…]` as a service account.
fn can(server: &ApiServer, sa: &str, args: &[&str]) -> bool {
    let mut cmd = server.kubectl().expect("kubectl");
    cmd.args(["auth", "can-i", "--as"]).arg(sa).args(args);
    let out = run(cmd);
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "kubectl auth can-i {args:?} as {sa} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn installed_rbac_grants_what_each_component_needs_and_no_more() {
    let server = ApiServer::shared();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (release_ns, app_ns, other_ns) = rt.block_on(async {
        let (_, a) = server.namespace("rbac-release").await.expect("namespace");
        let (_, b) = server.namespace("rbac-app").await.expect("namespace");
        let (_, c) = server.namespace("rbac-other").await.expect("namespace");
        (a, b, c)
    });
    // A release name of its own: the ClusterRoles are cluster-scoped and the server is shared.
    let release = format!("rbac{}", std::process::id());
    let mut cmd = chart_support::template_release(&release);
    cmd.args(["--namespace", &release_ns, "--set"])
        .arg(format!("nmi.secretNamespaces[0]={app_ns}"));
    let rendered = ok(cmd);
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("chart.yaml");
    std::fs::write(&file, rendered).expect("write");
    let mut apply = server.kubectl().expect("kubectl");
    apply
        .args(["apply", "--server-side", "--field-manager=chart-test", "-f"])
        .arg(&file);
    ok(apply);

    let sa = |name: &str| format!("system:serviceaccount:{release_ns}:{release}-pod-identity-{name}");
    let (nmi, mic, hook) = (sa("nmi"), sa("mic"), sa("nmi-cleanup"));
    let lease = "leases.coordination.k8s.io/aad-pod-identity-mic";
    let checks: &[(&str, &[&str], bool)] = &[
        (&nmi, &["watch", "pods", "--all-namespaces"], true),
        (
            &nmi,
            &[
                "list",
                "azureassignedidentities.aadpodidentity.k8s.io",
                "--all-namespaces",
            ],
            true,
        ),
        (
            &nmi,
            &[
                "watch",
                "azurepodidentityexceptions.aadpodidentity.k8s.io",
                "--all-namespaces",
            ],
            true,
        ),
        (&nmi, &["get", "secrets", "-n", &app_ns], true),
        (&nmi, &["list", "secrets", "-n", &app_ns], false),
        (&nmi, &["get", "secrets", "-n", &other_ns], false),
        (&nmi, &["get", "secrets", "-n", &release_ns], false),
        (&nmi, &["create", "pods", "-n", &app_ns], false),
        (
            &nmi,
            &[
                "create",
                "azureassignedidentities.aadpodidentity.k8s.io",
                "-n",
                &app_ns,
            ],
            false,
        ),
        (&mic, &["watch", "nodes"], true),
        (&mic, &["list", "pods", "--all-namespaces"], true),
        (
            &mic,
            &[
                "create",
                "azureassignedidentities.aadpodidentity.k8s.io",
                "-n",
                &app_ns,
            ],
            true,
        ),
        (
            &mic,
            &[
                "patch",
                "azureassignedidentities.aadpodidentity.k8s.io",
                "-n",
                &app_ns,
            ],
            true,
        ),
        (&mic, &["create", "events.events.k8s.io", "-n", &app_ns], true),
        (&mic, &["update", lease, "-n", &release_ns], true),
        (
            &mic,
            &["create", "leases.coordination.k8s.io", "-n", &release_ns],
            true,
        ),
        (
            &mic,
            &[
                "update",
                "leases.coordination.k8s.io/kube-scheduler",
                "-n",
                &release_ns,
            ],
            false,
        ),
        (&mic, &["update", lease, "-n", &other_ns], false),
        (&mic, &["get", "secrets", "-n", &app_ns], false),
        (
            &mic,
            &["update", "azureidentities.aadpodidentity.k8s.io", "-n", &app_ns],
            false,
        ),
        (
            &hook,
            &[
                "delete",
                &format!("daemonsets.apps/{release}-pod-identity-nmi"),
                "-n",
                &release_ns,
            ],
            true,
        ),
        (&hook, &["create", "daemonsets.apps", "-n", &release_ns], true),
        (
            &hook,
            &["delete", "daemonsets.apps/kube-proxy", "-n", &release_ns],
            false,
        ),
        (&hook, &["create", "daemonsets.apps", "-n", &other_ns], false),
    ];
    let wrong: Vec<String> = checks
        .iter()
        .filter(|(who, args, want)| can(server, who, args) != *want)
        .map(|(who, args, want)| format!("{who} {} {args:?}", if *want { "cannot" } else { "can" }))
        .collect();

    // The ClusterRoles and their bindings are cluster-scoped: remove them from the shared server.
    let mut delete = server.kubectl().expect("kubectl");
    delete
        .args(["delete", "--ignore-not-found", "--wait=false", "-f"])
        .arg(&file);
    ok(delete);
    assert!(
        wrong.is_empty(),
        "RBAC is not what the components need:\n{}",
        wrong.join("\n")
    );
}

/// The owner's consent is checked unless `mic.identityConsent: false` says otherwise.
#[test]
fn identity_consent_is_on_unless_turned_off() {
    let mic_args = |sets: &[&str]| {
        let docs = parse(&template("default", sets));
        strings(
            &find(&docs, "Deployment", "pod-identity-mic")["spec"]["template"]["spec"]["containers"][0]["args"],
        )
    };
    let off = "--identity-consent=false".to_owned();
    assert!(!mic_args(&[]).contains(&off));
    assert!(!mic_args(&["mic.identityConsent=true"]).contains(&off));
    assert!(mic_args(&["mic.identityConsent=false"]).contains(&off));
}
