//! MIC's and NMI's `aadpodidentity_*_build_info` metrics. Their build scripts call [`emit`] to
//! record the git commit (`git rev-parse --short HEAD`) and rustc's version as compile-time
//! variables (`POD_IDENTITY_GIT_COMMIT`, `POD_IDENTITY_RUSTC`); with the `metric` feature, their
//! metrics call [`register`] with [`labels!`]. Never fails the build: without git or a
//! repository (a Docker build, whose context leaves `.git/` out) the commit is "unknown", unless
//! the environment variable POD_IDENTITY_GIT_COMMIT names it.
//!
//! A build script reruns only when the commit can have changed (`rerun-if-changed` on `.git/HEAD`
//! and on the file of the branch it points to), not on every source change.

#![forbid(unsafe_code)]

#[cfg(feature = "metric")]
mod metric;
#[cfg(feature = "metric")]
pub use metric::{BuildInfoLabels, register};

use std::{path::PathBuf, process::Command};

/// Names the commit where git cannot (a build from a copy of the sources).
const COMMIT_OVERRIDE: &str = "POD_IDENTITY_GIT_COMMIT";

/// Prints the cargo directives of a build script: `POD_IDENTITY_GIT_COMMIT` and `POD_IDENTITY_RUSTC`
/// as compile-time variables of the package (read with `env!`), and when to run it again.
pub fn emit() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={COMMIT_OVERRIDE}");
    let commit = std::env::var(COMMIT_OVERRIDE)
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=POD_IDENTITY_GIT_COMMIT={}", commit.trim());
    println!(
        "cargo:rustc-env=POD_IDENTITY_RUSTC={}",
        rustc_version().unwrap_or_else(|| "unknown".to_owned())
    );
}

/// A git command's trimmed output, if it succeeded and printed something.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

/// The short commit of HEAD, watching the files that change when HEAD moves.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    for file in head_files() {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Some(commit)
}

/// `.git/HEAD` (a checkout), and the branch's ref file (a commit), or `packed-refs` where the ref is
/// packed. Existing files only: cargo reruns a script on every build while a watched file is missing.
/// `--git-path` finds them in a worktree too (HEAD there, refs in the common directory); the paths
/// are relative to this package's directory, as cargo reads them.
fn head_files() -> Vec<PathBuf> {
    let path = |p: &str| git(&["rev-parse", "--git-path", p]).map(PathBuf::from);
    let mut files: Vec<PathBuf> = path("HEAD").into_iter().collect();
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        match path(&branch).filter(|f| f.exists()) {
            Some(loose) => files.push(loose),
            None => files.extend(path("packed-refs")),
        }
    }
    files.retain(|f| f.exists());
    files
}

/// `1.95.0` from `rustc 1.95.0 (hash date)`.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC")?;
    let out = Command::new(rustc).arg("--version").output().ok()?;
    version_of(&String::from_utf8(out.stdout).ok()?)
}

/// The version in `rustc --version`'s answer.
fn version_of(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    (words.next() == Some("rustc")).then_some(())?;
    words.next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rustc_s_version_is_its_second_word() {
        assert_eq!(
            super::version_of("rustc 1.95.0 (59807616e 2026-04-14)\n").as_deref(),
            Some("1.95.0")
        );
        assert_eq!(super::version_of("error: no such command"), None);
        assert_eq!(super::version_of(""), None);
    }
}
