//! The request handler against hand-built state, case by case from upstream's conformance list
//! (§5.2), adjusted where NMI deliberately differs.

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use api::AssignmentState::{Assigned, Created};
use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Request, StatusCode, header},
};
use k8s_openapi::api::core::v1::Pod;
use mirror::sync;
use serde_json::Value;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::*;
use crate::{
    state::Mode,
    testing::{self, *},
    token_cache::CachePolicy,
};

const POD_IP: &str = "10.244.0.5";

struct Harness {
    nmi: Arc<Nmi<Counting>>,
    source: Arc<Counting>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn description(&self) -> String {
        self.json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A port nothing listens on, standing for an IMDS that does not answer.
fn dead_imds() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn config() -> Config {
    Config {
        metadata_header_required: true,
        block_instance_metadata: false,
        set_retry_after_header: false,
        identity_wait: Duration::from_millis(300),
        pod_wait: Duration::from_millis(100),
        imds: dead_imds(),
    }
}

fn harness_with(mode: Mode, policy: matching::Policy, config: Config) -> Harness {
    let metrics = Metrics::new();
    let source = Counting::new();
    let state = Arc::new(State::new(NODE, mode, policy));
    let cache = Arc::new(TokenCache::new(
        source.clone(),
        CachePolicy::default(),
        metrics.clone(),
    ));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let nmi = Nmi::new(state, cache, config, metrics, http);
    Harness { nmi, source }
}

fn harness(mode: Mode) -> Harness {
    configured(mode, config())
}

/// A harness that holds requests for MIC long enough for any test to act meanwhile.
fn patient(mode: Mode) -> Harness {
    configured(
        mode,
        Config {
            identity_wait: Duration::from_secs(10),
            ..config()
        },
    )
}

/// A harness with the default matching policy and `config`.
fn configured(mode: Mode, config: Config) -> Harness {
    harness_with(mode, matching::Policy::default(), config)
}

const TOKEN: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net";

impl Harness {
    fn state(&self) -> &State {
        &self.nmi.authorizer.state
    }

    /// Seed: one pod in `ns` labelled `app`, bound to identity `id` (client 1); AAI as given.
    fn seed(&self, aai_state: Option<Option<api::AssignmentState>>) -> Pod {
        self.seed_at(POD_IP, aai_state)
    }

    /// `seed`, with the pod at `ip`.
    fn seed_at(&self, ip: &str, aai_state: Option<Option<api::AssignmentState>>) -> Pod {
        let p = pod("ns", "p", ip, Some("app"));
        let id = identity("ns", "id", 1);
        let aais = aai_state.map(|s| aai(&p, &id, s)).into_iter().collect();
        self.state().replace_all(
            vec![p.clone()],
            vec![binding("ns", "b", "id", "app", 1)],
            vec![id],
            vec![],
            aais,
        );
        p
    }

    async fn get_from(&self, ip: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::get(uri).body(Body::empty()).unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let peer: SocketAddr = format!("{ip}:40000").parse().unwrap();
        let res = handle(&self.nmi, peer, req).await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn token(&self, query_suffix: &str) -> Answer {
        self.get_from(POD_IP, &format!("{TOKEN}{query_suffix}"), &[("Metadata", "true")])
            .await
    }
}

fn claims(answer: &Answer) -> Value {
    let t = answer.json()["access_token"].as_str().unwrap().to_owned();
    let payload = t.split('.').nth(1).unwrap();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn assert_refused_without_token(a: &Answer) {
    assert!(!a.body.contains("access_token"), "{}", a.body);
    assert!(a.json()["error"].is_string(), "{}", a.body);
}

/// NMI has just started: its pod watch has listed, its binding watch not yet. A bound pod's
/// request waits for the first lists instead of being refused as unbound (the SDKs do not retry a
/// 403); when they do not come within `--pod-wait`, it gets a retryable 503. (On tokio's paused
/// clock, as every test here that waits: the lists come 200 ms into a 10 s wait however slow
/// the machine.)
#[tokio::test(start_paused = true)]
async fn a_request_before_the_first_lists_waits_for_them() {
    use mirror::Sink;
    let h = configured(
        Mode::Standard,
        Config {
            pod_wait: Duration::from_secs(10),
            ..config()
        },
    );
    let p = pod("ns", "p", POD_IP, Some("app"));
    let pods_listed_only = |h: &Harness| {
        h.state()
            .pods
            .replace(vec![(mirror::key_of(&p), crate::state::WatchedPod::from(&p))]);
    };
    pods_listed_only(&h);
    let (answer, ()) = tokio::join!(h.token(""), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.seed(Some(Some(Assigned)));
    });
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["client_id"], client_id(1));

    let h = harness(Mode::Standard);
    pods_listed_only(&h);
    let answer = h.token("").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
    assert!(answer.headers.contains_key("retry-after"));
    assert!(answer.description().contains("not yet read"), "{}", answer.body);
    assert_eq!(h.source.calls(), 0);
}

// §5.2 cases 1 and 2, and the SDK probes of B.2: answered at once, never "Identity not found".
// "At once" on tokio's paused clock: no wait of any length was taken.
#[tokio::test(start_paused = true)]
async fn probe_without_metadata_header_gets_400_invalid_request_at_once() {
    let h = harness(Mode::Standard);
    h.seed(None);
    for (uri, headers) in [
        ("/metadata/identity/oauth2/token", vec![]),
        (TOKEN, vec![]),
        (TOKEN, vec![("Metadata", "True")]),
        (
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r&msi-res-id=x",
            vec![],
        ),
    ] {
        let started = tokio::time::Instant::now();
        let a = h.get_from("10.9.9.9", uri, &headers).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "answered without waiting");
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(a.headers[header::CONTENT_TYPE], "application/json; charset=utf-8");
        assert_eq!(
            a.body,
            r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#
        );
        assert!(!a.body.contains("Identity not found") && !a.body.contains("unreachable"));
    }
    assert_eq!(h.source.calls(), 0);
}

#[tokio::test]
async fn header_check_can_be_turned_off() {
    let h = configured(
        Mode::Managed,
        Config {
            metadata_header_required: false,
            ..config()
        },
    );
    h.seed(None);
    assert_eq!(h.get_from(POD_IP, TOKEN, &[]).await.status, StatusCode::OK);
}

// §5.2 case 3, and duplicate parameters (IMDS refuses them).
#[tokio::test]
async fn query_errors_are_400_invalid_request() {
    let h = harness(Mode::Standard);
    let a = h
        .get_from(
            POD_IP,
            "/metadata/identity/oauth2/token?api-version=2018-02-01",
            &[("Metadata", "true")],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.description(), "parameter resource cannot be empty");
    let a = h.token("&resource=again").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.description().contains("more than once"));
}

