//! NMI's refusals of one pod, read from NMI's log. NMI logs every refused token request once
//! per (pod, reason) and 15 s, at `info` on the `nmi::refusal` target, with the pod, the
//! reason, the detail the pod got and the hint of a fix; in text (the default) or JSON
//! (`--log-format json`). Reading that log through the API (`kubectl logs`, RBAC `pods/log`)
//! needs nothing new from NMI: no extra endpoint on the node, no extra permission beyond what an
//! operator debugging a node has anyway.

use serde::Serialize;

/// The message of NMI's refusal lines.
const REFUSED: &str = "token request refused";

/// One refused request, as NMI logged it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The log line's timestamp, as written.
    pub time: String,
    /// `unbound`, `not_assigned`, ... (`aadpodidentity_nmi_refusals_total`'s `reason`).
    pub reason: String,
    /// What the pod was told.
    pub detail: String,
    /// NMI's hint of the fix.
    pub hint: String,
    /// The identity the request asked for.
    pub identity: String,
}

/// NMI's warning when a watch has failed for longer than `--max-state-staleness` (it then refuses
/// every token request), and its line when the watches are proven again. NMI's readiness does
/// not show this: its `/readyz` is about the first sync and the rules.
const STALE: &str = "cluster state too old: refusing token requests";
const PROVEN: &str = "cluster state proven again";

/// When NMI last said its view of the cluster went stale, if it has not said since that it is
/// proven again: the time of that line, as written.
pub fn stale_since(log: &str) -> Option<String> {
    let mut since = None;
    for line in log.lines() {
        if line.contains(STALE) {
            let line = strip_ansi(line);
            let time = serde_json::from_str::<serde_json::Value>(line.trim())
                .ok()
                .and_then(|v| v["timestamp"].as_str().map(str::to_owned))
                .unwrap_or_else(|| line.split_whitespace().next().unwrap_or_default().to_owned());
            since = Some(time);
        } else if line.contains(PROVEN) {
            since = None;
        }
    }
    since
}

/// The refusals of pod `namespace/name` in an NMI log, oldest first.
pub fn refusals_of(log: &str, namespace: &str, name: &str) -> Vec<Refusal> {
    log.lines()
        .filter(|l| l.contains(REFUSED))
        .filter_map(|l| parse_json(l).or_else(|| parse_text(&strip_ansi(l))))
        .filter(|(pod, ns, _)| pod == name && ns == namespace)
        .map(|(_, _, r)| r)
        .collect()
}

type Parsed = (String, String, Refusal);

fn parse_json(line: &str) -> Option<Parsed> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if v["target"] != "nmi::refusal" {
        return None;
    }
    let f = &v["fields"];
    let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
    Some((
        s("pod"),
        s("namespace"),
        Refusal {
            time: v["timestamp"].as_str().unwrap_or_default().to_owned(),
            reason: s("reason"),
            detail: s("detail"),
            hint: s("hint"),
            identity: s("identity"),
        },
    ))
}

/// `<time>  INFO nmi::refusal: token request refused pod="web" namespace="ns" ... detail=<text> hint="..."`
fn parse_text(line: &str) -> Option<Parsed> {
    let (head, fields) = line.split_once(&format!("nmi::refusal: {REFUSED}"))?;
    let time = head.split_whitespace().next().unwrap_or_default().to_owned();
    // `detail` is logged with Display (unquoted, may hold spaces): it runs to ` hint=`.
    let detail = fields
        .split_once(" detail=")
        .map(|(_, rest)| rest.split_once(" hint=").map_or(rest, |(d, _)| d))
        .unwrap_or_default()
        .to_owned();
    Some((
        quoted(fields, "pod")?,
        quoted(fields, "namespace")?,
        Refusal {
            time,
            reason: quoted(fields, "reason").unwrap_or_default(),
            detail,
            hint: quoted(fields, "hint").unwrap_or_default(),
            identity: quoted(fields, "identity").unwrap_or_default(),
        },
    ))
}

