//! Issue 14 §3: a values file written for upstream's aad-pod-identity chart (4.1.x, shipped with
//! v1.8.17) renders with our chart to the equivalent deployment, or fails with a message naming
//! the key. `examples/upstream-values/values.yaml` sets every one of upstream's keys; these tests
//! render it with the real helm testbin, check what a user would notice in the result (flags,
//! environment, volumes, the AzureIdentities and bindings it asks for, RBAC), have the test
//! kube-apiserver accept it in a server-side dry-run, and break it on purpose (a misspelt key, a
//! wrongly typed value, a value whose meaning this chart cannot keep).

mod chart_support;

use std::path::Path;

use chart_support::{dry_run, find, names, parse, read, root, run, strings, template, template_command};
use serde_json::Value;
use testbed::ApiServer;

/// The namespace the example's service-principal identity lives in.
const EXAMPLE_APP_NAMESPACE: &str = "payments";

fn example() -> String {
    read(&root().join("examples/upstream-values/values.yaml"))
}

/// The example with its app namespace renamed (a namespace of the shared test apiserver).
fn example_in(app_ns: &str) -> String {
    example()
        .replace(
            &format!("namespace: {EXAMPLE_APP_NAMESPACE}\n"),
            &format!("namespace: {app_ns}\n"),
        )
        .replace(
            &format!("\\\"namespace\\\":\\\"{EXAMPLE_APP_NAMESPACE}\\\""),
            &format!("\\\"namespace\\\":\\\"{app_ns}\\\""),
        )
}

/// What `helm template -f <values>` printed: (success, stdout, stderr).
struct Rendered {
    success: bool,
    stdout: String,
    stderr: String,
}

fn render_values(dir: &Path, namespace: &str, values: &str, sets: &[&str]) -> Rendered {
    let file = dir.join("values.yaml");
    std::fs::write(&file, values).expect("writing the values file");
    let mut cmd = template_command(namespace);
    cmd.arg("--values").arg(&file);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    let out = run(cmd);
    Rendered {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Renders `values` and expects helm to refuse it, with every one of `needles` in its message.
fn refused(values: &str, sets: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = render_values(dir.path(), "default", values, sets);
    assert!(
        !out.success,
        "helm template accepted values it should refuse (looking for {needles:?}, --set {sets:?})"
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "helm's message does not name {needle:?}:\n{}",
            out.stderr
        );
    }
}

fn container<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    &find(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]
}

fn env_value(c: &Value, name: &str) -> Option<String> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

fn assert_args(component: &str, args: &[String], wanted: &[&str]) {
    let missing: Vec<&&str> = wanted.iter().filter(|w| !args.iter().any(|a| a == **w)).collect();
    assert!(
        missing.is_empty(),
        "{component} lacks {missing:?}; its args: {args:?}"
    );
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no volume {name}: {}", pod["volumes"]))
}