// §5.2 case 4: adjusted: 404 (SDKs retry it) after a short wait woken by the pod watch, not 500.
#[tokio::test]
async fn unknown_source_ip_is_refused_after_the_pod_wait() {
    let h = harness(Mode::Standard);
    h.seed(Some(Some(Assigned)));
    let started = std::time::Instant::now();
    let a = h.get_from("10.9.9.9", TOKEN, &[("Metadata", "true")]).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.description().contains("10.9.9.9"));
    assert_refused_without_token(&a);
}

#[tokio::test(start_paused = true)]
async fn a_pod_appearing_during_the_pod_wait_is_served() {
    let h = configured(
        Mode::Managed,
        Config {
            pod_wait: Duration::from_secs(5),
            ..config()
        },
    );
    let state = h.nmi.authorizer.state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state.replace_all(
            vec![pod("ns", "p", POD_IP, Some("app"))],
            vec![binding("ns", "b", "id", "app", 1)],
            vec![identity("ns", "id", 1)],
            vec![],
            vec![],
        );
    });
    assert_eq!(h.token("").await.status, StatusCode::OK);
}

// §5.2 case 5, adjusted (issue 13 §5): refused rather than guessed, and retryable, since the
// usual cause (an old pod's deletion not yet seen) passes.
#[tokio::test]
async fn two_pods_on_one_ip_are_refused_with_a_retryable_answer() {
    let h = harness(Mode::Managed);
    h.state().replace_all(
        vec![
            pod("ns", "a", POD_IP, Some("app")),
            pod("ns", "b", POD_IP, Some("app")),
        ],
        vec![binding("ns", "b", "id", "app", 1)],
        vec![identity("ns", "id", 1)],
        vec![],
        vec![],
    );
    let started = std::time::Instant::now();
    let a = h.token("").await;
    assert!(
        started.elapsed() >= h.nmi.config.pod_wait,
        "held for --pod-wait first"
    );
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.headers[header::RETRY_AFTER], "5");
    assert!(a.description().contains("ns/a, ns/b"), "{}", a.body);
    assert_refused_without_token(&a);
    assert_eq!(h.source.calls(), 0);
    assert!(
        h.nmi
            .metrics
            .encode()
            .contains("aadpodidentity_nmi_refusals_total{reason=\"ambiguous_ip\"} 1")
    );
}

