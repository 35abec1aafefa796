//! Upstream aad-pod-identity v1.8.17's command lines, as its manifests and Helm chart write them,
//! made parsable by our clap-based `nmi` and `mic`.
//!
//! Upstream parsed with Go's `flag` (MIC) and `pflag` (NMI), which differ from clap in three ways
//! that matter for a drop-in: a long flag may have one dash (`-logtostderr`); a boolean takes its
//! value only after `=` (`--forceNamespaced`, `--forceNamespaced=false`, never
//! `--forceNamespaced false`); and a repeated flag's last value wins. [`go::normalize`] rewrites
//! the first, the `go_bool!`-style attributes documented in [`go`] give the second, and
//! `args_override_self` gives the third.
//!
//! Flags whose job our design does differently are still accepted; each binary turns the ones
//! given into [`Note`]s, logged once at start-up as warnings, so no upstream flag changes
//! behaviour silently. [`Common`] holds the flags both upstream binaries registered (klog's, and
//! `--custom-user-agent`).
#![forbid(unsafe_code)]

mod common;
pub mod go;

pub use common::Common;

/// An upstream flag that was given and is not honoured as upstream did: what replaced it, and what
/// that means for the user. Logged once, as a warning, at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The flag (or flags) as the user wrote them, e.g. `--enableProfile`.
    pub flag: String,
    /// What happens instead.
    pub message: String,
}

impl Note {
    pub fn new(flag: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            flag: flag.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream flag {}: {}", self.flag, self.message)
    }
}

/// A flag of upstream's command line and a sample value (`None`: a boolean), so that tests can
/// check every one is accepted in each of Go's spellings ([`UpstreamFlag::spellings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamFlag {
    pub name: &'static str,
    pub value: Option<&'static str>,
}

impl UpstreamFlag {
    pub const fn boolean(name: &'static str) -> Self {
        Self { name, value: None }
    }

    pub const fn with_value(name: &'static str, value: &'static str) -> Self {
        Self {
            name,
            value: Some(value),
        }
    }

    /// Every way Go's flag packages let a command line set this flag, each as its words.
    pub fn spellings(&self) -> Vec<Vec<String>> {
        let n = self.name;
        match self.value {
            Some(v) => vec![
                vec![format!("--{n}={v}")],
                vec![format!("--{n}"), v.to_owned()],
                vec![format!("-{n}={v}")],
                vec![format!("-{n}"), v.to_owned()],
            ],
            None => vec![
                vec![format!("--{n}")],
                vec![format!("-{n}")],
                vec![format!("--{n}=true")],
                vec![format!("--{n}=false")],
                vec![format!("-{n}=false")],
            ],
        }
    }
}

/// The flags both upstream binaries had besides their own: klog v2.30's `InitFlags` and
/// `--custom-user-agent`. (`--log-format` is one of ours too.)
pub const COMMON_FLAGS: &[UpstreamFlag] = &[
    UpstreamFlag::with_value("v", "4"),
    UpstreamFlag::boolean("logtostderr"),
    UpstreamFlag::boolean("alsologtostderr"),
    UpstreamFlag::with_value("log_dir", "/var/log/pod-identity"),
    UpstreamFlag::with_value("log_file", "/var/log/pod-identity.log"),
    UpstreamFlag::with_value("log_file_max_size", "1800"),
    UpstreamFlag::with_value("stderrthreshold", "ERROR"),
    UpstreamFlag::with_value("vmodule", "server=5"),
    UpstreamFlag::with_value("log_backtrace_at", "server.go:100"),
    UpstreamFlag::boolean("add_dir_header"),
    UpstreamFlag::boolean("skip_headers"),
    UpstreamFlag::boolean("skip_log_headers"),
    UpstreamFlag::boolean("one_output"),
    UpstreamFlag::with_value("log-format", "json"),
    UpstreamFlag::with_value("custom-user-agent", "contoso-aks/1.0"),
];

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
    pub fn from_upstream(flag: Option<bool>, env: Option<&str>) -> Self {
        let env = env.filter(|v| !v.is_empty());
        if flag == Some(true) || env == Some("true") {
            Self::Namespaced
        } else if flag.is_some() || env.is_some() {
            Self::CrossNamespace
        } else {
            Self::Unset
        }
    }

    /// Checks upstream's setting against ours (`--allow-cross-namespace`): a contradiction is an
    /// error; asking for upstream's cross-namespace matching without our flag is a note, since we
    /// stay namespaced.
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
        assert_eq!(UpstreamNamespacing::from_upstream(None, None), Unset);
        assert_eq!(UpstreamNamespacing::from_upstream(None, Some("")), Unset);
        assert_eq!(
            UpstreamNamespacing::from_upstream(Some(true), Some("false")),
            Namespaced
        );
        assert_eq!(UpstreamNamespacing::from_upstream(None, Some("true")), Namespaced);
        // Upstream compared the variable with "true" exactly.
        assert_eq!(
            UpstreamNamespacing::from_upstream(None, Some("True")),
            CrossNamespace
        );
        assert_eq!(
            UpstreamNamespacing::from_upstream(Some(false), None),
            CrossNamespace
        );
        assert_eq!(
            UpstreamNamespacing::from_upstream(None, Some("false")),
            CrossNamespace
        );
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
