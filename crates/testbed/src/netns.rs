//! Network namespaces and the commands run in them, for tests that need real interception: a
//! node namespace with its own netfilter rules, pod namespaces joined to it by veth pairs, and
//! forwarders back to the test process's own namespace. Used by NMI's network-namespace test and
//! the mixed-version tests (`compat`); they never touch the root namespace's routes or rules.
//!
//! Everything here panics with the command and its stderr when it fails: these are a test's
//! prerequisites, and a test must fail loudly.

use std::{
    path::Path,
    process::{Command, Output},
};

use crate::Supervised;

/// Runs `program args…` and returns its output (whatever the status).
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// Runs `program args…`; panics unless it succeeds. Returns its stdout.
pub fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test unless it runs as root with the tools the namespaces need.
pub fn require_prerequisites() {
    assert_eq!(
        ok("id", &["-u"]).trim(),
        "0",
        "tests in network namespaces create them, and need root"
    );
    for tool in ["ip", "iptables", "iptables-restore", "socat", "nsenter", "curl"] {
        assert!(
            run("sh", &["-c", &format!("command -v {tool}")]).status.success(),
            "{tool} is missing; run scripts/install-deps.sh as root (make deps)"
        );
    }
}

/// A network namespace, deleted on drop (with its veth ends and its netfilter rules).
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `name` (removing a leftover of that name first) with its loopback up.
    pub fn create(name: &str) -> Self {
        let _ = run("ip", &["netns", "del", name]);
        ok("ip", &["netns", "add", name]);
        let ns = Self {
            name: name.to_owned(),
        };
        ok("ip", &["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs `program` in this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `args` in this namespace; returns its output.
    pub fn exec(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a command");
        self.command(program)
            .args(rest)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }

    /// Runs `args` in this namespace; panics unless it succeeds. Returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "`{}` in {} failed: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n <this> args…`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ok("ip", &all);
    }

    /// Listens on `listen` (`ip:port`) in this namespace and forwards each connection to
    /// `target` in the test process's own namespace (the emulator, the apiserver, Azurite all
    /// listen on its loopback).
    pub fn forwarder(&self, listen: &str, target: &str, log: &Path) -> Supervised {
        let (ip, port) = listen.rsplit_once(':').expect("ip:port");
        let (tip, tport) = target.rsplit_once(':').expect("ip:port");
        let mut cmd = self.command("socat");
        cmd.arg(format!("TCP-LISTEN:{port},bind={ip},fork,reuseaddr"))
            .arg(format!(
                "SYSTEM:nsenter --net=/proc/{}/ns/net socat STDIO TCP4\\:{tip}\\:{tport}",
                std::process::id()
            ));
        Supervised::spawn_with("forwarder", &cmd, log)
            .unwrap_or_else(|e| panic!("starting a forwarder {listen} -> {target}: {e}"))
    }

    /// `iptables -t nat -S <chain>` in this namespace (empty when the chain does not exist).
    pub fn nat_rules(&self, chain: &str) -> Vec<String> {
        let out = self.exec(&["iptables", "-w", "-t", "nat", "-S", chain]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Joins `pod` to `node` with a veth pair: `<subnet>.1/24` on the node's end, `<subnet>.2/24`
/// on the pod's, and the pod's default route through its node. Interface names are `<tag>h`
/// and `<tag>p` (at most 15 characters).
pub fn join(node: &Netns, pod: &Netns, tag: &str, subnet: &str) {
    let (host_end, pod_end) = (format!("{tag}h"), format!("{tag}p"));
    node.ip(&[
        "link", "add", &host_end, "type", "veth", "peer", "name", &pod_end, "netns", &pod.name,
    ]);
    node.ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &host_end]);
    node.ip(&["link", "set", &host_end, "up"]);
    pod.ip(&["addr", "add", &format!("{subnet}.2/24"), "dev", &pod_end]);
    pod.ip(&["link", "set", &pod_end, "up"]);
    pod.ip(&["route", "add", "default", "via", &format!("{subnet}.1")]);
}
