//! Issue 13's churn test: at least 300 short-lived pods over two scale sets of two instances and
//! one VM, three identities, ARM operations of 0.5 s, against a real kube-apiserver, the Azure
//! emulator, MIC and one NMI per node (the workspace's debug binaries). It runs `bench churn`,
//! whose harness checks what users rely on: every bound pod gets its token (with the Python
//! SDK's retry policy), no unbound pod gets one, and every VM and scale set ends with exactly the
//! identities still needed. Meanwhile, every 4 s on average, someone removes an identity from a
//! VM or scale set behind MIC's back (as `az vmss identity remove` does): the pods that need it
//! must still get their tokens; every 8 s on average MIC is paused for 0.5-3 s, so that its
//! watches lag and it meets a burst of events at once; and all along, each of MIC's watches
//! delivers its events up to 1.5 s late (a lag of its own, drawn anew every 1-5 s) while MIC's
//! writes go through at once, so that its caches trail its own writes. Two StatefulSet replicas
//! come back again and again under one name on nodes drawn anew. A failure prints the seed;
//! `CHURN_SEED=<seed>` replays it.

use std::{io::Write, process::Command};

const PODS: usize = 300;

#[test]
fn pods_coming_and_going_on_shared_targets_all_get_their_token() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let summary = dir.path().join("summary.json");
    let seed = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "churn",
            "--no-table",
            "--pods",
            &PODS.to_string(),
            "--seconds",
            "1200",
        ])
        .args(["--arm-latency-ms", "500", "--seed", &seed.to_string()])
        .args([
            "--remove-behind-ms",
            "4000",
            "--pause-mic-ms",
            "8000",
            "--slow-watch-ms",
            "1500",
        ])
        .arg("--summary")
        .arg(&summary)
        .env("RUST_LOG", "warn")
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the churn run failed with seed {seed} (replay: CHURN_SEED={seed} cargo test -p bench --test churn):\n{stderr}"
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("the run wrote its figures"))
            .expect("figures are JSON");
    let pods = figures["churn_pods"].as_u64().unwrap_or(0);
    let behind = count(&stdout, " identities removed behind MIC's back");
    let pauses = count(&stdout, " MIC pauses");
    let late = count(&stdout, " watch events late to MIC");
    // Written past the test harness's capture, so that `make test` shows it for a passing run too.
    let _ = writeln!(
        std::io::stderr(),
        "churn test: {pods} pod lifecycles, {behind} identities removed behind MIC's back, MIC paused {pauses} times, {late} watch events late to MIC, {} token failures, seed {seed}",
        figures["churn_token_failures"]
    );
    assert!(
        behind > 0,
        "no identity was removed behind MIC's back (seed {seed}):\n{stdout}"
    );
    assert!(pauses > 0, "MIC was never paused (seed {seed}):\n{stdout}");
    assert!(
        late > 0,
        "no watch event reached MIC late (seed {seed}):\n{stdout}"
    );
    assert!(
        pods >= PODS as u64,
        "only {pods} of {PODS} lifecycles ran (seed {seed})"
    );
    assert_eq!(figures["churn_token_failures"], 0, "seed {seed}");
}

/// The number the run's summary line (`churn: … N<what>, …`) gives before `what`.
fn count(stdout: &str, what: &str) -> u32 {
    stdout
        .lines()
        .filter(|l| l.starts_with("churn: "))
        .find_map(|l| l.split_once(what)?.0.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the run's summary line gives{what}:\n{stdout}"))
}
