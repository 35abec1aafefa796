use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn id(n: &str) -> String {
    crate::ids::identity_id("sub", "rg", n)
}

#[test]
fn examples_from_mic() {
    let add = json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {id("a"): {}}}});
    let u = parse(add.to_string().as_bytes()).unwrap().unwrap();
    assert_eq!(
        u.ty,
        Some(IdentityType {
            system: true,
            user: true
        })
    );
    assert_eq!(u.user, Some(vec![(id("a"), UaOp::Add)]));
    let rm = json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {id("a"): null}}});
    assert_eq!(
        parse(rm.to_string().as_bytes()).unwrap().unwrap().user,
        Some(vec![(id("a"), UaOp::Remove)])
    );
    assert_eq!(parse(br#"{"tags":{}}"#).unwrap(), None);
    assert_eq!(parse(br#"{"identity":null}"#).unwrap(), None);
    assert_eq!(
        IdentityType::parse("SystemAssigned,UserAssigned"),
        IdentityType::parse("systemassigned, userassigned")
    );
}

#[test]
fn refusals_carry_arm_codes() {
    assert_eq!(parse(b"nope").unwrap_err().code, "InvalidRequestContent");
    assert_eq!(parse(b"[1]").unwrap_err().code, "InvalidRequestContent");
    assert_eq!(
        parse(br#"{"identity":"x"}"#).unwrap_err().code,
        "InvalidRequestContent"
    );
    assert_eq!(
        parse(br#"{"identity":{"type":"Both"}}"#).unwrap_err().code,
        "InvalidParameter"
    );
    let bad = json!({"identity": {"userAssignedIdentities": {"/not/an/identity": {}}}});
    assert_eq!(
        parse(bad.to_string().as_bytes()).unwrap_err().code,
        "LinkedInvalidPropertyId"
    );
    let dup = json!({"identity": {"userAssignedIdentities": {id("a"): {}, id("a").to_uppercase(): {}}}});
    assert_eq!(
        parse(dup.to_string().as_bytes()).unwrap_err().code,
        "InvalidParameter"
    );
    let num = json!({"identity": {"userAssignedIdentities": {id("a"): 1}}});
    assert_eq!(
        parse(num.to_string().as_bytes()).unwrap_err().code,
        "InvalidParameter"
    );
}

fn body(ops: &BTreeMap<String, bool>, ty: &str) -> Vec<u8> {
    let ua: serde_json::Map<String, Value> = ops
        .iter()
        .map(|(n, add)| (id(n), if *add { json!({}) } else { Value::Null }))
        .collect();
    json!({"identity": {"type": ty, "userAssignedIdentities": ua}})
        .to_string()
        .into_bytes()
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn never_panics_on_arbitrary_identity_json(s in "\\{\"identity\":\\{\"type\":\"[A-Za-z, ]{0,30}\",\"userAssignedIdentities\":\\{\"[ -~]{0,60}\":(null|\\{\\}|1|\"x\")\\}\\}\\}") {
        let _ = parse(s.as_bytes());
    }

    #[test]
    fn delta_round_trips(ops in proptest::collection::btree_map("[a-z][a-z0-9-]{0,20}", any::<bool>(), 0..150)) {
        let u = parse(&body(&ops, "UserAssigned")).unwrap().unwrap();
        let got: BTreeMap<String, bool> = u.user.unwrap().into_iter().map(|(i, op)| {
            (i.rsplit('/').next().unwrap().to_string(), op == UaOp::Add)
        }).collect();
        prop_assert_eq!(got, ops);
    }

    #[test]
    fn more_than_150_changes_are_refused(n in 151usize..400) {
        let ops: BTreeMap<String, bool> = (0..n).map(|i| (format!("id{i}"), i % 2 == 0)).collect();
        let err = parse(&body(&ops, "UserAssigned")).unwrap_err();
        prop_assert_eq!(err.message, format!("User Assigned Identities Number '{n}' Assign exceed limit '150' in one request."));
    }

    #[test]
    fn patch_applies_adds_then_keeps_the_rest(
        existing in proptest::collection::btree_set("[a-z]{1,6}", 0..20),
        ops in proptest::collection::btree_map("[a-z]{1,6}", any::<bool>(), 0..20),
        system in any::<bool>(),
    ) {
        let cur: BTreeMap<String, String> = existing.iter().map(|n| (crate::ids::key(&id(n)), id(n))).collect();
        let ty = if system { "SystemAssigned, UserAssigned" } else { "UserAssigned" };
        let u = parse(&body(&ops, ty)).unwrap().unwrap();
        let mut expect: std::collections::BTreeSet<String> = existing.clone();
        for (n, add) in &ops {
            if *add { expect.insert(n.clone()); } else { expect.remove(n); }
        }
        match next_state(false, &cur, &u, false) {
            Ok((sys, user)) => {
                prop_assert_eq!(sys, system);
                let names: std::collections::BTreeSet<String> =
                    user.values().map(|i| i.rsplit('/').next().unwrap().to_string()).collect();
                prop_assert_eq!(names, expect);
            }
            Err(e) => {
                prop_assert!(expect.is_empty(), "only an empty result is refused: {:?}", e);
                prop_assert_eq!(e.code, "InvalidParameter");
            }
        }
        // PUT replaces: the result is exactly the adds.
        if let Ok((_, user)) = next_state(false, &cur, &u, true) {
            let adds: std::collections::BTreeSet<String> = ops.iter().filter(|(_, a)| **a).map(|(n, _)| n.clone()).collect();
            let names: std::collections::BTreeSet<String> =
                user.values().map(|i| i.rsplit('/').next().unwrap().to_string()).collect();
            prop_assert_eq!(names, adds);
        }
    }

    #[test]
    fn types_without_user_assigned_clear_the_set(existing in proptest::collection::btree_set("[a-z]{1,6}", 1..10), system in any::<bool>()) {
        let cur: BTreeMap<String, String> = existing.iter().map(|n| (crate::ids::key(&id(n)), id(n))).collect();
        let ty = if system { "SystemAssigned" } else { "None" };
        let u = parse(json!({"identity": {"type": ty}}).to_string().as_bytes()).unwrap().unwrap();
        let (sys, user) = next_state(true, &cur, &u, false).unwrap();
        prop_assert_eq!(sys, system);
        prop_assert!(user.is_empty());
    }
}
