//! Issue 7 §2, NMI's side: faults of IMDS and Entra, the apiserver down for 30 s, NMI killed and
//! restarted, and a flood from one pod (§5, per-pod rate limiting). Each scenario ends in an
//! asserted end state. (MIC's faults — ARM 429/5xx, apiserver outage, leader failover — are in
//! `crates/mic/tests/mic.rs`.)

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use azure_emulator::{Emulator, EndpointKind, Fault, FaultAction};
use common::{Env, Opts, SP_CLIENT, SP_SECRET, env, uami};
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use testbed::{ApiServer, Supervised};

const ID: common::Uami = uami(0);

async fn bound_pod(env: &Env, ip: &str) {
    let ns = env.ns.clone();
    env.identity_in(&ns, ID).await;
    env.binding_in(&ns, "b", ID.name, "app").await;
    env.pod_in(&ns, "p", ip, json!({"aadpodidbinding": "app"}), false)
        .await;
}

fn fault(endpoint: EndpointKind, target: Option<String>, action: FaultAction) -> Fault {
    Fault {
        endpoint,
        target,
        action,
        count: Some(1),
        rate: None,
    }
}

/// IMDS "updating" (410) reaches the pod as 410, which SDKs retry; an IMDS slower than
/// `--upstream-timeout`, or one that never answers, is a 503 after that timeout rather than a
/// hang (IMDS holds the request for a minute, far longer than the answer may take on any
/// machine); then the pod's retry gets its token.
#[tokio::test]
async fn imds_410_and_slow_or_silent_imds_are_retryable_and_bounded() {
    let (client, ns) = ApiServer::shared().namespace("faults-imds").await.unwrap();
    let timeout = Duration::from_secs(1);
    let env = env(
        client,
        ns,
        Opts {
            upstream_timeout: timeout,
            ..Opts::default()
        },
    )
    .await;
    bound_pod(&env, "127.0.50.1").await;
    let admin = env.emulator.admin();
    let node = Some(env.node.clone());
    let status = |status| FaultAction::Status {
        status,
        retry_after_secs: None,
    };

    admin.inject(fault(EndpointKind::Imds, node.clone(), status(410)));
    let a = env.ask("127.0.50.1", "").await;
    a.refused(410);

    for action in [
        FaultAction::Latency { ms: 60_000 },
        FaultAction::Timeout { ms: Some(60_000) },
    ] {
        admin.inject(fault(EndpointKind::Imds, node.clone(), action.clone()));
        let started = Instant::now();
        let a = env.ask("127.0.50.1", "").await;
        let took = started.elapsed();
        a.refused(503);
        assert!(
            took >= timeout && took < Duration::from_secs(30),
            "{action:?}: answered after {took:?}, not bounded by --upstream-timeout {timeout:?}"
        );
    }
    // Faults spent: the pod's retry succeeds, with its own identity's token.
    let a = env.ask("127.0.50.1", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.claims().unwrap()["oid"], ID.principal());
}

