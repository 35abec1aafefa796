//! A kubelet for one container of upstream's manifests, for the tests that start our binaries
//! with upstream's exact argument lists (`crates/nmi/tests/upstream_args.rs`,
//! `crates/mic/tests/upstream_args.rs`, which include this file).
//!
//! A `*.pod` file next to this one holds a container as upstream wrote it: `arg` lines (verbatim),
//! `env` lines (`NAME=value`, or `NAME=fieldRef:<path>`), `mount` lines (hostPath volume mounts)
//! and the `liveness` probe's port and path. [`Pod::start`] runs the binary as a kubelet would:
//! `$(VAR)` in the arguments expanded from the container's environment, nothing else in that
//! environment but PATH, HOSTNAME and the harness's stand-in for the in-cluster config
//! (KUBECONFIG); files at the mount paths (an overlay on `/etc` in a private mount namespace,
//! so the host's `/etc` is never written); and a network namespace of its own, as `hostNetwork`
//! gives NMI a node's, so fixed ports never collide and iptables rules never touch the root
//! namespace. Addresses the container must reach (the apiserver, the emulator) are forwarded
//! into that namespace (with `testbed::netns`, as every network-namespace test). Needs root,
//! `ip`, `unshare`, `socat`, `nsenter`, `curl`.

#![allow(dead_code)] // Each test uses the parts its binary needs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use testbed::{
    Supervised,
    netns::{self, Netns},
};

/// One container of upstream's manifests, as read from `examples/upstream-args/<name>.pod`.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<String>,
    pub liveness: (u16, String),
}

/// What a container's `fieldRef`s read.
#[derive(Clone, Debug)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub ip: String,
}

pub fn spec(name: &str) -> PodSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/upstream-args/{name}.pod"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut spec = PodSpec {
        name: name.to_owned(),
        args: Vec::new(),
        env: Vec::new(),
        mounts: Vec::new(),
        liveness: (0, String::new()),
    };
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (kind, rest) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        match kind {
            "arg" => spec.args.push(rest.to_owned()),
            "env" => {
                let (k, v) = rest
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{name}: bad env {rest:?}"));
                spec.env.push((k.to_owned(), v.to_owned()));
            }
            "mount" => spec.mounts.push(rest.to_owned()),
            "liveness" => {
                let (port, path) = rest.split_once(' ').unwrap();
                spec.liveness = (port.parse().unwrap(), path.to_owned());
            }
            _ => panic!("{name}: unknown line {line:?}"),
        }
    }
    assert!(spec.liveness.0 != 0, "{name} has no liveness line");
    spec
}

impl PodSpec {
    /// The container's environment, `fieldRef`s resolved.
    pub fn env_for(&self, meta: &PodMeta) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| {
                let value = match v.strip_prefix("fieldRef:") {
                    Some("spec.nodeName") => meta.node.clone(),
                    Some("status.podIP") => meta.ip.clone(),
                    Some("metadata.namespace") => meta.namespace.clone(),
                    Some("metadata.name") => meta.name.clone(),
                    Some(other) => panic!("{}: fieldRef {other} is not supported", self.name),
                    None => v.clone(),
                };
                (k.clone(), value)
            })
            .collect()
    }

    /// The arguments with `$(VAR)` expanded from `env`, as the kubelet does (unknown ones stay).
    pub fn args_for(&self, env: &[(String, String)]) -> Vec<String> {
        self.args
            .iter()
            .map(|a| {
                env.iter()
                    .fold(a.clone(), |a, (k, v)| a.replace(&format!("$({k})"), v))
            })
            .collect()
    }
}

/// Fails, never skips, when the machine cannot run the pods.
pub fn require_prerequisites() {
    netns::require_prerequisites();
    assert!(
        netns::run("sh", &["-c", "command -v unshare"]).status.success(),
        "unshare is missing; run scripts/install-deps.sh as root"
    );
}

/// A running container in its own network and mount namespaces; stopped and removed on drop.
pub struct Pod {
    netns: Netns,
    main: Option<Supervised>,
    forwarders: Vec<Supervised>,
    dir: tempfile::TempDir,
}