// Issue 13 §5: the new pod's request arrives before NMI has seen the old pod go. It is held, and
// answered for the new pod (bound to another identity) once the old pod's deletion arrives.
#[tokio::test(start_paused = true)]
async fn a_request_held_on_a_shared_ip_is_answered_for_the_new_pod_once_the_old_one_goes() {
    let h = configured(
        Mode::Managed,
        Config {
            pod_wait: Duration::from_secs(10),
            ..config()
        },
    );
    h.state().replace_all(
        vec![
            pod("ns", "old", POD_IP, Some("old")),
            pod("ns", "new", POD_IP, Some("new")),
        ],
        vec![
            binding("ns", "b-old", "id-old", "old", 1),
            binding("ns", "b-new", "id-new", "new", 1),
        ],
        vec![identity("ns", "id-old", 1), identity("ns", "id-new", 2)],
        vec![],
        vec![],
    );
    let state = h.nmi.authorizer.state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        state.delete_pod("ns", "old");
    });
    let a = h.token("").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["client_id"], client_id(2), "the new pod's identity");
}

// Issue 13 §5: a pod being deleted is no candidate for its IP: its (former) IP is the new pod's.
#[tokio::test]
async fn a_terminating_pods_ip_belongs_to_the_new_pod() {
    let h = harness(Mode::Managed);
    let mut old = pod("ns", "old", POD_IP, Some("old"));
    old.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    h.state().replace_all(
        vec![old.clone()],
        vec![
            binding("ns", "b-old", "id-old", "old", 1),
            binding("ns", "b-new", "id-new", "new", 1),
        ],
        vec![identity("ns", "id-old", 1), identity("ns", "id-new", 2)],
        vec![],
        vec![],
    );
    // Alone, the terminating pod gets no new token.
    let a = h.token("").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    h.state().apply_pod(&pod("ns", "new", POD_IP, Some("new")));
    let a = h.token("").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["client_id"], client_id(2));
    assert_eq!(
        h.source.calls(),
        1,
        "no token was fetched for the old pod's identity"
    );
}

// §5.2 cases 6 and 8: bounded wait (not 80–100 s), then 404; never 400.
#[tokio::test]
async fn no_aai_or_created_only_waits_then_404() {
    for aai_state in [None, Some(Some(Created))] {
        let h = harness(Mode::Standard);
        h.seed(aai_state);
        let started = std::time::Instant::now();
        let a = h.token("").await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        assert!(a.description().contains("not yet assigned"), "{}", a.body);
        assert!(a.headers.get(header::RETRY_AFTER).is_none());
        assert_eq!(h.source.calls(), 0);
    }
}

// §5.2 case 7.
#[tokio::test]
async fn retry_after_flag_gives_503_with_retry_after() {
    let h = configured(
        Mode::Standard,
        Config {
            set_retry_after_header: true,
            ..config()
        },
    );
    h.seed(Some(Some(Created)));
    let a = h.token("").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers[header::RETRY_AFTER], "20");
}

// Improvement 8: the held request is woken by the AAI watch, not by polling. On tokio's paused
// clock, "at once" is exact: the answer comes with no time passed since the assignment, which a
// poll of any period (or the 10 s deadline) would not give.
#[tokio::test(start_paused = true)]
async fn a_held_request_succeeds_once_mic_assigns() {
    let h = patient(Mode::Standard);
    let p = h.seed(Some(Some(Created)));
    let state = h.nmi.authorizer.state.clone();
    let started = tokio::time::Instant::now();
    let assign = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        state.apply_assigned(aai(&p, &identity("ns", "id", 1), Some(Assigned)));
        tokio::time::Instant::now()
    });
    let a = h.token("").await;
    let answered_at = tokio::time::Instant::now();
    let assigned_at = assign.await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        assigned_at - started,
        Duration::from_millis(200),
        "held until assigned"
    );
    assert_eq!(answered_at, assigned_at, "answered as soon as MIC assigned");
}

