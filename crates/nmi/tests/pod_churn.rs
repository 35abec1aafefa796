//! Issue 13, NMI's side, against a real kube-apiserver and the Azure emulator: an identity MIC
//! reports `Assigned` but the VM lacks (§3: the request is held and NMI tells MIC; never IMDS's
//! final 400), a deleted pod's IP reused before NMI sees the deletion (§5: refused rather than
//! guessed), and the log line of each refusal (§4: who, why, what would fix it; rate-limited).
//!
//! The whole binary's log goes, as JSON, to one buffer that the tests read back; each test finds
//! its own lines by its namespace or source IP.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use api::AzureAssignedIdentity;
use azure_emulator::EndpointKind;
use common::{Env, Opts, Uami, resource_id, uami};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::DeleteParams};
use nmi::state::{Mode, PodLookup};
use serde_json::{Value, json};
use testbed::ApiServer;

const ONE: Uami = uami(0);
const TWO: Uami = uami(1);

/// Everything NMI logged in this test binary, one JSON object per line.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .json()
            .with_env_filter("nmi=info")
            .with_writer(move || Writer(sink.clone()))
            .init();
        buffer
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logged events for which `keep` holds.
fn logged(keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let bytes = log().lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| keep(v))
        .collect()
}

/// The `nmi::refusal` lines about requests from `source`.
fn refusal_lines(source: &str) -> Vec<Value> {
    logged(|v| v["target"] == "nmi::refusal" && v["fields"]["source"] == source)
}

async fn env(prefix: &str, opts: Opts) -> Env {
    log();
    let (client, ns) = ApiServer::shared()
        .namespace(prefix)
        .await
        .expect("the test kube-apiserver gives a namespace");
    common::env(client, ns, opts).await
}

