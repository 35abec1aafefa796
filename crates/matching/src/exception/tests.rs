use super::*;
use crate::fixtures::{exception, pod};

fn labelled(ns: &str, labels: &[(&str, &str)]) -> PodFacts {
    let mut p = pod(ns, "p", None);
    p.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    p
}

#[test]
fn the_seed_exception_matches_noaad_true_in_any_case() {
    let e = [exception("default", &[("noaad", "true")])];
    assert!(is_excepted(
        &Policy::default(),
        &labelled("default", &[("noaad", "true")]),
        &e
    ));
    assert!(is_excepted(
        &Policy::default(),
        &labelled("default", &[("noaad", "True")]),
        &e
    ));
    assert!(!is_excepted(
        &Policy::default(),
        &labelled("default", &[("noaad", "false")]),
        &e
    ));
    assert!(!is_excepted(
        &Policy::default(),
        &labelled("default", &[("NoAAD", "true")]),
        &e
    ));
    assert!(!is_excepted(&Policy::default(), &labelled("default", &[]), &e));
}

#[test]
fn any_one_label_is_enough() {
    let e = [exception("ns", &[("app", "mic"), ("component", "mic")])];
    assert!(is_excepted(
        &Policy::default(),
        &labelled("ns", &[("component", "mic")]),
        &e
    ));
}

#[test]
fn an_exception_in_another_namespace_does_not_apply() {
    let e = [exception("kube-system", &[("noaad", "true")])];
    assert!(!is_excepted(
        &Policy::default(),
        &labelled("default", &[("noaad", "true")]),
        &e
    ));
}

#[test]
fn exceptions_can_be_confined_to_chosen_namespaces() {
    let policy = Policy {
        exception_namespaces: Some(["kube-system".to_owned()].into()),
        ..Policy::default()
    };
    let sys = [exception("kube-system", &[("noaad", "true")])];
    let tenant = [exception("tenant", &[("noaad", "true")])];
    assert!(is_excepted(
        &policy,
        &labelled("kube-system", &[("noaad", "true")]),
        &sys
    ));
    assert!(!is_excepted(
        &policy,
        &labelled("tenant", &[("noaad", "true")]),
        &tenant
    ));
}
