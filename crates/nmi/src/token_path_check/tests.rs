use serde_json::json;

use super::*;

fn me() -> PodName {
    PodName {
        namespace: "pod-identity".into(),
        name: "pod-identity-test-token-path".into(),
        uid: None,
    }
}

fn refusal_of(pod: Option<PodName>) -> Expectation {
    Expectation::Refusal { pod }
}

/// NMI's own 403 for an unbound pod, with the text its server builds.
fn nmi_unbound(namespace: &str, name: &str) -> String {
    json!({"error": "forbidden", "error_description": refusal::unbound_detail(namespace, name)}).to_string()
}

const TOKEN: &str = r#"{"access_token":"eyJ0eXAi.secret.sig","client_id":"11111111-2222-3333-4444-555555555555","expires_in":"86399","expires_on":"1800000000","ext_expires_in":"86399","not_before":"1799913600","resource":"https://management.azure.com/","token_type":"Bearer"}"#;

fn is_pass(v: &Verdict) -> bool {
    matches!(v, Verdict::Pass(_))
}
fn is_fail(v: &Verdict) -> bool {
    matches!(v, Verdict::Fail(_))
}
fn is_retry(v: &Verdict) -> bool {
    matches!(v, Verdict::Retry(_))
}

#[test]
fn nmis_refusal_of_this_unbound_pod_passes() {
    let me = me();
    let body = nmi_unbound(&me.namespace, &me.name);
    let v = judge(&refusal_of(Some(me)), 403, &body);
    assert!(is_pass(&v), "{v}");
    assert!(v.to_string().starts_with("PASS: "), "{v}");
    // Without the downward API's names, any unbound pod's refusal will do.
    assert!(is_pass(&judge(&refusal_of(None), 403, &body)));
}

#[test]
fn a_refusal_naming_another_pod_fails() {
    let v = judge(
        &refusal_of(Some(me())),
        403,
        &nmi_unbound("pod-identity", "someone-else"),
    );
    assert!(is_fail(&v), "{v}");
    // A name that merely starts like ours is another pod too.
    let v = judge(
        &refusal_of(Some(me())),
        403,
        &nmi_unbound("pod-identity", "pod-identity-test-token-path-2"),
    );
    assert!(is_fail(&v), "{v}");
}

#[test]
fn what_the_vms_imds_answers_fails_the_unbound_check() {
    let expect = refusal_of(Some(me()));
    // IMDS reached directly: no identity on the VM, or several user-assigned ones.
    for body in [
        r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
        r#"{"error":"invalid_request","error_description":"Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"}"#,
    ] {
        let v = judge(&expect, 400, body);
        assert!(is_fail(&v), "{v}");
    }
    // The node's identity handed to a pod bound to nothing; the token is never quoted.
    let v = judge(&expect, 200, TOKEN);
    assert!(is_fail(&v), "{v}");
    assert!(!v.to_string().contains("secret"), "{v}");
    // Other refusals are not the unbound one.
    let other =
        json!({"error": "forbidden", "error_description": "identity x of pod a/b is not assigned: …"});
    assert!(is_fail(&judge(&expect, 403, &other.to_string())));
    assert!(is_fail(&judge(&expect, 403, "not json")));
    assert!(is_fail(&judge(&expect, 401, "")));
}

#[test]
fn answers_that_mean_not_yet_are_asked_again() {
    let not_yet = [
        (
            404,
            r#"{"error":"not_found","error_description":"no Pending or Running pod on node n matches 10.0.0.5"}"#,
        ),
        (
            503,
            r#"{"error":"service_unavailable","error_description":"NMI has just started"}"#,
        ),
        (
            429,
            r#"{"error":"too_many_requests","error_description":"slow down"}"#,
        ),
        (500, ""),
        (502, "<html>bad gateway</html>"),
    ];
    for expect in [refusal_of(Some(me())), Expectation::Token] {
        for (status, body) in not_yet {
            let v = judge(&expect, status, body);
            assert!(is_retry(&v), "{status}: {v}");
        }
    }
}

