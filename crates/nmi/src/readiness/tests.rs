//! The condition's decision, the resources' choice and the message's shape, on plain values.

use std::sync::Arc;

use api::AzureIdentity;
use matching::{IdentityRequest, MicRefusal, NotChosen};

use super::{
    ReadyCondition,
    desired::{Desired, MAX_MESSAGE, Outcome, Verdict, desired, is_condition_reason, one_line, verdict_of},
    resources::{DEFAULT_RESOURCE, MAX_RESOURCES, TokenResources, choose, is_resource},
};
use crate::state::Decision;

fn usable() -> Verdict {
    Verdict::Usable {
        identity: "ns/id".into(),
    }
}

fn refusal(reason: &str) -> MicRefusal {
    MicRefusal {
        reason: reason.into(),
        message: "the owner has not allowed namespace ns".into(),
    }
}

fn want(verdict: &Verdict, outcome: &Outcome) -> (bool, String) {
    let d = desired(verdict, outcome).expect("a condition");
    assert!(
        d.message.len() <= MAX_MESSAGE && !d.message.contains('\n'),
        "{d:?}"
    );
    (d.ready, d.reason)
}

#[test]
fn usable_identity_is_ready_only_once_its_token_was_obtained() {
    assert_eq!(
        desired(&usable(), &Outcome::Pending),
        None,
        "nothing written while fetching"
    );
    let obtained = Outcome::Obtained {
        resources: vec![DEFAULT_RESOURCE.into()],
    };
    assert_eq!(want(&usable(), &obtained), (true, "TokenObtained".into()));
    let failed = Outcome::Failed {
        resource: DEFAULT_RESOURCE.into(),
        error: "IMDS answered 500".into(),
    };
    assert_eq!(want(&usable(), &failed), (false, "TokenRequestFailed".into()));
}

#[test]
fn unassigned_and_refused_identities_say_why() {
    let waiting = Verdict::NotAssigned {
        identity: "id".into(),
        failure: None,
    };
    // The token outcome does not matter for a pod whose identity is not usable.
    for outcome in [Outcome::Pending, Outcome::Obtained { resources: vec![] }] {
        assert_eq!(want(&waiting, &outcome), (false, "IdentityNotAssigned".into()));
    }
    let arm_failed = Verdict::NotAssigned {
        identity: "id".into(),
        failure: Some(refusal("LinkedAuthorizationFailed")),
    };
    assert_eq!(
        want(&arm_failed, &Outcome::Pending),
        (false, "LinkedAuthorizationFailed".into())
    );
    for reason in [
        api::v1::REASON_CONSENT_MISSING,
        api::v1::REASON_CLIENT_ID_MISMATCH,
        api::v1::REASON_NOT_FOUND,
        "IdentityReadFailed",
    ] {
        let refused = Verdict::Refused {
            identity: "id".into(),
            refusal: refusal(reason),
        };
        assert_eq!(want(&refused, &Outcome::Pending), (false, reason.into()));
    }
    // A reason the apiserver would refuse is not passed through.
    let odd = Verdict::NotAssigned {
        identity: "id".into(),
        failure: Some(refusal("not a reason\n")),
    };
    assert_eq!(
        want(&odd, &Outcome::Pending),
        (false, "IdentityNotAssigned".into())
    );
    let none = Verdict::NoMatch {
        detail: "no binding".into(),
    };
    assert_eq!(
        want(&none, &Outcome::Pending),
        (false, "NoMatchingIdentity".into())
    );
}

