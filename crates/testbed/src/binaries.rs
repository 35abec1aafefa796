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

/// Builds (first time) or finds (cached under `~/.cache/pod-identity/bin/`) the
/// binaries, by running `scripts/testbin.sh`, the one place that pins their versions.
pub fn binaries() -> Result<&'static Binaries> {
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BINARIES
        .get_or_init(|| locate().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Binaries(e.clone()))
}

fn locate() -> Result<Binaries> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testbin.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Binaries(format!("running {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(Error::Binaries(format!(
            "{} exited with {}",
            script.display(),
            out.status
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let find = |name: &str| -> Result<PathBuf> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('=').map(PathBuf::from))
            .ok_or_else(|| Error::Binaries(format!("{} did not report {name}", script.display())))
    };
    Ok(Binaries {
        kube_apiserver: find("KUBE_APISERVER")?,
        etcd: find("ETCD")?,
        kubectl: find("KUBECTL")?,
        helm: find("HELM")?,
    })
}
