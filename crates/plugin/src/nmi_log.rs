//! NMI's refusals of one pod, read from NMI's log. NMI logs every refused token request once
//! per (pod, reason) and 15 s, at `info` on the `nmi::refusal` target, with the pod, the
//! reason, the detail the pod got and the hint of a fix; in text (the default) or JSON
//! (`--log-format json`). Reading that log through the API (`kubectl logs`, RBAC `pods/log`)
//! needs nothing new from NMI: no extra endpoint on the node, no extra permission beyond what an
//! operator debugging a node has anyway.

use serde::Serialize;

use text::strip_ansi;

mod text;

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
const PROVEN: &str = "cluster state proven again: serving token requests";
/// Where NMI logs both (`nmi::server::track_staleness`). Matched exactly, with the message at
/// the start of the line's message: a pod's text inside another line's value is never one.
const STALENESS_TARGET: &str = "nmi::server::probes";
const REFUSAL_TARGET: &str = "nmi::refusal";

/// When NMI last said its view of the cluster went stale, if it has not said since that it is
/// proven again: the time of that line, as written.
pub fn stale_since(log: &str) -> Option<String> {
    let mut since = None;
    for line in log.lines() {
        match staleness(line) {
            Some((true, time)) => since = Some(time),
            Some((false, _)) => since = None,
            None => {}
        }
    }
    since
}

/// `(stale, time)` of a staleness line of NMI's, JSON or text.
fn staleness(line: &str) -> Option<(bool, String)> {
    if let Some(v) = json_line(line) {
        if v["target"] != STALENESS_TARGET {
            return None;
        }
        let time = v["timestamp"].as_str().unwrap_or_default().to_owned();
        return match v["fields"]["message"].as_str()? {
            STALE => Some((true, time)),
            PROVEN => Some((false, time)),
            _ => None,
        };
    }
    let plain = strip_ansi(line);
    let l = text::line(&plain).filter(|l| l.target == STALENESS_TARGET)?;
    [(true, STALE), (false, PROVEN)]
        .into_iter()
        .find(|(_, message)| text::fields_after(l.rest, message).is_some())
        .map(|(stale, _)| (stale, l.time.to_owned()))
}

/// The refusals of pod `namespace/name` in an NMI log, oldest first.
pub fn refusals_of(log: &str, namespace: &str, name: &str) -> Vec<Refusal> {
    log.lines()
        .filter_map(|l| match json_line(l) {
            Some(v) => parse_json(&v),
            None => parse_text(&strip_ansi(l)),
        })
        .filter(|p| p.pod == name && p.namespace == namespace)
        .map(|p| p.refusal)
        .collect()
}

/// A refusal line's record and whose it is.
struct Parsed {
    pod: String,
    namespace: String,
    refusal: Refusal,
}

/// A line of NMI's JSON log (`--log-format json`): one object per line, every value escaped.
fn json_line(line: &str) -> Option<serde_json::Value> {
    let line = line.trim();
    line.starts_with('{')
        .then(|| serde_json::from_str(line).ok())
        .flatten()
}

fn parse_json(v: &serde_json::Value) -> Option<Parsed> {
    if v["target"] != REFUSAL_TARGET || v["fields"]["message"] != REFUSED {
        return None;
    }
    let f = &v["fields"];
    let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
    Some(Parsed {
        pod: s("pod"),
        namespace: s("namespace"),
        refusal: Refusal {
            time: v["timestamp"].as_str().unwrap_or_default().to_owned(),
            reason: s("reason"),
            detail: s("detail"),
            hint: s("hint"),
            identity: s("identity"),
        },
    })
}

/// `<time>  INFO nmi::refusal: token request refused pod="web" namespace="ns" ... detail="…" hint="…"`
fn parse_text(line: &str) -> Option<Parsed> {
    let l = text::line(line).filter(|l| l.target == REFUSAL_TARGET)?;
    let fields = text::fields_after(l.rest, REFUSED)?;
    let get = |k: &str| fields.iter().find(|f| f.key == k).map(|f| f.value.clone());
    Some(Parsed {
        pod: get("pod")?,
        namespace: get("namespace")?,
        refusal: Refusal {
            time: l.time.to_owned(),
            reason: get("reason").unwrap_or_default(),
            detail: get("detail").unwrap_or_default(),
            hint: get("hint").unwrap_or_default(),
            identity: get("identity").unwrap_or_default(),
        },
    })
}

#[cfg(test)]
mod tests;
