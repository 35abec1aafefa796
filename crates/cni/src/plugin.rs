//! The plugin's commands, as the CNI specification (1.1, and 0.3.0 to 1.0 for the versions it
//! accepts) defines them for a chained plugin that changes nothing: it reads its network
//! configuration (with the previous plugin's result, `prevResult`) on stdin and the command in
//! `CNI_COMMAND`, and answers on stdout.
//!
//! - `ADD`: when the node is ready, passes `prevResult` on unchanged; otherwise fails with error
//!   code 11 ("try again later"), so the runtime tears the sandbox down and the kubelet retries it.
//! - `CHECK`, `STATUS`: succeed when the node is ready, fail otherwise (`STATUS` with code 50,
//!   "plugin not available").
//! - `DEL`, `GC`: always succeed, whatever the configuration: tearing down must never be blocked.
//! - `VERSION`: the versions below.

use std::path::Path;

use serde_json::{Value, json};

use crate::ready::Readiness;

/// The specification versions whose configurations and results this plugin reads and writes:
/// the results of 0.3.0 to 1.1.0 all carry `cniVersion` and optional lists, which it passes on.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

// The specification's well-known error codes.
const INCOMPATIBLE_VERSION: u32 = 1;
const INVALID_ENVIRONMENT: u32 = 4;
const UNDECODABLE: u32 = 6;
const INVALID_CONFIG: u32 = 7;
const TRY_AGAIN_LATER: u32 = 11;
const NOT_AVAILABLE: u32 = 50;

/// What the plugin prints on stdout, and its exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub stdout: String,
    pub exit_code: u8,
}

impl Reply {
    fn ok(stdout: String) -> Self {
        Self { stdout, exit_code: 0 }
    }

    fn error(version: &str, code: u32, msg: &str, details: String) -> Self {
        let body = json!({"cniVersion": version, "code": code, "msg": msg, "details": details});
        Self {
            stdout: body.to_string(),
            exit_code: 1,
        }
    }
}

/// Runs `command` (`CNI_COMMAND`) on the configuration `stdin`; `readiness` reads the ready file
/// the configuration names.
pub fn run(command: Option<&str>, stdin: &[u8], readiness: &dyn Fn(&Path) -> Readiness) -> Reply {
    let latest = SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1];
    let conf: Option<Value> = serde_json::from_slice(stdin).ok();
    let asked = conf
        .as_ref()
        .and_then(|c| c["cniVersion"].as_str())
        .unwrap_or(latest)
        .to_owned();
    match command {
        // Teardown and garbage collection have nothing to undo here, and must never fail.
        Some("DEL") | Some("GC") => Reply::ok(String::new()),
        Some("VERSION") => Reply::ok(
            json!({"cniVersion": version_for_reply(&asked), "supportedVersions": SUPPORTED_VERSIONS})
                .to_string(),
        ),
        Some(cmd @ ("ADD" | "CHECK" | "STATUS")) => {
            let Some(conf) = conf else {
                return Reply::error(
                    latest,
                    UNDECODABLE,
                    "pod-identity-cni: the network configuration on stdin is not JSON",
                    String::from_utf8_lossy(stdin).chars().take(200).collect(),
                );
            };
            if !SUPPORTED_VERSIONS.contains(&asked.as_str()) {
                return Reply::error(
                    latest,
                    INCOMPATIBLE_VERSION,
                    "pod-identity-cni: unsupported cniVersion",
                    format!("{asked}; supported: {}", SUPPORTED_VERSIONS.join(", ")),
                );
            }
            let Some(file) = conf["readyFile"].as_str().filter(|f| !f.is_empty()) else {
                return Reply::error(
                    &asked,
                    INVALID_CONFIG,
                    "pod-identity-cni: the configuration names no readyFile",
                    "NMI chains this plugin with the path of its ready file; reinstall NMI".into(),
                );
            };
            let state = readiness(Path::new(file));
            if !state.is_ready() {
                let code = if cmd == "STATUS" {
                    NOT_AVAILABLE
                } else {
                    TRY_AGAIN_LATER
                };
                return Reply::error(&asked, code, NOT_READY, why(&state, file));
            }
            match cmd {
                "ADD" => Reply::ok(pass_on(&conf, &asked)),
                _ => Reply::ok(String::new()),
            }
        }
        other => Reply::error(
            latest,
            INVALID_ENVIRONMENT,
            "pod-identity-cni: CNI_COMMAND is missing or unknown",
            format!("{other:?}; expected ADD, DEL, CHECK, VERSION, STATUS or GC"),
        ),
    }
}

/// The error message a pod's events show (`FailedCreatePodSandBox`) while the node is not ready.
pub const NOT_READY: &str = "pod-identity: NMI's interception of 169.254.169.254 is not in place on this node yet; \
     the pod's network is set up once it is (the kubelet retries)";

fn why(state: &Readiness, file: &str) -> String {
    match state {
        Readiness::Ready => String::new(),
        Readiness::Missing => format!(
            "no ready file {file}: NMI has not installed its rules since the node booted (is its pod running?)"
        ),
        Readiness::EarlierBoot => {
            format!(
                "the ready file {file} was written before the node last booted; NMI has not been ready since"
            )
        }
        Readiness::Unreadable(e) => e.clone(),
    }
}

/// The previous plugin's result, passed on as this plugin's; an empty result when it is first.
fn pass_on(conf: &Value, version: &str) -> String {
    let mut result = match &conf["prevResult"] {
        Value::Object(prev) => Value::Object(prev.clone()),
        _ => json!({}),
    };
    result["cniVersion"] = json!(version);
    result.to_string()
}

/// VERSION answers in the version the caller asked in when it is one of ours.
fn version_for_reply(asked: &str) -> &str {
    SUPPORTED_VERSIONS
        .iter()
        .find(|v| **v == asked)
        .unwrap_or(&SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1])
}

#[cfg(test)]
mod tests;