/// A service principal whose Entra token endpoint throttles (429 with Retry-After) or fails (5xx):
/// the pod gets a retryable answer carrying Entra's Retry-After, then its token.
#[tokio::test]
async fn entra_throttling_and_errors_for_a_service_principal_are_retryable() {
    let (client, ns) = ApiServer::shared().namespace("faults-entra").await.unwrap();
    let env = env(client, ns.clone(), Opts::default()).await;
    let tenant = env.emulator.tenant_id().to_owned();
    let _: Secret = env
        .create_in(
            &ns,
            json!({"metadata": {"name": "sp"}, "stringData": {"clientSecret": SP_SECRET}}),
        )
        .await;
    let _: api::AzureIdentity = env
        .create_in(
            &ns,
            json!({
                "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
                "metadata": {"name": "sp"},
                "spec": {"type": 1, "tenantID": tenant, "clientID": SP_CLIENT,
                         "clientPassword": {"name": "sp", "namespace": ns}}
            }),
        )
        .await;
    let n = ns.clone();
    env.until("NMI sees the identity", |s| s.identities.get(&n, "sp").is_some())
        .await;
    env.binding_in(&ns, "b", "sp", "app").await;
    env.pod_in(&ns, "p", "127.0.51.1", json!({"aadpodidbinding": "app"}), false)
        .await;
    let admin = env.emulator.admin();
    let status = |status, retry_after_secs| FaultAction::Status {
        status,
        retry_after_secs,
    };
    admin.inject(fault(EndpointKind::Entra, None, status(429, Some(7))));
    let a = env.ask("127.0.51.1", "").await;
    a.refused(429);
    assert_eq!(
        a.retry_after.as_deref(),
        Some("7"),
        "Entra's Retry-After reaches the pod"
    );
    for code in [500, 503] {
        admin.inject(fault(EndpointKind::Entra, None, status(code, None)));
        let a = env.ask("127.0.51.1", "").await;
        assert!(a.status >= 500, "{code} from Entra: {} {}", a.status, a.body);
        assert!(!a.body.contains("access_token"));
        assert!(
            !a.body.contains(SP_SECRET),
            "the client secret never reaches the pod"
        );
    }
    let a = env.ask("127.0.51.1", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.claims().unwrap()["appid"], SP_CLIENT);
    // Each failure was Entra's own (NMI retried nothing on the pod's behalf, and cached no failure).
    assert_eq!(env.token_calls(EndpointKind::Entra), 4);
}

/// §5: one pod flooding NMI is answered 429 with Retry-After in IMDS's JSON shape, and another
/// pod is not affected. The bucket refills at one request a minute, so the flood gets exactly its
/// burst however long it takes; the refill itself is
/// `server::tests::a_flooding_pod_is_rate_limited_alone_until_its_bucket_refills`, on a paused
/// clock.
#[tokio::test]
async fn a_flooding_pod_is_rate_limited_alone() {
    let (client, ns) = ApiServer::shared().namespace("faults-rate").await.unwrap();
    let env = env(
        client,
        ns.clone(),
        Opts {
            rate_limit: Some((1.0 / 60.0, 5)),
            ..Opts::default()
        },
    )
    .await;
    bound_pod(&env, "127.0.52.1").await;
    env.pod_in(&ns, "q", "127.0.52.2", json!({"aadpodidbinding": "app"}), false)
        .await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(env.ask("127.0.52.1", "").await);
    }
    let ok = statuses.iter().filter(|a| a.status == 200).count();
    let limited: Vec<_> = statuses.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok + limited.len(), 20, "only tokens and 429s");
    assert_eq!(ok, 5, "the burst of 5 got through, no more");
    let first = limited.first().expect("the flood was limited");
    assert_eq!(first.json()["error"], "too_many_requests");
    let retry_after: u64 = first
        .retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "until the next request is allowed: {retry_after}"
    );
    // The other pod is not affected.
    assert_eq!(env.ask("127.0.52.2", "").await.status, 200);
    let text = env.metrics.encode();
    assert!(
        text.contains("aadpodidentity_nmi_refusals_total{reason=\"rate_limited\"} 15"),
        "{text}"
    );
}

