//! The Helm chart end to end on a real node (issue 16): a sandbox of its own (network namespaces
//! `pt-…`, beside any `make up` sandbox, which uses `pi-…`) with kubelet + containerd + runc + a
//! CNI bridge, the chart installed with `helm install` from the images of `make images`, the
//! walkthrough's application in a real container, a `helm upgrade` that rolls NMI (surge: the new
//! NMI beside the old one) under a pod asking for tokens every 50 ms, a reboot of the node with NMI held off it (the boot window,
//! tests/chart_e2e/boot_window.rs), and `helm uninstall`. Then the sandbox is torn down and nothing
//! may be left: no process, mount, network namespace, cgroup or containerd state.
//!
//! Everything is driven through the scripts users run (scripts/sandbox.sh, scripts/chart.sh), so
//! this test is also the proof that `make demo`'s chart steps work. A machine that cannot run the
//! node (no root, cgroup v2, no overlay/bridge/veth, a missing binary) fails here with the reason
//! scripts/node.sh gives.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "chart_e2e/boot_window.rs"]
mod boot_window;
#[path = "chart_e2e/surge.rs"]
mod surge;

/// The network namespaces' prefix of this test's sandbox (scripts/sandbox-layout.sh, NETNS).
const NETNS: &str = "pt";
const RELEASE: &str = "pod-identity";
const RELEASE_NS: &str = "pod-identity";
const REAL_NODE: &str = "k-0";

/// One sandbox, torn down when dropped (also when an assertion fails half-way).
struct Sandbox {
    root: PathBuf,
    state: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .expect("repository root");
        let state = std::env::temp_dir().join(format!("pod-identity-e2e-{}", std::process::id()));
        Sandbox { root, state }
    }

    fn script(&self, name: &str) -> Command {
        let mut c = Command::new(self.root.join("scripts").join(name));
        c.env("POD_IDENTITY_SANDBOX", &self.state)
            .env("POD_IDENTITY_NETNS", NETNS)
            // The debug binaries `cargo test` has just built: no release build inside `make test`.
            .env("POD_IDENTITY_SANDBOX_PROFILE", "dev");
        c
    }

    /// Runs a script; its output on success, a panic with all of it otherwise.
    fn run(&self, name: &str, args: &[&str]) -> String {
        let out = self
            .script(name)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running scripts/{name}: {e}"));
        let text = both(&out);
        assert!(
            out.status.success(),
            "scripts/{name} {} failed ({}):\n{text}",
            args.join(" "),
            out.status
        );
        text
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.script("sandbox.sh")
            .arg("kubectl")
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// kubectl's stdout; a panic with its stderr when it fails.
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            both(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn down(&self) {
        let _ = self.script("sandbox.sh").arg("down").output();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.down();
    }
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `f` every 500 ms until it returns Some, for at most `secs`; panics with `what` otherwise.
fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what} did not happen within {secs} s");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One line of the token poller (tests/poll_token.py).
#[derive(Debug, PartialEq)]
enum Ask {
    Answered { retries: u32, mirid: String },
    Failed { retries: u32, error: String },
}

fn parse_asks(log: &str) -> Vec<Ask> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("ASK ")?;
            let mut parts = rest.splitn(4, ' ');
            let _n = parts.next()?;
            let outcome = parts.next()?;
            let retries = parts.next()?.strip_prefix("retries=")?.parse().ok()?;
            let tail = parts.next().unwrap_or_default();
            match outcome {
                "OK" => Some(Ask::Answered {
                    retries,
                    mirid: tail.strip_prefix("mirid=")?.to_string(),
                }),
                _ => Some(Ask::Failed {
                    retries,
                    error: tail.strip_prefix("error=").unwrap_or(tail).to_string(),
                }),
            }
        })
        .collect()
}

