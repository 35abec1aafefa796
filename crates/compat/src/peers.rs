//! The two versions of NMI and MIC, and how each is started: upstream's as its v1.8.17
//! manifests start it (`deploy/infra/deployment-rbac.yaml`), ours with its own flags.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use testbed::{Supervised, netns::Netns};

/// Whose binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// aad-pod-identity v1.8.17, built from the Go module proxy by `scripts/testbin.sh`.
    Upstream,
    /// This repository's, built by cargo.
    Ours,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Upstream => "upstream v1.8.17",
            Self::Ours => "ours",
        })
    }
}

/// Upstream's binaries, built on first use (a few minutes) and cached.
pub fn upstream() -> &'static testbed::UpstreamPodIdentity {
    testbed::upstream_pod_identity()
        .unwrap_or_else(|e| panic!("upstream's NMI and MIC are needed (make testbin): {e}"))
}

/// Our `name` binary, built by cargo next to this test (`cargo test --workspace` builds every
/// binary of the workspace before running any test). Refused when missing or older than one of
/// the sources cargo built it from (its dep-info file, see [`dep_info`]): a stale binary would test
/// yesterday's code.
pub fn ours(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let bin = dir.join(name);
    let hint = format!("build it with `cargo build -p {name}` (`cargo test --workspace` and make test do)");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{} is missing ({e}); {hint}", bin.display()));
    let dep_info =
        dep_info(dir, name, &bin).unwrap_or_else(|| panic!("no dep-info file for {}; {hint}", bin.display()));
    let deps = std::fs::read_to_string(&dep_info)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {hint}", dep_info.display()));
    if let Some(newer) = sources(&deps).find(|src| modified(src).is_some_and(|t| t > built)) {
        panic!("{} is older than {newer}; {hint}", bin.display());
    }
    bin
}

/// The dep-info file of `bin`. `cargo test` uplifts the binary to `target/<profile>/<name>`
/// (a hard link of `deps/<name>-<hash>`) but writes `<name>.d` only on `cargo build`, so the
/// one to trust is `deps/<name>-<hash>.d` of the very file `bin` links to.
fn dep_info(dir: &Path, name: &str, bin: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::metadata(bin).ok()?;
    let prefix = format!("{name}-");
    let linked = std::fs::read_dir(dir.join("deps"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&prefix))
        })
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino()))
        .map(|p| p.with_extension("d"))
        .filter(|d| d.exists());
    linked.or_else(|| Some(dir.join(format!("{name}.d"))).filter(|d| d.exists()))
}

/// The sources a dep-info file lists (`target: src src …`, spaces in paths escaped as `\ `).
fn sources(dep_info: &str) -> impl Iterator<Item = String> + '_ {
    dep_info
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, srcs)| srcs))
        .flat_map(|srcs| {
            srcs.replace("\\ ", "\u{0}")
                .split_whitespace()
                .map(|s| s.replace('\u{0}', " "))
                .collect::<Vec<_>>()
        })
}

fn modified(path: &str) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// How an NMI is started on a node.
pub struct NmiLaunch<'a> {
    pub node: &'a str,
    pub ns: &'a Netns,
    pub kubeconfig: &'a Path,
    /// Upstream's kubenet guard reads it.
    pub kubelet_defaults: &'a Path,
}

/// Starts NMI in the node's namespace. Its probe answers on 127.0.0.1:8085 there (see
/// [`nmi_ready`]).
pub fn start_nmi(version: Version, l: &NmiLaunch<'_>, log: &Path) -> Supervised {
    let cmd = match version {
        Version::Upstream => {
            // deployment-rbac.yaml's arguments and environment; KUBECONFIG because the pod
            // would be in-cluster, which a process here is not.
            let mut cmd = l.ns.command(&upstream().nmi);
            cmd.args([
                format!("--node={}", l.node),
                "--http-probe-port=8085".to_owned(),
                "--enableScaleFeatures=true".to_owned(),
                "--metadata-header-required=true".to_owned(),
                format!("--kubelet-config={}", l.kubelet_defaults.display()),
            ])
            .env("KUBECONFIG", l.kubeconfig)
            .env("NODE_NAME", l.node)
            .env("HOST_IP", "127.0.0.1");
            cmd
        }
        Version::Ours => {
            let mut cmd = l.ns.command(ours("nmi"));
            cmd.args([
                format!("--node={}", l.node),
                format!("--kubeconfig={}", l.kubeconfig.display()),
                "--http-probe-port=8085".to_owned(),
                "--ops-listen-address=127.0.0.1".to_owned(),
            ]);
            cmd
        }
    };
    Supervised::spawn_with(&format!("{version} nmi"), &cmd, log)
        .unwrap_or_else(|e| panic!("starting {version} NMI: {e}"))
}

