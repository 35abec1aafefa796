use clap::Parser;
use upstream_flags::{COMMON_FLAGS, ParseGo, UpstreamFlag, parse_each};

use super::*;

/// Upstream v1.8.17's own NMI flags (`cmd/nmi/main.go`; `nmi --help` of that build lists these
/// and [`COMMON_FLAGS`]), plus the chart's pre-v1.6.2 `--host-ip`. `--version` exits, so it is
/// checked on its own.
const NMI_FLAGS: &[UpstreamFlag] = &[
    UpstreamFlag::with_value("nmi-listen-address", "127.0.0.1"),
    UpstreamFlag::with_value("nmi-port", "2579"),
    UpstreamFlag::with_value("metadata-ip", "169.254.169.254"),
    UpstreamFlag::with_value("metadata-port", "80"),
    UpstreamFlag::with_value("node", "aks-nodepool1-0"),
    UpstreamFlag::with_value("ipt-update-interval-sec", "60"),
    UpstreamFlag::boolean("forceNamespaced"),
    UpstreamFlag::with_value("MICNamespace", "kube-system"),
    UpstreamFlag::with_value("http-probe-port", "8085"),
    UpstreamFlag::with_value("retry-attempts-for-created", "16"),
    UpstreamFlag::with_value("retry-attempts-for-assigned", "4"),
    UpstreamFlag::with_value("find-identity-retry-interval", "5"),
    UpstreamFlag::boolean("enableProfile"),
    UpstreamFlag::boolean("enableScaleFeatures"),
    UpstreamFlag::boolean("block-instance-metadata"),
    UpstreamFlag::boolean("metadata-header-required"),
    UpstreamFlag::with_value("prometheus-port", "9090"),
    UpstreamFlag::with_value("operation-mode", "managed"),
    UpstreamFlag::boolean("allow-network-plugin-kubenet"),
    UpstreamFlag::with_value("kubelet-config", "/etc/default/kubelet"),
    UpstreamFlag::boolean("set-retry-after-header"),
    UpstreamFlag::boolean("enable-conntrack-deletion"),
    UpstreamFlag::with_value("host-ip", "10.240.0.4"),
];

