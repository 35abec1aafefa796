//! The list of flags both upstream binaries had besides their own, and Go's spellings of a flag,
//! for tests that check every upstream flag is accepted.

use crate::{Error, ParseGo};

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

/// Parses `base` (the program name and any required flags) followed by each spelling of each of
/// `flags`; the first refusal names the spelling and clap's message.
pub fn parse_each<P: ParseGo>(flags: &[UpstreamFlag], base: &[&str]) -> Result<Vec<P>, Error> {
    let mut parsed = Vec::new();
    for flag in flags {
        for spelling in flag.spellings() {
            let argv = base
                .iter()
                .map(|s| (*s).to_owned())
                .chain(spelling.iter().cloned());
            parsed.push(P::try_parse_go(argv).map_err(|source| Error::Refused { spelling, source })?);
        }
    }
    Ok(parsed)
}