// Graceful shutdown of the pod-facing server: a request in progress when NMI is told to stop still
// gets its answer, new connections are refused at once, and `serve` returns after the last answer.
//
// The request is held because IMDS lacks the identity (see `identity_missing_…` below): its first
// ask of IMDS shows it is in progress, so nothing here guesses how long that takes.
#[tokio::test]
async fn on_shutdown_a_held_request_is_answered_and_new_connections_are_refused() {
    let h = configured(
        Mode::Standard,
        Config {
            identity_wait: Duration::from_secs(60),
            ..config()
        },
    );
    let pod_ip = "127.0.30.1";
    h.seed_at(pod_ip, Some(Some(Assigned)));
    sync::lock(&h.source.missing).insert(client_id(1));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{TOKEN}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, h.nmi.clone(), async {
        let _ = stopped.await;
    }));
    let pod_http = reqwest::Client::builder()
        .no_proxy()
        .local_address(pod_ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let held = tokio::spawn({
        let (pod_http, url) = (pod_http.clone(), url.clone());
        async move { pod_http.get(url).header("Metadata", "true").send().await }
    });
    // Held: IMDS lacks the identity (the wait is 60 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.source.calls() == 0 {
        assert!(Instant::now() < deadline, "the request never reached NMI");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !held.is_finished(),
        "the request is held while IMDS lacks the identity"
    );

    stop.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::Client::new().get(&url).send().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "new connections are still accepted after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !server.is_finished(),
        "the server waits for the request in progress"
    );

    sync::lock(&h.source.missing).clear();
    let answer = held
        .await
        .unwrap()
        .expect("the held request is answered, not cut off");
    assert_eq!(answer.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("serve returns once the last answer is out")
        .unwrap();
}

// §5.2 cases 9 and 10; the IMDS answer shape of B.1.
#[tokio::test]
async fn assigned_identity_gets_an_imds_shaped_token() {
    for aai_state in [Some(Assigned), None] {
        let h = harness(Mode::Standard);
        h.seed(Some(aai_state));
        let a = h.token("").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.headers[header::CONTENT_TYPE], "application/json; charset=utf-8");
        let keys: Vec<&str> = a
            .body
            .split("\":")
            .map(|s| s.rsplit('"').next().unwrap())
            .collect();
        assert_eq!(
            &keys[..8],
            [
                "access_token",
                "client_id",
                "expires_in",
                "expires_on",
                "ext_expires_in",
                "not_before",
                "resource",
                "token_type"
            ]
        );
        let v = a.json();
        assert!(
            v.as_object().unwrap().values().all(Value::is_string),
            "{}",
            a.body
        );
        assert_eq!(v["client_id"], client_id(1));
        assert_eq!(v["resource"], "https://vault.azure.net");
        let expires_in: u64 = v["expires_in"].as_str().unwrap().parse().unwrap();
        let expires_on: u64 = v["expires_on"].as_str().unwrap().parse().unwrap();
        assert!(expires_in > 80_000 && expires_on > crate::token::now() + 80_000);
        assert_eq!(claims(&a)["aud"], "https://vault.azure.net");
    }
}

fn two_identities(h: &Harness) {
    let p = pod("ns", "p", POD_IP, Some("app"));
    let (one, two) = (identity("ns", "one", 1), identity("ns", "two", 2));
    h.state().replace_all(
        vec![p.clone()],
        // "b-two" is older: it is the default whatever the names or map order.
        vec![
            binding("ns", "b-one", "one", "app", 200),
            binding("ns", "b-two", "two", "app", 100),
        ],
        vec![one.clone(), two.clone()],
        vec![],
        vec![aai(&p, &one, Some(Assigned)), aai(&p, &two, Some(Assigned))],
    );
    sync::lock(&h.source.principals)
        .extend([(client_id(1), principal_id(1)), (client_id(2), principal_id(2))]);
}

// §5.2 case 11, adjusted (improvement 2): the oldest binding, every time.
#[tokio::test]
async fn default_identity_is_the_oldest_bindings() {
    let h = harness(Mode::Standard);
    two_identities(&h);
    for _ in 0..5 {
        let a = h.token("").await;
        assert_eq!(a.json()["client_id"], client_id(2));
    }
}

// §5.2 cases 12, 14, 15 (adjusted: case-insensitive), 16 (adjusted: object_id honoured).
#[tokio::test]
async fn selection_by_client_id_object_id_and_resource_id() {
    let h = harness(Mode::Standard);
    two_identities(&h);
    let cases = [
        (format!("&client_id={}", client_id(1)), client_id(1)),
        (
            format!("&client_id={}", client_id(1).to_uppercase()),
            client_id(1),
        ),
        (
            format!("&msi_res_id={}", testing::resource_id("one")),
            client_id(1),
        ),
        (
            format!("&mi_res_id={}", testing::resource_id("one").to_lowercase()),
            client_id(1),
        ),
        (format!("&object_id={}", principal_id(1)), client_id(1)),
        (format!("&object_id={}", principal_id(2)), client_id(2)),
    ];
    for (q, want) in cases {
        let a = h.token(&q).await;
        assert_eq!(a.status, StatusCode::OK, "{q}: {}", a.body);
        assert_eq!(a.json()["client_id"], want, "{q}");
        assert_eq!(
            claims(&a)["appid"],
            want,
            "{q}: the token is the chosen identity's"
        );
    }
}

