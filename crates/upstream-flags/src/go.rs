//! Go's flag syntax on top of clap.
//!
//! Go's `flag` and `pflag` accept `-name` and `--name` alike, `-name=value` and `-name value` for
//! a flag with a value, and, for a boolean, the bare `-name` (true) or `-name=<bool>` only: a
//! separate word after a boolean is not its value. clap knows only `--name`, so
//! [`normalize`] rewrites single-dash long flags before clap sees them. A boolean flag gets Go's
//! behaviour with these attributes (and an `Option<bool>` field, `None` when not given):
//!
//! ```text
//! #[arg(long = "name", num_args = 0..=1, require_equals = true,
//!       default_missing_value = "true", value_parser = go::parse_bool)]
//! ```

use std::{ffi::OsString, time::Duration};

use clap::{Arg, Command};

use crate::Error;

/// Rewrites `-name[=value]` (one dash, a name of two or more characters) to `--name[=value]`, and
/// joins a flag and its separate value into `--name=value`, so that a value starting with a dash
/// is taken as Go takes it rather than as a flag. Single-character names (`-v`, `-h`) stay clap
/// shorts. What follows `--` is left alone. Unknown names are rewritten too, so that clap's error
/// names them as given.
pub fn normalize<I, T>(cmd: &Command, args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut cmd = cmd.clone();
    cmd.build();
    let mut args = args.into_iter().map(Into::into);
    let mut out: Vec<OsString> = args.next().into_iter().collect();
    let mut only_positionals = false;
    while let Some(arg) = args.next() {
        if only_positionals {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            only_positionals = true;
            out.push(arg);
            continue;
        }
        let (one_dash, body) = match text.strip_prefix("--") {
            Some(body) => (false, body),
            None => match text.strip_prefix('-') {
                Some(body) if !body.is_empty() => (true, body),
                _ => {
                    out.push(arg);
                    continue;
                }
            },
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, _)) => (name, true),
            None => (body, false),
        };
        let long_name = name.chars().count() > 1 || !one_dash;
        let known = if long_name {
            find_long(&cmd, name)
        } else {
            name.chars().next().and_then(|c| find_short(&cmd, c))
        };
        let mut flag: OsString = if one_dash && long_name {
            format!("-{text}").into()
        } else {
            arg.clone()
        };
        if !inline_value
            && known.is_some_and(takes_separate_value)
            && let Some(value) = args.next()
        {
            flag.push("=");
            flag.push(value);
        }
        out.push(flag);
    }
    out
}

fn find_long<'a>(cmd: &'a Command, name: &str) -> Option<&'a Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|aliases| aliases.contains(&name))
    })
}

fn find_short(cmd: &Command, c: char) -> Option<&Arg> {
    cmd.get_arguments().find(|a| a.get_short() == Some(c))
}

/// Whether the word after `--name` is the flag's value.
fn takes_separate_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
        && !arg.is_require_equals_set()
        && arg.get_num_args().is_none_or(|n| n.min_values() > 0)
}

/// A boolean as Go's `strconv.ParseBool` reads it: `1 t T TRUE true True`, `0 f F FALSE false False`.
pub fn parse_bool(s: &str) -> Result<bool, Error> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(Error::NotBool(s.to_owned())),
    }
}