/// What the harness adds to a container, beyond what the manifest says.
#[derive(Default)]
pub struct Harness<'a> {
    /// Contents of each hostPath mount the container reads (`/run/xtables.lock` is the host's).
    pub files: Vec<(&'a str, String)>,
    /// Variables a pod would get from its cluster (KUBECONFIG stands in for the in-cluster config).
    pub env: Vec<(&'a str, String)>,
    /// Arguments appended after upstream's, where the test must point at the emulator.
    pub args: Vec<String>,
    /// `listen` address in the pod's namespace → the test's `target`.
    pub forwards: Vec<(SocketAddr, SocketAddr)>,
}

impl Pod {
    pub fn start(binary: &Path, spec: &PodSpec, meta: &PodMeta, harness: Harness<'_>) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let netns = Netns::create(&format!(
            "upa{}-{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let dir = tempfile::tempdir().unwrap();
        let mut pod = Pod {
            netns,
            main: None,
            forwarders: Vec::new(),
            dir,
        };
        for (listen, target) in &harness.forwards {
            pod.forward(*listen, *target);
        }

        // hostPath mounts under /etc: files in the upper layer of an overlay on /etc.
        let upper = pod.dir.path().join("etc-upper");
        let work = pod.dir.path().join("etc-work");
        std::fs::create_dir_all(&work).unwrap();
        for mount in &spec.mounts {
            if mount == "/run/xtables.lock" {
                continue;
            }
            let rel = mount
                .strip_prefix("/etc/")
                .unwrap_or_else(|| panic!("{}: mount {mount} is not under /etc", spec.name));
            let (_, contents) = harness
                .files
                .iter()
                .find(|(path, _)| path == mount)
                .unwrap_or_else(|| panic!("{}: the test gives no file for the mount {mount}", spec.name));
            let path = upper.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
        }
        std::fs::create_dir_all(&upper).unwrap();

        let env = spec.env_for(meta);
        let mut cmd = Command::new("env");
        cmd.arg("-i")
            .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .arg(format!("HOSTNAME={}", meta.name));
        for (k, v) in env
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .chain(harness.env.iter().map(|(k, v)| (*k, v)))
        {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(["ip", "netns", "exec", &pod.netns.name, "unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", r#"mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc && shift 2 && exec "$@""#])
            .arg("sh")
            .arg(&upper)
            .arg(&work)
            .arg(binary)
            .args(spec.args_for(&env))
            .args(&harness.args);
        let log = pod.dir.path().join(format!("{}.log", spec.name));
        pod.main = Some(Supervised::spawn_with(&spec.name, &cmd, &log).unwrap());
        pod
    }

    /// Forwards `listen` in the pod's namespace to `target` in the test's namespace.
    fn forward(&mut self, listen: SocketAddr, target: SocketAddr) {
        let ip = listen.ip().to_string();
        if ip != "127.0.0.1" {
            self.netns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        }
        let log = self
            .dir
            .path()
            .join(format!("forward-{}.log", self.forwarders.len()));
        self.forwarders.push(
            self.netns
                .forwarder(&listen.to_string(), &target.to_string(), &log),
        );
        let probe = format!("exec 3<>/dev/tcp/{ip}/{}", listen.port());
        self.wait_until(&format!("the forwarder on {listen} listens"), 10, || {
            self.exec(&["bash", "-c", &probe]).status.success()
        });
    }

    /// Runs a command in the pod's network namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.netns.exec(args)
    }

    /// An HTTP GET to `127.0.0.1:<port><path>` from inside the pod: `Some((status, body))`.
    pub fn get(&self, port: u16, path: &str, headers: &[&str]) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut args = vec!["curl", "-s", "-m", "5", "-w", "\n%{http_code}"];
        for h in headers {
            args.extend(["-H", h]);
        }
        args.push(&url);
        let out = self.exec(&args);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_owned()))
    }

    /// Whether the container's process is still running (not exited, not a zombie: its
    /// supervisor reaps it only when stopped).
    pub fn is_running(&self) -> bool {
        let Some(pid) = self.main.as_ref().and_then(Supervised::pid) else {
            return true; // not started yet
        };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| Some(stat.rsplit_once(") ")?.1.chars().next()? != 'Z'))
            .unwrap_or(false)
    }

    /// The container's log (stdout and stderr), last 8 KiB.
    pub fn log(&self) -> String {
        self.main.as_ref().map(Supervised::log_tail).unwrap_or_default()
    }

    /// Polls `cond` every 100 ms for up to `secs`; on timeout fails with the container's log.
    pub fn wait_until(&self, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; the container's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // The container first (SIGTERM, as a kubelet stops it), then what it used; the namespace
        // goes when its field is dropped, after this.
        self.main.take();
        self.forwarders.clear();
    }
}
