//! NMI flags of upstream v1.8.17 (`cmd/nmi/main.go`) that ours do not share by name: accepted in
//! upstream's syntax, then honoured, mapped onto ours, or noted at start-up (README "Upstream
//! flags" lists each).

use std::{path::PathBuf, time::Duration};

use clap::Args;
use upstream_flags::{Note, go};

/// Where upstream read the kubelet's defaults when `--kubelet-config` was not given.
pub const DEFAULT_KUBELET_CONFIG: &str = "/etc/default/kubelet";

/// Upstream's retry defaults: 16 polls for `Created`, 4 more for `Assigned`, 5 s apart.
const UPSTREAM_RETRIES: (u32, u32, u32) = (16, 4, 5);

#[derive(Clone, Debug, Default, PartialEq, Eq, Args)]
#[command(next_help_heading = "Upstream's NMI flags (accepted; see README \"Upstream flags\")")]
pub struct Upstream {
    /// Before v1.6.2, the DNAT target. Ignored (noted): NMI listens on --nmi-listen-address.
    #[arg(long = "host-ip", value_name = "IP")]
    pub host_ip: Option<String>,
    /// Namespace of upstream's "MIC pod" shortcut. Ignored (noted): there is no such shortcut.
    #[arg(long = "MICNamespace", value_name = "NAMESPACE")]
    pub mic_namespace: Option<String>,
    /// Upstream's polls for a `Created` AzureAssignedIdentity. Mapped onto --identity-wait.
    #[arg(long = "retry-attempts-for-created", value_name = "N")]
    pub retry_attempts_for_created: Option<u32>,
    /// Upstream's polls for `Assigned` after `Created`. Mapped onto --identity-wait.
    #[arg(long = "retry-attempts-for-assigned", value_name = "N")]
    pub retry_attempts_for_assigned: Option<u32>,
    /// Seconds between upstream's polls. Mapped onto --identity-wait.
    #[arg(long = "find-identity-retry-interval", value_name = "SECONDS")]
    pub find_identity_retry_interval: Option<u32>,
    /// pprof on localhost:6060. Ignored (noted) when true: there is no profiler endpoint.
    #[arg(long = "enableProfile", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub enable_profile: Option<bool>,
    /// Watch only this node's AzureAssignedIdentities (label `nodename`): always so here; false is noted.
    #[arg(long = "enableScaleFeatures", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub enable_scale_features: Option<bool>,
    /// Start even when the kubelet uses kubenet (where a pod can spoof another pod's IP).
    #[arg(long = "allow-network-plugin-kubenet", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub allow_network_plugin_kubenet: Option<bool>,
    /// The kubelet's defaults file, read to refuse kubenet [default: /etc/default/kubelet].
    #[arg(long = "kubelet-config", value_name = "PATH")]
    pub kubelet_config: Option<PathBuf>,
    /// After installing or repairing the rules, cut pods' connections to 169.254.169.254:80 that bypass them [default: true].
    #[arg(long = "enable-conntrack-deletion", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go::parse_bool)]
    pub enable_conntrack_deletion: Option<bool>,
}

/// The kubelet defaults file to check for kubenet, and whether the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubenetCheck {
    pub path: PathBuf,
    pub explicit: bool,
}

/// What the kubenet check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubenetVerdict {
    Run,
    /// Start, but say that the check could not be made.
    RunWithNote(Note),
    /// Do not start; the message says why and what to do.
    Refuse(String),
}

impl Upstream {
    /// The longest wait for MIC that upstream's retry flags add up to, when any of them is given:
    /// (created + assigned) polls × interval, unset ones at upstream's defaults.
    pub fn identity_wait(&self) -> Option<Duration> {
        let given = [
            self.retry_attempts_for_created,
            self.retry_attempts_for_assigned,
            self.find_identity_retry_interval,
        ];
        if given.iter().all(Option::is_none) {
            return None;
        }
        let (created, assigned, interval) = UPSTREAM_RETRIES;
        let polls = u64::from(self.retry_attempts_for_created.unwrap_or(created))
            + u64::from(self.retry_attempts_for_assigned.unwrap_or(assigned));
        let interval = u64::from(self.find_identity_retry_interval.unwrap_or(interval));
        Some(Duration::from_secs(polls * interval))
    }

    /// Whether connections that bypass the rules are cut (module `conntrack`): on unless
    /// `--enable-conntrack-deletion=false`. Upstream's default was off, which lets a connection
    /// opened before the rules keep reaching IMDS for as long as it lives.
    pub fn conntrack_deletion(&self) -> bool {
        self.enable_conntrack_deletion != Some(false)
    }

    /// The file to check for kubenet, unless `--allow-network-plugin-kubenet` skips the check.
    pub fn kubenet_check(&self) -> Option<KubenetCheck> {
        if self.allow_network_plugin_kubenet == Some(true) {
            return None;
        }
        Some(match &self.kubelet_config {
            Some(path) => KubenetCheck {
                path: path.clone(),
                explicit: true,
            },
            None => KubenetCheck {
                path: DEFAULT_KUBELET_CONFIG.into(),
                explicit: false,
            },
        })
    }

