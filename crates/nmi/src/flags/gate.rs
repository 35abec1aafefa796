//! The CNI gate's flags (module `interception`): where the node's CNI configuration and binaries
//! are, and where NMI writes its ready file.

use std::path::PathBuf;

use clap::{ArgAction, Args};

/// Where NMI's image holds the plugin binary it copies to the node.
pub const DEFAULT_PLUGIN_BINARY: &str = "/usr/local/bin/pod-identity-cni";

#[derive(Clone, Debug, PartialEq, Eq, Args)]
#[command(
    next_help_heading = "CNI gate: no pod gets a network before the rules are in place, after a reboot too"
)]
pub struct CniGate {
    /// The node's CNI configuration directory: NMI chains the plugin pod-identity-cni into its first network configuration. Unset: no gate.
    #[arg(long = "cni-conf-dir", value_name = "DIR")]
    pub conf_dir: Option<PathBuf>,
    /// The node's CNI bin directory, where NMI copies the plugin.
    #[arg(long = "cni-bin-dir", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The ready file NMI writes while its rules are in place: on a tmpfs a reboot empties (/run), at the same path on the node as in NMI's container.
    #[arg(long = "cni-ready-file", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// The plugin binary NMI copies.
    #[arg(long = "cni-plugin-binary", value_name = "PATH", default_value = DEFAULT_PLUGIN_BINARY)]
    pub plugin_binary: PathBuf,
    /// false: take the plugin out of the node's configuration and bin directory (the opt-out).
    #[arg(long = "cni-plugin", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub enabled: bool,
}
