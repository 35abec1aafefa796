use super::*;
use crate::fixtures::{binding, identity, pod};

use ::fixtures::ids::{APP_IDENTITY_CLIENT as A, READER_CLIENT as B};

fn names(c: &[Candidate<'_>]) -> Vec<String> {
    c.iter()
        .map(|c| c.identity.metadata.name.clone().unwrap())
        .collect()
}

#[test]
fn the_seed_binding_selects_the_labelled_pod() {
    let ids = [identity("default", "myapp-identity", A)];
    let bindings = [binding(
        "default",
        "myapp-azure-identity-binding",
        "myapp-identity",
        "myapp",
        1,
    )];
    let c = candidates(
        &Policy::default(),
        &pod("default", "web", Some("myapp")),
        &bindings,
        &ids,
    );
    assert_eq!(names(&c), ["myapp-identity"]);
    assert_eq!(c[0].client_id(), Some(A));
}

#[test]
fn unlabelled_and_mislabelled_pods_get_nothing() {
    let ids = [identity("default", "id", A)];
    let bindings = [binding("default", "b", "id", "myapp", 1)];
    for p in [
        pod("default", "web", None),
        pod("default", "web", Some("other")),
        pod("default", "web", Some("")),
    ] {
        assert!(
            candidates(&Policy::default(), &p, &bindings, &ids).is_empty(),
            "{p:?}"
        );
    }
}

#[test]
fn a_rogue_pod_in_another_namespace_is_refused_by_default() {
    let ids = [identity("team-a", "id", A)];
    let bindings = [binding("team-a", "b", "id", "myapp", 1)];
    let rogue = pod("team-b", "rogue", Some("myapp"));
    assert!(candidates(&Policy::default(), &rogue, &bindings, &ids).is_empty());
    // Upstream's default (cross-namespace matching) is still available, explicitly.
    let open = Policy {
        namespaced: false,
        ..Policy::default()
    };
    assert_eq!(names(&candidates(&open, &rogue, &bindings, &ids)), ["id"]);
}

#[test]
fn the_namespaced_annotation_confines_an_identity_even_when_matching_is_open() {
    let mut id = identity("team-a", "id", A);
    id.metadata.annotations = Some(
        [(BEHAVIOR_ANNOTATION.to_owned(), BEHAVIOR_NAMESPACED.to_owned())]
            .into_iter()
            .collect(),
    );
    let ids = [id];
    let bindings = [binding("team-a", "b", "id", "myapp", 1)];
    let open = Policy {
        namespaced: false,
        ..Policy::default()
    };
    assert!(candidates(&open, &pod("team-b", "rogue", Some("myapp")), &bindings, &ids).is_empty());
    assert_eq!(
        names(&candidates(
            &open,
            &pod("team-a", "web", Some("myapp")),
            &bindings,
            &ids
        )),
        ["id"]
    );
}

#[test]
fn identities_are_looked_up_in_the_bindings_namespace() {
    // A same-named identity elsewhere must not be picked up.
    let ids = [identity("other", "id", B)];
    let bindings = [binding("default", "b", "id", "myapp", 1)];
    assert!(
        candidates(
            &Policy::default(),
            &pod("default", "web", Some("myapp")),
            &bindings,
            &ids
        )
        .is_empty()
    );
}

#[test]
fn host_network_pods_are_never_bound() {
    let ids = [identity("default", "id", A)];
    let bindings = [binding("default", "b", "id", "myapp", 1)];
    let mut p = pod("default", "web", Some("myapp"));
    p.host_network = true;
    assert!(candidates(&Policy::default(), &p, &bindings, &ids).is_empty());
    assert!(!p.is_addressable());
}

#[test]
fn the_default_identity_is_the_oldest_binding_whatever_the_input_order() {
    let ids = [identity("ns", "young", B), identity("ns", "old", A)];
    let bindings = [
        binding("ns", "z-young", "young", "app", 200),
        binding("ns", "a-old", "old", "app", 100),
    ];
    let p = pod("ns", "web", Some("app"));
    for order in [[0, 1], [1, 0]] {
        let bs = [&bindings[order[0]], &bindings[order[1]]];
        let c = candidates(&Policy::default(), &p, bs, &ids);
        assert_eq!(names(&c), ["old", "young"]);
        let choice = choose(&c, &IdentityRequest::Default, |_| None).unwrap();
        assert_eq!(choice.candidate.client_id(), Some(A));
        assert_eq!(choice.out_of, 2);
    }
}

#[test]
fn equal_creation_times_fall_back_to_names() {
    let ids = [identity("ns", "x", A), identity("ns", "y", B)];
    let bindings = [
        binding("ns", "b2", "y", "app", 5),
        binding("ns", "b1", "x", "app", 5),
    ];
    let c = candidates(
        &Policy::default(),
        &pod("ns", "web", Some("app")),
        &bindings,
        &ids,
    );
    assert_eq!(names(&c), ["x", "y"]);
}

#[test]
fn requests_select_by_client_resource_or_object_id_case_insensitively() {
    let ids = [identity("ns", "x", A), identity("ns", "y", B)];
    let bindings = [
        binding("ns", "b1", "x", "app", 1),
        binding("ns", "b2", "y", "app", 2),
    ];
    let c = candidates(
        &Policy::default(),
        &pod("ns", "web", Some("app")),
        &bindings,
        &ids,
    );
    let principal =
        |c: &Candidate<'_>| Some(format!("principal-of-{}", c.identity.metadata.name.as_deref()?));

    let by_client = choose(&c, &IdentityRequest::ClientId(B.to_uppercase()), principal).unwrap();
    assert_eq!(by_client.candidate.client_id(), Some(B));

    let rid = c[1].resource_id().unwrap().to_lowercase();
    let by_resource = choose(&c, &IdentityRequest::ResourceId(rid), principal).unwrap();
    assert_eq!(by_resource.candidate.client_id(), Some(B));

    let by_object = choose(&c, &IdentityRequest::ObjectId("PRINCIPAL-OF-X".into()), principal).unwrap();
    assert_eq!(by_object.candidate.client_id(), Some(A));
}

#[test]
fn naming_an_identity_the_pod_is_not_bound_to_is_refused() {
    let ids = [identity("ns", "x", A), identity("ns", "y", B)];
    let bindings = [binding("ns", "b1", "x", "app", 1)];
    let c = candidates(
        &Policy::default(),
        &pod("ns", "web", Some("app")),
        &bindings,
        &ids,
    );
    let req = IdentityRequest::ClientId(B.into());
    assert_eq!(choose(&c, &req, |_| None), Err(NotChosen::NotBound(req.clone())));
    // An unknown principal never matches, even an empty one.
    let req = IdentityRequest::ObjectId(String::new());
    assert_eq!(choose(&c, &req, |_| None), Err(NotChosen::NotBound(req.clone())));
    assert_eq!(
        choose(&[], &IdentityRequest::Default, |_| None),
        Err(NotChosen::Unbound)
    );
}

#[test]
fn the_seed_spellings_match_like_camel_case() {
    let mut b = binding("ns", "b", "ignored", "ignored", 1);
    b.spec = legacy_spec(("id", "app"));
    let ids = [identity("ns", "id", A)];
    let c = candidates(&Policy::default(), &pod("ns", "web", Some("app")), [&b], &ids);
    assert_eq!(names(&c), ["id"]);
}

fn legacy_spec((identity, selector): (&str, &str)) -> api::AzureIdentityBindingSpec {
    api::AzureIdentityBindingSpec {
        legacy_azure_identity: Some(identity.into()),
        legacy_selector: Some(selector.into()),
        ..Default::default()
    }
}
