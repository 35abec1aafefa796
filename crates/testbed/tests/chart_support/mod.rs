//! What the chart tests share: helm and kubectl from the testbins, rendering the chart, and
//! reading what it rendered.
// Each test crate that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;
use testbed::{ApiServer, binaries};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn chart() -> PathBuf {
    root().join("deploy/charts/pod-identity")
}

pub fn helm() -> Command {
    let bins = binaries().expect("helm from scripts/testbin.sh");
    let mut cmd = Command::new(&bins.helm);
    // Keep helm's own files out of the user's home, and away from any repository.
    let home = std::env::temp_dir().join("pod-identity-chart-test-helm");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

pub fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output().unwrap_or_else(|e| panic!("running {shown}: {e}"))
}

pub fn ok(cmd: Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `helm template <release> <chart>` for the oldest Kubernetes the chart supports
/// ([`testbed::CHART_KUBE_VERSION`]; a later `--kube-version` wins), without arguments yet.
pub fn template_release(release: &str) -> Command {
    let mut cmd = helm();
    cmd.arg("template")
        .arg(release)
        .arg(chart())
        .args(["--kube-version", testbed::CHART_KUBE_VERSION]);
    cmd
}

/// `helm template pod-identity <chart>` in `namespace`, hooks included, without arguments yet.
pub fn template_command(namespace: &str) -> Command {
    let mut cmd = template_release("pod-identity");
    cmd.arg("--namespace").arg(namespace);
    cmd
}

/// `helm template` of the chart, hooks included, in `namespace`, with `--set` pairs.
pub fn template(namespace: &str, sets: &[&str]) -> String {
    let mut cmd = template_command(namespace);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    ok(cmd)
}

/// The YAML documents of a stream, as JSON values; comment-only documents are skipped.
pub fn parse(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| {
            serde_saphyr::from_str::<Value>(d)
                .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{d}"))
        })
        .collect()
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the rendered objects: {:?}", names(docs)))
}

pub fn names(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `kubectl apply --server-side --dry-run=server` of a file: the API server validates every
/// object (schemas, CRs against the installed CRDs, RBAC escalation checks) without keeping it.
pub fn dry_run(file: &Path) {
    let server = ApiServer::shared();
    let mut cmd = server.kubectl().expect("kubectl");
    cmd.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "--field-manager=chart-test",
        "-f",
    ])
    .arg(file);
    let out = ok(cmd);
    assert!(out.contains("(server dry run)"), "kubectl apply said:\n{out}");
}