#[test]
fn a_bound_pod_passes_with_a_token_only() {
    let v = judge(&Expectation::Token, 200, TOKEN);
    assert!(is_pass(&v), "{v}");
    assert!(
        v.to_string()
            .contains("client_id 11111111-2222-3333-4444-555555555555"),
        "{v}"
    );
    assert!(
        !v.to_string().contains("secret"),
        "the token is never printed: {v}"
    );
    for body in [r#"{"access_token":""}"#, "{}", "not json"] {
        assert!(is_fail(&judge(&Expectation::Token, 200, body)), "{body}");
    }
    let me = me();
    let v = judge(&Expectation::Token, 403, &nmi_unbound(&me.namespace, &me.name));
    assert!(is_fail(&v), "{v}");
    assert!(v.to_string().contains("tests.binding"), "says what to fix: {v}");
    assert!(is_fail(&judge(
        &Expectation::Token,
        400,
        r#"{"error":"invalid_request","error_description":"Identity not found"}"#
    )));
}

#[test]
fn long_or_multiline_bodies_are_quoted_on_one_short_line() {
    let body = format!("line one\nline two {}", "x".repeat(1000));
    let Verdict::Fail(why) = judge(&Expectation::Token, 418, &body) else {
        panic!("a teapot is no token");
    };
    assert!(!why.contains('\n'), "{why}");
    assert!(why.chars().count() < QUOTED + 20, "{why}");
    assert!(why.ends_with('…'), "{why}");
}

#[test]
fn the_expectation_follows_the_flags() {
    let check = |expect_token, ns: Option<&str>, name: Option<&str>| TokenPathCheck {
        expect_token,
        url: DEFAULT_URL.into(),
        pod_namespace: ns.map(Into::into),
        pod_name: name.map(Into::into),
        timeout: Duration::from_secs(1),
    };
    assert_eq!(
        check(true, Some("a"), Some("b")).expectation(),
        Expectation::Token
    );
    assert_eq!(
        check(false, Some("a"), Some("b")).expectation(),
        refusal_of(Some(PodName {
            namespace: "a".into(),
            name: "b".into(),
            uid: None,
        }))
    );
    assert_eq!(check(false, Some(""), Some("b")).expectation(), refusal_of(None));
    assert_eq!(check(false, None, None).expectation(), refusal_of(None));
}

/// The whole check against a stand-in for NMI: "not yet" first, then the refusal, each only for a
/// request with `Metadata: true` on the token path.
#[tokio::test]
async fn run_asks_again_after_not_yet_and_sends_what_an_sdk_sends() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{extract::State, http::HeaderMap, routing::get};

    let asks = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/metadata/identity/oauth2/token",
            get(
                |State(asks): State<Arc<AtomicUsize>>, headers: HeaderMap| async move {
                    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            "no Metadata header".to_owned(),
                        );
                    }
                    if asks.fetch_add(1, Ordering::SeqCst) == 0 {
                        return (axum::http::StatusCode::NOT_FOUND, "{}".to_owned());
                    }
                    (axum::http::StatusCode::FORBIDDEN, nmi_unbound("ns", "p"))
                },
            ),
        )
        .with_state(asks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let check = TokenPathCheck {
        expect_token: false,
        url: format!("http://{addr}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x"),
        pod_namespace: Some("ns".into()),
        pod_name: Some("p".into()),
        timeout: Duration::from_secs(30),
    };
    let v = run(&check).await.expect("runs");
    assert!(is_pass(&v), "{v}");
    assert_eq!(asks.load(Ordering::SeqCst), 2);

    // Nothing listening: "not yet" until the timeout, then a failure saying so.
    let check = TokenPathCheck {
        url: "http://127.0.0.1:9/metadata/identity/oauth2/token".into(),
        timeout: Duration::from_secs(1),
        ..check
    };
    let v = run(&check).await.expect("runs");
    assert!(is_fail(&v) && v.to_string().contains("no answer"), "{v}");
}
