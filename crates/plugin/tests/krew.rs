//! The Krew packaging (scripts/krew-manifest.sh) for the binary this build made: the archive
//! holds what the manifest promises, the manifest has every field Krew requires, its sha256 is
//! the archive's, and the completion helper packed beside the plugin answers kubectl's protocol.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-pod_identity");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `program args`, asserting success; its stdout.
fn run(program: impl AsRef<Path>, args: &[&str]) -> String {
    let program = program.as_ref();
    let out = Command::new(program).args(args).output().expect("it runs");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Krew's name for this machine's architecture.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no Krew platform for {other}"),
    }
}

#[test]
fn the_manifest_describes_the_archive_made_from_this_build() {
    let dist = tempfile::tempdir().unwrap();
    let dist_dir = dist.path().to_str().unwrap();
    let script = root().join("scripts/krew-manifest.sh");
    let archive = PathBuf::from(
        run(&script, &["archive", "linux", arch(), PLUGIN, dist_dir])
            .trim()
            .to_owned(),
    );
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("kubectl-pod_identity-v{version}-linux-{}.tar.gz", arch());
    assert_eq!(archive.file_name().unwrap().to_str(), Some(name.as_str()));

    let yaml = run(&script, &["manifest", dist_dir]);
    let m: Value = serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(m["apiVersion"], "krew.googlecontainertools.github.com/v1alpha2");
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["metadata"]["name"], "pod-identity");
    let spec = &m["spec"];
    assert_eq!(spec["version"], format!("v{version}"), "Krew wants the v");
    assert!(
        spec["homepage"].as_str().unwrap().starts_with("https://"),
        "{yaml}"
    );
    let short = spec["shortDescription"].as_str().unwrap();
    assert!(
        !short.is_empty() && short.len() <= 50,
        "Krew's index wants a short one: {short}"
    );
    assert!(
        spec["description"]
            .as_str()
            .unwrap()
            .contains("kubectl pod-identity explain POD")
    );
    assert!(!yaml.contains('@'), "a placeholder left: {yaml}");

    let platforms = spec["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 1, "one archive, one platform: {yaml}");
    let p = &platforms[0];
    assert_eq!(p["selector"]["matchLabels"]["os"], "linux");
    assert_eq!(p["selector"]["matchLabels"]["arch"], arch());
    assert_eq!(p["bin"], "kubectl-pod_identity");
    let uri = p["uri"].as_str().unwrap();
    assert!(
        uri.starts_with("https://") && uri.ends_with(&format!("/v{version}/{name}")),
        "{uri}"
    );
    let sum = run("sha256sum", &[archive.to_str().unwrap()]);
    assert_eq!(p["sha256"].as_str(), sum.split_whitespace().next());

    // What Krew unpacks: the plugin, which runs, its licence and the completion helper.
    let unpacked = tempfile::tempdir().unwrap();
    let listing = run(
        "tar",
        &[
            "-xzvf",
            archive.to_str().unwrap(),
            "-C",
            unpacked.path().to_str().unwrap(),
        ],
    );
    let mut files: Vec<&str> = listing.lines().collect();
    files.sort_unstable();
    assert_eq!(
        files,
        ["LICENSE", "kubectl-pod_identity", "kubectl_complete-pod_identity"]
    );
    let version_line = run(unpacked.path().join("kubectl-pod_identity"), &["--version"]);
    assert!(version_line.contains(version), "{version_line}");
    // kubectl runs the helper with the words after `pod-identity`, the last one being typed.
    let answer = run(
        unpacked.path().join("kubectl_complete-pod_identity"),
        &["explain", "-o", ""],
    );
    let values: Vec<&str> = answer.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(values, ["text", "json", "yaml", ":4"], "{answer}");

    // The same inputs make the same archive, so a published sha256 can be checked by rebuilding.
    run(&script, &["archive", "linux", arch(), PLUGIN, dist_dir]);
    assert_eq!(run("sha256sum", &[archive.to_str().unwrap()]), sum);
}

#[test]
fn the_script_refuses_what_krew_could_not_install() {
    let dist = tempfile::tempdir().unwrap();
    let dist_dir = dist.path().to_str().unwrap();
    let script = root().join("scripts/krew-manifest.sh");
    for args in [
        vec!["archive", "windows", "amd64", PLUGIN, dist_dir],
        vec![
            "archive",
            "linux",
            "amd64",
            "/nonexistent/kubectl-pod_identity",
            dist_dir,
        ],
        vec!["manifest", dist_dir],
    ] {
        let out = Command::new(&script).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(String::from_utf8_lossy(&out.stderr).contains("FATAL"), "{args:?}");
    }
}