/// A duration as Go's `time.ParseDuration` reads it (`1h30m`, `1.5s`, `300ms`, `2us`), and a bare
/// number as seconds (our own flags always took that). Negative durations are refused.
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let text = s.trim();
    let bad = || Error::NotDuration(s.to_owned());
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.starts_with('-') {
        return Err(Error::NegativeDuration(s.to_owned()));
    }
    if !body.is_empty() && body.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return seconds(body, 1.0).ok_or_else(bad);
    }
    let mut rest = body;
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(Error::UnknownUnit {
                    value: s.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        };
        total += seconds(number, scale).ok_or_else(bad)?.as_secs_f64();
        rest = tail;
    }
    if body.is_empty() {
        return Err(bad());
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

fn seconds(number: &str, scale: f64) -> Option<Duration> {
    if number.is_empty() || number == "." {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(value * scale).ok()
}

#[cfg(test)]
mod tests {
    use clap::{ArgAction, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    #[command(name = "t", args_override_self = true)]
    struct T {
        #[arg(long = "node")]
        node: Option<String>,
        #[arg(long = "forceNamespaced", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
        force: Option<bool>,
        #[arg(long = "manage", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        manage: Option<bool>,
        #[arg(short = 'v', long = "v")]
        v: Option<i32>,
        #[arg(long = "clientQps", alias = "client-qps")]
        qps: Option<f64>,
    }

    fn parse(args: &[&str]) -> Result<T, clap::Error> {
        let argv = normalize(&<T as clap::CommandFactory>::command(), args.iter().copied());
        T::try_parse_from(argv)
    }

    #[test]
    fn one_dash_and_two_dashes_are_the_same() {
        for args in [
            &["t", "-node=n"][..],
            &["t", "--node=n"],
            &["t", "-node", "n"],
            &["t", "--node", "n"],
        ] {
            let t = parse(args).unwrap();
            assert_eq!(t.node.as_deref(), Some("n"), "{args:?}");
        }
        let t = parse(&["t", "-node", "n", "-v", "4"]).unwrap();
        assert_eq!((t.node.as_deref(), t.v), (Some("n"), Some(4)));
        assert_eq!(parse(&["t", "--v", "2"]).unwrap().v, Some(2));
        assert_eq!(parse(&["t", "-v=5"]).unwrap().v, Some(5));
        assert_eq!(parse(&["t", "-client-qps=7"]).unwrap().qps, Some(7.0));
    }

    #[test]
    fn a_separate_value_is_never_rewritten() {
        let t = parse(&["t", "--node", "-weird-node-name"]).unwrap();
        assert_eq!(t.node.as_deref(), Some("-weird-node-name"));
        let t = parse(&["t", "-node", "-x"]).unwrap();
        assert_eq!(t.node.as_deref(), Some("-x"));
    }

    #[test]
    fn booleans_are_bare_or_take_their_value_after_equals() {
        assert_eq!(parse(&["t"]).unwrap().force, None);
        assert_eq!(parse(&["t", "--forceNamespaced"]).unwrap().force, Some(true));
        assert_eq!(parse(&["t", "-forceNamespaced"]).unwrap().force, Some(true));
        assert_eq!(
            parse(&["t", "--forceNamespaced=false"]).unwrap().force,
            Some(false)
        );
        assert_eq!(parse(&["t", "-forceNamespaced=F"]).unwrap().force, Some(false));
        assert_eq!(parse(&["t", "--forceNamespaced=1"]).unwrap().force, Some(true));
        // As in Go, the next word is not the boolean's value (here it is an unexpected argument).
        assert!(parse(&["t", "--forceNamespaced", "false"]).is_err());
        assert!(parse(&["t", "--forceNamespaced=maybe"]).is_err());
        // A flag of ours with an optional separate value keeps that form.
        assert_eq!(parse(&["t", "--manage", "false"]).unwrap().manage, Some(false));
    }

    #[test]
    fn the_last_of_repeated_flags_wins_as_in_go() {
        let t = parse(&[
            "t",
            "--node=a",
            "-node=b",
            "--forceNamespaced",
            "--forceNamespaced=false",
        ])
        .unwrap();
        assert_eq!((t.node.as_deref(), t.force), (Some("b"), Some(false)));
    }

    #[test]
    fn unknown_flags_are_named_as_long_flags_in_the_error() {
        let err = parse(&["t", "-bogus=1"]).unwrap_err().to_string();
        assert!(err.contains("--bogus"), "{err}");
        // `--` ends the flags: what follows is left exactly as written.
        let argv = normalize(&<T as clap::CommandFactory>::command(), ["t", "--", "-node"]);
        assert_eq!(argv, ["t", "--", "-node"].map(OsString::from));
    }

    #[test]
    fn go_booleans() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(parse_bool(yes).unwrap(), "{yes}");
        }
        for no in ["0", "f", "F", "FALSE", "false", "False"] {
            assert!(!parse_bool(no).unwrap(), "{no}");
        }
        assert!(matches!(parse_bool("yes"), Err(Error::NotBool(v)) if v == "yes"));
        assert!(parse_bool("").is_err());
        // clap prints the parser's error after its own words.
        let err = parse(&["t", "--forceNamespaced=maybe"]).unwrap_err().to_string();
        assert!(err.contains("`maybe` is not a boolean (true or false)"), "{err}");
    }

    #[test]
    fn go_durations_and_bare_seconds() {
        let d = |s| parse_duration(s).map_err(|e| e.to_string());
        assert_eq!(d("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert_eq!(d("15"), Ok(Duration::from_secs(15)));
        assert_eq!(d("+1s"), Ok(Duration::from_secs(1)));
        for bad in ["", "s", "3 weeks", "1d", "-1s", "1.2.3s", "ms5"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(parse_duration("-1s"), Err(Error::NegativeDuration(_))));
        assert_eq!(
            d("1d").unwrap_err(),
            "`1d`: unknown unit `d` (use ns, us, ms, s, m or h)"
        );
    }
}
