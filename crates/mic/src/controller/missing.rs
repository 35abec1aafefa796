//! NMI's findings that IMDS did not know an assigned identity, and which of them MIC has not
//! acted on yet.
//!
//! When IMDS answers "Identity not found" for an `Assigned` `AzureAssignedIdentity`, NMI sets
//! [`api::v1::IDENTITY_MISSING_ANNOTATION`] on the object, its value an opaque token (an
//! RFC 3339 time) that changes at each finding. Nothing clears it. MIC remembers, in memory
//! only, the last value it acted on per object; a value it has not acted on makes the planner
//! bump that object's target's refresh count, and the target's worker reads the target back
//! from ARM and puts back what is missing in its next batch, within seconds instead of at the
//! periodic drift read-back. A MIC that starts (or takes over as leader) reads every target it
//! works on anyway, so forgetting the values on restart loses nothing.

use std::collections::HashMap;

use matching::AssignedFacts;
use mirror::Key;

/// The last finding acted on, per object.
#[derive(Debug, Default)]
pub(super) struct Findings {
    acted_on: HashMap<Key, String>,
}

impl Findings {
    /// The objects whose finding MIC has not acted on yet, now counted as acted on. Objects no
    /// longer in `assigned` are forgotten.
    pub(super) fn fresh<'a>(
        &mut self,
        assigned: impl IntoIterator<Item = &'a AssignedFacts>,
    ) -> Vec<&'a AssignedFacts> {
        let mut acted_on = HashMap::new();
        let mut fresh = Vec::new();
        for a in assigned {
            let Some(token) = &a.identity_missing else {
                continue;
            };
            let key = (a.namespace.clone(), a.name.clone());
            if self.acted_on.get(&key) != Some(token) {
                fresh.push(a);
            }
            acted_on.insert(key, token.clone());
        }
        self.acted_on = acted_on;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, token: Option<&str>) -> AssignedFacts {
        AssignedFacts {
            namespace: "ns".into(),
            name: name.into(),
            pod: name.into(),
            pod_namespace: "ns".into(),
            node: "a-0".into(),
            identity: None,
            binding: None,
            arm_id: Some("x".into()),
            client_id: None,
            state: api::AssignmentState::Assigned,
            deleting: false,
            resource_version: None,
            identity_missing: token.map(str::to_owned),
            refusal: None,
            failure: None,
        }
    }

    fn names<'a>(found: &[&'a AssignedFacts]) -> Vec<&'a str> {
        found.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn a_finding_is_acted_on_once() {
        let mut f = Findings::default();
        let objects = [facts("p1", Some("t1")), facts("p2", None)];
        assert_eq!(names(&f.fresh(&objects)), ["p1"]);
        assert!(f.fresh(&objects).is_empty());
    }

    #[test]
    fn a_new_finding_on_the_same_object_is_acted_on_again() {
        let mut f = Findings::default();
        f.fresh(&[facts("p1", Some("t1"))]);
        assert_eq!(names(&f.fresh(&[facts("p1", Some("t2"))])), ["p1"]);
        assert!(f.fresh(&[facts("p1", Some("t2"))]).is_empty());
    }

    #[test]
    fn findings_of_objects_that_are_gone_are_forgotten() {
        let mut f = Findings::default();
        f.fresh(&[facts("p1", Some("t1")), facts("p2", Some("t1"))]);
        f.fresh(&[facts("p2", Some("t1"))]);
        assert_eq!(f.acted_on.len(), 1);
        // An object of the same name recreated with the same token is a new object.
        assert_eq!(names(&f.fresh(&[facts("p1", Some("t1"))])), ["p1"]);
    }
}
