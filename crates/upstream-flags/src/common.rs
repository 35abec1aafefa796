//! The flags both upstream binaries registered besides their own: klog v2.30's logging flags
//! (`klog.InitFlags`) and `--custom-user-agent` (`version/version.go`).

use clap::Args;

use crate::{Environment, Note, go};

/// klog's flags and `--custom-user-agent`, accepted as upstream's manifests pass them
/// (`--logtostderr`, `-v=<n>`). Logging here is `tracing` to standard output, so verbosity is
/// honoured (mapped onto the log filter) and the file and header options are noted as ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args)]
#[command(next_help_heading = "Upstream's logging flags (klog; see README \"Upstream flags\")")]
pub struct Common {
    /// klog verbosity: 0-3 info, 4-5 debug lines of this component, 6 and up debug everywhere. RUST_LOG, when set, wins.
    #[arg(short = 'v', long = "v", value_name = "LEVEL", allow_negative_numbers = true)]
    pub v: Option<i32>,
    /// Logs always go to standard output; false (write files) is noted and ignored.
    #[arg(long = "logtostderr", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub logtostderr: Option<bool>,
    /// Logs always go to standard output, so this changes nothing.
    #[arg(long = "alsologtostderr", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub alsologtostderr: Option<bool>,
    /// Ignored (noted): no log files are written.
    #[arg(long = "log_dir", value_name = "DIR")]
    pub log_dir: Option<String>,
    /// Ignored (noted): no log files are written.
    #[arg(long = "log_file", value_name = "FILE")]
    pub log_file: Option<String>,
    /// Ignored (noted): no log files are written.
    #[arg(long = "log_file_max_size", value_name = "MB")]
    pub log_file_max_size: Option<u64>,
    /// Ignored (noted): every line at the chosen level goes to standard output.
    #[arg(long = "stderrthreshold", value_name = "SEVERITY")]
    pub stderrthreshold: Option<String>,
    /// Ignored (noted): per-module levels are set with RUST_LOG.
    #[arg(long = "vmodule", value_name = "PATTERN=N,...")]
    pub vmodule: Option<String>,
    /// Ignored (noted): no stack traces on log lines.
    #[arg(long = "log_backtrace_at", value_name = "FILE:N")]
    pub log_backtrace_at: Option<String>,
    /// Ignored (noted) when true: klog's header format.
    #[arg(long = "add_dir_header", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub add_dir_header: Option<bool>,
    /// Ignored (noted) when true: klog's header format.
    #[arg(long = "skip_headers", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub skip_headers: Option<bool>,
    /// Ignored (noted) when true: klog's file format.
    #[arg(long = "skip_log_headers", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub skip_log_headers: Option<bool>,
    /// Ignored (noted) when true: klog's per-severity files.
    #[arg(long = "one_output", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub one_output: Option<bool>,
    /// Appended to the User-Agent of this component's requests (see README "Upstream flags").
    #[arg(long = "custom-user-agent", value_name = "TEXT")]
    pub custom_user_agent: Option<String>,
}

impl Common {
    /// The log filter for `-v` when RUST_LOG is not set; `own` is this component's target
    /// (`nmi`, `mic`), whose debug lines come first.
    pub fn log_filter(&self, own: &str) -> String {
        match self.v.unwrap_or(0) {
            ..=3 => "info".to_owned(),
            4..=5 => format!("info,{own}=debug"),
            _ => "debug".to_owned(),
        }
    }

    /// The User-Agent of this component's requests: `pod-identity/<component>/<version>`, then
    /// `--custom-user-agent` as upstream appended it.
    pub fn user_agent(&self, component: &str, version: &str) -> String {
        match self.custom_user_agent.as_deref().filter(|s| !s.is_empty()) {
            Some(custom) => format!("pod-identity/{component}/{version} {custom}"),
            None => format!("pod-identity/{component}/{version}"),
        }
    }