#[test]
fn an_upstream_values_file_renders_to_the_equivalent_deployment() {
    let server = ApiServer::shared();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (release_ns, app_ns) = rt.block_on(async {
        let (_, a) = server.namespace("upstream-release").await.expect("namespace");
        let (_, b) = server.namespace("upstream-app").await.expect("namespace");
        (a, b)
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = render_values(dir.path(), &release_ns, &example_in(&app_ns), &[]);
    assert!(
        out.success,
        "the upstream values file does not render:\n{}",
        out.stderr
    );
    // Upstream's scalar forms (mic.image: mic, mic.cloudConfig: <path>) replace our tables
    // without helm's "cannot overwrite table" warnings.
    assert!(out.stderr.trim().is_empty(), "helm warned:\n{}", out.stderr);
    let docs = parse(&out.stdout);

    // MIC: upstream's flags under our names where ours do the job, upstream's own otherwise.
    let mic_deploy = find(&docs, "Deployment", "pod-identity-mic");
    let mic_pod = &mic_deploy["spec"]["template"]["spec"];
    let mic = container(&docs, "Deployment", "pod-identity-mic");
    assert_eq!(mic_deploy["spec"]["replicas"], 3);
    assert_eq!(mic["image"], "registry.example.com/pod-identity/mic:0.1.0");
    assert_eq!(mic["imagePullPolicy"], "Always");
    assert_eq!(mic_pod["imagePullSecrets"][0]["name"], "registry-credentials");
    assert_eq!(mic_pod["priorityClassName"], "system-cluster-critical");
    let mic_args = strings(&mic["args"]);
    assert_args(
        "MIC",
        &mic_args,
        &[
            "--leader-election-name=mic-lock",
            "--leader-election-duration=30s",
            "--http-probe-port=8081",
            "--prometheus-port=8889",
            "--identity-assignment-reconcile-interval=5m",
            "--failure-retry-interval=120s",
            "--log-format=json",
            "--immutable-user-msis=00000000-0000-0000-0000-000000000001,00000000-0000-0000-0000-000000000002",
            "--createDeleteBatch=40",
            "--clientQps=10",
            "--update-user-msi-max-retry=3",
            "--update-user-msi-retry-interval=2s",
            "--custom-user-agent=contoso-platform/1.0",
        ],
    );
    // Namespaced matching (forceNamespaced: "true"), and adminsecret instead of azure.json.
    assert!(
        !mic_args.iter().any(|a| a.starts_with("--allow-cross-namespace")),
        "{mic_args:?}"
    );
    assert!(
        !mic_args.iter().any(|a| a.starts_with("--cloudconfig")),
        "{mic_args:?}"
    );
    assert_eq!(env_value(mic, "RUST_LOG").as_deref(), Some("info,mic=trace"));
    assert_eq!(
        env_value(mic, "AZURE_ENVIRONMENT_FILEPATH").as_deref(),
        Some("/etc/kubernetes/akscustom.json")
    );
    assert_eq!(
        volume(mic_pod, "custom-cloud")["hostPath"]["path"],
        "/etc/kubernetes/akscustom.json"
    );
    // adminsecret: MIC reads upstream's environment variables from a Secret, as a non-root user.
    assert_eq!(
        mic["envFrom"][0]["secretRef"]["name"],
        "pod-identity-mic-credentials"
    );
    let credentials = find(&docs, "Secret", "pod-identity-mic-credentials");
    for (key, value) in [
        ("CLOUD", "AzurePublicCloud"),
        ("SUBSCRIPTION_ID", "00000000-0000-0000-0000-0000000000aa"),
        ("RESOURCE_GROUP", "MC_rg_cluster_westeurope"),
        ("VM_TYPE", "vmss"),
        ("TENANT_ID", "00000000-0000-0000-0000-0000000000bb"),
        ("CLIENT_ID", "00000000-0000-0000-0000-0000000000cc"),
        ("CLIENT_SECRET", "not-a-real-secret"),
    ] {
        assert_eq!(credentials["stringData"][key], value, "{key} in {credentials}");
    }
    // useMSI: "false" is false (upstream's template took the string as true).
    assert!(credentials["stringData"]["USE_MSI"].is_null(), "{credentials}");
    assert_eq!(mic_pod["securityContext"]["runAsNonRoot"], true);
    let ports: Vec<&Value> = mic["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| &p["containerPort"])
        .collect();
    // Upstream's probe and metrics ports, and the readiness-gate webhook's (ours, on by default).
    assert_eq!(ports, [8081, 8889, 9443]);
    assert_eq!(mic_pod["tolerations"][0]["key"], "CriticalAddonsOnly");
    assert_eq!(
        mic_pod["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    assert_eq!(
        mic_pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
        1
    );
    let mic_meta = &mic_deploy["spec"]["template"]["metadata"];
    assert_eq!(mic_meta["labels"]["example.com/tier"], "control");
    assert_eq!(mic_meta["annotations"]["example.com/team"], "platform");
    assert_eq!(mic["resources"]["limits"]["memory"], "1024Mi");
    assert_eq!(
        find(&docs, "PodDisruptionBudget", "pod-identity-mic")["spec"]["minAvailable"],
        2
    );
    assert_eq!(
        strings(&find(&docs, "Role", "pod-identity-mic-leader-election")["rules"][1]["resourceNames"]),
        ["mic-lock"]
    );
    // installMICException: "true".
    let exception = find(&docs, "AzurePodIdentityException", "pod-identity-mic-exception");
    assert_eq!(exception["metadata"]["namespace"], release_ns.as_str());

    // NMI.
    let nmi_ds = find(&docs, "DaemonSet", "pod-identity-nmi");
    let nmi_pod = &nmi_ds["spec"]["template"]["spec"];
    let nmi = container(&docs, "DaemonSet", "pod-identity-nmi");
    assert_eq!(nmi["image"], "registry.example.com/pod-identity/nmi:0.1.0");
    assert_eq!(nmi["imagePullPolicy"], "Always");
    let nmi_args = strings(&nmi["args"]);
    assert_args(
        "NMI",
        &nmi_args,
        &[
            "--operation-mode=standard",
            "--http-probe-port=8086",
            "--prometheus-port=9091",
            "--metadata-header-required=true",
            "--ipt-update-interval-sec=30",
            "--log-format=json",
            "--block-instance-metadata",
            "--set-retry-after-header",
            // (retryAttemptsForCreated 10 + retryAttemptsForAssigned 2) x 3 s: how long
            // upstream's NMI polled for MIC, now the longest our NMI waits on its watch.
            "--identity-wait=36",
            "--MICNamespace=kube-system",
            "--enableScaleFeatures=true",
            "--allow-network-plugin-kubenet=true",
            "--kubelet-config=/etc/default/kubelet",
            "--enable-conntrack-deletion=true",
            "--custom-user-agent=contoso-platform/1.0",
        ],
    );
    assert!(
        !nmi_args.iter().any(|a| a.starts_with("--allow-cross-namespace")),
        "{nmi_args:?}"
    );
    assert_eq!(env_value(nmi, "RUST_LOG").as_deref(), Some("info,nmi=debug"));
    assert_eq!(
        volume(nmi_pod, "kubelet-config")["hostPath"]["path"],
        "/etc/default/kubelet"
    );
    assert_eq!(nmi["livenessProbe"]["httpGet"]["port"], 8086);
    assert_eq!(nmi["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(
        nmi_ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        2
    );
    assert_eq!(nmi_pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        nmi_ds["spec"]["template"]["metadata"]["labels"]["example.com/tier"],
        "node"
    );
    assert_eq!(
        nmi_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "example.com/no-pod-identity"
    );
    // The uninstall hook's DaemonSet runs the same NMI image.
    let cleanup = read_cleanup_daemonset(&docs);
    assert_eq!(
        cleanup["spec"]["template"]["spec"]["initContainers"][0]["image"],
        "registry.example.com/pod-identity/nmi:0.1.0"
    );

    // azureIdentities: an AzureIdentity and its binding per entry.
    let reader = find(&docs, "AzureIdentity", "storage-reader");
    assert_eq!(reader["metadata"]["namespace"], release_ns.as_str());
    assert_eq!(reader["spec"]["type"], 0);
    assert_eq!(reader["spec"]["clientID"], "00000000-0000-0000-0000-0000000000d1");
    assert_eq!(
        reader["spec"]["resourceID"],
        "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourcegroups/identities/providers/Microsoft.ManagedIdentity/userAssignedIdentities/storage-reader"
    );
    let reader_binding = find(&docs, "AzureIdentityBinding", "storage-reader-binding");
    assert_eq!(reader_binding["metadata"]["namespace"], release_ns.as_str());
    assert_eq!(reader_binding["spec"]["azureIdentity"], "storage-reader");
    assert_eq!(reader_binding["spec"]["selector"], "storage-reader");
    let sp = find(&docs, "AzureIdentity", "payments-identity");
    assert_eq!(sp["metadata"]["namespace"], app_ns.as_str());
    assert_eq!(sp["spec"]["type"], 1);
    assert_eq!(sp["spec"]["tenantID"], "00000000-0000-0000-0000-0000000000bb");
    assert_eq!(sp["spec"]["clientPassword"]["name"], "payments-sp-secret");
    assert_eq!(sp["spec"]["clientPassword"]["namespace"], app_ns.as_str());
    assert_eq!(
        strings(&sp["spec"]["auxiliaryTenantIDs"]),
        ["00000000-0000-0000-0000-0000000000ee"]
    );
    let sp_binding = find(&docs, "AzureIdentityBinding", "payments-binding");
    assert_eq!(sp_binding["metadata"]["namespace"], app_ns.as_str());
    assert_eq!(sp_binding["spec"]["azureIdentity"], "payments-identity");
    assert_eq!(sp_binding["spec"]["selector"], "payments");

    // rbac.allowAccessToSecrets: true is upstream's cluster-wide grant; the service principal's
    // Secret also gets a Role of its own.
    let secrets = find(&docs, "ClusterRole", "pod-identity-nmi-secrets");
    assert_eq!(strings(&secrets["rules"][0]["resources"]), ["secrets"]);
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "pod-identity-nmi-secrets")
        .unwrap_or_else(|| panic!("no Role for the Secret: {:?}", names(&docs)));
    assert_eq!(role["metadata"]["namespace"], app_ns.as_str());
    assert_eq!(
        strings(&role["rules"][0]["resourceNames"]),
        ["payments-sp-secret"]
    );
    // rbac.createUserFacingClusterRoles.
    let view = find(&docs, "ClusterRole", "pod-identity-view");
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    let edit = find(&docs, "ClusterRole", "pod-identity-edit");
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        strings(&edit["rules"][0]["resources"]),
        ["azureidentities", "azureidentitybindings"]
    );

    // The API server accepts all of it (the CRs against the CRDs' validation included).
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &out.stdout).expect("writing the rendered chart");
    dry_run(&file);
}

fn read_cleanup_daemonset(docs: &[Value]) -> Value {
    let cm = find(docs, "ConfigMap", "pod-identity-nmi-cleanup");
    parse(
        cm["data"]["daemonset.yaml"]
            .as_str()
            .expect("daemonset.yaml in the ConfigMap"),
    )
    .into_iter()
    .next()
    .expect("the cleanup DaemonSet")
}

#[test]
fn a_misspelt_key_fails_naming_it() {
    let values = example();
    for (right, wrong, path) in [
        ("  syncRetryDuration:", "  syncRetryDurration:", "'/mic'"),
        (
            "  retryAttemptsForCreated:",
            "  retryAttemptForCreated:",
            "'/nmi'",
        ),
        ("customUserAgent:", "customUseragent:", "at '':"),
        ("  allowAccessToSecrets:", "  allowAccessToSecret:", "'/rbac'"),
        (
            "      selector: storage-reader",
            "      selecter: storage-reader",
            "'/azureIdentities/storage-reader/binding'",
        ),
    ] {
        assert!(values.contains(right), "the example has no {right:?}");
        let key = wrong.trim().trim_end_matches(':').split(':').next().expect("key");
        refused(
            &values.replacen(right, wrong, 1),
            &[],
            &[path, &format!("'{key}'")],
        );
    }
}

#[test]
fn a_wrongly_typed_value_fails_naming_it() {
    let values = example();
    for (right, wrong, path) in [
        ("  replicas: 3", "  replicas: three", "'/mic/replicas'"),
        ("  probePort: \"8086\"", "  probePort: true", "'/nmi/probePort'"),
        (
            "installMICException: \"true\"",
            "installMICException: \"yes\"",
            "'/installMICException'",
        ),
        (
            "    type: 0",
            "    type: zero",
            "'/azureIdentities/storage-reader/type'",
        ),
        (
            "  immutableUserMSIs:\n",
            "  immutableUserMSIs: 1\n  unusedList:\n",
            "'/mic/immutableUserMSIs'",
        ),
        (
            "  syncRetryDuration: \"120s\"",
            "  syncRetryDuration: \"two minutes\"",
            "'/mic/syncRetryDuration'",
        ),
    ] {
        assert!(values.contains(right), "the example has no {right:?}");
        refused(&values.replacen(right, wrong, 1), &[], &[path]);
    }
}

#[test]
fn upstream_values_whose_meaning_cannot_be_kept_fail_naming_the_key() {
    let values = example();
    // Upstream's default cross-namespace matching must be asked for by name.
    refused(
        &values.replace("forceNamespaced: \"true\"", "forceNamespaced: \"false\""),
        &[],
        &["forceNamespaced=false", "allowCrossNamespace"],
    );
    // Upstream's images do not take our flags.
    refused(
        &values.replace(
            "repository: registry.example.com/pod-identity",
            "repository: mcr.microsoft.com/oss/azure/aad-pod-identity",
        ),
        &[],
        &[
            "image.repository",
            "mcr.microsoft.com/oss/azure/aad-pod-identity/",
        ],
    );
    refused(&values, &["rbac.pspEnabled=true"], &["rbac.pspEnabled"]);
    // Our NMI reads a service principal's Secret only from the identity's own namespace.
    refused(
        &values.replace(
            "\\\"namespace\\\":\\\"payments\\\"",
            "\\\"namespace\\\":\\\"elsewhere\\\"",
        ),
        &[],
        &["azureIdentities.payments-sp.clientPassword", "elsewhere"],
    );
    refused(
        &values.replace("  clientSecret: not-a-real-secret\n", ""),
        &[],
        &["'/adminsecret'", "clientSecret"],
    );
    refused(
        &values.replace(
            "    resourceID: /subscriptions/",
            "    resourceId: /subscriptions/",
        ),
        &[],
        &["'/azureIdentities/storage-reader'"],
    );
}

#[test]
fn upstream_defaults_and_scalar_forms_map_onto_ours() {
    // forceNamespaced "false" with the choice made: cross-namespace matching in both components.
    let docs = parse(&template(
        "default",
        &["forceNamespaced=false", "allowCrossNamespace=true"],
    ));
    for (kind, name) in [
        ("Deployment", "pod-identity-mic"),
        ("DaemonSet", "pod-identity-nmi"),
    ] {
        let args = strings(&container(&docs, kind, name)["args"]);
        assert!(
            args.contains(&"--allow-cross-namespace".to_owned()),
            "{kind}: {args:?}"
        );
    }
    // Managed mode is namespaced whatever forceNamespaced says, as upstream's was.
    let docs = parse(&template(
        "kube-system",
        &["operationMode=managed", "forceNamespaced=false"],
    ));
    assert!(
        docs.iter().all(|d| d["kind"] != "Deployment"),
        "{:?}",
        names(&docs)
    );

    // mic.cloudConfig as upstream's path on the node; mic.image as a name under our registry;
    // upstream's "" meaning "the default" for ports and durations.
    let docs = parse(&template(
        "default",
        &[
            "mic.cloudConfig=/var/lib/azure/azure.json",
            "mic.image=mic",
            "mic.tag=v9",
            "mic.probePort=",
            "mic.identityAssignmentReconcileInterval=",
            "nmi.probePort=",
        ],
    ));
    let mic = container(&docs, "Deployment", "pod-identity-mic");
    assert_eq!(mic["image"], "ghcr.io/pod-identity/mic:v9");
    let args = strings(&mic["args"]);
    assert_args(
        "MIC",
        &args,
        &[
            "--cloudconfig=/etc/kubernetes/azure.json",
            "--http-probe-port=8080",
            "--identity-assignment-reconcile-interval=60s",
        ],
    );
    let pod = &find(&docs, "Deployment", "pod-identity-mic")["spec"]["template"]["spec"];
    assert_eq!(
        volume(pod, "cloud-config")["hostPath"]["path"],
        "/var/lib/azure/azure.json"
    );
    assert_eq!(
        pod["securityContext"]["runAsUser"], 0,
        "azure.json on the node is root's"
    );
    let nmi = container(&docs, "DaemonSet", "pod-identity-nmi");
    assert!(strings(&nmi["args"]).contains(&"--http-probe-port=8085".to_owned()));

    // rbac.enabled=false: no ServiceAccount or role at all; the pods run as the default one.
    let docs = parse(&template("default", &["rbac.enabled=false"]));
    let rbac: Vec<String> = names(&docs)
        .into_iter()
        .filter(|n| {
            [
                "ServiceAccount/",
                "Role/",
                "ClusterRole/",
                "RoleBinding/",
                "ClusterRoleBinding/",
            ]
            .iter()
            .any(|k| n.starts_with(k))
        })
        .collect();
    assert!(rbac.is_empty(), "rbac.enabled=false still renders {rbac:?}");
    for (kind, name) in [
        ("Deployment", "pod-identity-mic"),
        ("DaemonSet", "pod-identity-nmi"),
        ("Job", "pod-identity-nmi-cleanup"),
    ] {
        let pod = &find(&docs, kind, name)["spec"]["template"]["spec"];
        assert!(pod["serviceAccountName"].is_null(), "{kind} {name}: {pod}");
    }

    // Upstream's allowAccessToSecrets narrowed by ours: Roles only, no cluster-wide grant.
    let docs = parse(&template(
        "default",
        &["rbac.allowAccessToSecrets=true", "nmi.secretNamespaces={team-a}"],
    ));
    assert!(
        !names(&docs).contains(&"ClusterRole/pod-identity-nmi-secrets".to_owned()),
        "{:?}",
        names(&docs)
    );
    let docs = parse(&template("default", &["rbac.allowAccessToSecrets=false"]));
    assert!(
        !names(&docs)
            .iter()
            .any(|n| n.ends_with("/pod-identity-nmi-secrets")),
        "{:?}",
        names(&docs)
    );
}

/// The AKS add-on exception upstream installed with installMICException is ours to opt into.
#[test]
fn the_aks_addon_exception_is_opt_in_and_honoured_when_exceptions_are_restricted() {
    let docs = parse(&template("default", &[]));
    assert!(
        !names(&docs).iter().any(|n| n.contains("aks-addon-exception")),
        "{:?}",
        names(&docs)
    );
    let docs = parse(&template(
        "default",
        &["installAKSAddonException=true", "exceptionNamespaces={ops}"],
    ));
    let exception = find(
        &docs,
        "AzurePodIdentityException",
        "pod-identity-aks-addon-exception",
    );
    assert_eq!(exception["metadata"]["namespace"], "kube-system");
    assert_eq!(
        exception["spec"]["podLabels"]["kubernetes.azure.com/managedby"],
        "aks"
    );
    let args = strings(&container(&docs, "DaemonSet", "pod-identity-nmi")["args"]);
    assert!(
        args.contains(&"--exception-namespaces=ops,default,kube-system".to_owned()),
        "{args:?}"
    );
}
