//! The chart's operations kit (values `monitoring.*`): off by default; when on, a PodMonitor
//! that scrapes the ports MIC and NMI expose, alert rules and a Grafana dashboard whose every
//! metric is one MIC or NMI really exports (read from their registries, not from a list).

use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use serde_json::Value;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/charts/pod-identity")
}

/// `helm template` of the chart with `sets`, as JSON documents.
fn render(sets: &[&str]) -> Vec<Value> {
    let helm = &testbed::binaries().expect("helm (make testbin)").helm;
    let mut cmd = Command::new(helm);
    cmd.args(["template", "t"])
        .arg(chart())
        .args(["--kube-version", testbed::CHART_KUBE_VERSION]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm runs");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Every series name MIC and NMI expose: counters with `_total`, histograms' `_bucket`,
/// `_sum` and `_count`, gauges as they are. A labelled family shows only once it has a series,
/// so each is touched once, as MIC and NMI do at work.
fn exported() -> BTreeSet<String> {
    let mic = mic::metrics::Metrics::default();
    mic.assigned(Some(Duration::from_secs(1)));
    mic.deleted();
    mic.arm_duration("vmss_update", Duration::from_secs(1));
    mic.arm_call("vmss_update", "throttled");
    mic.arm_retry("vmss_update");
    mic.set_queue_depth(1);
    mic.event_dropped();
    mic.became_leader();
    let nmi = nmi::metrics::Metrics::new();
    nmi.operation("token", 200, Duration::from_millis(1));
    nmi.imds_operation("200", Duration::from_millis(1));
    nmi.issued(true);
    nmi.refused("unbound");
    let text = mic.encode() + &nmi.encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") || words.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => names.extend([format!("{name}_total")]),
            "histogram" => names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}"))),
            _ => names.extend([name.to_owned()]),
        }
    }
    names
}

/// The `aadpodidentity_*` names a PromQL text uses.
fn used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("aadpodidentity_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn off_by_default() {
    let docs = render(&[]);
    assert!(docs.iter().all(|d| {
        !d["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("monitoring.coreos.com")
    }));
    assert!(
        kind(&docs, "ConfigMap")
            .iter()
            .all(|c| c["data"]["pod-identity.json"].is_null())
    );
}

#[test]
fn the_pod_monitor_scrapes_the_ports_mic_and_nmi_expose() {
    let docs = render(&["monitoring.podMonitor.enabled=true", "nmi.prometheusPort=9191"]);
    let pm = kind(&docs, "PodMonitor");
    assert_eq!(pm.len(), 1);
    let endpoints = &pm[0]["spec"]["podMetricsEndpoints"];
    let components = &pm[0]["spec"]["selector"]["matchExpressions"][1]["values"];
    assert_eq!(components, &serde_json::json!(["mic", "nmi"]));
    let workload = |kind_: &str, component: &str| {
        kind(&docs, kind_)
            .into_iter()
            .find(|w| w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component)
            .unwrap()["spec"]["template"]["spec"]["containers"][0]
            .clone()
    };

    // MIC: by its container port's name.
    let port = endpoints[0]["port"].as_str().unwrap();
    let mic = workload("Deployment", "mic");
    let mic_ports: Vec<&str> = mic["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(mic_ports.contains(&port), "MIC has no port {port}: {mic_ports:?}");

    // NMI declares no container ports (a host port would keep an update's surge pod off the node):
    // its endpoint keeps NMI's container and scrapes the pod IP at --prometheus-port.
    let nmi = workload("DaemonSet", "nmi");
    assert!(nmi["ports"].is_null(), "{nmi}");
    assert!(
        nmi["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--prometheus-port=9191"),
        "{nmi}"
    );
    let relabel = &endpoints[1]["relabelings"];
    assert_eq!(relabel[0]["action"], "keep");
    assert_eq!(relabel[0]["regex"], "nmi;nmi");
    assert_eq!(
        relabel[0]["sourceLabels"][1],
        "__meta_kubernetes_pod_container_name"
    );
    assert_eq!(nmi["name"], "nmi");
    assert_eq!(relabel[1]["sourceLabels"][0], "__meta_kubernetes_pod_ip");
    assert_eq!(relabel[1]["targetLabel"], "__address__");
    assert_eq!(relabel[1]["replacement"], "$1:9191");
}

#[test]
fn alerts_and_dashboard_use_only_metrics_mic_and_nmi_export() {
    let exported = exported();
    assert!(
        exported.contains("aadpodidentity_nmi_refusals_total"),
        "{exported:?}"
    );
    let docs = render(&[
        "monitoring.prometheusRule.enabled=true",
        "monitoring.grafanaDashboard.enabled=true",
    ]);

    let rules = kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let rules = rules[0]["spec"]["groups"][0]["rules"].as_array().unwrap();
    let mut in_rules = BTreeSet::new();
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        let names = used(expr);
        assert!(!names.is_empty(), "{expr}");
        in_rules.extend(names);
        assert!(r["for"].is_string() && r["labels"]["severity"].is_string(), "{r}");
        assert!(
            r["annotations"]["summary"].is_string() && r["annotations"]["description"].is_string(),
            "{r}"
        );
    }
    // What the issue asks alerts on: refusals, NMI staleness, MIC's queue, ARM throttling, assignment latency.
    for want in [
        "aadpodidentity_nmi_refusals_total",
        "aadpodidentity_nmi_state_stale",
        "aadpodidentity_mic_queue_depth",
        "aadpodidentity_mic_arm_throttled_total",
        "aadpodidentity_mic_assignment_latency_seconds_bucket",
    ] {
        assert!(in_rules.contains(want), "no alert on {want}");
    }
    let unknown: Vec<&String> = in_rules.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "alerts on metrics nobody exports: {unknown:?}"
    );

    let dashboards: Vec<&Value> = kind(&docs, "ConfigMap")
        .into_iter()
        .filter(|c| !c["data"]["pod-identity.json"].is_null())
        .collect();
    assert_eq!(dashboards.len(), 1);
    assert_eq!(dashboards[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    let text = dashboards[0]["data"]["pod-identity.json"].as_str().unwrap();
    assert_eq!(
        text.trim_end(),
        std::fs::read_to_string(chart().join("dashboards/pod-identity.json"))
            .unwrap()
            .trim_end()
    );
    let dashboard: Value = serde_json::from_str(text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut in_dashboard = BTreeSet::new();
    for p in panels {
        assert!(p["description"].is_string(), "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            in_dashboard.extend(used(t["expr"].as_str().unwrap()));
        }
    }
    let unknown: Vec<&String> = in_dashboard.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "dashboard panels on metrics nobody exports: {unknown:?}"
    );
}
