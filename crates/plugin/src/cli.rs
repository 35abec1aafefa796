//! The command line: subcommands and flags. Every flag is global, as kubectl's are, so it may
//! stand before or after the subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{gather::DEFAULT_LEASE, kube_flags::KubeFlags, output::Format};

/// The name kubectl finds the plugin by on the PATH (`kubectl pod-identity` runs it).
pub const BIN: &str = "kubectl-pod_identity";

/// Explains why a pod does or does not get its Azure token, and checks pod identity's health.
#[derive(Parser, Debug)]
#[command(name = "kubectl pod-identity", bin_name = "kubectl pod-identity", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub kube: KubeFlags,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// The cloud config (azure.json) whose credentials read the VM or scale set from ARM; without
    /// it, whether the identity is on the VM is not checked.
    #[arg(long, global = true, env = "POD_IDENTITY_CLOUD_CONFIG", value_name = "PATH")]
    pub cloud_config: Option<PathBuf>,
    /// ARM's URL, overriding the cloud's (as MIC's flag).
    #[arg(long, global = true, value_name = "URL")]
    pub arm_endpoint: Option<String>,
    /// Entra's URL, overriding the cloud's (as MIC's flag).
    #[arg(long, global = true, value_name = "URL")]
    pub aad_endpoint: Option<String>,
    /// A PEM CA bundle to trust for ARM and Entra, besides the system's.
    #[arg(long, global = true, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Label selector of NMI's pods.
    #[arg(long, global = true, default_value = "app.kubernetes.io/component=nmi")]
    pub nmi_selector: String,
    /// How far back NMI's log is searched for refusals, in seconds.
    #[arg(long, global = true, default_value_t = 3600)]
    pub nmi_log_since: i64,
    /// MIC's leader-election Lease: NAMESPACE/NAME, or a NAME looked for in every namespace.
    #[arg(long, global = true, default_value = DEFAULT_LEASE)]
    pub mic_lease: String,
    /// Match pods with bindings of every namespace, as MIC and NMI do with --allow-cross-namespace.
    #[arg(long, global = true)]
    pub allow_cross_namespace: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Walks the chain from a pod to its token: pod, exceptions, bindings, identity,
    /// AzureAssignedIdentity and MIC's Events, the VM or scale set (ARM), NMI on the node.
    Explain {
        /// The pod's name.
        pod: String,
    },
    /// The cluster's health: CRDs, MIC's leader, NMI on every node, the cloud config, identities,
    /// bindings, stuck assignments, Azure's limits.
    Check,
    /// Prints a completion script for the standalone `kubectl-pod_identity`; for
    /// `kubectl pod-identity <TAB>`, put deploy/krew/kubectl_complete-pod_identity on the PATH.
    Completion {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_stand_before_or_after_the_subcommand() {
        let a =
            Args::try_parse_from([BIN, "-o", "yaml", "explain", "web", "--as", "dev", "-n", "shop"]).unwrap();
        assert_eq!(a.output, Format::Yaml);
        assert_eq!(a.kube.as_user.as_deref(), Some("dev"));
        assert_eq!(a.kube.namespace.as_deref(), Some("shop"));
        assert!(matches!(a.command, Command::Explain { ref pod } if pod == "web"));
        let a = Args::try_parse_from([BIN, "check", "--output=json"]).unwrap();
        assert_eq!(a.output, Format::Json);
    }

    #[test]
    fn an_unknown_format_is_a_usage_error() {
        let e = Args::try_parse_from([BIN, "check", "-o", "wide"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
