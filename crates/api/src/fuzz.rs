//! Issue 7 §3: CRD decoding of hostile objects, fuzzed with proptest. Whatever the apiserver (or
//! someone with write access to it) hands a watch — wrong types, huge strings, odd unicode, nested
//! junk — decoding returns a value or an error and never panics; what decodes answers its accessors
//! consistently and survives a round trip. A short run is part of `make test`; a long one:
//! `PROPTEST_CASES=1000000 cargo test -p api --release fuzz_`.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::{
    AssignmentState, AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException,
    IdentityType, LabelValue,
};

/// Strings a hostile writer would try: unicode of every plane, controls, bidi and zero-width
/// characters, lookalikes of real values, and now and then a very long one.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-z0-9-]{0,12}",
        1 => Just("\u{202e}\u{200b}\u{0}\u{feff}ﬀ𝔞İı".to_owned()),
        1 => Just("2f5a3c4d-0000-4000-8000-0000000000a1".to_owned()),
        1 => "(true|True|TRUE|false|0|1|-1|1e400|null|NaN)",
        1 => (0usize..70_000).prop_map(|n| "é".repeat(n / 2)),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object whose keys are mostly the kind's real field names (both spellings), with values of any type.
fn fields(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        6 => prop::sample::select(names).prop_map(str::to_owned),
        1 => hostile_string(),
    ];
    // Mostly strings (so objects do decode, and their accessors are exercised), else any type.
    let value = prop_oneof![3 => hostile_string().prop_map(Value::String), 2 => json_value()];
    prop::collection::btree_map(key, value, 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn object(kind: &'static str, spec: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    (
        spec,
        prop_oneof![3 => fields(&["name", "namespace", "labels", "uid"]), 1 => json_value()],
        json_value(),
    )
        .prop_map(move |(spec, metadata, status)| {
            json!({
                "apiVersion": "aadpodidentity.k8s.io/v1", "kind": kind,
                "metadata": metadata, "spec": spec, "status": status,
            })
        })
}

const IDENTITY_FIELDS: &[&str] = &[
    "type",
    "resourceID",
    "ResourceID",
    "clientID",
    "ClientID",
    "clientPassword",
    "ClientPassword",
    "tenantID",
    "TenantID",
    "auxiliaryTenantIDs",
    "adEndpoint",
    "adResourceID",
    "replicas",
];
const BINDING_FIELDS: &[&str] = &["azureIdentity", "AzureIdentity", "selector", "Selector", "weight"];
const ASSIGNED_FIELDS: &[&str] = &[
    "azureIdentityRef",
    "azureBindingRef",
    "pod",
    "podNamespace",
    "nodename",
    "Pod",
    "PodNamespace",
    "NodeName",
];
const EXCEPTION_FIELDS: &[&str] = &["podLabels", "PodLabels"];

/// Decodes, then checks what a decoded object promises; panics are the failures looked for.
fn decodes<K>(v: &Value) -> Option<K>
where
    K: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(v).expect("a Value serialises");
    let from_text: Result<K, _> = serde_json::from_str(&text);
    let from_value: Result<K, _> = serde_json::from_value(v.clone());
    assert_eq!(
        from_text.is_ok(),
        from_value.is_ok(),
        "text and value decoding agree"
    );
    let k = from_value.ok()?;
    // What decoded encodes, and decodes back to itself.
    let again: K = serde_json::from_value(serde_json::to_value(&k).expect("a decoded object encodes"))
        .expect("an encoded object decodes");
    assert_eq!(again, k);
    Some(k)
}

