use clap::CommandFactory;

use super::*;
use crate::cli::Args;

fn complete_words(words: &[&str]) -> Completions {
    let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
    complete(Args::command(), &words)
}

fn values(c: &Completions) -> Vec<&str> {
    c.candidates.iter().map(|c| c.value.as_str()).collect()
}

#[test]
fn the_subcommands_first() {
    let c = complete_words(&[""]);
    assert_eq!(values(&c), ["explain", "check", "completion", "help"]);
    assert_eq!(c.directive, DIRECTIVE_NO_FILES);
    assert!(
        c.candidates[0]
            .help
            .starts_with("Walks the chain from a pod to its token"),
        "{c:?}"
    );
    assert_eq!(values(&complete_words(&["ch"])), ["check"]);
    // Nothing typed at all: kubectl always sends the current word, but an empty list is the same.
    assert_eq!(values(&complete(Args::command(), &[]))[0], "explain");
}

#[test]
fn flags_of_the_subcommand_include_the_global_ones() {
    let c = complete_words(&["explain", "--as"]);
    assert_eq!(values(&c), ["--as", "--as-group", "--as-uid"]);
    let all = complete_words(&["check", "--"]);
    for flag in [
        "--kubeconfig",
        "--context",
        "--cluster",
        "--user",
        "--namespace",
        "--request-timeout",
        "--output",
    ] {
        assert!(values(&all).contains(&flag), "{flag} in {:?}", values(&all));
    }
}

#[test]
fn a_flag_s_fixed_values_after_it_or_its_equals_sign() {
    assert_eq!(
        values(&complete_words(&["explain", "web", "-o", ""])),
        ["text", "json", "yaml"]
    );
    assert_eq!(values(&complete_words(&["check", "--output", "y"])), ["yaml"]);
    assert_eq!(
        values(&complete_words(&["check", "--output=j"])),
        ["--output=json"]
    );
    assert_eq!(values(&complete_words(&["completion", "f"])), ["fish"]);
    assert!(complete_words(&["completion", "fish", ""]).candidates.is_empty());
    let pod = complete_words(&["explain", "w"]);
    assert!(pod.candidates.is_empty());
    assert_eq!(pod.directive, DIRECTIVE_NO_FILES);
}

#[test]
fn a_path_flag_leaves_the_shell_its_file_names() {
    let c = complete_words(&["check", "--kubeconfig", ""]);
    assert!(c.candidates.is_empty());
    assert_eq!(c.directive, DIRECTIVE_FILES);
    // A free-form value (a namespace) offers nothing, and no file names either.
    assert_eq!(
        complete_words(&["explain", "-n", ""]).directive,
        DIRECTIVE_NO_FILES
    );
}

#[test]
fn values_already_given_are_skipped_over() {
    // `-n shop` and `-ojson` carry values: `check` is still the subcommand.
    let c = complete_words(&["-n", "shop", "-ojson", "--context=dev", "check", "--nmi-s"]);
    assert_eq!(values(&c), ["--nmi-selector"]);
}

#[test]
fn the_protocol_is_a_line_per_candidate_then_the_directive() {
    let c = Completions {
        candidates: vec![
            Candidate {
                value: "json".into(),
                help: "The report as one JSON object".into(),
            },
            Candidate {
                value: "yaml".into(),
                help: String::new(),
            },
        ],
        directive: DIRECTIVE_NO_FILES,
    };
    assert_eq!(c.protocol(), "json\tThe report as one JSON object\nyaml\n:4\n");
}

#[test]
fn the_completion_script_completes_the_standalone_binary() {
    let mut out = Vec::new();
    script(clap_complete::Shell::Bash, Args::command(), &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("kubectl-pod_identity"), "{text}");
    assert!(text.contains("--request-timeout"), "{text}");
}