/// `kubectl get` of the release's NMI pods, printed as `output` says (`-o`).
/// The app's pod got the readiness gate from MIC's webhook, NMI set its IdentityReady condition
/// True (TokenObtained), and the pod turned Ready no earlier than that: the Deployment's rollout
/// (`chart.sh app` waits for it) was held until the identity worked (README "Readiness").
fn assert_rollout_waited_for_the_identity(sb: &Sandbox) {
    let pod = sb.kubectl_ok(&[
        "-n", "default", "get", "pods", "-l", "app=myapp", "-o",
        "jsonpath={.items[0].spec.readinessGates[*].conditionType} \
         {.items[0].status.conditions[?(@.type==\"aadpodidentity.k8s.io/IdentityReady\")].status} \
         {.items[0].status.conditions[?(@.type==\"aadpodidentity.k8s.io/IdentityReady\")].reason} \
         {.items[0].status.conditions[?(@.type==\"aadpodidentity.k8s.io/IdentityReady\")].lastTransitionTime} \
         {.items[0].status.conditions[?(@.type==\"Ready\")].status} \
         {.items[0].status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
    ]);
    let fields: Vec<&str> = pod.split_whitespace().collect();
    let want = ["aadpodidentity.k8s.io/IdentityReady", "True", "TokenObtained"];
    assert!(
        fields.len() == 6 && fields[..3] == want && fields[4] == "True",
        "the app's pod: readiness gate, IdentityReady True/TokenObtained, Ready True: {pod}"
    );
    // RFC 3339 in UTC with seconds: the text order is the time order.
    assert!(
        fields[5] >= fields[3],
        "the pod turned Ready ({}) before its identity did ({}): {pod}",
        fields[5],
        fields[3]
    );
}

fn nmi_pods_as(sb: &Sandbox, output: &str) -> String {
    sb.kubectl_ok(&[
        "-n",
        RELEASE_NS,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=nmi",
        "-o",
        output,
    ])
}

fn nmi_pod(sb: &Sandbox) -> Option<(String, bool)> {
    let out = nmi_pods_as(
        sb,
        r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
    );
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [one] => {
            let f: Vec<&str> = one.split_whitespace().collect();
            // name, (no deletionTimestamp), Ready
            (f.len() == 2).then(|| (f[0].to_string(), f[1] == "True"))
        }
        _ => None,
    }
}

/// The poller's output so far (empty while its container is still being created).
fn poller_log(sb: &Sandbox) -> String {
    let out = sb.kubectl(&["-n", "default", "logs", "pod/token-poller"]);
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::new()
    }
}