proptest! {
    // proptest's default config: 256 cases, or PROPTEST_CASES (the long run).

    #[test]
    fn fuzz_identity_decoding(v in object("AzureIdentity", fields(IDENTITY_FIELDS))) {
        if let Some(id) = decodes::<AzureIdentity>(&v) {
            let s = &id.spec;
            match s.identity_type() {
                Ok(t) => prop_assert!(matches!(t, IdentityType::UserAssignedMsi | IdentityType::ServicePrincipal | IdentityType::ServicePrincipalCertificate)),
                Err(code) => prop_assert!(!(0..=2).contains(&code)),
            }
            for got in [s.client_id(), s.resource_id(), s.tenant_id()] {
                prop_assert!(got.is_none_or(|g| !g.is_empty()), "accessors never give an empty string");
            }
            if let Some(c) = s.client_id() {
                prop_assert!(s.client_id.as_deref() == Some(c) || s.legacy_client_id.as_deref() == Some(c));
            }
            let _ = s.client_password();
        }
    }

    #[test]
    fn fuzz_binding_decoding(v in object("AzureIdentityBinding", fields(BINDING_FIELDS))) {
        if let Some(b) = decodes::<AzureIdentityBinding>(&v) {
            for got in [b.spec.azure_identity(), b.spec.selector()] {
                prop_assert!(got.is_none_or(|g| !g.is_empty()));
            }
        }
    }

    #[test]
    fn fuzz_assigned_identity_decoding(v in object("AzureAssignedIdentity", fields(ASSIGNED_FIELDS))) {
        if let Some(a) = decodes::<AzureAssignedIdentity>(&v) {
            let st = a.state();
            prop_assert!(a.status.is_some() || st == AssignmentState::Assigned || a.written_by_mic(), "no status counts as assigned");
            let _ = AzureAssignedIdentity::object_name(&a.spec.pod, &a.spec.pod_namespace, &a.spec.node_name);
        }
    }

    #[test]
    fn fuzz_exception_decoding(v in object("AzurePodIdentityException", fields(EXCEPTION_FIELDS))) {
        if let Some(e) = decodes::<AzurePodIdentityException>(&v) {
            let labels: Vec<(&str, &str)> = e.spec.pod_labels().collect();
            // Every label yielded is a scalar written under one of the spellings.
            for (k, val) in labels {
                let under = |m: &Option<std::collections::BTreeMap<String, LabelValue>>| {
                    m.as_ref().and_then(|m| m.get(k)).and_then(LabelValue::as_str) == Some(val)
                };
                prop_assert!(under(&e.spec.pod_labels) || under(&e.spec.legacy_pod_labels));
            }
        }
    }

    /// A label value decodes from any JSON: scalars to their text, anything else to "matches nothing".
    #[test]
    fn fuzz_label_value(v in json_value()) {
        let l: LabelValue = serde_json::from_value(v.clone()).expect("a label value decodes from any JSON");
        match &v {
            Value::String(s) => prop_assert_eq!(l.as_str(), Some(s.as_str())),
            Value::Bool(b) => prop_assert_eq!(l.as_str().map(str::to_owned), Some(b.to_string())),
            Value::Number(n) => prop_assert_eq!(l.as_str().map(str::to_owned), Some(n.to_string())),
            _ => prop_assert_eq!(l.as_str(), None),
        }
        // One odd value does not stop its exception from decoding.
        let e: Result<AzurePodIdentityException, _> = serde_json::from_value(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzurePodIdentityException",
            "metadata": {"name": "e"}, "spec": {"podLabels": {"odd": v, "noaad": "true"}},
        }));
        let e = e.expect("an exception with one odd label value decodes");
        prop_assert!(e.spec.pod_labels().any(|(k, v)| k == "noaad" && v == "true"));
    }

    /// Raw bytes (truncated or mangled JSON, binary) never panic any decoder.
    #[test]
    fn fuzz_raw_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), v in object("AzureIdentity", fields(IDENTITY_FIELDS)), cut in any::<prop::sample::Index>()) {
        let text = serde_json::to_vec(&v).unwrap();
        let cut = &text[..cut.index(text.len() + 1)];
        for input in [bytes.as_slice(), cut] {
            let _ = serde_json::from_slice::<AzureIdentity>(input);
            let _ = serde_json::from_slice::<AzureIdentityBinding>(input);
            let _ = serde_json::from_slice::<AzureAssignedIdentity>(input);
            let _ = serde_json::from_slice::<AzurePodIdentityException>(input);
        }
    }
}