/// Whether the NMI of `ns` reports itself ready: ours on `/readyz` (watches synced, rules in
/// place), upstream's on `/healthz` with the body `Active` (rules in place).
pub fn nmi_ready(version: Version, ns: &Netns) -> bool {
    let (path, want) = match version {
        Version::Upstream => ("healthz", "Active"),
        Version::Ours => ("readyz", ""),
    };
    let out = ns.exec(&[
        "curl",
        "-s",
        "-m",
        "2",
        "-w",
        "\n%{http_code}",
        &format!("http://127.0.0.1:8085/{path}"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    code == "200" && body.contains(want)
}

/// How a MIC is started (in the test's own namespace, where ARM, Entra and the apiserver are).
pub struct MicLaunch<'a> {
    pub kubeconfig: &'a Path,
    pub cloud: &'a crate::world::CloudFiles,
    pub arm_url: &'a str,
    pub entra_url: &'a str,
    pub probe_port: u16,
    pub metrics_port: u16,
}

/// Starts MIC. Upstream's gets deployment-rbac.yaml's arguments (`--cloudconfig`,
/// `--logtostderr`) and environment (`MIC_POD_NAMESPACE`), plus what an Azure Stack cloud
/// needs (`AZURE_ENVIRONMENT_FILEPATH`, `SSL_CERT_FILE`); ours the same azure.json and
/// environment file (its `cloud` is AzureStackCloud, which needs the file), with its own endpoint
/// flags and CA file on top.
pub fn start_mic(version: Version, l: &MicLaunch<'_>, log: &Path) -> Supervised {
    let cmd = match version {
        Version::Upstream => {
            let mut cmd = std::process::Command::new(&upstream().mic);
            cmd.args([
                format!("--kubeconfig={}", l.kubeconfig.display()),
                format!("--cloudconfig={}", l.cloud.azure_json.display()),
                "--logtostderr".to_owned(),
                format!("--http-probe-port={}", l.probe_port),
                format!("--prometheus-port={}", l.metrics_port),
            ])
            .env("MIC_POD_NAMESPACE", "default")
            .env("AZURE_ENVIRONMENT_FILEPATH", &l.cloud.environment)
            .env("SSL_CERT_FILE", &l.cloud.ca);
            cmd
        }
        Version::Ours => {
            let mut cmd = std::process::Command::new(ours("mic"));
            cmd.args([
                format!("--kubeconfig={}", l.kubeconfig.display()),
                format!("--cloudconfig={}", l.cloud.azure_json.display()),
                format!("--arm-endpoint={}", l.arm_url),
                format!("--aad-endpoint={}", l.entra_url),
                format!("--ca-file={}", l.cloud.ca.display()),
                format!("--http-probe-port={}", l.probe_port),
                format!("--prometheus-port={}", l.metrics_port),
                "--leader-election-instance=mic-0".to_owned(),
            ])
            .env("MIC_POD_NAMESPACE", "default")
            .env("AZURE_ENVIRONMENT_FILEPATH", &l.cloud.environment);
            cmd
        }
    };
    Supervised::spawn_with(&format!("{version} mic"), &cmd, log)
        .unwrap_or_else(|e| panic!("starting {version} MIC: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dep_info_lists_each_source_once_with_escaped_spaces_kept() {
        let d = "/t/debug/nmi: /r/crates/api/src/lib.rs /r/my\\ dir/a.rs\n\n/r/crates/api/src/lib.rs:\n";
        assert_eq!(
            super::sources(d).collect::<Vec<_>>(),
            ["/r/crates/api/src/lib.rs", "/r/my dir/a.rs"]
        );
    }
}