#[test]
fn the_chart_installs_serves_the_walkthrough_upgrades_nmi_without_a_gap_and_uninstalls_cleanly() {
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .map(|s| s
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
            .unwrap_or(false),
        "the real node needs root (network namespaces, containerd, cgroups): run `make test` as root"
    );
    let started = Instant::now();
    let sb = Sandbox::new();
    sb.down(); // a previous run's leftovers under this test's own prefix, if it was killed
    let cni_before = cni_netns();

    sb.run("sandbox.sh", &["up"]);

    // helm install; chart.sh waits for the NMI pod's Ready condition, which only its readiness
    // probe (`nmi probe`: rules in place, watches synced, pod-facing listener bound) sets.
    sb.run("chart.sh", &["install"]);
    let probe = sb.kubectl_ok(&[
        "-n",
        RELEASE_NS,
        "get",
        "daemonset",
        &format!("{RELEASE}-nmi"),
        "-o",
        "jsonpath={.spec.template.spec.hostNetwork} {.spec.template.spec.containers[0].readinessProbe.exec.command[1]}",
    ]);
    assert_eq!(
        probe.trim(),
        "true probe",
        "NMI runs on the host network with its readiness probe (`nmi probe`, on its own socket)"
    );
    let (nmi_before, ready) = nmi_pod(&sb).expect("one NMI pod");
    assert!(ready, "NMI {nmi_before} is Ready");
    let rules = node_nat_rules();
    assert!(
        rules.contains("-j aad-metadata"),
        "NMI's interception rule is in the node's namespace:\n{rules}"
    );
    boot_window::gate_is_installed(&sb);

    // helm test: the chart's test pod, bound to nothing, gets NMI's own refusal naming it (the
    // VM's IMDS, the emulator's, would answer otherwise).
    assert_helm_test_passed(&sb.run("chart.sh", &["test"]));

    // The walkthrough's application in a real container reads the blob with its own identity.
    let app = sb.run("chart.sh", &["app"]);
    assert!(
        app.contains("BLOB: Hello from Azurite"),
        "the walkthrough's pod read the blob:\n{app}"
    );
    assert_rollout_waited_for_the_identity(&sb);

    // helm test with tests.binding: the test pod carries the walkthrough's selector in its
    // namespace and must get a token. The tests.* values change the test pod only: NMI stays.
    sb.run(
        "chart.sh",
        &[
            "upgrade",
            "--set",
            "tests.binding=myapp",
            "--set",
            "tests.namespace=default",
        ],
    );
    assert_helm_test_passed(&sb.run("chart.sh", &["test"]));
    assert_eq!(
        nmi_pod(&sb).map(|p| p.0).as_deref(),
        Some(nmi_before.as_str()),
        "the tests.* values left NMI's pod alone"
    );

    // A pod asking for a token every 50 ms while `helm upgrade` changes an NMI flag.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/poll_token.py");
    let cm = sb.kubectl(&[
        "-n",
        "default",
        "create",
        "configmap",
        "token-poller",
        &format!("--from-file=poll_token.py={}", script.display()),
    ]);
    assert!(cm.status.success(), "configmap: {}", both(&cm));
    let pod = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
 "metadata": {{"name": "token-poller", "namespace": "default", "labels": {{"aadpodidbinding": "myapp"}}}},
 "spec": {{"nodeSelector": {{"kubernetes.io/hostname": "{REAL_NODE}"}},
  "containers": [{{"name": "poll", "image": "docker.io/pod-identity/app:{tag}", "imagePullPolicy": "Never",
    "command": ["python3", "/poll/poll_token.py"],
    "volumeMounts": [{{"name": "poll", "mountPath": "/poll"}}]}}],
  "volumes": [{{"name": "poll", "configMap": {{"name": "token-poller"}}}}]}}}}"#,
        tag = app_version()
    );
    let file = std::env::temp_dir().join(format!("token-poller-{}.json", std::process::id()));
    std::fs::write(&file, pod).expect("pod file");
    sb.kubectl_ok(&["apply", "-f", file.to_str().expect("path")]);
    let _ = std::fs::remove_file(&file);
    let before = eventually("the poller's first five answers", 120, || {
        let asks = parse_asks(&poller_log(&sb));
        (asks.iter().filter(|a| matches!(a, Ask::Answered { .. })).count() >= 5).then_some(asks.len())
    });

    let watch = surge::PodWatch::start(&sb);
    sb.run("chart.sh", &["upgrade", "--set", "nmi.iptUpdateIntervalSec=30"]);
    let (nmi_after, ready) = eventually("one Ready NMI pod after the upgrade", 60, || {
        nmi_pod(&sb).filter(|p| p.1)
    });
    assert_ne!(nmi_after, nmi_before, "the DaemonSet rolled: a new NMI pod");
    assert!(ready);
    let events = watch.stop();
    assert!(
        surge::new_ready_beside_old(&events, &nmi_before, &nmi_after),
        "the new NMI {nmi_after} was Ready while the old {nmi_before} still existed (maxSurge: 1):\n{events}"
    );
    let args = sb.kubectl_ok(&[
        "-n",
        RELEASE_NS,
        "get",
        "pod",
        &nmi_after,
        "-o",
        "jsonpath={.spec.containers[0].args}",
    ]);
    assert!(
        args.contains("--ipt-update-interval-sec=30"),
        "the new NMI runs with the changed flag: {args}"
    );
    // Ten more asks after the new NMI is Ready, so that the whole rollout is in the log.
    let asks = eventually("ten asks after the rollout", 60, || {
        let asks = parse_asks(&poller_log(&sb));
        (asks.len() >= before + 10).then_some(asks)
    });
    let log = poller_log(&sb);
    let failed: Vec<&Ask> = asks.iter().filter(|a| matches!(a, Ask::Failed { .. })).collect();
    assert!(
        failed.is_empty(),
        "no ask failed for good while NMI rolled: {failed:?}\n{log}"
    );
    let retried = asks
        .iter()
        .filter(|a| matches!(a, Ask::Answered { retries, .. } if *retries > 0))
        .count();
    assert_eq!(
        retried, 0,
        "no ask needed a retry while NMI rolled ({retried} did):\n{log}"
    );
    for a in &asks {
        if let Ask::Answered { mirid, .. } = a {
            // NMI answers with the pod's own identity; the VM's IMDS (the emulator's) answering
            // directly would give the node's, so the interception never opened.
            assert!(
                mirid
                    .to_ascii_lowercase()
                    .ends_with("/userassignedidentities/myapp-identity"),
                "every token is the pod's own identity, from NMI: {mirid}\n{log}"
            );
        }
    }
    let retried_asks: Vec<&Ask> = asks
        .iter()
        .filter(|a| matches!(a, Ask::Answered { retries, .. } if *retries > 0))
        .collect();
    eprintln!(
        "token poller: {} asks across the NMI roll ({} after the upgrade began), asks that needed a retry: {retried_asks:?}",
        asks.len(),
        asks.len() - before
    );

    boot_window::reboot_keeps_pods_off_the_network_until_nmi_is_back(&sb);
    sb.kubectl_ok(&[
        "-n",
        "default",
        "delete",
        "pod/token-poller",
        "configmap/token-poller",
        "--wait=false",
    ]);

    // helm uninstall: the hook removes the interception, and only the CRDs stay.
    sb.run("chart.sh", &["uninstall"]);
    let rules = node_nat_rules();
    assert!(
        !rules.contains("aad-metadata"),
        "no interception rule is left in the node's namespace:\n{rules}"
    );
    boot_window::gate_is_removed(&sb);
    let kinds = "pods,services,daemonsets,deployments,replicasets,jobs,configmaps,secrets,serviceaccounts,roles,\
                 rolebindings,clusterroles,clusterrolebindings,poddisruptionbudgets,azurepodidentityexceptions,\
                 azureidentities,azureidentitybindings";
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    eventually("every object of the release gone", 120, || {
        let left = sb.kubectl_ok(&["get", kinds, "-A", "-l", &selector, "-o", "name"]);
        left.trim().is_empty().then_some(())
    });
    let crds = sb.kubectl_ok(&["get", "crd", "-o", "name"]);
    assert!(
        crds.contains("azureassignedidentities.aadpodidentity.k8s.io"),
        "the CRDs stay, as Helm leaves them: {crds}"
    );

    sb.run("sandbox.sh", &["down"]);
    assert_nothing_left(&sb.state, &cni_before);
    eprintln!("chart end-to-end: {:.0} s", started.elapsed().as_secs_f64());
}

