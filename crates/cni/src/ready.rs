//! The ready file. NMI writes it once its interception rules are in place in the node's network
//! namespace, and removes it when it finds them gone and cannot put them back; it holds the id of
//! the boot it was written in. The plugin lets a pod's network be set up only while the file holds
//! the current boot's id. A reboot thus un-readies the node twice over: the file lives on a tmpfs
//! (`/run`) that the reboot empties, and a file that survived anyway (a directory on disk) names an
//! earlier boot.

use std::path::Path;

use crate::{Result, io, write_atomically};

/// The kernel's id of the current boot: random, new at every boot, the same in every container.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The current boot's id.
pub fn boot_id() -> Result<String> {
    std::fs::read_to_string(BOOT_ID_PATH)
        .map(|s| s.trim().to_owned())
        .map_err(io("reading", BOOT_ID_PATH))
}

/// What the ready file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// No file: NMI has not installed its rules since the node booted (or found them gone).
    Missing,
    /// The file names another boot than the current one.
    EarlierBoot,
    /// The file or the boot id could not be read.
    Unreadable(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        *self == Readiness::Ready
    }
}

/// Reads the ready file at `path` against the current boot's id (`Err`: it could not be read).
pub fn check(path: &Path, boot_id: &Result<String>) -> Readiness {
    let written = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Readiness::Missing,
        Err(e) => return Readiness::Unreadable(format!("reading {}: {e}", path.display())),
    };
    match boot_id {
        Ok(id) if written.trim() == id => Readiness::Ready,
        Ok(_) => Readiness::EarlierBoot,
        Err(e) => Readiness::Unreadable(e.to_string()),
    }
}

/// Writes the ready file for boot `boot_id`, unless it already says so. True when it was written.
pub fn mark(path: &Path, boot_id: &str) -> Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == boot_id) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    write_atomically(path, format!("{boot_id}\n").as_bytes(), 0o644)?;
    Ok(true)
}

/// Removes the ready file. True when there was one.
pub fn unmark(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("removing", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_for_the_boot_it_was_written_in() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run/pod-identity/ready");
        let now = Ok("b1".to_owned());
        assert_eq!(check(&file, &now), Readiness::Missing);
        assert!(mark(&file, "b1").unwrap(), "written, its directory made");
        assert!(!mark(&file, "b1").unwrap(), "already so: not rewritten");
        assert_eq!(check(&file, &now), Readiness::Ready);
        assert_eq!(check(&file, &Ok("b2".to_owned())), Readiness::EarlierBoot);
        let unknown = Err(crate::Error::Config {
            path: BOOT_ID_PATH.into(),
            detail: "gone".into(),
        });
        assert!(matches!(check(&file, &unknown), Readiness::Unreadable(_)));
        assert!(unmark(&file).unwrap());
        assert!(!unmark(&file).unwrap());
        assert_eq!(check(&file, &now), Readiness::Missing);
    }

    #[test]
    fn the_boot_id_is_readable_here() {
        let id = boot_id().unwrap();
        assert_eq!(id.len(), 36, "{id}");
    }
}