// §5.2 case 13, adjusted: a client id the pod is not bound to is refused at once (403).
#[tokio::test]
async fn unbound_selectors_are_refused() {
    let h = harness(Mode::Standard);
    two_identities(&h);
    for q in [
        format!("&client_id={}", client_id(7)),
        format!("&object_id={}", principal_id(7)),
        format!("&msi_res_id={}", testing::resource_id("seven")),
    ] {
        let a = h.token(&q).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{q}: {}", a.body);
        assert!(a.description().contains("not bound"));
        assert_refused_without_token(&a);
    }
}

// §5.2 case 18, now the default (improvement 1); and the rogue and unlabelled pods.
#[tokio::test]
async fn wrong_namespace_rogue_and_unlabelled_pods_are_refused() {
    let h = harness(Mode::Managed);
    h.state().replace_all(
        vec![
            pod("ns", "unlabelled", "10.0.0.1", None),
            pod("rogue-ns", "rogue", "10.0.0.2", Some("app")),
            pod("other", "wrong-ns", "10.0.0.3", Some("cross")),
        ],
        vec![
            binding("ns", "b", "id", "app", 1),
            binding("ns", "bx", "id", "cross", 1),
        ],
        vec![identity("ns", "id", 1)],
        vec![],
        vec![],
    );
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        let a = h.get_from(ip, TOKEN, &[("Metadata", "true")]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{ip}: {}", a.body);
        assert_refused_without_token(&a);
    }
    assert_eq!(h.source.calls(), 0);
}

#[tokio::test]
async fn cross_namespace_only_with_the_flag() {
    let h = harness_with(
        Mode::Managed,
        matching::Policy {
            namespaced: false,
            ..matching::Policy::default()
        },
        config(),
    );
    h.state().replace_all(
        vec![pod("other", "p", POD_IP, Some("app"))],
        vec![binding("ns", "b", "id", "app", 1)],
        vec![identity("ns", "id", 1)],
        vec![],
        vec![],
    );
    assert_eq!(h.token("").await.status, StatusCode::OK);
}

// Improvement 4: the cache never bypasses authorization.
#[tokio::test]
async fn warm_cache_does_not_serve_a_pod_reusing_a_deleted_pods_ip() {
    let h = harness(Mode::Standard);
    h.seed(Some(Some(Assigned)));
    assert_eq!(h.token("").await.status, StatusCode::OK);
    assert_eq!(h.token("").await.status, StatusCode::OK);
    assert_eq!(h.source.calls(), 1, "the second token came from the cache");
    h.state().delete_pod("ns", "p");
    h.state().apply_pod(&pod("ns", "intruder", POD_IP, None));
    let a = h.token("").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_refused_without_token(&a);
    // Deleting the binding takes effect at once too.
    h.seed(Some(Some(Assigned)));
    assert_eq!(h.token("").await.status, StatusCode::OK);
    let p = pod("ns", "p", POD_IP, Some("app"));
    let id = identity("ns", "id", 1);
    h.state().replace_all(
        vec![p.clone()],
        vec![],
        vec![id.clone()],
        vec![],
        vec![aai(&p, &id, Some(Assigned))],
    );
    assert_eq!(h.token("").await.status, StatusCode::FORBIDDEN);
    assert_eq!(h.source.calls(), 1);
}

// A pod asking the same again within a second gets the answer it just got, but only while the
// state is unchanged: any change sends the next request through the full decision again.
#[tokio::test]
async fn repeated_questions_reuse_the_answer_only_while_nothing_changes() {
    let h = harness(Mode::Standard);
    let p = h.seed(Some(Some(Assigned)));
    let first = h.token("").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(h.nmi.memo.len(), 1, "the authorized answer is kept");
    let again = h.token("").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(claims(&again), claims(&first));
    assert_eq!(h.source.calls(), 1);
    // Another pod, bound to nothing, asking the very same query from its own IP is refused.
    h.state()
        .apply_pod(&pod("ns", "other", "10.244.0.9", Some("nothing")));
    let other = h.get_from("10.244.0.9", TOKEN, &[("Metadata", "true")]).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.body);
    assert_refused_without_token(&other);
    // MIC unassigns the identity: the same pod and query now wait for MIC instead.
    let id = identity("ns", "id", 1);
    h.state().apply_assigned(aai(&p, &id, Some(Created)));
    let waiting = h.token("").await;
    assert_eq!(waiting.status, StatusCode::NOT_FOUND, "{}", waiting.body);
    assert_refused_without_token(&waiting);
}

