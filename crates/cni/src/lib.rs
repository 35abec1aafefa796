//! `pod-identity-cni`: a chained CNI plugin that closes a node's boot window. After a reboot the
//! kubelet restarts the node's pods at once, and NMI's interception rules (which a reboot wipes)
//! may not be back yet: those pods would reach IMDS, with the node's identities, directly. Chained
//! into the node's CNI network configuration, this plugin fails every pod sandbox's network setup
//! (`ADD`) until NMI has written its ready file in this boot, so no pod is networked before the
//! rules are; the kubelet retries the sandbox. hostNetwork pods (NMI itself) do not go through CNI.
//!
//! - [`plugin`]: the plugin's commands (`ADD`, `DEL`, `CHECK`, `VERSION`, `STATUS`, `GC`) on plain
//!   values; `src/bin/pod-identity-cni.rs` only reads the environment and stdin.
//! - [`ready`]: the ready file (NMI writes it once its rules are in place; the plugin reads it).
//! - [`chain`]: chaining the plugin into the node's network configuration and copying its binary
//!   to the CNI bin directory, and undoing both (NMI and `nmi cleanup` call these).
#![forbid(unsafe_code)]

pub mod chain;
pub mod plugin;
pub mod ready;

use std::path::PathBuf;

/// The plugin's `type` in a network configuration, and its file name in the CNI bin directory.
pub const PLUGIN_TYPE: &str = "pod-identity-cni";

/// Everything that can go wrong installing, removing or reading the plugin's files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A network configuration the plugin cannot be chained into (not JSON, not a list).
    #[error("{}: {detail}", path.display())]
    Config { path: PathBuf, detail: String },
    /// A single-plugin network configuration, which the plugin cannot be chained into
    /// ([`chain::insert`] works on the JSON alone; [`chain::install`] reports it as
    /// [`Error::Config`] with the file's path).
    #[error(
        "not a network configuration list (no \"plugins\"): pod-identity-cni can only be chained into a \
         .conflist; convert this single-plugin configuration, or set nmi.cni.enabled=false"
    )]
    NotAList,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so that a
/// reader (the container runtime watching the configuration directory, a runtime executing the
/// binary) sees the old file or the new one, never half of one. The temporary name ends in `-tmp`:
/// libcni ignores files that do not end in `.conf`, `.conflist` or `.json`.
fn write_atomically(path: &std::path::Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{}.pod-identity-tmp", name.unwrap_or_default()));
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    let done = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io("renaming into place", path)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}