#[test]
fn decisions_map_to_verdicts() {
    let identity = Arc::new(AzureIdentity {
        metadata: kube::api::ObjectMeta {
            name: Some("id".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        ..AzureIdentity::new("id", Default::default())
    });
    let use_ = Decision::Use {
        identity,
        binding: "b".into(),
        out_of: 1,
    };
    assert_eq!(verdict_of(use_, |_| None), Some(usable()));
    let failure = Some(refusal("IdentityReadFailed"));
    assert_eq!(
        verdict_of(
            Decision::Waiting {
                identity: "id".into()
            },
            |id| {
                assert_eq!(id, "id");
                failure.clone()
            }
        ),
        Some(Verdict::NotAssigned {
            identity: "id".into(),
            failure: failure.clone()
        })
    );
    let not_allowed = Decision::NotAllowed {
        identity: "id".into(),
        refusal: refusal("IdentityConsentMissing"),
    };
    assert!(matches!(
        verdict_of(not_allowed, |_| None),
        Some(Verdict::Refused { .. })
    ));
    for why in [
        NotChosen::Unbound,
        NotChosen::NotBound(IdentityRequest::ClientId("x".into())),
    ] {
        assert!(matches!(
            verdict_of(Decision::Refused(why), |_| None),
            Some(Verdict::NoMatch { .. })
        ));
    }
    assert_eq!(verdict_of(Decision::LearnPrincipals(vec![]), |_| None), None);
}

#[test]
fn only_a_changed_status_or_reason_is_written() {
    let d = desired(
        &usable(),
        &Outcome::Obtained {
            resources: vec!["r".into()],
        },
    )
    .unwrap();
    let current = |status: &str, reason: &str| ReadyCondition {
        status: status.into(),
        reason: reason.into(),
        last_transition: None,
    };
    assert!(d.differs_from(None));
    assert!(!d.differs_from(Some(&current("True", "TokenObtained"))));
    assert!(d.differs_from(Some(&current("False", "TokenObtained"))));
    assert!(d.differs_from(Some(&current("True", "Other"))));
}

#[test]
fn messages_are_one_bounded_line_with_control_characters_escaped() {
    let hostile = format!("line\nforged: {}\u{1b}[31m\u{202e}", "x".repeat(2000));
    let m = one_line(&hostile, MAX_MESSAGE);
    assert!(m.len() <= MAX_MESSAGE, "{}", m.len());
    assert!(!m.chars().any(|c| c.is_control() || c == '\u{202e}'), "{m:?}");
    assert!(m.starts_with("line\\u{a}forged: "), "{m:?}");
    assert!(m.ends_with('…'));
    // Multi-byte characters are cut at a boundary.
    let m = one_line(&"é".repeat(600), 11);
    assert!(m.len() <= 11 && m.ends_with('…'), "{m:?}");
    assert_eq!(one_line("short", MAX_MESSAGE), "short");
    let failed = Outcome::Failed {
        resource: "r".into(),
        error: hostile,
    };
    let d: Desired = desired(&usable(), &failed).unwrap();
    assert!(d.message.len() <= MAX_MESSAGE && !d.message.contains('\n'));
}

#[test]
fn condition_reasons_follow_the_apiserver_rule() {
    for ok in ["TokenObtained", "LinkedAuthorizationFailed", "A", "a_b:c,d1"] {
        assert!(is_condition_reason(ok), "{ok}");
    }
    for bad in [
        "",
        "1abc",
        "has space",
        "trailing:",
        "new\nline",
        &"A".repeat(129),
    ] {
        assert!(!is_condition_reason(bad), "{bad:?}");
    }
}

#[test]
fn the_annotation_names_valid_resources_only_and_at_most_eight() {
    let r = TokenResources::parse(
        " https://vault.azure.net , api://my-app/.default,https://vault.azure.net, \
         00000000-0000-0000-0000-000000000001, http://plain, javascript:alert(1), https://, \
         https://with space",
    );
    assert_eq!(
        r.resources,
        [
            "https://vault.azure.net",
            "api://my-app/.default",
            "00000000-0000-0000-0000-000000000001"
        ]
    );
    assert_eq!(r.rejected, 4);
    let many: Vec<String> = (0..20).map(|i| format!("https://r{i}.example")).collect();
    let r = TokenResources::parse(&many.join(","));
    assert_eq!(r.resources.len(), MAX_RESOURCES);
    assert_eq!(r.rejected, 12);
    assert!(!is_resource(&format!("https://{}", "a".repeat(300))));
    let huge = TokenResources::parse(&"https://a,".repeat(10_000));
    assert!(huge.resources.is_empty() && huge.rejected == 1);
}

#[test]
fn resources_come_from_the_annotation_else_recent_use_else_arm() {
    let annotated = TokenResources::parse("https://vault.azure.net");
    assert_eq!(
        choose(&annotated, vec!["https://storage.azure.com/".into()]),
        ["https://vault.azure.net"]
    );
    let none = TokenResources::default();
    assert_eq!(
        choose(
            &none,
            vec!["https://storage.azure.com/".into(), "garbage resource".into()]
        ),
        ["https://storage.azure.com/"]
    );
    let recent: Vec<String> = (0..12).map(|i| format!("https://r{i}.example")).collect();
    assert_eq!(choose(&none, recent).len(), MAX_RESOURCES);
    assert_eq!(choose(&none, vec![]), [DEFAULT_RESOURCE]);
}