/// The apiserver down for 30 s while NMI runs: NMI keeps serving authorizations it holds while
/// their proof is recent (the watches' last success within `--max-state-staleness`, 10 s here), then
/// refuses with a retryable 503 and says so in `aadpodidentity_nmi_state_stale`; when the apiserver
/// returns, the watches list again, the gauge goes to 0, a change made in the outage is seen, and
/// the pod gets its token. Each answer is checked against how long NMI's own state says it has
/// been unproven (read before the request for a token, after it for a refusal), not against the
/// wall clock, which a loaded machine stretches between NMI's decision and the check.
#[tokio::test]
async fn apiserver_down_for_30s_nmi_serves_only_while_it_can_prove_then_recovers() {
    let mut server = tokio::task::spawn_blocking(ApiServer::start)
        .await
        .unwrap()
        .expect("a private kube-apiserver starts (the outage must not hit other tests)");
    let (client, ns) = server.namespace("faults-outage").await.unwrap();
    let max = Duration::from_secs(10);
    let env = env(
        client.clone(),
        ns.clone(),
        Opts {
            max_staleness: max,
            ..Opts::default()
        },
    )
    .await;
    bound_pod(&env, "127.0.53.1").await;
    assert_eq!(env.ask("127.0.53.1", "").await.status, 200);
    assert_eq!(env.metric("aadpodidentity_nmi_state_stale"), Some(0));

    server = tokio::task::spawn_blocking(move || {
        server.kill_apiserver();
        server
    })
    .await
    .unwrap();
    let down_at = Instant::now();
    // Within the allowance: still served (the authorization is recent enough to stand).
    let (mut served, mut refused_stale) = (0, 0);
    let mut first_refusal: Option<Duration> = None;
    while down_at.elapsed() < Duration::from_secs(30) {
        let unproven_before = env.state.unproven_for();
        let a = env.ask("127.0.53.1", "").await;
        let unproven_after = env.state.unproven_for();
        match a.status {
            200 => {
                served += 1;
                assert!(
                    unproven_before.is_none_or(|u| u <= max),
                    "served with the state unproven for {unproven_before:?}, beyond --max-state-staleness"
                );
                assert_eq!(first_refusal, None, "served again after refusing");
            }
            503 => {
                a.refused(503);
                assert!(a.body.contains("cannot prove"), "{}", a.body);
                assert_eq!(a.retry_after.as_deref(), Some("5"));
                assert!(
                    unproven_after.is_some_and(|u| u > max),
                    "refused with the state unproven for only {unproven_after:?}"
                );
                refused_stale += 1;
                first_refusal.get_or_insert(down_at.elapsed());
            }
            s => panic!("unexpected {s} during the outage: {}", a.body),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first_refusal = first_refusal.expect("NMI stopped serving once it could not prove");
    assert!(served > 0, "NMI served during the allowance");
    assert!(env.state.is_stale());
    assert_eq!(env.metric("aadpodidentity_nmi_state_stale"), Some(1));
    eprintln!(
        "outage: served {served} in the first {first_refusal:?}, then refused {refused_stale} with 503"
    );

    let mut server = tokio::task::spawn_blocking(move || {
        server.start_apiserver().expect("the apiserver restarts");
        server
    })
    .await
    .unwrap();
    let back_at = Instant::now();
    env.until("NMI's watches are proven again", |s| {
        !s.is_stale() && s.unproven_for().is_none()
    })
    .await;
    eprintln!(
        "watches proven again {:?} after the apiserver returned",
        back_at.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.metric("aadpodidentity_nmi_state_stale") != Some(0) {
        assert!(Instant::now() < deadline, "the gauge returned to 0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.ask("127.0.53.1", "").await.status, 200);
    // The watches resumed: a pod created after the outage is served.
    env.pod_in(
        &ns,
        "later",
        "127.0.53.2",
        json!({"aadpodidbinding": "app"}),
        false,
    )
    .await;
    let a = env.ask("127.0.53.2", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    tokio::task::spawn_blocking(move || server.stop_apiserver())
        .await
        .unwrap();
}

/// NMI (the binary) killed with SIGKILL and restarted: in between, nothing answers the pod and IMDS
/// sees no request; changes made while NMI was down are in the rebuilt state; the pod's SDK-style
/// retry (on connection errors and 5xx) succeeds once NMI is back. (That iptables rules outlive
/// NMI, so a pod cannot reach IMDS directly while it is down, is `tests/netns.rs`.)
#[tokio::test]
async fn nmi_killed_and_restarted_rebuilds_state_and_the_pods_retry_succeeds() {
    let server = ApiServer::shared();
    let (client, ns) = server.namespace("faults-restart").await.unwrap();
    let node = format!("node-{ns}");
    let emulator = Emulator::start(common::world(&node)).await.unwrap();
    let imds = emulator.imds_addr(&node).unwrap();
    let port = common::free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let (probe, metrics) = (common::free_port(), common::free_port());
    let cmd = common::nmi_on_loopback(&node, server.kubeconfig(), imds, port, probe, metrics);
    let pod = async |name: &str, ip: &str, selector: &str| {
        let labels = json!({"aadpodidbinding": selector});
        common::running_pod(&client, &ns, name, &node, ip, labels, false).await
    };
    for u in [uami(0), uami(1)] {
        let _: api::AzureIdentity = common::create_in(
            &client,
            &ns,
            json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
                      "metadata": {"name": u.name},
                      "spec": {"type": 0, "clientID": u.client(), "resourceID": common::resource_id(u.name)}}),
        )
        .await;
    }
    let _: api::AzureIdentityBinding = common::create_in(
        &client,
        &ns,
        json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
                  "metadata": {"name": "b0"}, "spec": {"azureIdentity": uami(0).name, "selector": "s0"}}),
    )
    .await;
    pod("p0", "127.0.54.1", "s0").await;

    let url = format!(
        "http://{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
        SocketAddr::from(([127, 0, 0, 1], port))
    );
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let once = |http: reqwest::Client| {
        let url = url.clone();
        async move {
            match http.get(&url).header("Metadata", "true").send().await {
                Ok(r) => Some((r.status().as_u16(), r.json::<Value>().await.unwrap_or_default())),
                Err(_) => None,
            }
        }
    };
    // As the Azure SDKs do: retry connection errors, 404, 410, 429 and 5xx with a backoff.
    let log_path = log.path().to_owned();
    let sdk_retry = |ip: &'static str| {
        let http = from(ip);
        let log_path = log_path.clone();
        async move {
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut attempts = 0;
            loop {
                attempts += 1;
                match once(http.clone()).await {
                    Some((200, v)) => return (attempts, v),
                    Some((s, v)) if s != 404 && s != 410 && s != 429 && s < 500 => {
                        panic!("a final refusal {s}: {v}\n{}", log())
                    }
                    _ => {}
                }
                assert!(Instant::now() < deadline, "the SDK's retries ran out\n{}", log());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let mut nmi = Supervised::spawn_with("nmi", &cmd, log.path()).unwrap();
    let (_, v) = sdk_retry("127.0.54.1").await;
    assert_eq!(v["client_id"], uami(0).client());

    nmi.kill();
    assert!(!nmi.is_running());
    let imds_calls = || common::imds_calls(&emulator);
    let before = imds_calls();
    assert_eq!(
        once(from("127.0.54.1")).await,
        None,
        "nothing answers while NMI is down"
    );
    // While NMI is down the cluster changes: a second identity is bound to a new pod.
    let _: api::AzureIdentityBinding = common::create_in(
        &client,
        &ns,
        json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
                  "metadata": {"name": "b1"}, "spec": {"azureIdentity": uami(1).name, "selector": "s1"}}),
    )
    .await;
    pod("p1", "127.0.54.2", "s1").await;
    assert_eq!(imds_calls(), before, "IMDS saw no request while NMI was down");

    // The pods' retries start while NMI is down and succeed once it is back.
    let restart = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Supervised::spawn_with("nmi", &cmd, log.path()).unwrap()
    };
    let ((attempts0, v0), (_, v1), mut nmi) =
        tokio::join!(sdk_retry("127.0.54.1"), sdk_retry("127.0.54.2"), restart);
    assert!(attempts0 > 1, "the first attempts failed while NMI was down");
    assert_eq!(v0["client_id"], uami(0).client());
    assert_eq!(
        v1["client_id"],
        uami(1).client(),
        "state rebuilt, with what changed while NMI was down"
    );
    eprintln!("after the restart the pod's token came on attempt {attempts0}");
    // A pod not bound is still refused by the restarted NMI: it did not come back open.
    pod("p2", "127.0.54.3", "nothing").await;
    // Until NMI's watch has the pod it is unknown (404); then refused as unbound, never served.
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = once(from("127.0.54.3")).await.expect("NMI answers");
        if r.0 != 404 || Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.0, 403, "{}", r.1);
    nmi.stop(Duration::from_secs(10));
}
