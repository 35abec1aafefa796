//! Log forging (issue 21 §5), against the `nmi` binary and the text log it writes: a pod with no
//! binding puts a newline and a whole forged record (an audit line for a victim, a refusal of the
//! victim, NMI's staleness warning) into a query parameter's name, a parameter's value and a
//! header. NMI's log has no line that starts a forged record, `kubectl pod-identity`'s parser
//! (`plugin::nmi_log`) finds no forged record in it, and the victim pod is served throughout.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use azure_emulator::Emulator;
use fixtures::ids::APP_IDENTITY_CLIENT as CLIENT;
use serde_json::json;
use testbed::{ApiServer, Supervised};

use common::{free_port, running_pod};

const VICTIM: &str = "127.0.81.1";
/// Pods with no binding, one per attack: NMI logs one refusal per pod and reason in 15 s.
const HOSTILE_A: &str = "127.0.81.2";
const HOSTILE_B: &str = "127.0.81.3";
/// A pod bound as the victim is, whose own token's audit line carries the forgery.
const MALLORY: &str = "127.0.81.4";

/// What the hostile pod writes after a newline: records as NMI's text formatter writes them.
fn forged(ns: &str) -> String {
    format!(
        "x\n2026-01-01T00:00:00.000000Z  INFO nmi::audit: token issued pod=\"victim/x\" \
         namespace=\"{ns}\" identity=\"{ns}/app-identity\" binding=\"b\" client_id=\"{CLIENT}\" \
         resource=\"https://vault.azure.net\" source=\"IP {VICTIM}\" cache_hit=true\n\
         2026-01-01T00:00:00.000000Z  INFO nmi::refusal: token request refused pod=\"victim\" \
         namespace=\"{ns}\" source={VICTIM} reason=\"unbound\" identity=\"forged\" azure_identity=\"\" \
         status=403 detail=\"forged\" hint=\"forged\" suppressed=0\n\
         2026-01-01T00:00:00.000000Z  WARN nmi::server::probes: cluster state too old: refusing token requests\n"
    )
}

fn pod_http(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `(status, body)` of a token request from `http` with `query` after the path.
async fn ask(http: &reqwest::Client, port: u16, query: &str, header: Option<&str>) -> (u16, String) {
    let mut req = http
        .get(format!(
            "http://{}/metadata/identity/oauth2/token?{query}",
            SocketAddr::from(([127, 0, 0, 1], port))
        ))
        .header("Metadata", "true");
    if let Some(h) = header {
        req = req.header("X-Forged", h).header("User-Agent", h);
    }
    let r = req.send().await.expect("NMI answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_pod_cannot_forge_a_line_of_nmi_s_text_log() {
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("nmi-forge").await.unwrap();
    let node = format!("node-{ns}");
    let emulator = Emulator::start(common::app_identity_world(&node)).await.unwrap();
    let imds = emulator.imds_addr(&node).unwrap();
    let (port, probe, metrics) = (free_port(), free_port(), free_port());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = common::nmi_on_loopback(&node, server.kubeconfig(), imds, port, probe, metrics);
    cmd.arg("--log-format=text").env_remove("RUST_LOG");
    let mut nmi = Supervised::spawn_with("nmi", &cmd, log.path()).unwrap();

    common::bind_app_identity(&client, &ns).await;
    running_pod(
        &client,
        &ns,
        "victim",
        &node,
        VICTIM,
        json!({"aadpodidbinding": "app"}),
        false,
    )
    .await;
    for (name, ip, labels) in [
        ("hostile-a", HOSTILE_A, json!({})),
        ("hostile-b", HOSTILE_B, json!({})),
        ("mallory", MALLORY, json!({"aadpodidbinding": "app"})),
    ] {
        running_pod(&client, &ns, name, &node, ip, labels, false).await;
    }

    // NMI binds its port only once its rules are in place and its watches have synced (README
    // "Upgrading NMI without a gap"); on a loaded machine that can come after the pods above.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "NMI never listened on {port}\n{}",
            nmi.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let victim = pod_http(VICTIM);
    let token_query = "api-version=2018-02-01&resource=https://vault.azure.net";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = ask(&victim, port, token_query, None).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the victim gets no token: {status} {body}\n{}",
            nmi.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // NMI sees every pod (a token for the bound one, so the others were listed too).
    let deadline = Instant::now() + Duration::from_secs(60);
    while ask(&pod_http(MALLORY), port, token_query, None).await.0 != 200 {
        assert!(Instant::now() < deadline, "{}", nmi.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let forged = forged(&ns);
    // Control characters are not valid in a header value: the header carries the rest.
    let in_header = forged.replace('\n', " ");
    let attacks = [
        // A parameter's name, given twice (a 400 whose detail names it).
        (HOSTILE_A, format!("{token_query}&{0}=1&{0}=2", enc(&forged))),
        // A parameter's value (a 403 naming the identity asked for).
        (HOSTILE_B, format!("{token_query}&client_id={}", enc(&forged))),
        // The resource (in the audit line of the pod's own token), and an unknown parameter.
        (
            MALLORY,
            format!(
                "api-version=2018-02-01&resource={}&{}=1",
                enc(&forged),
                enc(&forged)
            ),
        ),
    ];
    for (from, query) in &attacks {
        let (status, body) = ask(&pod_http(from), port, query, Some(&in_header)).await;
        assert!(matches!(status, 200 | 400 | 403), "{status} {body}");
        let (status, body) = ask(&victim, port, token_query, None).await;
        assert_eq!(status, 200, "the victim during the attack: {body}");
    }

    nmi.stop(Duration::from_secs(30));
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        logged.contains("nmi::audit: token issued pod=\\\"victim/x\\\""),
        "the forgery reached the log, escaped:\n{logged}"
    );
    for line in logged.lines() {
        let (time, rest) = line.split_once(' ').unwrap_or_default();
        assert!(
            time.len() >= 20 && time.starts_with("20") && time.ends_with('Z'),
            "every line starts with NMI's timestamp: {line}"
        );
        let rest = rest.trim_start();
        assert!(
            ["TRACE ", "DEBUG ", "INFO ", "WARN ", "ERROR "]
                .iter()
                .any(|l| rest.starts_with(l)),
            "and its level: {line}"
        );
        assert!(
            !line.starts_with("2026-01-01T00:00:00.000000Z"),
            "no line starts with the forged records' timestamp: {line}"
        );
        assert!(
            !line.contains("nmi::audit: token issued pod=\"victim/x\""),
            "no line holds the forged audit record unescaped: {line}"
        );
    }
    assert!(
        plugin::nmi_log::refusals_of(&logged, &ns, "victim").is_empty(),
        "{logged}"
    );
    assert_eq!(plugin::nmi_log::stale_since(&logged), None, "{logged}");
    // The refusals of the attacks read back as one record each, with the text the pod sent.
    let bad_request = plugin::nmi_log::refusals_of(&logged, "", "");
    assert!(
        bad_request.iter().any(|r| r.detail.contains(&forged)),
        "{bad_request:?}"
    );
    let unbound = plugin::nmi_log::refusals_of(&logged, &ns, "hostile-b");
    assert!(
        unbound.iter().any(|r| r.identity.contains(&forged)),
        "{unbound:?}"
    );
}