fn parse(args: &[&str]) -> Flags {
    let mut argv = vec!["nmi"];
    argv.extend_from_slice(args);
    Flags::try_parse_go(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The arguments of one of `examples/upstream-args/*.pod`, with `$(VAR)` expanded as a kubelet would.
fn pod_args(pod: &str) -> Vec<String> {
    let mut argv = vec!["nmi".to_owned()];
    argv.extend(pod.lines().filter_map(|l| l.strip_prefix("arg ")).map(|a| {
        a.replace("$(NODE_NAME)", "aks-nodepool1-0")
            .replace("$(HOST_IP)", "10.240.0.4")
    }));
    argv
}

fn flags_of(notes: &[Note]) -> Vec<&str> {
    notes.iter().map(|n| n.flag.as_str()).collect()
}

#[test]
fn every_upstream_flag_is_accepted_in_each_go_spelling() {
    let all = [NMI_FLAGS, COMMON_FLAGS].concat();
    let parsed: Vec<Flags> = parse_each(&all, &["nmi", "--node=n"]).unwrap_or_else(|e| panic!("{e}"));
    for f in parsed {
        assert!(f.check(&Environment::default()).is_ok(), "{f:?}");
        // Every note is one line.
        assert!(
            f.notes(&Environment::default())
                .iter()
                .all(|n| !n.to_string().contains('\n'))
        );
    }
    let version = Flags::try_parse_go(["nmi", "-version"]).unwrap_err();
    assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
}

#[test]
fn defaults_are_upstream_ports_and_namespaced() {
    let f = parse(&["--node", "n"]);
    assert_eq!((f.port, f.metadata_port, f.prometheus_port), (2579, 80, 9090));
    assert_eq!(f.metadata_ip.to_string(), "169.254.169.254");
    assert!(f.policy().namespaced);
    assert!(f.metadata_header_required && !f.block_instance_metadata && !f.set_retry_after_header);
    assert_eq!(f.mode, Mode::Standard);
    assert_eq!(f.identity_wait(), DEFAULT_IDENTITY_WAIT);
    assert!(f.check(&Environment::default()).is_ok());
    assert!(f.notes(&Environment::default()).is_empty());
}

#[test]
fn honoured_upstream_flags_take_effect() {
    let f = parse(&[
        "-node=n",
        "--operation-mode=Managed",
        "--forceNamespaced",
        "--metadata-header-required=false",
        "-block-instance-metadata",
        "--set-retry-after-header=true",
        "--exception-namespaces=kube-system,ops",
        "--identity-wait=1.5",
        "-nmi-port",
        "2580",
        "--ipt-update-interval-sec=30",
    ]);
    assert_eq!(f.mode, Mode::Managed);
    assert_eq!(f.force_namespaced, Some(true));
    assert!(!f.metadata_header_required && f.block_instance_metadata && f.set_retry_after_header);
    assert_eq!(f.identity_wait(), Duration::from_millis(1500));
    assert_eq!((f.port, f.ipt_update_interval_sec), (2580, 30));
    let allowed = f.policy().exception_namespaces.unwrap();
    assert!(allowed.contains("ops") && allowed.contains("kube-system"));
    assert!(f.notes(&Environment::default()).is_empty());
}

#[test]
fn upstreams_manifests_start_without_a_note_and_the_chart_with_every_option_notes_what_differs() {
    let rbac = Flags::try_parse_go(pod_args(include_str!(
        "../../../../examples/upstream-args/deployment-rbac.nmi.pod"
    )))
    .unwrap();
    assert_eq!(rbac.node, "aks-nodepool1-0");
    assert!(rbac.check(&Environment::default()).is_ok());
    assert!(rbac.notes(&Environment::default()).is_empty());
    assert_eq!(rbac.upstream.kubenet_check().map(|c| c.explicit), Some(false));

    let managed = Flags::try_parse_go(pod_args(include_str!(
        "../../../../examples/upstream-args/managed-mode.nmi.pod"
    )))
    .unwrap();
    assert_eq!(managed.mode, Mode::Managed);
    assert!(
        managed.check(&Environment::default()).is_ok() && managed.notes(&Environment::default()).is_empty()
    );

    let chart = Flags::try_parse_go(pod_args(include_str!(
        "../../../../examples/upstream-args/chart-all-args.nmi.pod"
    )))
    .unwrap();
    assert!(chart.check(&Environment::forced(Some("true"))).is_ok());
    assert_eq!((chart.probe_port, chart.prometheus_port), (8086, 9091));
    assert!(chart.block_instance_metadata && chart.set_retry_after_header);
    assert_eq!(chart.log_format, LogFormat::Json);
    assert_eq!(chart.common.log_filter("nmi"), "info,nmi=debug");
    assert_eq!(chart.identity_wait(), Duration::from_secs(2));
    assert_eq!(chart.upstream.kubenet_check(), None);
    assert_eq!(
        flags_of(&chart.notes(&Environment::forced(Some("true")))),
        [
            "--MICNamespace",
            "--retry-attempts-for-created/--retry-attempts-for-assigned/--find-identity-retry-interval",
            "--custom-user-agent",
        ]
    );

    let legacy = Flags::try_parse_go(pod_args(include_str!(
        "../../../../examples/upstream-args/chart-legacy-tag.nmi.pod"
    )))
    .unwrap();
    assert_eq!(
        flags_of(&legacy.notes(&Environment::forced(Some("false")))),
        ["--forceNamespaced=false / FORCENAMESPACED", "--host-ip"]
    );
}

#[test]
fn each_flag_not_honoured_gets_one_note() {
    let cases: &[(&[&str], &str)] = &[
        (&["--host-ip=10.0.0.4"], "--host-ip"),
        (&["--MICNamespace=default"], "--MICNamespace"),
        (
            &["--retry-attempts-for-created=16"],
            "--retry-attempts-for-created/--retry-attempts-for-assigned/--find-identity-retry-interval",
        ),
        (&["--enableProfile"], "--enableProfile"),
        (&["--enableScaleFeatures=false"], "--enableScaleFeatures=false"),
        (&["--custom-user-agent=x"], "--custom-user-agent"),
        (
            &["--forceNamespaced=false"],
            "--forceNamespaced=false / FORCENAMESPACED",
        ),
        (&["--logtostderr=false"], "--logtostderr=false"),
        (&["--log_dir=/tmp"], "--log_dir"),
    ];
    for (args, flag) in cases {
        let mut all = vec!["--node=n"];
        all.extend_from_slice(args);
        assert_eq!(
            flags_of(&parse(&all).notes(&Environment::default())),
            [*flag],
            "{args:?}"
        );
    }
    // Values that ask for what NMI does anyway are not noted.
    let quiet = parse(&[
        "--node=n",
        "--enableProfile=false",
        "--enableScaleFeatures",
        "--enable-conntrack-deletion",
        "--enable-conntrack-deletion=false",
        "--allow-network-plugin-kubenet=false",
        "--forceNamespaced=true",
        "--logtostderr",
    ]);
    assert!(quiet.notes(&Environment::default()).is_empty());
}

#[test]
fn namespacing_from_flag_and_environment() {
    let f = parse(&["--node=n"]);
    assert_eq!(
        flags_of(&f.notes(&Environment::forced(Some("false")))),
        ["--forceNamespaced=false / FORCENAMESPACED"]
    );
    assert!(f.policy().namespaced, "still namespaced after the note");
    let cross = parse(&["--node=n", "--allow-cross-namespace"]);
    assert!(cross.notes(&Environment::forced(Some("false"))).is_empty());
    assert!(cross.check(&Environment::forced(Some("true"))).is_err());
    assert!(
        parse(&["--node=n", "--allow-cross-namespace", "--forceNamespaced"])
            .check(&Environment::default())
            .is_err()
    );
}

#[test]
fn retry_flags_map_onto_the_identity_wait_unless_it_is_given() {
    let f = parse(&["--node=n", "--find-identity-retry-interval=2"]);
    assert_eq!(f.identity_wait(), Duration::from_secs(40));
    let f = parse(&[
        "--node=n",
        "--find-identity-retry-interval=2",
        "--identity-wait=7",
    ]);
    assert_eq!(f.identity_wait(), Duration::from_secs(7));
}

#[test]
fn cross_namespace_needs_the_explicit_flag_and_not_managed_mode() {
    let f = parse(&["--node=n", "--allow-cross-namespace"]);
    assert!(!f.policy().namespaced);
    let f = parse(&["--node=n", "--allow-cross-namespace", "--operation-mode=managed"]);
    assert!(f.check(&Environment::default()).is_err());
    assert!(
        Flags::try_parse_from(["nmi"])
            .unwrap()
            .check(&Environment::default())
            .is_err()
    );
}

#[test]
fn a_boolean_takes_no_separate_value_as_in_go() {
    assert!(Flags::try_parse_go(["nmi", "--node=n", "--block-instance-metadata", "false"]).is_err());
    // Our own flag keeps its optional separate value.
    assert!(!parse(&["--node=n", "--manage-iptables", "false"]).manage_iptables);
}

#[test]
fn conntrack_deletion_is_on_unless_turned_off_and_the_cni_gate_off_unless_given() {
    let f = parse(&["--node=n"]);
    assert!(f.upstream.conntrack_deletion());
    assert_eq!(f.cni.conf_dir, None);
    assert!(f.cni.enabled);
    assert!(
        parse(&["--node=n", "--enable-conntrack-deletion"])
            .upstream
            .conntrack_deletion()
    );
    assert!(
        !parse(&["--node=n", "--enable-conntrack-deletion=false"])
            .upstream
            .conntrack_deletion()
    );
    let g = parse(&[
        "--node=n",
        "--cni-conf-dir=/etc/cni/net.d",
        "--cni-bin-dir=/opt/cni/bin",
        "--cni-ready-file=/run/pod-identity/interception-ready",
        "--cni-plugin=false",
    ]);
    assert_eq!(
        g.cni.conf_dir.as_deref(),
        Some(std::path::Path::new("/etc/cni/net.d"))
    );
    assert_eq!(g.cni.plugin_binary, std::path::Path::new(DEFAULT_PLUGIN_BINARY));
    assert!(!g.cni.enabled);
}

#[test]
fn the_identity_ready_condition_is_on_unless_turned_off() {
    assert!(parse(&["--node=n"]).identity_ready_condition);
    assert!(parse(&["--node=n", "--identity-ready-condition"]).identity_ready_condition);
    assert!(parse(&["--node=n", "--identity-ready-condition=true"]).identity_ready_condition);
    assert!(!parse(&["--node=n", "--identity-ready-condition=false"]).identity_ready_condition);
    assert!(!parse(&["--node=n", "-identity-ready-condition=false"]).identity_ready_condition);
}

/// What the chart's `helm test` pod runs (templates/tests/token-path.yaml): no --node there.
#[test]
fn test_token_path_takes_the_charts_arguments_without_a_node() {
    let env = Environment::default();
    for (args, expect_token) in [
        (&["test-token-path"][..], false),
        (&["test-token-path", "--expect-token"][..], true),
    ] {
        let flags = parse(args);
        let Some(Command::TestTokenPath(check)) = &flags.command else {
            panic!("{args:?}: {:?}", flags.command);
        };
        assert_eq!(check.expect_token, expect_token);
        assert_eq!(check.url, crate::token_path_check::DEFAULT_URL);
        assert_eq!(check.timeout, Duration::from_secs(120));
        flags.check(&env).expect("no --node needed");
    }
    let flags = parse(&[
        "test-token-path",
        "--pod-namespace=ns",
        "--pod-name=p",
        "--timeout=5",
    ]);
    let Some(Command::TestTokenPath(check)) = flags.command else {
        panic!("a test-token-path command");
    };
    assert_eq!(
        (check.pod_namespace.as_deref(), check.pod_name.as_deref()),
        (Some("ns"), Some("p"))
    );
    assert_eq!(check.timeout, Duration::from_secs(5));
}

/// The flags' errors are NMI's `Error`, worded as before: clap shows a value parser's text after
/// the flag, and `main` prints a failed check's as it is.
#[test]
fn flag_errors_keep_their_words() {
    let e = Flags::try_parse_from(["nmi", "--node=n", "--pod-wait=soon"]).unwrap_err();
    assert!(e.to_string().contains("`soon` is not a number of seconds"), "{e}");
    let e = Flags::try_parse_from(["nmi"])
        .unwrap()
        .check(&Environment::default())
        .unwrap_err();
    assert!(matches!(e, crate::Error::Flags(_)));
    assert_eq!(e.to_string(), "--node (or NODE_NAME) is required");
}