// §5.2 cases 19 and 21: an excepted pod passes through to IMDS (here one that does not answer);
// the "MIC namespace" shortcut is gone.
#[tokio::test]
async fn excepted_pods_pass_through_to_imds_and_mic_named_pods_are_not_excepted() {
    let h = harness(Mode::Standard);
    let mut excepted = pod("ns", "e", POD_IP, None);
    excepted.metadata.labels = Some([("noaad".to_owned(), "true".to_owned())].into());
    h.state().replace_all(
        vec![excepted, pod("default", "mic-abc", "10.0.0.2", None)],
        vec![],
        vec![],
        vec![exception("ns", &[("noaad", "True")])],
        vec![],
    );
    let a = h.token("").await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "passed through: {}",
        a.body
    );
    assert!(a.description().contains("IMDS did not answer"));
    let a = h.get_from("10.0.0.2", TOKEN, &[("Metadata", "true")]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(h.source.calls(), 0);
}

// §5.2 case 26: a clear refusal, 403.
#[tokio::test]
async fn unusable_identities_are_403_with_the_reason() {
    let h = harness(Mode::Managed);
    let mut id = identity("ns", "id", 1);
    id.spec.type_ = Some(3);
    h.state().replace_all(
        vec![pod("ns", "p", POD_IP, Some("app"))],
        vec![binding("ns", "b", "id", "app", 1)],
        vec![id],
        vec![],
        vec![],
    );
    let a = h.token("").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.description().contains("unsupported identity type 3"),
        "{}",
        a.body
    );
}

// Upstream failures stay retryable for the SDKs (B.1): 429 and 5xx pass with Retry-After.
#[tokio::test]
async fn imds_throttling_and_outages_reach_the_pod_as_retryable() {
    for (status, retry) in [(429, Some(7)), (500, None), (503, Some(2))] {
        let h = harness(Mode::Managed);
        h.seed(None);
        *sync::lock(&h.source.fail_with) = Some((status, retry.map(Duration::from_secs)));
        let a = h.token("").await;
        assert_eq!(a.status.as_u16(), status, "{}", a.body);
        assert_eq!(
            a.headers
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_owned()),
            retry.map(|r| r.to_string())
        );
        assert_refused_without_token(&a);
    }
}

// §5.2 cases 28–30.
#[tokio::test]
async fn host_token_for_a_named_pod_from_loopback_only() {
    let h = harness(Mode::Standard);
    h.seed(Some(Some(Assigned)));
    let uri = "/host/token/?resource=https%3A%2F%2Fvault.azure.net";
    let named = [("podns", "ns"), ("podname", "p")];
    let a = h.get_from("127.0.0.1", uri, &named).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    assert_eq!(v["clientid"], client_id(1));
    assert!(v["token"]["access_token"].is_string());
    let a = h.get_from("127.0.0.1", uri, &[("podns", "ns")]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.description(),
        "missing 'podname' and 'podns' from request header"
    );
    let a = h.get_from(POD_IP, uri, &named).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.description(), "request remote address is not from a host");
    let a = h
        .get_from("127.0.0.1", uri, &[("podns", "ns"), ("podname", "absent")])
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

// §5.2 cases 31–34.
#[tokio::test]
async fn other_routes() {
    let h = harness(Mode::Standard);
    // Every watch has listed: nothing.
    h.state().replace_all(vec![], vec![], vec![], vec![], vec![]);
    let md = [("Metadata", "true")];
    let a = h
        .get_from(POD_IP, "/metadata/identity%5Coauth2/token/", &md)
        .await;
    assert_eq!(
        (a.status, a.description().as_str()),
        (StatusCode::BAD_REQUEST, "Invalid request")
    );
    // Pass-through (IMDS here does not answer): header required first.
    let a = h.get_from(POD_IP, "/doesnotexist", &[]).await;
    assert_eq!(a.description(), "Required metadata header not specified");
    // §5.2 case 33, adjusted: another letter case is still the token path, answered by NMI (here:
    // no pod has this IP); a path IMDS might resolve to an identity path is refused.
    let a = h
        .get_from(
            "10.9.9.9",
            "/metadata/Identity/oauth2/token/?api-version=2018-02-01&resource=r",
            &md,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    let a = h
        .get_from(POD_IP, "/x/../metadata/identity/oauth2/token?resource=r", &md)
        .await;
    assert_eq!(
        (a.status, a.description().as_str()),
        (StatusCode::BAD_REQUEST, "Invalid request")
    );
    let a = h.get_from(POD_IP, "/doesnotexist", &md).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.description().contains("IMDS did not answer"));
    let a = h
        .get_from(POD_IP, "/metadata/instance?api-version=2021-02-01", &md)
        .await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not blocked by default"
    );

    let h = configured(
        Mode::Standard,
        Config {
            block_instance_metadata: true,
            ..config()
        },
    );
    for uri in ["/metadata/instance", "/Metadata/instance/compute"] {
        let a = h.get_from(POD_IP, uri, &[]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(a.description(), "Request blocked by AAD Pod Identity NMI");
    }
}

