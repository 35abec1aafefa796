use std::{path::PathBuf, process::Command, sync::OnceLock};

use crate::{Error, Result};

/// Paths of the upstream binaries the tests run, at the versions pinned in `tools/testbin/`.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
}

/// The Kubernetes version of offline `helm template` renders of the chart (`--kube-version`): the
/// oldest the chart supports (its Chart.yaml `kubeVersion`). helm built as `scripts/testbin.sh`
/// builds it, without the ldflags of helm's releases, assumes Kubernetes 1.20, which the chart
/// refuses; a released helm assumes the version of its client-go.
pub const CHART_KUBE_VERSION: &str = "1.25.0";

/// Upstream aad-pod-identity's own NMI and MIC (v1.8.17, pinned in
/// `tools/testbin/aad-pod-identity/`), the peers of the mixed-version tests.
#[derive(Clone, Debug)]
pub struct UpstreamPodIdentity {
    pub nmi: PathBuf,
    pub mic: PathBuf,
}

/// Builds (first time) or finds (cached under `~/.cache/pod-identity/bin/`) the
/// binaries, by running `scripts/testbin.sh`, the one place that pins their versions.
pub fn binaries() -> Result<&'static Binaries> {
    // The outcome is cached, failure included, and handed to every caller, so it must be Clone:
    // the failure is kept as its text (`Error` holds io and kube errors, which are not) and each
    // caller gets its own `Error::Binaries` of it. `testbin` and `Reported::path` make that text.
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BINARIES
        .get_or_init(|| {
            let out = testbin(&["kube-apiserver", "etcd", "kubectl", "helm"])?;
            Ok(Binaries {
                kube_apiserver: out.path("KUBE_APISERVER")?,
                etcd: out.path("ETCD")?,
                kubectl: out.path("KUBECTL")?,
                helm: out.path("HELM")?,
            })
        })
        .as_ref()
        .map_err(|e| Error::Binaries(e.clone()))
}

/// Builds (first time) or finds upstream's NMI and MIC, as [`binaries`] does the others. Kept
/// apart so that tests which do not run them never wait for their build.
pub fn upstream_pod_identity() -> Result<&'static UpstreamPodIdentity> {
    // Text, as in `binaries`: a cached failure is cloned for every caller.
    static UPSTREAM: OnceLock<Result<UpstreamPodIdentity, String>> = OnceLock::new();
    UPSTREAM
        .get_or_init(|| {
            let out = testbin(&["upstream-nmi", "upstream-mic"])?;
            Ok(UpstreamPodIdentity {
                nmi: out.path("UPSTREAM_NMI")?,
                mic: out.path("UPSTREAM_MIC")?,
            })
        })
        .as_ref()
        .map_err(|e| Error::Binaries(e.clone()))
}

/// What `scripts/testbin.sh` printed: one `NAME=/path` line per binary.
struct Reported {
    script: PathBuf,
    stdout: String,
}

impl Reported {
    /// The error is the text the caches of [`binaries`] keep.
    fn path(&self, name: &str) -> Result<PathBuf, String> {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('=').map(PathBuf::from))
            .ok_or_else(|| format!("{} did not report {name}", self.script.display()))
    }
}

/// Runs `scripts/testbin.sh` for `names`. The error is the text the caches of [`binaries`] and
/// [`upstream_pod_identity`] keep (see there).
fn testbin(names: &[&str]) -> Result<Reported, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testbin.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(names)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} exited with {}",
            script.display(),
            names.join(" "),
            out.status
        ));
    }
    Ok(Reported {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        script,
    })
}