/// `helm test`'s report (scripts/chart.sh test, which fails when helm does) names the chart's
/// test pod, and says it succeeded.
fn assert_helm_test_passed(report: &str) {
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
    };
    assert_eq!(
        field("TEST SUITE:"),
        format!("{RELEASE}-test-token-path"),
        "helm test ran the token-path test:\n{report}"
    );
    assert_eq!(field("Phase:"), "Succeeded", "helm test passed:\n{report}");
}

/// The pods' network namespaces CRI made (cni-<uuid>): another sandbox's real node may have some.
fn cni_netns() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("cni-"))
        .map(str::to_string)
        .collect()
}

/// The chart's appVersion: the tag of every image `make images` writes.
fn app_version() -> String {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/charts/pod-identity/Chart.yaml");
    let text = std::fs::read_to_string(chart).expect("Chart.yaml");
    text.lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("appVersion in Chart.yaml")
}

fn node_nat_rules() -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{NETNS}-node-{REAL_NODE}"),
            "iptables",
            "-t",
            "nat",
            "-S",
        ])
        .output()
        .expect("iptables in the node's namespace");
    assert!(out.status.success(), "iptables -t nat -S: {}", both(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// After `sandbox.sh down`: no network namespace of ours, no mount or process under the state
/// directory, no cgroup of the node, no containerd state.
fn assert_nothing_left(state: &Path, cni_before: &[String]) {
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let netns = String::from_utf8_lossy(&netns.stdout);
    let ours: Vec<&str> = netns
        .lines()
        .filter(|l| l.starts_with(&format!("{NETNS}-")))
        .collect();
    assert!(ours.is_empty(), "network namespaces left: {ours:?}");
    let pods_netns: Vec<String> = cni_netns()
        .into_iter()
        .filter(|n| !cni_before.contains(n))
        .collect();
    assert!(
        pods_netns.is_empty(),
        "pods' network namespaces left: {pods_netns:?}"
    );

    let state_s = state.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&state_s)).collect();
    assert!(left.is_empty(), "mounts left: {left:?}");

    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&state_s) {
                procs.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    assert!(procs.is_empty(), "processes left: {procs:?}");

    let session = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let memory = session
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            ctrl.split(',').any(|c| c == "memory").then(|| path.to_string())
        })
        .expect("this process's memory cgroup");
    let name = format!("pod-identity-{NETNS}-{REAL_NODE}");
    for ctrl in std::fs::read_dir("/sys/fs/cgroup")
        .expect("/sys/fs/cgroup")
        .flatten()
    {
        let dir = ctrl.path().join(memory.trim_start_matches('/')).join(&name);
        assert!(!dir.exists(), "cgroup left: {}", dir.display());
    }
    assert!(
        !state.exists(),
        "the sandbox's state directory (containerd's root and state) is left: {}",
        state.display()
    );
}

#[test]
fn the_pollers_lines_parse() {
    let asks = parse_asks(
        "ASK 1 OK retries=0 mirid=/subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/myapp-identity\n\
         noise\n\
         ASK 2 FAIL retries=6 error=ConnectionRefusedError: [Errno 111] Connection refused\n",
    );
    assert_eq!(
        asks,
        vec![
            Ask::Answered {
                retries: 0,
                mirid: "/subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/myapp-identity"
                    .into()
            },
            Ask::Failed { retries: 6, error: "ConnectionRefusedError: [Errno 111] Connection refused".into() },
        ]
    );
}
