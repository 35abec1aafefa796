//! The shared `fixtures` crate's test values, in the shapes matching's functions take.

pub use ::fixtures::{binding, exception, identity_with_client as identity};

use crate::PodFacts;

/// A Running pod on `node-0` at `10.244.0.5`, with the `aadpodidbinding` label `label` when given.
pub fn pod(ns: &str, name: &str, label: Option<&str>) -> PodFacts {
    PodFacts::from(&::fixtures::pod(ns, name, "10.244.0.5", label))
}
