use serde_json::{Value, json};

use super::*;

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("a pod")
}

fn labelled(labels: Value, spec: Value) -> Pod {
    pod(json!({ "metadata": { "name": "p", "labels": labels }, "spec": spec }))
}

fn containers() -> Value {
    json!([{ "name": "c", "image": "app" }])
}

/// Applies the `add` operations of a patch to a pod's JSON, as the apiserver does (RFC 6902
/// `add` of an object member, or of `-`, the end of an array).
fn apply(mut doc: Value, ops: &[PatchOp]) -> Value {
    for op in ops {
        assert_eq!(op.op, "add");
        match op.path.strip_suffix("/-") {
            Some(array) => doc
                .pointer_mut(array)
                .and_then(Value::as_array_mut)
                .expect("`-` appends to an existing array")
                .push(op.value.clone()),
            None => {
                let (parent, member) = op.path.rsplit_once('/').expect("a member path");
                doc.pointer_mut(parent)
                    .and_then(Value::as_object_mut)
                    .expect("the parent object exists")
                    .insert(member.to_owned(), op.value.clone());
            }
        }
    }
    doc
}

fn gates(doc: &Value) -> Vec<&str> {
    doc["spec"]["readinessGates"]
        .as_array()
        .map(|a| a.iter().filter_map(|g| g["conditionType"].as_str()).collect())
        .unwrap_or_default()
}

fn patched(p: &Pod) -> Value {
    match mutate(p) {
        Mutation::AddGate(ops) => apply(serde_json::to_value(p).expect("json"), &ops),
        other => panic!("expected the gate to be added, got {other:?}"),
    }
}

#[test]
fn a_bound_pod_without_gates_gets_the_array() {
    let p = labelled(
        json!({ "aadpodidbinding": "web" }),
        json!({ "containers": containers() }),
    );
    assert_eq!(gates(&patched(&p)), [IDENTITY_READY_CONDITION]);
}

#[test]
fn a_pod_with_other_gates_keeps_them_and_gets_ours_appended() {
    let p = labelled(
        json!({ "aadpodidbinding": "web" }),
        json!({ "containers": containers(), "readinessGates": [{ "conditionType": "example.com/Warm" }] }),
    );
    assert_eq!(
        gates(&patched(&p)),
        ["example.com/Warm", IDENTITY_READY_CONDITION]
    );
}

#[test]
fn an_empty_gate_list_is_appended_to() {
    let p = labelled(
        json!({ "aadpodidbinding": "web" }),
        json!({ "containers": containers(), "readinessGates": [] }),
    );
    assert_eq!(gates(&patched(&p)), [IDENTITY_READY_CONDITION]);
}

#[test]
fn a_federated_opt_in_gets_the_gate() {
    let p = labelled(
        json!({ FEDERATED_LABEL: "true" }),
        json!({ "containers": containers() }),
    );
    assert_eq!(gates(&patched(&p)), [IDENTITY_READY_CONDITION]);
}

#[test]
fn pods_without_an_identity_are_skipped() {
    for labels in [
        json!(null),
        json!({ "app": "web" }),
        json!({ "aadpodidbinding": "" }),
        json!({ FEDERATED_LABEL: "false" }),
        json!({ FEDERATED_LABEL: "True" }),
    ] {
        let p = labelled(labels.clone(), json!({ "containers": containers() }));
        assert_eq!(mutate(&p), Mutation::Skip(SkipReason::NoIdentity), "{labels}");
    }
    // A pod without even a spec (never admitted, but the function must not care).
    assert_eq!(mutate(&Pod::default()), Mutation::Skip(SkipReason::NoIdentity));
}

#[test]
fn host_network_pods_are_skipped() {
    for labels in [
        json!({ "aadpodidbinding": "web" }),
        json!({ FEDERATED_LABEL: "true" }),
    ] {
        let p = labelled(labels, json!({ "containers": containers(), "hostNetwork": true }));
        assert_eq!(mutate(&p), Mutation::Skip(SkipReason::HostNetwork));
    }
    let p = labelled(
        json!({ "aadpodidbinding": "web" }),
        json!({ "containers": containers(), "hostNetwork": false }),
    );
    assert!(matches!(mutate(&p), Mutation::AddGate(_)));
}

#[test]
fn a_gate_already_there_is_not_duplicated() {
    let p = labelled(
        json!({ "aadpodidbinding": "web" }),
        json!({ "containers": containers(), "readinessGates": [
            { "conditionType": "example.com/Warm" },
            { "conditionType": IDENTITY_READY_CONDITION },
        ] }),
    );
    assert_eq!(mutate(&p), Mutation::Skip(SkipReason::AlreadyGated));
}

#[test]
fn the_patch_is_the_json_the_apiserver_expects() {
    let p = labelled(
        json!({ "aadpodidbinding": "web" }),
        json!({ "containers": containers() }),
    );
    let Mutation::AddGate(ops) = mutate(&p) else {
        panic!("gate expected")
    };
    assert_eq!(
        serde_json::to_value(&ops).expect("json"),
        json!([{ "op": "add", "path": "/spec/readinessGates",
                 "value": [{ "conditionType": "aadpodidentity.k8s.io/IdentityReady" }] }])
    );
}
