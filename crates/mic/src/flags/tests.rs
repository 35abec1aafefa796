use upstream_flags::{COMMON_FLAGS, ParseGo, UpstreamFlag, parse_each};

use super::*;

/// Upstream v1.8.17's own MIC flags (`cmd/mic/main.go`; `mic --help` of that build lists these
/// and [`COMMON_FLAGS`]). `--version` exits, so it is checked on its own.
const MIC_FLAGS: &[UpstreamFlag] = &[
    UpstreamFlag::with_value("kubeconfig", "/var/lib/kubelet/kubeconfig"),
    UpstreamFlag::with_value("cloudconfig", "/etc/kubernetes/azure.json"),
    UpstreamFlag::boolean("forceNamespaced"),
    UpstreamFlag::with_value("syncRetryDuration", "3600s"),
    UpstreamFlag::with_value("leader-election-instance", "mic-0"),
    UpstreamFlag::with_value("leader-election-namespace", "kube-system"),
    UpstreamFlag::with_value("leader-election-name", "aad-pod-identity-mic"),
    UpstreamFlag::with_value("leader-election-duration", "15s"),
    UpstreamFlag::with_value("http-probe-port", "8080"),
    UpstreamFlag::with_value("prometheus-port", "8888"),
    UpstreamFlag::boolean("enableProfile"),
    UpstreamFlag::boolean("enableScaleFeatures"),
    UpstreamFlag::with_value("createDeleteBatch", "20"),
    UpstreamFlag::with_value("clientQps", "5"),
    UpstreamFlag::with_value("immutable-user-msis", "00000000-0000-0000-0000-000000000000"),
    UpstreamFlag::with_value("config-map-name", "aad-pod-identity-config"),
    UpstreamFlag::with_value("type-upgrade-status-key", "type-upgrade-status"),
    UpstreamFlag::boolean("enable-type-upgrade"),
    UpstreamFlag::with_value("update-user-msi-max-retry", "2"),
    UpstreamFlag::with_value("update-user-msi-retry-interval", "1s"),
    UpstreamFlag::with_value("identity-assignment-reconcile-interval", "3m"),
    // Spellings of the feature-flag docs' headings, as some users wrote them.
    UpstreamFlag::with_value("client-qps", "5"),
    UpstreamFlag::with_value("sync-retry-duration", "1h"),
    UpstreamFlag::boolean("enable-scale-features"),
];