/// The value of ` key="..."` (Debug-quoted, `\"` escaped).
fn quoted(fields: &str, key: &str) -> Option<String> {
    let start = fields.find(&format!(" {key}=\""))? + key.len() + 3;
    let mut out = String::new();
    let mut chars = fields[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// Without terminal colour codes (`ESC [ ... m`), which NMI's text log carries by default.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// NMI's own refusal lines (`nmi::refusal::Refusal::log`), through the formatter NMI uses
    /// (`upstream_flags::init_logging`: text by default, JSON with `--log-format json`).
    fn nmi_log(json: bool, ansi: bool) -> String {
        use matching::{IdentityRequest, PodFacts};
        use nmi::refusal::{Reason, Refusal as Refused};

        let buf = Buffer::default();
        let writer = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_writer(move || writer.clone());
        let emit = || {
            for (pod, reason) in [
                ("web", Reason::Unbound),
                ("other", Reason::NotAssigned),
                ("web", Reason::NotBound),
            ] {
                let facts = PodFacts {
                    namespace: "shop".into(),
                    name: pod.into(),
                    ..PodFacts::default()
                };
                Refused::new(
                    reason,
                    http::StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("pod shop/{pod} has \"no\" binding: label it"),
                )
                .for_pod(&facts)
                .asking(&IdentityRequest::Default)
                .log("10.244.0.7".parse().unwrap(), 0);
            }
            tracing::info!(target: "nmi::server", "unrelated line");
        };
        if json {
            tracing::subscriber::with_default(builder.json().finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn text_logs_with_and_without_colours_give_the_pod_s_refusals() {
        for ansi in [false, true] {
            let got = refusals_of(&nmi_log(false, ansi), "shop", "web");
            assert_eq!(got.len(), 2, "ansi {ansi}: {got:?}");
            assert_eq!(got[0].reason, "unbound");
            assert_eq!(got[1].reason, "not_bound");
            assert_eq!(got[0].detail, "pod shop/web has \"no\" binding: label it");
            assert_eq!(got[0].hint, nmi::refusal::Reason::Unbound.hint());
            assert_eq!(got[0].identity, "the default identity");
            assert!(got[0].time.starts_with("20"), "{:?}", got[0].time);
        }
    }

    #[test]
    fn json_logs_give_the_same() {
        let got = refusals_of(&nmi_log(true, false), "shop", "web");
        assert_eq!(
            got.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>(),
            ["unbound", "not_bound"]
        );
        assert_eq!(got[0].detail, "pod shop/web has \"no\" binding: label it");
    }

    #[test]
    fn a_stale_view_counts_until_nmi_says_it_is_proven_again() {
        let stale = "2026-01-01T00:00:01Z  WARN nmi::server::probes: cluster state too old: refusing token requests unproven_for=Some(31s)";
        let proven = "2026-01-01T00:00:09Z  INFO nmi::server::probes: cluster state proven again: serving token requests";
        assert_eq!(stale_since(""), None);
        assert_eq!(stale_since(stale).as_deref(), Some("2026-01-01T00:00:01Z"));
        assert_eq!(stale_since(&format!("{stale}\n{proven}")), None);
        assert_eq!(
            stale_since(&format!("{proven}\n{stale}")).as_deref(),
            Some("2026-01-01T00:00:01Z")
        );
        let json = r#"{"timestamp":"2026-01-01T00:00:05Z","level":"WARN","fields":{"message":"cluster state too old: refusing token requests"},"target":"nmi::server::probes"}"#;
        assert_eq!(stale_since(json).as_deref(), Some("2026-01-01T00:00:05Z"));
    }

    #[test]
    fn other_pods_and_namespaces_are_left_out() {
        let log = nmi_log(false, false);
        assert_eq!(refusals_of(&log, "shop", "other").len(), 1);
        assert!(refusals_of(&log, "elsewhere", "web").is_empty());
        assert!(refusals_of("garbage\n{\"not\": \"nmi\"}", "shop", "web").is_empty());
    }
}