// §5.2 case 35, and readiness.
#[tokio::test]
async fn probes_report_rules_and_sync() {
    let state = Arc::new(State::new(NODE, Mode::Managed, matching::Policy::default()));
    let rules = Arc::new(AtomicBool::new(false));
    let port = Arc::new(PodPort::default());
    let probe = |uri: &'static str, port: &Arc<PodPort>| {
        let r = probe_router(state.clone(), rules.clone(), port.clone());
        async move {
            let res = r
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = res.status();
            let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(
        probe("/healthz", &port).await,
        (StatusCode::OK, "Not Active".into())
    );
    assert_eq!(probe("/readyz", &port).await.0, StatusCode::SERVICE_UNAVAILABLE);
    rules.store(true, Ordering::Release);
    assert_eq!(probe("/healthz", &port).await, (StatusCode::OK, "Active".into()));
    assert_eq!(
        probe("/readyz", &port).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "watches not synced"
    );
    state.replace_all(vec![], vec![], vec![], vec![], vec![]);
    assert_eq!(
        probe("/readyz", &port).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "the pod-facing listener not bound yet"
    );
    port.set_serving();
    assert_eq!(probe("/readyz", &port).await.0, StatusCode::OK);

    // The first update from an NMI that holds the port without SO_REUSEPORT: this one can bind
    // only after the DaemonSet stops that one, which it does once this pod is Ready.
    let held = Arc::new(PodPort::default());
    held.set_held_by_older(true);
    assert_eq!(probe("/readyz", &held).await.0, StatusCode::OK);
    held.set_held_by_older(false);
    assert_eq!(
        probe("/readyz", &held).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "neither bound nor held"
    );
}

#[tokio::test]
async fn metrics_count_tokens_by_cache_hit_and_refusals_by_reason() {
    let h = harness(Mode::Managed);
    h.seed(None);
    h.token("").await;
    h.token("").await;
    h.get_from("10.0.0.99", TOKEN, &[("Metadata", "true")]).await;
    let res = metrics_router(h.nmi.metrics.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for line in [
        "aadpodidentity_nmi_tokens_issued_total{cache_hit=\"false\"} 1",
        "aadpodidentity_nmi_tokens_issued_total{cache_hit=\"true\"} 1",
        "aadpodidentity_nmi_refusals_total{reason=\"no_pod\"} 1",
        "aadpodidentity_nmi_token_cache_entries 1",
        "aadpodidentity_nmi_operations_duration_seconds_count{operation_type=\"token\",status_code=\"200\"} 2",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("eyJ"), "no token text in metrics");
}

#[tokio::test]
async fn object_id_lookup_meeting_imds_throttling_stays_retryable() {
    let h = harness(Mode::Standard);
    two_identities(&h);
    *sync::lock(&h.source.fail_with) = Some((429, Some(Duration::from_secs(2))));
    let a = h.token(&format!("&object_id={}", principal_id(2))).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    *sync::lock(&h.source.fail_with) = None;
    let a = h.token(&format!("&object_id={}", principal_id(2))).await;
    assert_eq!(a.json()["client_id"], client_id(2));
}

/// Issue 13 §3: IMDS lacks an identity MIC reports `Assigned` (a removal landed after MIC marked
/// the assignment). The request is held, IMDS asked again with a backoff, and the pod gets its
/// token once the identity is back, never IMDS's final 400.
#[tokio::test(start_paused = true)]
async fn identity_missing_on_the_vm_is_held_until_it_is_back() {
    let h = patient(Mode::Standard);
    h.seed(Some(Some(Assigned)));
    sync::lock(&h.source.missing).insert(client_id(1));
    let source = h.source.clone();
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        sync::lock(&source.missing).clear();
    });
    let a = h.token("").await;
    back.await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["client_id"], client_id(1));
    // Asked at 0, 250 ms and 750 ms (the backoff): back at 600 ms, so the third try succeeds.
    assert_eq!(h.source.calls(), 3, "asked IMDS again with a backoff");
    assert!(!h.nmi.metrics.encode().contains("identity_missing_on_vm"));
}

