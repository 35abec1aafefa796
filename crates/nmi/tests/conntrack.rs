//! `--enable-conntrack-deletion` for real, in network namespaces (needs root, `ip`, `iptables`,
//! `conntrack`, `socat`, `nsenter`, `python3`; `scripts/install-deps.sh` installs them, and the
//! test fails, not skips, without them).
//!
//! A "node" namespace routes 169.254.169.254 to an "IMDS" namespace standing for the VM's real
//! IMDS (a forwarder to the emulator's IMDS of the node), so without NMI's rules a pod reaches it
//! directly. An attacker pod (no binding) opens a keep-alive connection there before NMI starts and
//! takes the victim pod's identity by `client_id`. Then NMI starts: its rules alone would leave
//! that connection on its old NAT decision; the cut resets it, and the attacker's next connection
//! meets NMI, which refuses it. The victim is served by NMI throughout, and its own keep-alive
//! connection to NMI survives a later cut (after NMI repairs tampered rules). Last, with
//! `--enable-conntrack-deletion=false`, a connection made while the rules were missing keeps
//! reaching IMDS after the repair: what the default prevents. The CNI gate's files (ready file,
//! chained plugin) are checked on the way, and `nmi cleanup` removes them.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::Duration,
};

use azure_emulator::Emulator;
use common::wait;
use fixtures::ids::{APP_IDENTITY_CLIENT as CLIENT, APP_IDENTITY_PRINCIPAL as PRINCIPAL};
use serde_json::{Value, json};
use testbed::{
    ApiServer, Supervised,
    netns::{Netns, join, require_prerequisites, run},
};

/// A pod's HTTP/1.1 client that keeps one connection to 169.254.169.254:80 for as long as the
/// peer keeps it: one request per line on stdin; `OK <local port> <status> <body>`, or `ERR <kind>`
/// (after which the next request opens a new connection).
const CLIENT_PY: &str = r#"
import http.client, sys
c = http.client.HTTPConnection("169.254.169.254", 80, timeout=5)
for _ in sys.stdin:
    try:
        c.request("GET", sys.argv[1], headers={"Metadata": "true"})
        port = c.sock.getsockname()[1]
        r = c.getresponse()
        body = r.read().decode(errors="replace").replace("\n", " ")
        print(f"OK {port} {r.status} {body}", flush=True)
    except Exception as e:
        print(f"ERR {type(e).__name__}", flush=True)
        c.close()
"#;

const ATTACKER_IP: &str = "10.204.1.2";
const TOKEN: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://storage.azure.com/";

#[derive(Debug)]
struct Reply {
    port: Option<u16>,
    status: Option<u16>,
    body: String,
}

impl Reply {
    /// The token's `oid`, when the answer is a token.
    fn oid(&self) -> Option<String> {
        let v: Value = serde_json::from_str(&self.body).ok()?;
        let payload = v["access_token"].as_str()?.split('.').nth(1)?.to_owned();
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
        let claims: Value = serde_json::from_slice(&bytes).ok()?;
        claims["oid"].as_str().map(str::to_owned)
    }
}

