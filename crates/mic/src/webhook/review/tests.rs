use base64::Engine as _;
use serde_json::{Value, json};

use super::*;

fn envelope(request: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    }))
    .expect("json")
}

fn pod_create(labels: Value) -> Value {
    json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": { "group": "", "version": "v1", "kind": "Pod" },
        "resource": { "group": "", "version": "v1", "resource": "pods" },
        "namespace": "apps",
        "operation": "CREATE",
        "object": {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "generateName": "web-", "labels": labels },
            "spec": { "containers": [{ "name": "c", "image": "app" }] },
        },
    })
}

fn answer(r: &Reviewed) -> Value {
    serde_json::to_value(&r.response).expect("json")
}

#[test]
fn a_bound_pod_is_allowed_with_a_base64_json_patch_and_the_uid_echoed() {
    let r = review(&envelope(pod_create(json!({ "aadpodidbinding": "web" })))).expect("well-formed");
    assert_eq!(r.outcome, Outcome::GateAdded);
    assert_eq!(r.pod, "apps/web-");
    let a = answer(&r);
    assert_eq!(a["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(a["kind"], "AdmissionReview");
    assert_eq!(a["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(a["response"]["allowed"], true);
    assert_eq!(a["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(a["response"]["patch"].as_str().expect("patch"))
        .expect("base64");
    let patch: Value = serde_json::from_slice(&patch).expect("json patch");
    assert_eq!(patch[0]["path"], "/spec/readinessGates");
}

#[test]
fn a_skipped_pod_is_allowed_without_a_patch() {
    let r = review(&envelope(pod_create(json!({ "app": "web" })))).expect("well-formed");
    assert_eq!(r.outcome, Outcome::Skipped(SkipReason::NoIdentity));
    assert_eq!(r.outcome.label(), "skipped");
    let a = answer(&r);
    assert_eq!(a["response"]["allowed"], true);
    assert!(a["response"].get("patch").is_none() && a["response"].get("patchType").is_none());
}

#[test]
fn other_operations_and_resources_are_allowed_untouched() {
    let mut update = pod_create(json!({ "aadpodidbinding": "web" }));
    update["operation"] = json!("UPDATE");
    let mut binding = pod_create(json!({ "aadpodidbinding": "web" }));
    binding["resource"] = json!({ "group": "", "version": "v1", "resource": "pods/binding" });
    for req in [update, binding] {
        let r = review(&envelope(req)).expect("well-formed");
        assert_eq!(r.outcome, Outcome::NotAPodCreate);
        assert_eq!(answer(&r)["response"]["allowed"], true);
    }
}

#[test]
fn an_unreadable_object_is_allowed_and_counted_as_an_error() {
    let mut req = pod_create(json!({}));
    req["object"] = json!({ "metadata": { "labels": "not a map" } });
    let r = review(&envelope(req)).expect("the envelope is well-formed");
    assert!(matches!(r.outcome, Outcome::UnreadablePod(_)));
    assert_eq!(r.outcome.label(), "error");
    assert_eq!(answer(&r)["response"]["allowed"], true);
}

#[test]
fn malformed_reviews_are_refused() {
    assert!(matches!(review(b"{not json"), Err(Malformed::Json(_))));
    assert!(matches!(review(b"[]"), Err(Malformed::Json(_))));
    let v1beta1 = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": pod_create(json!({})),
    }))
    .expect("json");
    assert!(matches!(review(&v1beta1), Err(Malformed::Type(..))));
    let no_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
    assert!(matches!(review(no_request), Err(Malformed::NoRequest)));
    let mut no_uid = pod_create(json!({}));
    no_uid["uid"] = json!("");
    assert!(matches!(review(&envelope(no_uid)), Err(Malformed::NoRequest)));
}