/// Issue 13 §3: if the identity does not come back within `--identity-wait`, the answer is the
/// "not yet assigned" one (404, or 503 + Retry-After with the flag), never IMDS's 400 or a 403.
#[tokio::test]
async fn identity_missing_past_the_wait_is_answered_as_not_yet_assigned() {
    for retry_after in [false, true] {
        let h = configured(
            Mode::Standard,
            Config {
                set_retry_after_header: retry_after,
                ..config()
            },
        );
        h.seed(Some(Some(Assigned)));
        sync::lock(&h.source.missing).insert(client_id(1));
        let started = std::time::Instant::now();
        let a = h.token("").await;
        assert!(started.elapsed() >= h.nmi.config.identity_wait);
        assert_refused_without_token(&a);
        if retry_after {
            assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
            assert_eq!(a.headers[header::RETRY_AFTER], "20");
        } else {
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        }
        assert!(a.description().contains("not yet usable"), "{}", a.body);
        assert!(!a.body.contains("Identity not found"), "{}", a.body);
        assert!(h.source.calls() >= 2, "IMDS was asked again");
        assert!(
            h.nmi
                .metrics
                .encode()
                .contains("aadpodidentity_nmi_refusals_total{reason=\"identity_missing_on_vm\"} 1")
        );
    }
}

/// While held, MIC marking the object otherwise (it re-assigns) is followed at once: the request
/// then waits for `Assigned` like any other, and is answered when both MIC and IMDS agree.
#[tokio::test(start_paused = true)]
async fn identity_missing_then_reassigned_by_mic_is_served() {
    let h = patient(Mode::Standard);
    let p = h.seed(Some(Some(Assigned)));
    sync::lock(&h.source.missing).insert(client_id(1));
    let (state, source) = (h.nmi.authorizer.state.clone(), h.source.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state.apply_assigned(aai(&p, &identity("ns", "id", 1), Some(Created)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        sync::lock(&source.missing).clear();
        state.apply_assigned(aai(&p, &identity("ns", "id", 1), Some(Assigned)));
    });
    let a = h.token("").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

/// In managed mode no MIC would put the identity there: IMDS's refusal is passed on at once, as
/// a 403 naming it (never a 400, which SDKs take for "no IMDS identity at all").
#[tokio::test]
async fn identity_missing_in_managed_mode_is_refused_at_once() {
    let h = patient(Mode::Managed);
    h.seed(None);
    sync::lock(&h.source.missing).insert(client_id(1));
    let a = h.token("").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(a.description().contains("Identity not found"), "{}", a.body);
    assert_eq!(h.source.calls(), 1);
}

/// An `object_id` request learns its identities' principals from tokens; one of them missing on
/// the VM is held the same way rather than refused.
#[tokio::test(start_paused = true)]
async fn object_id_lookup_meeting_a_missing_identity_is_held() {
    let h = patient(Mode::Standard);
    two_identities(&h);
    sync::lock(&h.source.missing).insert(client_id(2));
    let source = h.source.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        sync::lock(&source.missing).clear();
    });
    let a = h.token(&format!("&object_id={}", principal_id(2))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["client_id"], client_id(2));
}

/// §5: a pod flooding NMI gets 429 with `Retry-After`, in IMDS's JSON shape; another pod is not
/// affected; the flooding pod is served again once its bucket refills. On tokio's paused clock
/// the flood takes no time however slow the machine, and the refill comes when the test moves
/// the clock on.
#[tokio::test(start_paused = true)]
async fn a_flooding_pod_is_rate_limited_alone_until_its_bucket_refills() {
    const OTHER_IP: &str = "10.244.0.6";
    let h = harness(Mode::Managed);
    h.nmi.rate_limit.configure(2.0, 5);
    h.state().replace_all(
        vec![
            pod("ns", "p", POD_IP, Some("app")),
            pod("ns", "q", OTHER_IP, Some("app")),
        ],
        vec![binding("ns", "b", "id", "app", 1)],
        vec![identity("ns", "id", 1)],
        vec![],
        vec![],
    );
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(h.token("").await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses[..5], [200; 5], "the burst of 5");
    assert_eq!(statuses[5..], [429; 15], "then nothing until the bucket refills");
    assert_eq!(answers[5].json()["error"], "too_many_requests");
    assert_eq!(answers[5].headers[header::RETRY_AFTER], "1");
    // The other pod is not affected.
    let other = h.get_from(OTHER_IP, TOKEN, &[("Metadata", "true")]).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    // Refilled at 2/s: half a second on, one more, and no second one.
    tokio::time::advance(Duration::from_millis(250)).await;
    assert_eq!(h.token("").await.status, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_millis(250)).await;
    assert_eq!(h.token("").await.status, StatusCode::OK);
    assert_eq!(h.token("").await.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        h.nmi
            .metrics
            .encode()
            .contains("aadpodidentity_nmi_refusals_total{reason=\"rate_limited\"} 17")
    );
}
