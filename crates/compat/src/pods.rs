//! The walkthrough's pod (python/pod.py, the Azure SDK for Python) run inside a pod's network
//! namespace: a token, a blob read through Azurite, or a token every 100 ms.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;
use testbed::{Supervised, netns::Netns};

use crate::Error;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `scripts/<name> args…`; fails the test, saying what is missing, unless it succeeds.
pub fn script(name: &str, args: &[&str]) -> String {
    let path = repo().join("scripts").join(name);
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} failed (a prerequisite is missing; run `make deps`): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The Python venv with the pinned Azure SDKs (scripts/python-venv.sh).
pub fn python() -> PathBuf {
    PathBuf::from(script("python-venv.sh", &[]).lines().last().unwrap_or_default())
}

/// A pod: its network namespace, its IP, and its node (index).
pub struct PodNs {
    pub name: String,
    pub ip: String,
    pub node: usize,
    pub ns: Netns,
}

/// The walkthrough pod's program, with a clean environment: nothing but `PATH` and the CA that
/// Azurite's certificate chains to.
fn pod_py(python: &Path, pod: &PodNs, ca: &Path, args: &[&str]) -> Command {
    let mut cmd = pod.ns.command("env");
    cmd.args(["-i", "PATH=/usr/bin:/bin"])
        .arg(format!("REQUESTS_CA_BUNDLE={}", ca.display()))
        .arg(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pod.py"))
        .args(args);
    cmd
}

fn result(out: Output) -> Result<String, Error> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(Error::Pod {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// `ManagedIdentityCredential().get_token(...)`: the token's `oid`, or the SDK's error.
pub fn token_oid(python: &Path, pod: &PodNs, ca: &Path) -> Result<String, Error> {
    let out = pod_py(python, pod, ca, &["token"])
        .output()
        .expect("running python");
    result(out).map(|t| oid(&t))
}

/// The walkthrough: the blob's text as the pod reads it from Azurite, or the SDK's error.
pub fn read_blob(python: &Path, pod: &PodNs, ca: &Path, account_url: &str) -> Result<String, Error> {
    let out = pod_py(python, pod, ca, &["blob", account_url])
        .output()
        .expect("running python");
    result(out)
}

/// The `oid` claim of a JWT.
pub fn oid(jwt: &str) -> String {
    use base64::Engine;
    let payload = jwt.trim().split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_default();
    let claims: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    claims["oid"].as_str().unwrap_or_default().to_owned()
}

/// A pod asking for a token every 100 ms until stopped.
pub struct Poller {
    process: Supervised,
    out: PathBuf,
    stop: PathBuf,
}

/// One of the poller's attempts, as the SDK ended it (after its own retries).
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Unix time of the start, in seconds.
    pub at: f64,
    pub ms: u64,
    /// The token's `oid` when the SDK got one.
    pub oid: Option<String>,
    pub error: Option<String>,
}

impl Poller {
    pub fn start(python: &Path, pod: &PodNs, ca: &Path, dir: &Path) -> Self {
        let out = dir.join(format!("poll-{}.jsonl", pod.name));
        let stop = dir.join(format!("poll-{}.stop", pod.name));
        let _ = std::fs::remove_file(&stop);
        let (o, st) = (out.display().to_string(), stop.display().to_string());
        let cmd = pod_py(python, pod, ca, &["poll", &o, &st]);
        let process = Supervised::spawn_with("poller", &cmd, &dir.join(format!("poll-{}.log", pod.name)))
            .expect("starting the poller");
        Self { process, out, stop }
    }

    /// The attempts so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Attempt {
                at: v["t"].as_f64().unwrap_or_default(),
                ms: v["ms"].as_u64().unwrap_or_default(),
                oid: v["oid"].as_str().map(str::to_owned),
                error: v["error"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// Stops after the attempt in progress (which may be in the SDK's retries); returns every
    /// attempt.
    pub fn stop(mut self) -> Vec<Attempt> {
        std::fs::write(&self.stop, "").expect("writing the stop file");
        // The supervisor outlives its child until told to stop, so look at the child itself:
        // gone, or a zombie (exited, not yet reaped).
        let exited = |pid: Option<u32>| {
            pid.is_none_or(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                    s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))
                })
            })
        };
        for _ in 0..1200 {
            if exited(self.process.pid()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.process.stop(Duration::from_secs(1));
        self.attempts()
    }

    /// The poller's own log (Python's stderr), for failure messages.
    pub fn log(&self) -> String {
        self.process.log_tail()
    }
}
