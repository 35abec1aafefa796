//! Upstream's `--forceNamespaced` and `FORCENAMESPACED` against our `--allow-cross-namespace`.

use crate::{Environment, Note};

/// What upstream's `FORCENAMESPACED` environment variable and `--forceNamespaced` flag asked for.
/// Upstream was namespaced when the flag was true or the variable was exactly `true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamNamespacing {
    /// Neither was given: nothing to honour or warn about.
    Unset,
    /// Namespaced matching, which is our default too.
    Namespaced,
    /// Given, but not namespaced: upstream matched pods across namespaces.
    CrossNamespace,
}

impl UpstreamNamespacing {
    /// Combines the flag (if given) and the environment variable (if set) as upstream did.
    pub fn from_upstream(flag: Option<bool>, env: &Environment) -> Self {
        let env = env.force_namespaced.as_deref().filter(|v| !v.is_empty());
        if flag == Some(true) || env == Some("true") {
            Self::Namespaced
        } else if flag.is_some() || env.is_some() {
            Self::CrossNamespace
        } else {
            Self::Unset
        }
    }

    /// The note of [`UpstreamNamespacing::reconcile`], if any (its error is the caller's check).
    pub fn note(self, allow_cross_namespace: bool, component: &str) -> Option<Note> {
        self.reconcile(allow_cross_namespace, component).ok().flatten()
    }

    /// Checks upstream's setting against ours (`--allow-cross-namespace`): a contradiction is an
    /// error; asking for upstream's cross-namespace matching without our flag is a note, since we
    /// stay namespaced.
    // The error stays text: NMI's flag check hands it to its own `Error::Flags(String)` as it is
    // (`.map_err(Error::Flags)`), and MIC's does the same through `to_string`.
    pub fn reconcile(self, allow_cross_namespace: bool, component: &str) -> Result<Option<Note>, String> {
        match (self, allow_cross_namespace) {
            (Self::Namespaced, true) => Err(
                "--forceNamespaced (or FORCENAMESPACED=true) contradicts --allow-cross-namespace; drop one"
                    .into(),
            ),
            (Self::CrossNamespace, false) => Ok(Some(Note::new(
                "--forceNamespaced=false / FORCENAMESPACED",
                format!(
                    "upstream then matched pods to bindings and identities of any namespace; {component} stays \
                     namespaced (a pod gets only identities of its own namespace); pass --allow-cross-namespace \
                     for upstream's behaviour"
                ),
            ))),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespacing_combines_flag_and_environment_as_upstream_did() {
        use UpstreamNamespacing::*;
        let of =
            |flag, env: Option<&str>| UpstreamNamespacing::from_upstream(flag, &Environment::forced(env));
        assert_eq!(of(None, None), Unset);
        assert_eq!(of(None, Some("")), Unset);
        assert_eq!(of(Some(true), Some("false")), Namespaced);
        assert_eq!(of(None, Some("true")), Namespaced);
        // Upstream compared the variable with "true" exactly.
        assert_eq!(of(None, Some("True")), CrossNamespace);
        assert_eq!(of(Some(false), None), CrossNamespace);
        assert_eq!(of(None, Some("false")), CrossNamespace);
    }

    #[test]
    fn cross_namespace_is_a_note_and_a_contradiction_an_error() {
        use UpstreamNamespacing::*;
        let note = CrossNamespace.reconcile(false, "NMI").unwrap().unwrap();
        assert!(note.message.contains("--allow-cross-namespace"), "{note}");
        assert_eq!(CrossNamespace.reconcile(true, "NMI"), Ok(None));
        assert_eq!(Namespaced.reconcile(false, "NMI"), Ok(None));
        assert!(Namespaced.reconcile(true, "NMI").is_err());
        assert_eq!(Unset.reconcile(true, "NMI"), Ok(None));
    }
}
