//! Issue 7 §3: ARM error-body parsing fuzzed with proptest: `ArmError::parse` and `identity_ids_in`
//! take whatever ARM (or a proxy in front of it) sends, never panic, and find what is there
//! (`retry_after`'s fuzz lives with it in `azure_token`).
//! Long run: `PROPTEST_CASES=1000000 cargo test -p arm --release --lib fuzz_`.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => "[ -~]{0,200}",
        1 => (0usize..20_000).prop_map(|n| "\u{1F600}'\"/".repeat(n / 4)),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,20}"
}

/// A user-assigned identity id in ARM's mixed spellings.
fn identity_id() -> impl Strategy<Value = String> {
    (segment(), segment(), segment(), any::<bool>()).prop_map(|(s, rg, name, upper)| {
        let id = format!(
            "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        );
        if upper { id.to_uppercase() } else { id }
    })
}

proptest! {
    // proptest's default config: 256 cases, or PROPTEST_CASES (the long run).

    #[test]
    fn fuzz_arm_error_parse_any_body(status in any::<u16>(), body in text()) {
        let e = ArmError::parse(status, &body);
        prop_assert!(e.message.chars().count() <= 512 || body.contains(&e.message));
        let _ = e.blamed_identities();
    }

    #[test]
    fn fuzz_arm_error_parse_structured(status in any::<u16>(), code in text(), message in text(), wrapped in any::<bool>(), junk in any::<i64>()) {
        let inner = json!({"code": code, "message": message, "details": [{"code": junk}]});
        let body = if wrapped { json!({"error": inner}) } else { inner }.to_string();
        let e = ArmError::parse(status, &body);
        prop_assert_eq!(&e.code, &code);
        prop_assert_eq!(&e.message, &message);
        // A code of the wrong type is no code: the status stands in.
        let e = ArmError::parse(status, &json!({"error": {"code": junk, "message": message}}).to_string());
        prop_assert_eq!(e.code, format!("HTTP{status}"));
    }

    #[test]
    fn fuzz_identity_ids_in_any_text(t in text()) {
        for id in identity_ids_in(&t) {
            prop_assert_eq!(id.to_ascii_lowercase(), id.clone());
            prop_assert!(id.starts_with("/subscriptions/"));
            prop_assert_eq!(id.split('/').count(), 9);
        }
    }

    #[test]
    fn fuzz_identity_ids_found_among_junk(
        ids in prop::collection::vec(identity_id(), 1..5),
        junk in prop::collection::vec("[^/'\",; )\\]]{0,30}", 5),
        seps in prop::collection::vec(prop::sample::select(vec!["'", "\"", ",", ";", " ", ")", "]"]), 5),
    ) {
        let mut message = String::from("The client has no permission on ");
        for (i, id) in ids.iter().enumerate() {
            message.push_str(&junk[i]);
            message.push_str(seps[i]);
            message.push_str(id);
            message.push_str(seps[(i + 1) % 5]);
        }
        let e = ArmError::parse(403, &json!({"error": {"code": "LinkedAuthorizationFailed", "message": message}}).to_string());
        let found = e.blamed_identities();
        for id in &ids {
            prop_assert!(found.contains(&id.to_ascii_lowercase()), "{id} in {message}");
        }
        prop_assert_eq!(found.len(), ids.iter().map(|i| i.to_ascii_lowercase()).collect::<BTreeSet<_>>().len());
    }
}
