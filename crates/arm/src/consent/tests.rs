use serde_json::json;

use super::*;

const RID: &str =
    "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app";
const CLIENT: &str = "2f5a3c4d-0000-4000-8000-000000000001";

fn facts(tags: serde_json::Value) -> Read {
    Read::Facts(
        IdentityFacts::from_arm(&json!({
            "id": RID,
            "tags": tags,
            "properties": {"clientId": CLIENT.to_uppercase(), "principalId": "p", "tenantId": "t"},
        }))
        .unwrap(),
    )
}

fn claim<'a>(client_id: Option<&'a str>, ns: &'a str, pod_ns: &'a str) -> Claim<'a> {
    Claim {
        resource_id: RID,
        client_id,
        identity_name: "app",
        identity_namespace: ns,
        pod_namespace: pod_ns,
    }
}

fn refused(v: Verdict) -> Refusal {
    match v {
        Verdict::Refused(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_listed_namespace_with_the_identitys_own_client_id_is_allowed() {
    let read = facts(json!({"pod-identity-namespaces": "other, team"}));
    assert_eq!(
        verdict(&claim(Some(CLIENT), "team", "team"), Some(&read)),
        Verdict::Allowed
    );
    let all = facts(json!({"Pod-Identity-Namespaces": "*"}));
    assert_eq!(
        verdict(&claim(Some(CLIENT), "any", "any"), Some(&all)),
        Verdict::Allowed
    );
}

#[test]
fn an_unread_identity_decides_nothing() {
    assert_eq!(
        verdict(&claim(Some(CLIENT), "team", "team"), None),
        Verdict::Unknown
    );
}

#[test]
fn a_namespace_the_owner_did_not_list_is_refused_with_the_command_that_grants_it() {
    let read = facts(json!({"pod-identity-namespaces": "team,web"}));
    let r = refused(verdict(&claim(Some(CLIENT), "evil", "evil"), Some(&read)));
    assert_eq!(r.reason, REASON_CONSENT_MISSING);
    assert!(r.message.contains("namespace evil"), "{}", r.message);
    assert!(
        r.message.ends_with(&format!(
            "az tag update --resource-id {RID} --operation Merge --tags pod-identity-namespaces=evil,team,web"
        )),
        "{}",
        r.message
    );
}

#[test]
fn no_tag_at_all_allows_no_namespace() {
    let read = facts(json!({"team": "payments"}));
    let r = refused(verdict(&claim(Some(CLIENT), "team", "team"), Some(&read)));
    assert_eq!(r.reason, REASON_CONSENT_MISSING);
    assert!(
        r.message.ends_with("pod-identity-namespaces=team"),
        "{}",
        r.message
    );
}

#[test]
fn long_lists_continue_in_tags_named_after_the_first() {
    let read = facts(json!({"pod-identity-namespaces": "a", "pod-identity-namespaces-2": "b"}));
    assert_eq!(
        verdict(&claim(Some(CLIENT), "b", "b"), Some(&read)),
        Verdict::Allowed
    );
}

#[test]
fn with_cross_namespace_matching_both_namespaces_need_consent() {
    let read = facts(json!({"pod-identity-namespaces": "team"}));
    let r = refused(verdict(&claim(Some(CLIENT), "team", "other"), Some(&read)));
    assert!(r.message.contains("namespace other"), "{}", r.message);
}

#[test]
fn a_client_id_that_is_not_the_identitys_is_refused_whatever_the_tags() {
    let read = facts(json!({"pod-identity-namespaces": "*"}));
    let r = refused(verdict(
        &claim(Some("2f5a3c4d-0000-4000-8000-000000000099"), "evil", "evil"),
        Some(&read),
    ));
    assert_eq!(r.reason, REASON_CLIENT_ID_MISMATCH);
    assert!(
        r.message.contains(&format!("set clientID to {CLIENT}")),
        "{}",
        r.message
    );
    let r = refused(verdict(&claim(None, "evil", "evil"), Some(&read)));
    assert_eq!(r.reason, REASON_CLIENT_ID_MISMATCH);
}

#[test]
fn a_missing_or_unreadable_identity_is_refused() {
    let r = refused(verdict(&claim(Some(CLIENT), "t", "t"), Some(&Read::NotFound)));
    assert_eq!(r.reason, REASON_NOT_FOUND);
    let r = refused(verdict(
        &claim(Some(CLIENT), "t", "t"),
        Some(&Read::Failed("identity_get 403: AuthorizationFailed".into())),
    ));
    assert_eq!(r.reason, REASON_READ_FAILED);
    assert!(r.message.contains("AuthorizationFailed"));
}

#[test]
fn an_answer_without_a_client_id_is_no_facts() {
    assert_eq!(IdentityFacts::from_arm(&json!({"tags": {}})), None);
    assert_eq!(
        IdentityFacts::from_arm(&json!({"clientId": "ABC"})).map(|f| f.client_id),
        Some("abc".to_owned())
    );
}