fn parse(args: &[&str]) -> Flags {
    let mut argv = vec!["mic"];
    argv.extend_from_slice(args);
    Flags::try_parse_go(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The arguments of one of `examples/upstream-args/*.pod`.
fn pod_args(pod: &str) -> Vec<&str> {
    let mut argv = vec!["mic"];
    argv.extend(pod.lines().filter_map(|l| l.strip_prefix("arg ")));
    argv
}

fn flags_of(notes: &[Note]) -> Vec<&str> {
    notes.iter().map(|n| n.flag.as_str()).collect()
}

#[test]
fn every_upstream_flag_is_accepted_in_each_go_spelling() {
    let all = [MIC_FLAGS, COMMON_FLAGS].concat();
    let parsed: Vec<Flags> = parse_each(&all, &["mic"]).unwrap_or_else(|e| panic!("{e}"));
    for f in parsed {
        assert!(f.check(&Environment::default()).is_ok(), "{f:?}");
        // Every note is one line.
        assert!(
            f.notes(&Environment::default())
                .iter()
                .all(|n| !n.to_string().contains('\n'))
        );
    }
    let version = Flags::try_parse_go(["mic", "-version"]).unwrap_err();
    assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
}

#[test]
fn honoured_upstream_flags_take_effect() {
    let f = parse(&[
        "-cloudconfig=/etc/kubernetes/azure.json",
        "--forceNamespaced=true",
        "-immutable-user-msis",
        "a,b",
        "--identity-assignment-reconcile-interval=3m",
        "--leader-election-duration=1m30s",
        "-leader-election-namespace=kube-system",
        "--http-probe-port=8081",
        "--log-format=json",
    ]);
    assert_eq!(f.force_namespaced, Some(true));
    assert_eq!(f.immutable_user_msis, ["a", "b"]);
    assert_eq!(f.reconcile_interval, Duration::from_secs(180));
    assert_eq!(f.leader_duration, Duration::from_secs(90));
    assert_eq!(
        (f.leader_namespace.as_str(), f.http_probe_port),
        ("kube-system", 8081)
    );
    assert!(f.check(&Environment::default()).is_ok() && f.notes(&Environment::default()).is_empty());
    let settings = f.settings(&CloudConfig::default());
    assert!(settings.policy.namespaced);
    assert_eq!(settings.drift_interval, Duration::from_secs(180));
    assert!(settings.protected_client_ids.contains("a"));
}

#[test]
fn upstreams_manifest_starts_without_a_note_and_the_chart_with_every_option_notes_what_differs() {
    let rbac = Flags::try_parse_go(pod_args(include_str!(
        "../../../../examples/upstream-args/deployment-rbac.mic.pod"
    )))
    .unwrap();
    assert_eq!(rbac.common.logtostderr, Some(true));
    assert!(rbac.check(&Environment::default()).is_ok() && rbac.notes(&Environment::default()).is_empty());

    let chart = Flags::try_parse_go(pod_args(include_str!(
        "../../../../examples/upstream-args/chart-all-args.mic.pod"
    )))
    .unwrap();
    assert!(chart.check(&Environment::forced(Some("true"))).is_ok());
    assert_eq!(
        (
            chart.leader_name.as_str(),
            chart.leader_duration,
            chart.http_probe_port
        ),
        ("aad-pod-identity-mic-chart", Duration::from_secs(20), 8081)
    );
    assert_eq!(chart.reconcile_interval, Duration::from_secs(120));
    assert_eq!(
        chart.common.user_agent("MIC", "1"),
        "pod-identity/MIC/1 contoso-aks/1.0"
    );
    assert_eq!(
        flags_of(&chart.notes(&Environment::forced(Some("true")))),
        [
            "--syncRetryDuration",
            "--createDeleteBatch",
            "--clientQps",
            "--update-user-msi-max-retry",
            "--update-user-msi-retry-interval",
        ]
    );
    // Upstream's chart sets FORCENAMESPACED="false" by default.
    assert_eq!(
        flags_of(&rbac.notes(&Environment::forced(Some("false")))),
        ["--forceNamespaced=false / FORCENAMESPACED"]
    );
}

#[test]
fn each_flag_not_honoured_gets_one_note() {
    let cases: &[(&[&str], &str)] = &[
        (&["--syncRetryDuration=1h"], "--syncRetryDuration"),
        (&["--enableProfile"], "--enableProfile"),
        (&["--createDeleteBatch=20"], "--createDeleteBatch"),
        (&["-clientQps=5"], "--clientQps"),
        (&["--config-map-name=x"], "--config-map-name"),
        (&["--type-upgrade-status-key=x"], "--type-upgrade-status-key"),
        (&["--enable-type-upgrade"], "--enable-type-upgrade"),
        (&["--update-user-msi-max-retry=2"], "--update-user-msi-max-retry"),
        (
            &["--update-user-msi-retry-interval=1s"],
            "--update-user-msi-retry-interval",
        ),
        (
            &["--forceNamespaced=false"],
            "--forceNamespaced=false / FORCENAMESPACED",
        ),
        (&["--log_file=/x"], "--log_file"),
    ];
    for (args, flag) in cases {
        assert_eq!(
            flags_of(&parse(args).notes(&Environment::default())),
            [*flag],
            "{args:?}"
        );
    }
    let quiet = parse(&[
        "--enableProfile=false",
        "--enableScaleFeatures",
        "--enable-type-upgrade=false",
        "--custom-user-agent=x",
        "--logtostderr",
        "-v=3",
    ]);
    assert!(quiet.notes(&Environment::default()).is_empty());
}

#[test]
fn force_namespaced_takes_a_value_and_contradictions_are_refused() {
    assert_eq!(parse(&["--forceNamespaced=false"]).force_namespaced, Some(false));
    assert_eq!(parse(&["-forceNamespaced"]).force_namespaced, Some(true));
    assert!(
        parse(&["--forceNamespaced", "--allow-cross-namespace"])
            .check(&Environment::default())
            .is_err()
    );
    assert!(
        parse(&["--allow-cross-namespace"])
            .check(&Environment::forced(Some("true")))
            .is_err()
    );
    let cross = parse(&["--allow-cross-namespace"]);
    assert!(
        cross.check(&Environment::forced(Some("false"))).is_ok()
            && cross.notes(&Environment::forced(Some("false"))).is_empty()
    );
    assert!(!cross.settings(&CloudConfig::default()).policy.namespaced);
}

#[test]
fn the_webhook_is_off_unless_a_port_is_given() {
    assert!(parse(&[]).webhook().is_none());
    assert!(parse(&["--webhook-port=0"]).webhook().is_none());
    let on = parse(&["--webhook-port=9443", "-webhook-cert-dir=/certs"])
        .webhook()
        .expect("on with a port");
    assert_eq!(on.addr.port(), 9443);
    assert!(
        on.addr.ip().is_unspecified(),
        "every interface: the Service dials the pod IP"
    );
    assert_eq!(on.cert_dir, std::path::Path::new("/certs"));
    assert_eq!(on.reload_interval, crate::webhook::CERT_RELOAD_INTERVAL);
    assert_eq!(
        parse(&[]).webhook_cert_dir,
        std::path::Path::new("/etc/pod-identity/webhook")
    );
}