struct KeepAlive {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl KeepAlive {
    fn start(pod: &Netns, path: &str) -> Self {
        let mut child = pod
            .command("python3")
            .args(["-u", "-c", CLIENT_PY, path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs in the pod");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdin, stdout }
    }

    fn ask(&mut self) -> Reply {
        self.stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let mut f = line.trim_end().splitn(4, ' ');
        match f.next() {
            Some("OK") => Reply {
                port: f.next().and_then(|p| p.parse().ok()),
                status: f.next().and_then(|s| s.parse().ok()),
                body: f.next().unwrap_or_default().to_owned(),
            },
            _ => Reply {
                port: None,
                status: None,
                body: line,
            },
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node's conntrack entries of the attacker's connections to the metadata address that reach
/// IMDS directly (NMI's own connections to IMDS are not intercepted, and not the attacker's).
fn direct_flows(node: &Netns) -> Vec<nmi::conntrack::Entry> {
    let out = node.exec(&["conntrack", "-L", "-p", "tcp", "--orig-dst", "169.254.169.254"]);
    nmi::conntrack::parse(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|e| e.src == ATTACKER_IP && e.reply_src == "169.254.169.254")
        .collect()
}

fn plugin_types(conflist: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(conflist).unwrap()).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_bypass_the_rules_are_cut_and_nmis_are_not() {
    require_prerequisites();
    for tool in ["conntrack", "python3"] {
        assert!(
            run("sh", &["-c", &format!("command -v {tool}")]).status.success(),
            "{tool} is missing; run scripts/install-deps.sh as root (make deps)"
        );
    }
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("nmi-conntrack").await.unwrap();
    let node = format!("node-{ns}");
    let emulator = Emulator::start(common::app_identity_world(&node)).await.unwrap();
    let imds_calls = || common::imds_calls(&emulator);

    // Namespaces (deleted on drop, when the test fails too): the node, two pods, the VM's IMDS.
    let id = std::process::id() % 100_000;
    let nn = Netns::create(&format!("ctn{id}"));
    let (atk, vic, md) = (
        Netns::create(&format!("cta{id}")),
        Netns::create(&format!("ctv{id}")),
        Netns::create(&format!("ctm{id}")),
    );
    join(&nn, &atk, &format!("cta{id}"), "10.204.1");
    join(&nn, &vic, &format!("ctv{id}"), "10.204.2");
    join(&nn, &md, &format!("ctm{id}"), "10.204.3");
    md.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
    nn.ip(&["route", "add", "169.254.169.254/32", "via", "10.204.3.2"]);
    nn.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    nn.ok(&["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"]);
    // A node's own NAT (kube-proxy's, a CNI's masquerade) is there before NMI, so conntrack tracks
    // the pods' flows from their first packet. (In a namespace with no NAT at all, a flow from
    // before the rules would be picked up afresh, and DNATed, by its first packet after them.)
    nn.ok(&[
        "iptables",
        "-w",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.204.0.0/16",
        "-d",
        "192.0.2.0/24",
        "-j",
        "MASQUERADE",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", server.port());
    let _fwd_api = nn.forwarder(&api, &api, &dir.path().join("fwd-api.log"));
    let imds = emulator.imds_addr(&node).unwrap().to_string();
    let _fwd_imds = md.forwarder("169.254.169.254:80", &imds, &dir.path().join("fwd-imds.log"));

    common::bind_app_identity(&client, &ns).await;
    common::running_pod(
        &client,
        &ns,
        "victim",
        &node,
        "10.204.2.2",
        json!({"aadpodidbinding": "app"}),
        false,
    )
    .await;
    common::running_pod(&client, &ns, "attacker", &node, ATTACKER_IP, json!({}), false).await;

    // Before NMI: the attacker's keep-alive connection takes the victim's identity from IMDS.
    let steal = format!("{TOKEN}&client_id={CLIENT}");
    let mut attacker = KeepAlive::start(&atk, &steal);
    let before = attacker.ask();
    assert_eq!(
        before.status,
        Some(200),
        "without the rules a pod reaches IMDS: {before:?}"
    );
    assert_eq!(before.oid().as_deref(), Some(PRINCIPAL));
    assert_eq!(direct_flows(&nn).len(), 1, "its connection is tracked, not NATed");

    // NMI starts (the CNI gate in temporary directories standing for the node's).
    let (conf_dir, bin_dir) = (dir.path().join("net.d"), dir.path().join("bin"));
    let ready = dir.path().join("run/interception-ready");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(&bin_dir).unwrap();
    let conflist = conf_dir.join("10-node.conflist");
    std::fs::write(
        &conflist,
        r#"{"cniVersion": "0.4.0", "name": "node", "plugins": [{"type": "bridge"}]}"#,
    )
    .unwrap();
    let plugin = dir.path().join("pod-identity-cni");
    std::fs::write(&plugin, b"the plugin").unwrap();
    let cni_flags = [
        format!("--cni-conf-dir={}", conf_dir.display()),
        format!("--cni-bin-dir={}", bin_dir.display()),
        format!("--cni-ready-file={}", ready.display()),
        format!("--cni-plugin-binary={}", plugin.display()),
    ];
    let nmi_log = dir.path().join("nmi.log");
    let nmi_cmd = |extra: &[&str]| {
        let mut cmd = common::nmi_in(&nn, &node, server.kubeconfig());
        cmd.args(&cni_flags).args(extra);
        cmd
    };
    let log = || std::fs::read_to_string(&nmi_log).unwrap_or_default();
    let nmi_ready = || common::nmi_ready_in(&nn);
    assert!(!ready.exists());
    let mut nmi = Supervised::spawn_with("nmi", &nmi_cmd(&[]), &nmi_log).unwrap();
    wait("NMI is ready", 30, nmi_ready, log);
    assert!(
        ready.exists(),
        "the CNI gate's ready file is written once the rules are in"
    );
    wait(
        "the plugin is chained",
        30,
        || plugin_types(&conflist).len() == 2,
        log,
    );
    assert_eq!(
        std::fs::read(bin_dir.join("pod-identity-cni")).unwrap(),
        b"the plugin"
    );

    // The attacker's old connection is cut (reset, or answered by NMI: never IMDS again) and its
    // next one meets NMI, which refuses it.
    let calls = imds_calls();
    let old = attacker.ask();
    assert!(
        old.status.is_none() || old.status == Some(403),
        "{old:?}\n{}",
        log()
    );
    assert!(old.oid().is_none(), "no token on the old connection: {old:?}");
    let fresh = attacker.ask();
    assert_eq!(fresh.status, Some(403), "{fresh:?}");
    assert_ne!(fresh.port, before.port, "a new connection");
    assert_eq!(imds_calls(), calls, "IMDS saw none of the attacker's requests");

    // The victim gets its own token from NMI, on a keep-alive connection of its own.
    let mut victim = KeepAlive::start(&vic, TOKEN);
    let served = victim.ask();
    assert_eq!(
        (served.status, served.oid().as_deref()),
        (Some(200), Some(PRINCIPAL)),
        "{served:?}"
    );

    // The rules are flushed behind NMI's back; a new attacker connection made before NMI's repair
    // reaches IMDS. The repair cuts it, and not the victim's connection to NMI.
    let repairs = || log().matches("repaired").count();
    let again = victim.ask();
    assert_eq!((again.status, again.port), (Some(200), served.port), "{again:?}");
    let (mut second, direct, _) = bypass(&nn, &atk, &steal, &repairs, &log);
    assert_eq!(direct.oid().as_deref(), Some(PRINCIPAL));
    wait(
        "NMI cuts the bypassing connection",
        30,
        || direct_flows(&nn).is_empty(),
        log,
    );
    let cut = second.ask();
    assert!(cut.oid().is_none(), "{cut:?}");
    let again = victim.ask();
    assert_eq!(
        (again.status, again.port),
        (Some(200), served.port),
        "{again:?}\n{}",
        log()
    );
    assert!(ready.exists());

    // With --enable-conntrack-deletion=false, the same bypass outlives the repair.
    nmi.stop(Duration::from_secs(10));
    nmi = Supervised::spawn_with("nmi", &nmi_cmd(&["--enable-conntrack-deletion=false"]), &nmi_log).unwrap();
    wait("NMI is ready again", 30, nmi_ready, log);
    let (mut third, window, seen) = bypass(&nn, &atk, &steal, &repairs, &log);
    wait("NMI repairs its rules", 30, || repairs() > seen, log);
    let open = third.ask();
    assert_eq!(
        (open.status, open.oid().as_deref(), open.port),
        (Some(200), Some(PRINCIPAL), window.port),
        "without the cut the connection still reaches IMDS: {open:?}"
    );
    // (Its connection to the stopped NMI was closed: the first ask may find it so.)
    let fresh = match victim.ask() {
        r if r.status.is_none() => victim.ask(),
        r => r,
    };
    assert_eq!(
        fresh.status,
        Some(200),
        "the victim is served by the new NMI: {fresh:?}"
    );

    // `nmi cleanup`: the plugin out of the configuration and the bin directory, the rules and the
    // ready file gone.
    nmi.stop(Duration::from_secs(10));
    let mut cleanup = nn.command(env!("CARGO_BIN_EXE_nmi"));
    cleanup.args(&cni_flags).arg("cleanup");
    let out = cleanup.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(plugin_types(&conflist), ["bridge"]);
    assert!(!bin_dir.join("pod-identity-cni").exists() && !ready.exists());
    assert!(nn.nat_rules("aad-metadata").is_empty());
}

/// Takes NMI's PREROUTING jump away and opens a new attacker connection before NMI puts it back
/// (again, when NMI was quicker). The connection, its first (direct) answer, and how many repairs
/// NMI had logged before the jump was taken away.
fn bypass(
    node: &Netns,
    pod: &Netns,
    path: &str,
    repairs: &dyn Fn() -> usize,
    log: &dyn Fn() -> String,
) -> (KeepAlive, Reply, usize) {
    loop {
        let mut conn = KeepAlive::start(pod, path);
        let seen = repairs();
        common::unhook_nmi(node);
        let r = conn.ask();
        if r.status == Some(200) {
            return (conn, r, seen);
        }
        assert_eq!(
            r.status,
            Some(403),
            "NMI repaired the rules first, and refused: {r:?}\n{}",
            log()
        );
    }
}