    /// A note for each given flag that is not honoured as upstream did. `explicit_identity_wait`:
    /// our `--identity-wait` was given, so the retry flags are not mapped onto it.
    pub fn notes(&self, explicit_identity_wait: bool) -> Vec<Note> {
        let mut notes = Vec::new();
        if self.host_ip.is_some() {
            notes.push(Note::new(
                "--host-ip",
                "ignored: it was the DNAT target before upstream v1.6.2; NMI listens on --nmi-listen-address \
                 (default 127.0.0.1) and the rules DNAT there",
            ));
        }
        if self.mic_namespace.is_some() {
            notes.push(Note::new(
                "--MICNamespace",
                "ignored: NMI has no shortcut for pods named mic* in MIC's namespace; MIC's own token requests \
                 pass through to IMDS only when an AzurePodIdentityException matches MIC's pods (upstream's \
                 mic-exception.yaml; our chart installs one)",
            ));
        }
        if let Some(wait) = self.identity_wait() {
            let flags =
                "--retry-attempts-for-created/--retry-attempts-for-assigned/--find-identity-retry-interval";
            notes.push(Note::new(
                flags,
                if explicit_identity_wait {
                    "ignored: --identity-wait is given and bounds how long a request waits for MIC".to_owned()
                } else {
                    format!(
                        "replaced by --identity-wait={}: NMI holds a request until the AzureAssignedIdentity watch \
                         reports its identity Assigned, for at most the time upstream's polls added up to",
                        wait.as_secs()
                    )
                },
            ));
        }
        if self.enable_profile == Some(true) {
            notes.push(Note::new(
                "--enableProfile",
                "ignored: NMI has no pprof endpoint; its metrics are on --prometheus-port",
            ));
        }
        if self.enable_scale_features == Some(false) {
            notes.push(Note::new(
                "--enableScaleFeatures=false",
                "ignored: NMI always watches only this node's AzureAssignedIdentities, by their nodename label; \
                 objects without it (from MIC before v1.5.3) are not seen",
            ));
        }
        notes
    }
}

/// Decides the kubenet check from the kubelet defaults file as read (upstream refused to start
/// when it held `--network-plugin=kubenet`). A file that cannot be read lets NMI start, as
/// upstream's DaemonSet did by creating it empty (`FileOrCreate`); a path the user named is noted.
pub fn kubenet_verdict(check: &KubenetCheck, read: std::io::Result<String>) -> KubenetVerdict {
    match read {
        Ok(text) if text.contains("--network-plugin=kubenet") => KubenetVerdict::Refuse(format!(
            "the kubelet defaults in {} say --network-plugin=kubenet: there a pod with NET_RAW can spoof another \
             pod's IP and be given its identity, so NMI refuses to start, as upstream did; secure the cluster \
             (https://azure.github.io/aad-pod-identity/docs/configure/aad_pod_identity_on_kubenet/) and pass \
             --allow-network-plugin-kubenet",
            check.path.display()
        )),
        Ok(_) => KubenetVerdict::Run,
        Err(e) if check.explicit => KubenetVerdict::RunWithNote(Note::new(
            "--kubelet-config",
            format!(
                "cannot read {} ({e}), so whether the node uses kubenet is unknown; starting anyway",
                check.path.display()
            ),
        )),
        Err(_) => KubenetVerdict::Run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_flags_add_up_to_upstreams_longest_wait() {
        assert_eq!(Upstream::default().identity_wait(), None);
        let u = Upstream {
            find_identity_retry_interval: Some(5),
            ..Upstream::default()
        };
        assert_eq!(u.identity_wait(), Some(Duration::from_secs(100)));
        // The feature-flag docs' setting for --set-retry-after-header: no internal retries.
        let u = Upstream {
            retry_attempts_for_created: Some(1),
            retry_attempts_for_assigned: Some(1),
            find_identity_retry_interval: Some(1),
            ..Upstream::default()
        };
        assert_eq!(u.identity_wait(), Some(Duration::from_secs(2)));
        assert!(u.notes(false)[0].message.contains("--identity-wait=2"));
        assert!(u.notes(true)[0].message.starts_with("ignored"));
    }

    #[test]
    fn kubenet_is_refused_unless_allowed() {
        let check = Upstream::default().kubenet_check().unwrap();
        assert_eq!(check.path, PathBuf::from(DEFAULT_KUBELET_CONFIG));
        let kubenet = || Ok("KUBELET_FLAGS=--network-plugin=kubenet --max-pods=110".to_owned());
        assert!(
            matches!(kubenet_verdict(&check, kubenet()), KubenetVerdict::Refuse(m) if m.contains("--allow-network-plugin-kubenet"))
        );
        let cni = Ok("KUBELET_FLAGS=--network-plugin=cni".to_owned());
        assert_eq!(kubenet_verdict(&check, cni), KubenetVerdict::Run);
        let missing = || Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(kubenet_verdict(&check, missing()), KubenetVerdict::Run);
        let named = KubenetCheck {
            path: "/x".into(),
            explicit: true,
        };
        assert!(matches!(
            kubenet_verdict(&named, missing()),
            KubenetVerdict::RunWithNote(_)
        ));
        let allowed = Upstream {
            allow_network_plugin_kubenet: Some(true),
            kubelet_config: Some("/x".into()),
            ..Upstream::default()
        };
        assert_eq!(allowed.kubenet_check(), None);
    }
}
