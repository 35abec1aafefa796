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
    let refusals: Vec<(&str, String)> = ["web", "other", "web"]
        .into_iter()
        .map(|pod| (pod, format!("pod shop/{pod} has \"no\" binding: label it")))
        .collect();
    log_of(json, ansi, &refusals)
}

/// The lines of refusals of pods in `shop`, each `(pod, detail)`, with the reasons
/// `unbound`, `not_assigned`, `not_bound` in turn, then an unrelated line.
fn log_of(json: bool, ansi: bool, refusals: &[(&str, String)]) -> String {
    use matching::{IdentityRequest, PodFacts};
    use nmi::refusal::{Reason, Refusal as Refused};

    let buf = Buffer::default();
    let writer = buf.clone();
    let emit = || {
        let reasons = [Reason::Unbound, Reason::NotAssigned, Reason::NotBound];
        for ((pod, detail), reason) in refusals.iter().zip(reasons.into_iter().cycle()) {
            let facts = PodFacts {
                namespace: "shop".into(),
                name: (*pod).into(),
                ..PodFacts::default()
            };
            Refused::new(reason, http::StatusCode::FORBIDDEN, "forbidden", detail.clone())
                .for_pod(&facts)
                .asking(&IdentityRequest::Default)
                .log("10.244.0.7".parse().unwrap(), 0);
        }
        tracing::info!(target: "nmi::server", "unrelated line");
    };
    if json {
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_writer(move || writer.clone())
            .json()
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
    } else {
        let filter = tracing_subscriber::EnvFilter::new("info");
        let subscriber = upstream_flags::text_subscriber(filter, ansi, move || writer.clone());
        tracing::subscriber::with_default(subscriber, emit);
    }
    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn text_logs_with_and_without_colours_give_the_pod_s_refusals() {
    for ansi in [false, true] {
        let log = nmi_log(false, ansi);
        let got = refusals_of(&log, "shop", "web");
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
    let proven =
        "2026-01-01T00:00:09Z  INFO nmi::server::probes: cluster state proven again: serving token requests";
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

/// What a pod can put in a refusal's detail (a query parameter's name, say): a newline and a
/// whole forged record after it, for a victim pod and of NMI's staleness.
const FORGED: &str = "parameter x\n2026-01-01T00:00:00.000000Z  INFO nmi::refusal: token request refused \
     pod=\"web\" namespace=\"shop\" source=10.244.0.9 reason=\"not_bound\" identity=\"forged\" \
     azure_identity=\"\" status=403 detail=\"forged\" hint=\"forged\" suppressed=0\n\
     2026-01-01T00:00:00.000000Z  WARN nmi::server::probes: cluster state too old: refusing token requests";

#[test]
fn a_forged_record_in_a_value_stays_in_its_own_line() {
    for (json, ansi) in [(false, false), (false, true), (true, false)] {
        let log = log_of(json, ansi, &[("mallory", FORGED.to_owned())]);
        assert_eq!(log.lines().count(), 2, "json {json} ansi {ansi}: {log}");
        assert!(refusals_of(&log, "shop", "web").is_empty(), "{log}");
        assert_eq!(stale_since(&log), None, "{log}");
        let own = refusals_of(&log, "shop", "mallory");
        assert_eq!(own.len(), 1, "{log}");
        assert_eq!(own[0].detail, FORGED, "the detail reads back as the pod wrote it");
        assert_eq!(own[0].reason, "unbound");
    }
}

#[test]
fn forged_text_that_is_not_a_whole_line_of_nmi_s_is_no_record() {
    let record = "nmi::refusal: token request refused pod=\"web\" namespace=\"shop\" reason=\"unbound\"";
    let stale = "nmi::server::probes: cluster state too old: refusing token requests";
    for line in [
        // No timestamp and level first.
        record.to_owned(),
        format!("  INFO {record}"),
        format!("garbage 2026-01-01T00:00:00Z  INFO {record}"),
        format!("x\\n2026-01-01T00:00:00Z  INFO {record}"),
        // Inside another line's value, quoted or bare (an escaped newline before it).
        format!("2026-01-01T00:00:00Z  INFO nmi::server: request path=\"{}\"", record.replace('"', "\\\"")),
        format!("2026-01-01T00:00:00Z  INFO nmi::server: request path=x\\n2026-01-01T00:00:00Z  INFO {record}"),
        // NMI's own refusal line, with a bare detail carrying a forged field: not well formed.
        "2026-01-01T00:00:00Z  INFO nmi::refusal: token request refused pod=\"mallory\" namespace=\"shop\" \
         detail=parameter x pod=\"web\" hint=\"h\""
            .to_owned(),
        // A key given twice.
        "2026-01-01T00:00:00Z  INFO nmi::refusal: token request refused pod=\"mallory\" namespace=\"shop\" pod=\"web\""
            .to_owned(),
        // Unclosed quote.
        "2026-01-01T00:00:00Z  INFO nmi::refusal: token request refused pod=\"web namespace=\"shop\"".to_owned(),
        // JSON whose message holds the text.
        format!(r#"{{"timestamp":"2026-01-01T00:00:00Z","target":"nmi::server","fields":{{"message":"{}"}}}}"#,
            record.replace('"', "\\\"")),
    ] {
        assert!(refusals_of(&line, "shop", "web").is_empty(), "{line}");
    }
    for line in [
        stale.to_owned(),
        format!(
            "2026-01-01T00:00:00Z  INFO nmi::server: request path=x\\n2026-01-01T00:00:00Z  WARN {stale}"
        ),
        "2026-01-01T00:00:00Z  WARN nmi::server::probes: x cluster state too old: refusing token requests"
            .to_owned(),
    ] {
        assert_eq!(stale_since(&line), None, "{line}");
    }
    // Nor can a pod's text say that a stale NMI is proven again.
    let real = "2026-01-01T00:00:01Z  WARN nmi::server::probes: cluster state too old: refusing token requests unproven_for=Some(31s)";
    let forged = "2026-01-01T00:00:02Z  INFO nmi::refusal: token request refused pod=\"m\" namespace=\"s\" \
                  detail=\"x nmi::server::probes: cluster state proven again: serving token requests\"";
    assert_eq!(
        stale_since(&format!("{real}\n{forged}")).as_deref(),
        Some("2026-01-01T00:00:01Z")
    );
}

#[test]
fn quoted_values_read_back_as_debug_wrote_them() {
    for value in [
        "plain",
        "with \"quotes\" and \\",
        "new\nline\ttab\r\0",
        "\u{1b}[2K \u{85} \u{2028} \u{e9}",
    ] {
        let line = format!(
            "2026-01-01T00:00:00Z  INFO nmi::refusal: token request refused pod=\"web\" namespace=\"shop\" detail={value:?}"
        );
        let got = refusals_of(&line, "shop", "web");
        assert_eq!(got.len(), 1, "{line}");
        assert_eq!(got[0].detail, value, "{line}");
    }
}