/// Adds or removes `u` on the node's VM through ARM, as `az vm identity assign/remove` would
/// (behind MIC's back), and waits until the node's IMDS serves accordingly.
async fn vm_identity(env: &Env, u: Uami, present: bool) {
    let admin = env.emulator.admin();
    // Adding back needs "Managed Identity Operator" on the identity.
    admin.grant("app", "*").unwrap();
    let token = admin.app_token("app", "https://management.azure.com/").unwrap();
    let ca = reqwest::Certificate::from_pem(env.emulator.ca_cert_pem().unwrap().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .build()
        .unwrap();
    let url = format!(
        "{}/subscriptions/{}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachines/{}?api-version=2023-09-01",
        env.emulator.arm_url(),
        common::SUB,
        env.node
    );
    let id = resource_id(u.name);
    let value = if present { json!({}) } else { Value::Null };
    let body = json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {id.clone(): value}}});
    let res = http
        .patch(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "ARM: {}", res.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let serves = || {
        admin
            .node_identities()
            .iter()
            .find(|n| n.node == env.node)
            .expect("the node's VM")
            .effective
            .iter()
            .any(|e| e.eq_ignore_ascii_case(&id))
    };
    while serves() != present {
        assert!(Instant::now() < deadline, "the ARM write completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The identity-missing annotation NMI put on `pod`'s AzureAssignedIdentity for `u`, once there.
async fn missing_annotation(env: &Env, pod: &str, u: Uami) -> String {
    let api = Api::<AzureAssignedIdentity>::namespaced(env.client.clone(), &env.ns);
    let name = AzureAssignedIdentity::object_name(pod, &env.ns, u.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let aai = api.get(&name).await.unwrap();
        if let Some(v) = aai
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(api::v1::IDENTITY_MISSING_ANNOTATION))
        {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "NMI annotated {name}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// IMDS's answers to NMI with status `status`.
fn imds_answers(env: &Env, status: u16) -> usize {
    env.emulator
        .admin()
        .calls()
        .iter()
        .filter(|c| c.endpoint == EndpointKind::Imds && c.status == status)
        .count()
}

/// §3 (a): MIC says `Assigned`, but the identity was taken off the VM (the removal of a pod just
/// gone landed after MIC marked the new pod's assignment). The pod's request is held rather than
/// handed IMDS's 400, NMI stamps the finding on the AzureAssignedIdentity for MIC, and when the
/// identity is back on the VM within `--identity-wait` the pod gets its token.
#[tokio::test]
async fn a_request_for_an_identity_missing_on_the_vm_is_held_until_it_is_back() {
    let env = env(
        "churn-held",
        Opts {
            mode: Mode::Standard,
            identity_wait: Duration::from_secs(60),
            ..Opts::default()
        },
    )
    .await;
    let id = env.identity(ONE).await;
    env.binding("b", ONE.name, "app").await;
    env.pod("p", "127.0.60.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.assigned("p", &id, "Assigned").await;
    vm_identity(&env, ONE, false).await;

    let ask = env.ask("127.0.60.1", "");
    let repair = async {
        let stamp = missing_annotation(&env, "p", ONE).await;
        // What MIC does on reading the annotation: the identity goes back on the VM.
        vm_identity(&env, ONE, true).await;
        stamp
    };
    let (a, stamp) = tokio::join!(ask, repair);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.token_claims()["oid"],
        ONE.principal(),
        "the bound identity's token"
    );
    assert!(
        stamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "an RFC 3339 time: {stamp}"
    );
    assert!(imds_answers(&env, 400) >= 1, "IMDS did answer 400 meanwhile");
    let text = env.metrics.encode();
    assert!(!text.contains("identity_missing_on_vm"), "not refused: {text}");
}

/// §3 (b): the identity never comes back: once `--identity-wait` runs out the pod gets what NMI
/// answers for "not yet assigned" (here 503 + `Retry-After`, `--set-retry-after-header`), which
/// the SDKs retry; never IMDS's final 400. The refusal is counted and logged as
/// `identity_missing_on_vm`.
#[tokio::test]
async fn an_identity_that_stays_missing_is_answered_retryable_never_400() {
    let env = env(
        "churn-gone",
        Opts {
            mode: Mode::Standard,
            // Long enough for IMDS to be asked more than once on any machine (the tries come
            // 0.25 s, 0.5 s, then 1 s apart); the test waits it out.
            identity_wait: Duration::from_secs(10),
            set_retry_after_header: true,
            ..Opts::default()
        },
    )
    .await;
    let id = env.identity(ONE).await;
    env.binding("b", ONE.name, "app").await;
    env.pod("p", "127.0.61.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.assigned("p", &id, "Assigned").await;
    vm_identity(&env, ONE, false).await;

    let a = env.ask("127.0.61.1", "").await;
    a.refused(503);
    assert_eq!(a.retry_after.as_deref(), Some("20"));
    assert_eq!(a.json()["error"], "service_unavailable");
    assert!(!a.body.contains("Identity not found"), "{}", a.body);
    assert!(
        imds_answers(&env, 400) >= 2,
        "IMDS was asked again within the wait"
    );
    missing_annotation(&env, "p", ONE).await;
    assert_eq!(
        env.metric("aadpodidentity_nmi_refusals_total{reason=\"identity_missing_on_vm\"}"),
        Some(1)
    );
    let lines = refusal_lines("127.0.61.1");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let f = &lines[0]["fields"];
    assert_eq!(f["reason"], "identity_missing_on_vm");
    assert_eq!(f["azure_identity"], format!("{}/{}", env.ns, ONE.name));
}

/// §4 (c): each refusal is one `info` line naming the pod, its namespace, the source IP, the
/// reason, the identity asked for and a hint; a pod repeating the same refused request gets one
/// line per window, not one per request; another reason, or another pod, gets its own line. The
/// audit line of an issued token is unchanged.
#[tokio::test]
async fn a_refusal_is_logged_once_with_who_why_and_a_hint() {
    let env = env("churn-log", Opts::default()).await;
    env.identity(ONE).await;
    env.binding("b", ONE.name, "app").await;
    env.pod("bound", "127.0.62.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.pod("unlabelled", "127.0.62.2", json!({})).await;
    for _ in 0..10 {
        env.ask("127.0.62.2", "").await.refused(403);
    }
    let lines = refusal_lines("127.0.62.2");
    assert_eq!(lines.len(), 1, "one line for ten refusals: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["level"], "INFO");
    let f = &line["fields"];
    assert_eq!(f["message"], "token request refused");
    assert_eq!(f["pod"], "unlabelled");
    assert_eq!(f["namespace"], env.ns);
    assert_eq!(f["source"], "127.0.62.2");
    assert_eq!(f["reason"], "unbound");
    assert_eq!(f["identity"], "the default identity");
    assert_eq!(f["status"], 403);
    assert!(f["hint"].as_str().unwrap().contains("aadpodidbinding"), "{f}");
    assert_eq!(f["suppressed"], 0);

    // Another reason for the same pod: its own line, naming the identity asked for.
    env.ask("127.0.62.2", &format!("&client_id={}", TWO.client()))
        .await
        .refused(403);
    env.ask("127.0.62.1", &format!("&client_id={}", TWO.client()))
        .await
        .refused(403);
    let lines = refusal_lines("127.0.62.2");
    assert_eq!(lines.len(), 1, "unbound still: one line {lines:?}");
    let lines = refusal_lines("127.0.62.1");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["fields"]["reason"], "not_bound");
    assert_eq!(
        lines[0]["fields"]["identity"],
        format!("client_id {}", TWO.client())
    );
    // No pod at all: the source IP is what the line can name.
    env.ask("127.0.62.3", "").await.refused(404);
    let lines = refusal_lines("127.0.62.3");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["fields"]["reason"], "no_pod");
    assert_eq!(lines[0]["fields"]["pod"], "");

    // An issued token: the audit line, as before.
    assert_eq!(env.ask("127.0.62.1", "").await.status, 200);
    let audit = logged(|v| v["target"] == "nmi::audit" && v["fields"]["source"] == "IP 127.0.62.1");
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["fields"]["message"], "token issued");
    assert_eq!(audit[0]["fields"]["pod"], "bound");
}

/// Pods labelled `a` are bound to `ONE`, pods labelled `b` to `TWO`.
async fn two_bindings(env: &Env) {
    env.identity(ONE).await;
    env.identity(TWO).await;
    env.binding("b-a", ONE.name, "a").await;
    env.binding("b-b", TWO.name, "b").await;
}

/// §5, the race itself: pod A is deleted and its IP given to pod B, and B asks before NMI has
/// seen A go (here A keeps the IP, with no deletion timestamp, while B runs with it). B gets no
/// token for A's identity: NMI refuses rather than guesses, with a retryable 503; once A is
/// deleted, B gets its own identity's token.
#[tokio::test]
async fn a_reused_ip_before_the_old_pods_deletion_is_seen_gets_no_token_of_the_old_pod() {
    let env = env(
        "churn-reuse",
        Opts {
            pod_wait: Duration::from_secs(2),
            ..Opts::default()
        },
    )
    .await;
    two_bindings(&env).await;
    let ip = "127.0.63.1";
    env.pod("pod-a", ip, json!({"aadpodidbinding": "a"})).await;
    // A's token is warm in NMI's cache: nothing upstream would stop a wrong answer.
    assert_eq!(env.ask(ip, "").await.token_claims()["oid"], ONE.principal());

    // Created and Running, but NMI is not waited for: it cannot take B for the IP's owner.
    let ns = env.ns.clone();
    env.create_running_pod(&ns, "pod-b", ip, json!({"aadpodidbinding": "b"}), false)
        .await;
    env.until("NMI sees both pods on the IP", |s| {
        matches!(s.pods.by_ip(ip), PodLookup::Ambiguous(_))
    })
    .await;
    let a = env.ask(ip, "").await;
    a.refused(503);
    assert_eq!(a.retry_after.as_deref(), Some("5"));
    assert!(a.body.contains("pod-a") && a.body.contains("pod-b"), "{}", a.body);
    let lines = refusal_lines(ip);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["fields"]["reason"], "ambiguous_ip");

    Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .delete("pod-a", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    env.until(
        "NMI sees pod A go",
        |s| matches!(s.pods.by_ip(ip), PodLookup::Found(p) if p.name == "pod-b"),
    )
    .await;
    let a = env.ask(ip, "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.token_claims()["oid"], TWO.principal(), "B's own identity");
}

/// §5: a pod being deleted (deletion timestamp set, still in the API while it shuts down) is no
/// candidate for its IP: alone it gets no new token, and a new pod given the IP is served as
/// itself at once.
#[tokio::test]
async fn a_terminating_pod_is_no_candidate_for_its_ip() {
    let env = env(
        "churn-leaving",
        Opts {
            pod_wait: Duration::from_secs(1),
            ..Opts::default()
        },
    )
    .await;
    two_bindings(&env).await;
    let ip = "127.0.64.1";
    env.pod("leaving", ip, json!({"aadpodidbinding": "a"})).await;
    assert_eq!(env.ask(ip, "").await.token_claims()["oid"], ONE.principal());
    let api = Api::<Pod>::namespaced(env.client.clone(), &env.ns);
    // No kubelet confirms the shutdown: the pod stays, with its deletion timestamp.
    api.delete("leaving", &DeleteParams::default()).await.unwrap();
    assert!(
        api.get("leaving")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    env.until("NMI sees the pod terminating", |s| {
        s.pods.by_ip(ip) == PodLookup::NotFound
    })
    .await;
    env.ask(ip, "").await.refused(404);
    env.pod("arriving", ip, json!({"aadpodidbinding": "b"})).await;
    let a = env.ask(ip, "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.token_claims()["oid"], TWO.principal());
    api.delete("leaving", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
}
