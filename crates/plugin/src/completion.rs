//! Shell completion, both ways a user reaches the plugin:
//!
//! - `kubectl-pod_identity completion bash|zsh|fish|...` prints clap_complete's script for the
//!   standalone binary;
//! - `kubectl pod-identity <TAB>`: kubectl ≥ 1.26 runs `kubectl_complete-pod_identity WORDS...`
//!   (the words after `pod-identity`, the last the one being typed) and reads one candidate a
//!   line, `candidate<TAB>description`, then `:N`, Cobra's ShellCompDirective. That executable
//!   (deploy/krew/) calls `kubectl-pod_identity __complete WORDS...`, answered by [`complete`]
//!   from the same clap definition, so the two never drift.

use std::io::Write;

use clap::{Arg, Command};

use crate::cli::BIN;

/// The first word that asks for kubectl-protocol candidates instead of running a command.
pub const COMPLETE: &str = "__complete";

/// Cobra's `ShellCompDirectiveDefault`: the shell may fall back to file names.
pub const DIRECTIVE_FILES: u32 = 0;
/// Cobra's `ShellCompDirectiveNoFileComp`: only the candidates given.
pub const DIRECTIVE_NO_FILES: u32 = 4;

/// What kubectl shows for the word being typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completions {
    pub candidates: Vec<Candidate>,
    pub directive: u32,
}

/// One candidate and the help shown beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub value: String,
    pub help: String,
}

impl Completions {
    /// In kubectl's plugin-completion protocol.
    pub fn protocol(&self) -> String {
        let mut out = String::new();
        for c in &self.candidates {
            out.push_str(&c.value);
            if !c.help.is_empty() {
                out.push('\t');
                out.push_str(&c.help);
            }
            out.push('\n');
        }
        out.push_str(&format!(":{}\n", self.directive));
        out
    }
}

/// clap_complete's script for `shell`, completing the standalone binary.
pub fn script(shell: clap_complete::Shell, mut cmd: Command, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut cmd, BIN, out);
}

/// The candidates for the last of `words` (the words after `pod-identity`), after the others.
pub fn complete(mut cmd: Command, words: &[String]) -> Completions {
    // Built, every subcommand carries the global flags.
    cmd.build();
    let (current, typed) = match words.split_last() {
        Some((last, before)) => (last.as_str(), before),
        None => ("", &[][..]),
    };
    let mut at = &cmd;
    let mut wants_value: Option<&Arg> = None;
    let mut positionals = 0;
    for word in typed {
        if wants_value.take().is_some() {
            continue;
        }
        if let Some(arg) = flag_of(at, word) {
            // `--output=json` and `-ojson` carry their value; `--output` and `-o` take the next word.
            let inline_value = if word.starts_with("--") {
                word.contains('=')
            } else {
                word.len() > 2
            };
            if takes_value(arg) && !inline_value {
                wants_value = Some(arg);
            }
        } else if let Some(sub) = at.find_subcommand(word) {
            at = sub;
            positionals = 0;
        } else {
            positionals += 1;
        }
    }
    if let Some(arg) = wants_value {
        return values(arg, "", current);
    }
    if let Some((name, value)) = current.strip_prefix("--").and_then(|f| f.split_once('=')) {
        return match at.get_arguments().find(|a| a.get_long() == Some(name)) {
            Some(arg) => values(arg, &format!("--{name}="), value),
            None => no_files(Vec::new()),
        };
    }
    if current.starts_with('-') {
        let flags = at
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| Some((format!("--{}", a.get_long()?), help(a.get_help()))))
            .filter(|(flag, _)| flag.starts_with(current))
            .map(|(value, help)| Candidate { value, help })
            .collect();
        return no_files(flags);
    }
    if at.has_subcommands() {
        let subcommands = at
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name().starts_with(current))
            .map(|s| Candidate {
                value: s.get_name().to_owned(),
                help: help(s.get_about()),
            })
            .collect();
        return no_files(subcommands);
    }
    // A positional with a fixed set (the shell) offers it; the pod's name has none: nothing to
    // offer, and no file names.
    match at.get_positionals().nth(positionals) {
        Some(arg) => values(arg, "", current),
        None => no_files(Vec::new()),
    }
}

/// The flag `word` names in `cmd` (`--output`, `--output=json`, `-o`, `-ojson`).
fn flag_of<'c>(cmd: &'c Command, word: &str) -> Option<&'c Arg> {
    if let Some(long) = word.strip_prefix("--") {
        let name = long.split_once('=').map_or(long, |(n, _)| n);
        return cmd.get_arguments().find(|a| a.get_long() == Some(name));
    }
    let short = word.strip_prefix('-')?.chars().next()?;
    cmd.get_arguments().find(|a| a.get_short() == Some(short))
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
}

/// The values of `arg` starting with `typed`, each after `prefix` (`--output=`); file names
/// where the flag takes a path.
fn values(arg: &Arg, prefix: &str, typed: &str) -> Completions {
    let fixed: Vec<Candidate> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set() && v.get_name().starts_with(typed))
        .map(|v| Candidate {
            value: format!("{prefix}{}", v.get_name()),
            help: help(v.get_help()),
        })
        .collect();
    let a_path = arg
        .get_value_names()
        .is_some_and(|n| n.iter().any(|n| n.as_str() == "PATH"));
    Completions {
        candidates: fixed,
        directive: if a_path {
            DIRECTIVE_FILES
        } else {
            DIRECTIVE_NO_FILES
        },
    }
}

fn no_files(candidates: Vec<Candidate>) -> Completions {
    Completions {
        candidates,
        directive: DIRECTIVE_NO_FILES,
    }
}

/// The first line of a help text: a tab or a newline would break the protocol's lines.
fn help(text: Option<&clap::builder::StyledStr>) -> String {
    let text = text.map(ToString::to_string).unwrap_or_default();
    text.lines().next().unwrap_or_default().replace('\t', " ")
}

#[cfg(test)]
mod tests;
