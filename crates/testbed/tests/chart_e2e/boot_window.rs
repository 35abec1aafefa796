//! The boot window (issue 21 §6), on the real node: after a reboot the kubelet restarts the node's
//! pods at once, while NMI's rules, wiped by the reboot, are back only once NMI runs again. Without
//! the CNI gate those pods would reach the VM's IMDS (scripts/node.sh routes 169.254.169.254 there,
//! as Azure does) with the node's identities. Here NMI is held off the node across a reboot
//! (`scripts/node.sh reboot`: every container and process stops, NMI's rules, conntrack and the
//! node's /run go), so the restarted pods come up strictly before NMI; the plugin must keep their
//! sandboxes off the network until NMI is back, and then the token poller gets its own identity's
//! tokens, from NMI, from its first ask.

use super::*;

/// The node's directories (scripts/node.sh; the chart's nmi.cni values in scripts/chart.sh).
struct NodeDirs {
    conflist: PathBuf,
    plugin: PathBuf,
    ready: PathBuf,
}

impl NodeDirs {
    fn of(sb: &Sandbox) -> Self {
        let nd = sb.state.join(format!("node-{REAL_NODE}"));
        NodeDirs {
            conflist: nd.join(format!("cni/10-{NETNS}-{REAL_NODE}.conflist")),
            plugin: nd.join("cni-bin/pod-identity-cni"),
            ready: nd.join("run/interception-ready"),
        }
    }

    fn chained(&self) -> bool {
        std::fs::read_to_string(&self.conflist)
            .expect("the node's CNI configuration")
            .contains("\"pod-identity-cni\"")
    }
}

/// After `helm install`: the plugin is in the node's bin directory and chained, and NMI has
/// written its ready file.
pub fn gate_is_installed(sb: &Sandbox) {
    let dirs = NodeDirs::of(sb);
    eventually("NMI chains its CNI plugin", 30, || dirs.chained().then_some(()));
    assert!(dirs.plugin.exists(), "{} is installed", dirs.plugin.display());
    assert!(
        dirs.ready.exists(),
        "NMI's ready file {} is written",
        dirs.ready.display()
    );
}

/// After `helm uninstall`: the plugin is out of the configuration and the bin directory, and the
/// ready file is gone.
pub fn gate_is_removed(sb: &Sandbox) {
    let dirs = NodeDirs::of(sb);
    assert!(
        !dirs.chained(),
        "the plugin is taken out of {}",
        dirs.conflist.display()
    );
    assert!(!dirs.plugin.exists() && !dirs.ready.exists());
}

/// Keeps NMI's DaemonSet off the node (`hold`) or lets it back: a node label no node has, in its
/// pod template's nodeSelector.
fn hold_nmi(sb: &Sandbox, hold: bool) {
    let value = if hold { "\"off\"" } else { "null" };
    let patch = format!(
        r#"{{"spec":{{"template":{{"spec":{{"nodeSelector":{{"pod-identity-test/held":{value}}}}}}}}}}}"#
    );
    sb.kubectl_ok(&[
        "-n",
        RELEASE_NS,
        "patch",
        "daemonset",
        &format!("{RELEASE}-nmi"),
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// The node's refusals of `pod`'s sandbox, one `<count> <message>` line per event.
fn sandbox_failures(sb: &Sandbox, pod: &str) -> String {
    sb.kubectl_ok(&[
        "-n",
        "default",
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason=FailedCreatePodSandBox"),
        "-o",
        "jsonpath={range .items[*]}{.count} {.message}{\"\\n\"}{end}",
    ])
}

/// The reboot with NMI held off, then NMI back. The token poller (label aadpodidbinding: myapp)
/// must be running when this is called.
pub fn reboot_keeps_pods_off_the_network_until_nmi_is_back(sb: &Sandbox) {
    let dirs = NodeDirs::of(sb);
    hold_nmi(sb, true);
    eventually("NMI's pod gone from the node", 120, || {
        nmi_pods_as(sb, "name").trim().is_empty().then_some(())
    });
    assert!(
        node_nat_rules().contains("-j aad-metadata"),
        "NMI stopped: its rules stay (fail-closed)"
    );

    sb.run("node.sh", &["reboot"]);
    let rules = node_nat_rules();
    assert!(
        !rules.contains("aad-metadata"),
        "the reboot wiped NMI's rules:\n{rules}"
    );
    assert!(
        rules.contains("-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT"),
        "nothing stands between a networked pod and the VM's IMDS now:\n{rules}"
    );
    assert!(!dirs.ready.exists(), "the reboot emptied the node's /run");
    assert!(
        dirs.chained(),
        "the CNI configuration on disk still chains the plugin"
    );

    // The kubelet restarts the poller, whose sandbox the plugin refuses a network.
    let refused = eventually("the poller's sandbox refused a network", 120, || {
        let events = sandbox_failures(sb, "token-poller");
        events
            .lines()
            .find(|m| m.contains("NMI's interception of 169.254.169.254 is not in place"))
            .map(str::to_owned)
    });
    eprintln!("boot window: the restarted poller's sandbox: {refused}");
    assert!(
        parse_asks(&poller_log(sb)).is_empty(),
        "no container of the poller runs before NMI:\n{}",
        poller_log(sb)
    );
    // Still closed a while later: the kubelet's retries are refused too (an event per sandbox it
    // tried, or one whose count grows).
    eventually("the kubelet's retry of the poller's sandbox refused", 180, || {
        let events = sandbox_failures(sb, "token-poller");
        let tries: u32 = events
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
            .sum();
        (tries > 1).then_some(())
    });
    assert!(parse_asks(&poller_log(sb)).is_empty(), "{}", poller_log(sb));

    // NMI back: its rules, then its ready file; then the poller's sandbox is networked, and every
    // token it gets is its own identity's, from NMI.
    hold_nmi(sb, false);
    eventually("NMI Ready again", 180, || nmi_pod(sb).filter(|p| p.1));
    assert!(node_nat_rules().contains("-j aad-metadata"));
    assert!(dirs.ready.exists());
    let asks = eventually("the restarted poller's first five answers", 180, || {
        let asks = parse_asks(&poller_log(sb));
        (asks.len() >= 5).then_some(asks)
    });
    for a in &asks {
        match a {
            Ask::Answered { mirid, .. } => assert!(
                mirid
                    .to_ascii_lowercase()
                    .ends_with("/userassignedidentities/myapp-identity"),
                "after the reboot every token is the pod's own identity, from NMI: {mirid}"
            ),
            Ask::Failed { .. } => panic!("an ask failed after NMI came back: {asks:?}"),
        }
    }
}
