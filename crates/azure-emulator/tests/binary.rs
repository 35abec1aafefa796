//! The `azure-emulator` binary: starts from the example world, prints its endpoints as one JSON
//! line, logs JSON when asked, serves IMDS, and stops on SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use common::*;
use serde_json::Value;

#[test]
fn binary_serves_the_example_world_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_azure-emulator"))
        .args([
            "--config",
            repo_root().join("examples/emulator/world.yaml").to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("endpoints line");
    let endpoints: Value = serde_json::from_str(&line).expect("endpoints are JSON");
    assert_eq!(endpoints["tenant_id"], TENANT);
    assert!(
        endpoints["arm"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    assert!(std::path::Path::new(endpoints["ca_cert"].as_str().unwrap()).exists());
    let imds = endpoints["imds"].as_array().unwrap();
    assert_eq!(imds.len(), 3);
    let agent = imds.iter().find(|e| e["node"] == "aks-agent-0").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{agent}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net&client_id={APP_IDENTITY_CLIENT}"))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exits cleanly on SIGTERM");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().expect("a log line");
    let log: Value = serde_json::from_str(first).expect("logs are JSON");
    assert_eq!(log["level"], "INFO");
}

#[test]
fn binary_refuses_a_bad_world_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("world.yaml");
    std::fs::write(&bad, "tenant_id: t\nsubscriptions: []\nsurprise: 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_azure-emulator"))
        .args(["--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("surprise"),
        "names the unknown field"
    );
}
