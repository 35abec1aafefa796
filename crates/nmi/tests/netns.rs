//! Real interception, in network namespaces (needs root, `ip`, `iptables`, `socat`, `nsenter`,
//! `curl`; `scripts/install-deps.sh` installs them, and the test fails, not skips, without them).
//!
//! A "node" namespace runs the `nmi` binary with its iptables rules; two "pod" namespaces, joined
//! to it by veth pairs, hold the pods' IPs and route everything through the node. In the node
//! namespace, 169.254.169.254:80 is the emulator's IMDS for the node (a socat forwarder back to the
//! test's namespace, as is the apiserver), so without the rules a pod reaches IMDS directly, as on
//! a real VM. The bound pod runs the seed's Python code (`ManagedIdentityCredential()` with no
//! environment override, `BlobServiceClient` against Azurite, which checks the bearer token). The
//! root namespace's netfilter rules and routes are never touched.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use azure_emulator::Emulator;
use common::wait;
use fixtures::ids::APP_IDENTITY_PRINCIPAL as PRINCIPAL;
use serde_json::{Value, json};
use testbed::{
    ApiServer, Supervised,
    netns::{Netns, join, require_prerequisites},
};

const TOKEN_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://storage.azure.com/";

/// A pod's request for a token, with curl: `Some((status, body))`, or `None` when nothing answered.
fn curl_token(ns: &Netns) -> Option<(u16, String)> {
    let out = ns.exec(&[
        "curl",
        "-s",
        "-m",
        "5",
        "-w",
        "\n%{http_code}",
        "-H",
        "Metadata: true",
        TOKEN_URL,
    ]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    Some((code.trim().parse().unwrap(), body.to_owned()))
}

/// The seed's Python code path: `ManagedIdentityCredential()` with no environment override.
fn python_token(python: &Path, ns: &Netns) -> Output {
    let code = "from azure.identity import ManagedIdentityCredential\n\
                print(ManagedIdentityCredential().get_token('https://storage.azure.com/.default').token)";
    ns.command("env")
        .args(["-i", "PATH=/usr/bin:/bin"])
        .arg(python)
        .args(["-c", code])
        .output()
        .unwrap()
}

/// The seed's application: reads and writes a blob in Azurite as the pod's own identity.
fn python_blob(python: &Path, ns: &Netns, ca: &Path, account_url: &str) -> Output {
    let code = "import sys\n\
                from azure.identity import ManagedIdentityCredential\n\
                from azure.storage.blob import BlobServiceClient\n\
                svc = BlobServiceClient(account_url=sys.argv[1], credential=ManagedIdentityCredential())\n\
                c = svc.get_container_client('seed')\n\
                try:\n    c.create_container()\n\
                except Exception as e:\n    \
                if 'ContainerAlreadyExists' not in str(e): raise\n\
                c.upload_blob('hello.txt', b'hello from the pod', overwrite=True)\n\
                print(c.download_blob('hello.txt').readall().decode())";
    ns.command("env")
        .args(["-i", "PATH=/usr/bin:/bin"])
        .arg(format!("REQUESTS_CA_BUNDLE={}", ca.display()))
        .arg(python)
        .args(["-c", code, account_url])
        .output()
        .unwrap()
}

fn script(name: &str, args: &[&str]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/").to_owned() + name;
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        out.status.success(),
        "{path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn oid(jwt: &str) -> String {
    let payload = jwt.trim().split('.').nth(1).unwrap();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["oid"].as_str().unwrap().to_owned()
}

fn chain(node: &Netns) -> (Vec<String>, Option<String>) {
    (
        node.nat_rules("aad-metadata"),
        node.nat_rules("PREROUTING")
            .into_iter()
            .find(|l| l.starts_with("-A ")),
    )
}

fn expected_chain() -> Vec<String> {
    vec![
        "-N aad-metadata".to_owned(),
        "-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579".to_owned(),
        "-A aad-metadata -j RETURN".to_owned(),
    ]
}

fn python() -> PathBuf {
    PathBuf::from(script("python-venv.sh", &[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interception_in_network_namespaces_is_fail_closed() {
    require_prerequisites();
    let python = python();
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("nmi-netns").await.unwrap();
    let node = format!("node-{ns}");
    let emulator = Emulator::start(common::app_identity_world(&node)).await.unwrap();
    let imds = emulator.imds_addr(&node).unwrap();
    let imds_calls = || common::imds_calls(&emulator);

    // Namespaces and links (deleted on drop, when the test fails too).
    let id = std::process::id() % 100_000;
    let nn = Netns::create(&format!("nmi-n{id}"));
    let pa = Netns::create(&format!("nmi-a{id}"));
    let pb = Netns::create(&format!("nmi-b{id}"));
    join(&nn, &pa, &format!("nmia{id}"), "10.200.1");
    join(&nn, &pb, &format!("nmib{id}"), "10.200.2");
    nn.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
    // DNAT to 127.0.0.1 from PREROUTING needs route_localnet, as kube-proxy sets on real nodes.
    nn.ok(&["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"]);

    let dir = tempfile::tempdir().unwrap();
    let _fwd_api = nn.forwarder(
        &format!("127.0.0.1:{}", server.port()),
        &format!("127.0.0.1:{}", server.port()),
        &dir.path().join("fwd-api.log"),
    );
    let _fwd_imds = nn.forwarder(
        "169.254.169.254:80",
        &imds.to_string(),
        &dir.path().join("fwd-imds.log"),
    );

    // Cluster objects: pod A bound, pod B not.
    common::bind_app_identity(&client, &ns).await;
    for (name, ip, labels) in [
        ("a", "10.200.1.2", json!({"aadpodidbinding": "app"})),
        ("b", "10.200.2.2", json!({})),
    ] {
        common::running_pod(&client, &ns, name, &node, ip, labels, false).await;
    }

    // Without rules the pod reaches IMDS directly, so what follows is the rules' doing.
    let before = imds_calls();
    let direct = curl_token(&pa).expect("without the rules a pod reaches IMDS");
    assert_eq!(direct.0, 200, "{direct:?}");
    assert_eq!(imds_calls(), before + 1);

    // NMI in the node namespace.
    let nmi_log = dir.path().join("nmi.log");
    let cmd = common::nmi_in(&nn, &node, server.kubeconfig());
    let mut nmi = Supervised::spawn_with("nmi", &cmd, &nmi_log).unwrap();
    let log = || std::fs::read_to_string(&nmi_log).unwrap_or_default();
    let ready = || common::nmi_ready_in(&nn);
    wait("NMI is ready (rules in place, watches synced)", 30, ready, log);
    assert_eq!(
        chain(&nn),
        (expected_chain(), Some("-A PREROUTING -j aad-metadata".to_owned()))
    );

    // NMI warms the bound pod's first token as soon as it is usable (README "Readiness"): its
    // IdentityReady condition turns True once that IMDS call is made, so count from there.
    let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let pod = pods.get("a").await.unwrap();
        let ready = pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == api::v1::IDENTITY_READY_CONDITION && c.status == "True");
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bound pod's IdentityReady never turned True\n{}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The bound pod's SDK gets its own identity's token through NMI; the unbound pod is refused.
    let before = imds_calls();
    let sdk = python_token(&python, &pa);
    assert!(
        sdk.status.success(),
        "the SDK failed: {}\n{}",
        String::from_utf8_lossy(&sdk.stderr),
        log()
    );
    assert_eq!(oid(&String::from_utf8_lossy(&sdk.stdout)), PRINCIPAL);
    let refused = curl_token(&pb).expect("NMI answers the unbound pod");
    assert_eq!(refused.0, 403, "{refused:?}");
    assert!(!refused.1.contains("access_token"));
    let sdk = python_token(&python, &pb);
    assert!(!sdk.status.success(), "the unbound pod's SDK must fail");
    assert_eq!(
        imds_calls(),
        before + 1,
        "only NMI's one call for the bound pod reached IMDS"
    );

    // The seed's code: a blob in Azurite (which checks the bearer token), read with the pod's own
    // identity. (The unbound pod's SDK was refused its token above; its storage client would only
    // add a minute and a half of retries.)
    script("azurite.sh", &["install"]);
    let (cert, key) = emulator
        .issue_server_cert(&[], &["10.200.1.1".parse().unwrap()])
        .unwrap();
    std::fs::write(dir.path().join("azurite.crt"), cert).unwrap();
    std::fs::write(dir.path().join("azurite.key"), key).unwrap();
    std::fs::create_dir_all(dir.path().join("azurite")).unwrap();
    let azurite_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let azurite_script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/azurite.sh");
    let mut azurite_cmd = Command::new(azurite_script);
    azurite_cmd.args([
        "run".to_owned(),
        dir.path().join("azurite").display().to_string(),
        azurite_port.to_string(),
        dir.path().join("azurite.crt").display().to_string(),
        dir.path().join("azurite.key").display().to_string(),
    ]);
    let mut azurite =
        Supervised::spawn_with("azurite", &azurite_cmd, &dir.path().join("azurite.log")).unwrap();
    wait(
        "Azurite listens",
        60,
        || std::net::TcpStream::connect(("127.0.0.1", azurite_port)).is_ok(),
        || azurite.log_tail(),
    );
    let _fwd_azurite = nn.forwarder(
        "10.200.1.1:10000",
        &format!("127.0.0.1:{azurite_port}"),
        &dir.path().join("fwd-azurite.log"),
    );
    let ca = emulator.ca_cert_path().unwrap().to_path_buf();
    let account = "https://10.200.1.1:10000/devstoreaccount1";
    let blob = python_blob(&python, &pa, &ca, account);
    assert!(
        blob.status.success(),
        "the seed's blob read failed: {}\n{}",
        String::from_utf8_lossy(&blob.stderr),
        log()
    );
    assert_eq!(String::from_utf8_lossy(&blob.stdout).trim(), "hello from the pod");
    azurite.stop(Duration::from_secs(5));

    // Tampering is repaired.
    nn.ok(&["iptables", "-w", "-t", "nat", "-F", "aad-metadata"]);
    common::unhook_nmi(&nn);
    wait(
        "NMI repairs its rules",
        10,
        || chain(&nn) == (expected_chain(), Some("-A PREROUTING -j aad-metadata".to_owned())),
        log,
    );

    // NMI crashes (SIGKILL: no cleanup at all): the rules stay, so the pod reaches neither NMI
    // nor IMDS and its SDK fails instead of getting the node's identity. Restarted, NMI rebuilds
    // its state from the apiserver and the SDK's next attempt gets the pod's own token.
    nmi.kill();
    assert!(!nmi.is_running());
    assert_eq!(chain(&nn).0, expected_chain(), "the rules outlive a crashed NMI");
    let before = imds_calls();
    assert_eq!(curl_token(&pa), None, "with NMI down nothing answers the pod");
    let sdk = python_token(&python, &pa);
    assert!(!sdk.status.success(), "no token while NMI is down");
    assert_eq!(imds_calls(), before, "and IMDS saw nothing");
    nmi = Supervised::spawn_with("nmi", &cmd, &nmi_log).unwrap();
    wait("the restarted NMI is ready", 30, ready, log);
    let sdk = python_token(&python, &pa);
    assert!(
        sdk.status.success(),
        "the SDK failed after NMI's restart: {}\n{}",
        String::from_utf8_lossy(&sdk.stderr),
        log()
    );
    assert_eq!(oid(&String::from_utf8_lossy(&sdk.stdout)), PRINCIPAL);

    // NMI stops: the rules stay, and the pod can reach neither NMI nor IMDS.
    nmi.stop(Duration::from_secs(10));
    assert!(!nmi.is_running());
    assert_eq!(chain(&nn).0, expected_chain(), "the rules outlive NMI");
    let before = imds_calls();
    assert_eq!(curl_token(&pa), None, "with NMI stopped nothing answers the pod");
    assert_eq!(imds_calls(), before, "and IMDS saw nothing");

    // `nmi cleanup` (uninstall) removes them; then IMDS is reachable again.
    nn.ok(&[env!("CARGO_BIN_EXE_nmi"), "cleanup"]);
    assert_eq!(chain(&nn), (vec![], None));
    assert_eq!(curl_token(&pa).map(|r| r.0), Some(200));
}