    /// A note for each given flag that is not honoured.
    pub fn notes(&self, env: &Environment) -> Vec<Note> {
        let mut notes = Vec::new();
        if self.v.is_some() && env.rust_log.is_some() {
            notes.push(Note::new(
                "-v",
                "ignored: RUST_LOG is set and decides the log levels",
            ));
        }
        if self.logtostderr == Some(false) {
            notes.push(Note::new(
                "--logtostderr=false",
                "ignored: logs always go to standard output (the container log); no log files are written",
            ));
        }
        let files = [
            ("--log_dir", self.log_dir.is_some()),
            ("--log_file", self.log_file.is_some()),
            ("--log_file_max_size", self.log_file_max_size.is_some()),
        ];
        for (flag, given) in files {
            if given {
                notes.push(Note::new(
                    flag,
                    "ignored: no log files are written; logs go to standard output (the container log)",
                ));
            }
        }
        if self.stderrthreshold.is_some() {
            notes.push(Note::new(
                "--stderrthreshold",
                "ignored: every line at the chosen level (-v or RUST_LOG) goes to standard output",
            ));
        }
        if self.vmodule.is_some() {
            notes.push(Note::new(
                "--vmodule",
                "ignored: set per-module levels with RUST_LOG, e.g. RUST_LOG=info,nmi::server=debug",
            ));
        }
        if self.log_backtrace_at.is_some() {
            notes.push(Note::new(
                "--log_backtrace_at",
                "ignored: log lines carry no stack traces",
            ));
        }
        let headers = [
            ("--add_dir_header", self.add_dir_header),
            ("--skip_headers", self.skip_headers),
            ("--skip_log_headers", self.skip_log_headers),
            ("--one_output", self.one_output),
        ];
        for (flag, value) in headers {
            if value == Some(true) {
                notes.push(Note::new(
                    flag,
                    "ignored: it shaped klog's output; lines here are tracing's text or JSON (--log-format)",
                ));
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::go::normalize;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        common: Common,
    }

    fn parse(args: &[&str]) -> Common {
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        T::try_parse_from(normalize(&<T as clap::CommandFactory>::command(), argv))
            .unwrap()
            .common
    }

    #[test]
    fn upstream_manifests_logging_flags_are_accepted_and_noted_only_when_not_honoured() {
        let c = parse(&["--logtostderr", "-v=0"]);
        assert_eq!((c.logtostderr, c.v), (Some(true), Some(0)));
        assert!(c.notes(&Environment::default()).is_empty());
        let c = parse(&["-logtostderr=true", "--alsologtostderr", "--v", "2"]);
        assert!(
            c.notes(&Environment::default()).is_empty(),
            "{:?}",
            c.notes(&Environment::default())
        );
    }

    #[test]
    fn every_klog_flag_parses_and_each_ignored_one_gets_one_note() {
        let c = parse(&[
            "--logtostderr=false",
            "--alsologtostderr=false",
            "-log_dir=/var/log",
            "--log_file",
            "/var/log/x.log",
            "--log_file_max_size=100",
            "--stderrthreshold=ERROR",
            "--vmodule=server=5",
            "--log_backtrace_at=server.go:10",
            "--add_dir_header",
            "--skip_headers=true",
            "--skip_log_headers",
            "--one_output=1",
            "-v",
            "6",
        ]);
        let notes = c.notes(&Environment {
            rust_log: Some("info".into()),
            ..Environment::default()
        });
        let flags: Vec<&str> = notes.iter().map(|n| n.flag.as_str()).collect();
        assert_eq!(
            flags,
            [
                "-v",
                "--logtostderr=false",
                "--log_dir",
                "--log_file",
                "--log_file_max_size",
                "--stderrthreshold",
                "--vmodule",
                "--log_backtrace_at",
                "--add_dir_header",
                "--skip_headers",
                "--skip_log_headers",
                "--one_output",
            ]
        );
        assert_eq!(c.log_dir.as_deref(), Some("/var/log"));
    }

    #[test]
    fn verbosity_maps_onto_the_log_filter() {
        let level = |v: &str| parse(&[v]).log_filter("nmi");
        assert_eq!(level("-v=0"), "info");
        assert_eq!(level("-v=3"), "info");
        assert_eq!(level("-v=4"), "info,nmi=debug");
        assert_eq!(level("--v=6"), "debug");
        assert_eq!(level("-v=-1"), "info");
        assert_eq!(Common::default().log_filter("mic"), "info");
    }

    #[test]
    fn the_custom_user_agent_is_appended() {
        assert_eq!(
            Common::default().user_agent("MIC", "0.1.0"),
            "pod-identity/MIC/0.1.0"
        );
        let c = parse(&["--custom-user-agent=contoso/1"]);
        assert_eq!(c.user_agent("MIC", "0.1.0"), "pod-identity/MIC/0.1.0 contoso/1");
        assert!(c.notes(&Environment::default()).is_empty());
    }
}
