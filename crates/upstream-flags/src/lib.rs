//! Upstream aad-pod-identity v1.8.17's command lines, as its manifests and Helm chart write them,
//! made parsable by our clap-based `nmi` and `mic`.
//!
//! Upstream parsed with Go's `flag` (MIC) and `pflag` (NMI), which differ from clap in three ways
//! that matter for a drop-in: a long flag may have one dash (`-logtostderr`); a boolean takes its
//! value only after `=` (`--forceNamespaced`, `--forceNamespaced=false`, never
//! `--forceNamespaced false`); and a repeated flag's last value wins. [`ParseGo`] rewrites the
//! first ([`go::normalize`]), the attributes documented in [`go`] give the second, and
//! `args_override_self` gives the third.
//!
//! Flags whose job our design does differently are still accepted; each binary turns the ones
//! given into [`Note`]s, logged once at start-up as warnings ([`warn`]), so no upstream flag
//! changes behaviour silently. [`Common`] holds the flags both upstream binaries registered
//! (klog's, and `--custom-user-agent`).
#![forbid(unsafe_code)]

mod common;
pub mod go;
mod namespacing;
mod one_line;
mod spellings;

use std::ffi::OsString;

pub use common::Common;
pub use namespacing::UpstreamNamespacing;
pub use one_line::{OneLine, OneLineWriter, escape as escape_log_line};
pub use spellings::{COMMON_FLAGS, UpstreamFlag, parse_each};

/// Parsing in Go's flag syntax, for every clap parser.
pub trait ParseGo: clap::Parser {
    /// Parses the process's arguments; exits with clap's message on an error, as `parse` does.
    fn parse_go() -> Self {
        Self::parse_from(go::normalize(&Self::command(), std::env::args_os()))
    }

    /// Parses given arguments (the first is the program name).
    fn try_parse_go<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Self::try_parse_from(go::normalize(&Self::command(), args))
    }
}

impl<P: clap::Parser> ParseGo for P {}

/// The environment variables that decide, with the flags, what start-up does and says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// `RUST_LOG`, which overrides `-v`.
    pub rust_log: Option<String>,
    /// `FORCENAMESPACED`, which upstream read.
    pub force_namespaced: Option<String>,
}

impl Environment {
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Self {
            rust_log: var("RUST_LOG"),
            force_namespaced: var("FORCENAMESPACED"),
        }
    }

    /// An environment with only `FORCENAMESPACED` (as given) set.
    pub fn forced(force_namespaced: Option<&str>) -> Self {
        Self {
            force_namespaced: force_namespaced.map(str::to_owned),
            ..Self::default()
        }
    }
}

/// Starts logging to standard output: `RUST_LOG` when set and valid, else `from_verbosity`
/// ([`Common::log_filter`]). Colours only on a terminal: in a container, `kubectl logs` and log
/// collectors would get the escape codes in the middle of each `key=value`. Text lines go through
/// [`text_subscriber`], so that no event can write more than one line.
pub fn init_logging(json: bool, env: &Environment, from_verbosity: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = env
        .rust_log
        .as_deref()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(from_verbosity));
    let colours = std::io::stdout().is_terminal();
    if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colours)
            .json()
            .init()
    } else {
        text_subscriber(filter, colours, std::io::stdout).init()
    }
}

/// The text log of MIC and NMI (and the emulator): `tracing_subscriber::fmt`'s format, written
/// through [`OneLine`], so a newline or other control character in any value is escaped and
/// every event is exactly one line. Public so that tests read the same lines the binaries write.
pub fn text_subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    colours: bool,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(OneLine::new(writer, colours))
        .finish()
}

/// Logs each note as one warning line.
pub fn warn(notes: &[Note]) {
    for note in notes {
        tracing::warn!("{note}");
    }
}

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

/// Why a flag's value, or a command line, is refused. [`go::parse_bool`] and [`go::parse_duration`]
/// are clap value parsers: clap takes any error type that converts into a boxed
/// `std::error::Error` and prints it after its own "invalid value ... for ...", so a typed error
/// reads exactly as the text did.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` is not a boolean (true or false)")]
    NotBool(String),
    #[error("`{0}` is not a duration like 500ms, 15s, 3m, 1h30m")]
    NotDuration(String),
    #[error("`{0}`: a negative duration makes no sense here")]
    NegativeDuration(String),
    #[error("`{value}`: unknown unit `{unit}` (use ns, us, ms, s, m or h)")]
    UnknownUnit { value: String, unit: String },
    /// One of Go's spellings of a flag, as [`parse_each`] gave it, and clap's refusal.
    #[error("{spelling:?}: {source}")]
    Refused {
        spelling: Vec<String>,
        source: clap::Error,
    },
}
