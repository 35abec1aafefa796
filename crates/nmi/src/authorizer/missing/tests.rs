use super::*;

fn upstream(what: &'static str, status: u16, body: &str) -> Error {
    Error::Upstream {
        what,
        status,
        retry_after: None,
        body: body.into(),
    }
}

const NOT_FOUND: &str = r#"{"error":"invalid_request","error_description":"Identity not found"}"#;

#[test]
fn only_imds_400_identity_not_found_is_recognised() {
    assert!(is_identity_not_found(&upstream("IMDS", 400, NOT_FOUND)));
    // Key order and spacing are JSON's business, not ours.
    assert!(is_identity_not_found(&upstream(
        "IMDS",
        400,
        r#"{ "error_description": "Identity not found", "error": "invalid_request" }"#
    )));
    for (what, status, body) in [
        // Other IMDS 400s are the request's own fault, not a missing identity.
        (
            "IMDS",
            400,
            r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#,
        ),
        (
            "IMDS",
            400,
            r#"{"error":"invalid_request","error_description":"Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"}"#,
        ),
        ("IMDS", 400, "Identity not found"),
        (
            "IMDS",
            400,
            r#"{"error":"invalid_resource","error_description":"Identity not found"}"#,
        ),
        ("IMDS", 404, NOT_FOUND),
        ("Entra ID", 400, NOT_FOUND),
    ] {
        assert!(
            !is_identity_not_found(&upstream(what, status, body)),
            "{what} {status} {body}"
        );
    }
    assert!(!is_identity_not_found(&Error::Identity(
        "Identity not found".into()
    )));
}

#[test]
fn retries_back_off_to_a_second_and_end_at_the_deadline() {
    let t = tokio::time::Instant::now();
    let deadline = t + Duration::from_secs(20);
    let pauses: Vec<Duration> = (0..6).map(|a| next_try(a, t, deadline).unwrap() - t).collect();
    assert_eq!(
        pauses,
        [250, 500, 1000, 1000, 1000, 1000].map(Duration::from_millis)
    );
    assert_eq!(next_try(200, t, deadline), Some(t + LONGEST_RETRY), "no overflow");
    // Close to the deadline the last try is at the deadline; past it, none.
    let near = deadline - Duration::from_millis(100);
    assert_eq!(next_try(3, near, deadline), Some(deadline));
    assert_eq!(next_try(0, deadline, deadline), None);
    assert_eq!(next_try(0, deadline + Duration::from_secs(1), deadline), None);
}

#[test]
fn one_annotation_per_object_every_few_seconds() {
    let r = MissingReports::default();
    let t = Instant::now();
    let a: Key = ("ns".into(), "p-ns-id".into());
    let b: Key = ("ns".into(), "q-ns-id".into());
    assert!(r.due(&a, t));
    assert!(!r.due(&a, t + Duration::from_secs(1)));
    assert!(
        r.due(&b, t + Duration::from_secs(1)),
        "another object is not held back"
    );
    assert!(!r.due(&a, t + REPORT_EVERY - Duration::from_millis(1)));
    assert!(r.due(&a, t + REPORT_EVERY));
    assert!(!r.due(&a, t + REPORT_EVERY + Duration::from_secs(1)));
}

#[test]
fn the_patch_sets_only_the_annotation() {
    assert_eq!(
        annotation_patch("2026-01-02T03:04:05.678Z"),
        serde_json::json!({"metadata": {"annotations": {"aadpodidentity.k8s.io/identity-missing": "2026-01-02T03:04:05.678Z"}}})
    );
}
