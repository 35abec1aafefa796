//! Keeping the node fail-closed from its first second: the interception rules ([`iptables`]),
//! checked and repaired every `--ipt-update-interval-sec`; after each install or repair, the cut of
//! connections that bypassed them ([`conntrack`], `--enable-conntrack-deletion`); and the CNI gate
//! (`--cni-*`, crate `cni`): the plugin chained into the node's network configuration, and the ready
//! file it waits for, written while the rules are in place and removed when they are not and cannot
//! be put back. After a reboot (rules and ready file gone) the kubelet's restarted pods thus get no
//! network until this loop has put the rules back.

use std::{path::PathBuf, time::Duration};

use cni::chain::Chained;

use crate::{
    Error, Result, conntrack,
    flags::{CniGate, Flags},
    iptables::{self, Netfilter, Repair, Target},
};

/// How often the plugin's installation is checked: the network's own installer may rewrite its
/// configuration file at any time (a CNI agent's restart), dropping the plugin from it.
pub const PLUGIN_PERIOD: Duration = Duration::from_secs(5);

/// The CNI gate's files on the node (the same paths in NMI's container and on the host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gate {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub binary: PathBuf,
    pub ready_file: PathBuf,
    /// False (`--cni-plugin=false`, the chart's opt-out): the plugin is taken out, not put in.
    pub enabled: bool,
}

impl Gate {
    /// The gate the flags ask for; None without `--cni-conf-dir`.
    pub fn from_flags(f: &CniGate) -> Result<Option<Self>> {
        let Some(conf_dir) = f.conf_dir.clone() else {
            return Ok(None);
        };
        let need = |v: &Option<PathBuf>, flag: &str| {
            v.clone()
                .ok_or_else(|| Error::Config(format!("--cni-conf-dir needs {flag} too")))
        };
        Ok(Some(Self {
            conf_dir,
            bin_dir: need(&f.bin_dir, "--cni-bin-dir")?,
            binary: f.plugin_binary.clone(),
            ready_file: need(&f.ready_file, "--cni-ready-file")?,
            enabled: f.enabled,
        }))
    }

    /// Puts the plugin in place (or, disabled, takes it out), logging what changed; what is
    /// chained (`NoNetwork` until the network's installer has written its configuration).
    /// `compare_bytes`: check the installed binary's contents, not only its size (at start-up).
    pub fn reconcile(&self, compare_bytes: bool) -> Result<Chained> {
        if !self.enabled {
            self.remove()?;
            return Ok(Chained::Already);
        }
        if cni::chain::install_binary(&self.binary, &self.bin_dir, compare_bytes)? {
            tracing::info!(dir = %self.bin_dir.display(), "CNI plugin {} installed", cni::PLUGIN_TYPE);
        }
        let (done, path) = cni::chain::install(&self.conf_dir, &self.ready_file)?;
        if matches!(done, Chained::Added | Chained::Updated) {
            tracing::info!(
                ?done,
                file = %path.unwrap_or_default().display(),
                "CNI plugin {} chained: pods get a network only while NMI's rules are in place", cni::PLUGIN_TYPE
            );
        }
        Ok(done)
    }

    /// Takes the plugin out of every network configuration, then removes its binary: in that order,
    /// so that no pod sandbox is set up with a plugin that is gone.
    pub fn remove(&self) -> Result<()> {
        for file in cni::chain::uninstall(&self.conf_dir)? {
            tracing::info!(file = %file.display(), "CNI plugin {} taken out", cni::PLUGIN_TYPE);
        }
        if cni::chain::remove_binary(&self.bin_dir)? {
            tracing::info!(dir = %self.bin_dir.display(), "CNI plugin {} removed", cni::PLUGIN_TYPE);
        }
        Ok(())
    }

    fn mark_ready(&self, boot_id: &str) -> Result<()> {
        if cni::ready::mark(&self.ready_file, boot_id)? {
            tracing::info!(file = %self.ready_file.display(), "interception ready: pods' networks may be set up");
        }
        Ok(())
    }

    fn unmark_ready(&self) -> Result<()> {
        if cni::ready::unmark(&self.ready_file)? {
            tracing::warn!(file = %self.ready_file.display(), "interception not in place: new pods get no network");
        }
        Ok(())
    }
}

/// What the rules loop does besides the rules.
pub struct Options {
    pub conntrack: Option<Box<dyn conntrack::Tool>>,
    pub gate: Option<Gate>,
}

impl Options {
    pub fn from_flags(flags: &Flags) -> Result<Self> {
        Ok(Self {
            conntrack: flags
                .upstream
                .conntrack_deletion()
                .then(|| Box::new(conntrack::System::default()) as Box<dyn conntrack::Tool>),
            gate: Gate::from_flags(&flags.cni)?,
        })
    }
}

/// The rules loop's state between rounds.
pub struct Rules {
    target: Target,
    opts: Options,
    /// Connections to cut at the next successful round: after the first install, after a repair,
    /// and after a cut that failed.
    cut_pending: bool,
}

impl Rules {
    pub fn new(target: Target, opts: Options) -> Self {
        let cut_pending = opts.conntrack.is_some();
        Self {
            target,
            opts,
            cut_pending,
        }
    }

    /// One check of the rules, with what follows from it; true when they are in place.
    pub async fn round(&mut self, nf: &dyn Netfilter, boot_id: &Result<String, cni::Error>) -> bool {
        let gate = self.opts.gate.as_ref().filter(|g| g.enabled);
        match iptables::ensure(nf, self.target).await {
            Ok(repair) => {
                if repair != Repair::None {
                    tracing::warn!(
                        ?repair,
                        chain = iptables::CHAIN,
                        "iptables interception rules were missing or altered; repaired"
                    );
                    self.cut_pending |= self.opts.conntrack.is_some();
                }
                if let (true, Some(tool)) = (self.cut_pending, &self.opts.conntrack) {
                    match conntrack::cut_bypassing(tool.as_ref(), self.target).await {
                        Ok(n) => {
                            self.cut_pending = false;
                            tracing::debug!(cut = n, "connections to the metadata address checked");
                        }
                        Err(e) => tracing::error!(
                            error = %e,
                            "cutting connections that bypass NMI failed (--enable-conntrack-deletion); retrying \
                             at the next check"
                        ),
                    }
                }
                if let Some(g) = gate {
                    let marked = boot_id
                        .as_ref()
                        .map_err(|e| Error::Config(e.to_string()))
                        .and_then(|id| g.mark_ready(id));
                    if let Err(e) = marked {
                        tracing::error!(error = %e, "writing the CNI gate's ready file failed: new pods get no network");
                    }
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "installing the iptables interception rules failed");
                if let Some(Err(e)) = gate.map(Gate::unmark_ready) {
                    tracing::error!(error = %e, "removing the CNI gate's ready file failed");
                }
                false
            }
        }
    }
}

/// Keeps the rules (and what goes with them) every `interval`, reporting each round's outcome to
/// `on_result`; and the CNI plugin's installation every [`PLUGIN_PERIOD`].
pub async fn keep(
    nf: &dyn Netfilter,
    target: Target,
    interval: Duration,
    opts: Options,
    on_result: impl Fn(bool),
) {
    let gate = opts.gate.clone();
    let plugin = async move {
        let Some(gate) = gate else { return };
        let mut tick = tokio::time::interval(PLUGIN_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A problem is logged when it appears or changes, not at every check.
        let mut problem: Option<String> = None;
        for round in 0u64.. {
            tick.tick().await;
            let now = match gate.reconcile(round == 0) {
                Ok(Chained::NoNetwork) => Some(format!(
                    "no CNI network configuration in {} yet to chain {} into; checking again",
                    gate.conf_dir.display(),
                    cni::PLUGIN_TYPE
                )),
                Ok(_) => None,
                Err(e) => Some(format!(
                    "installing the CNI plugin {} failed: {e}",
                    cni::PLUGIN_TYPE
                )),
            };
            match (&now, &problem) {
                (Some(p), last) if last.as_ref() != Some(p) => tracing::error!("{p}"),
                (None, Some(_)) => tracing::info!("CNI plugin {} in place", cni::PLUGIN_TYPE),
                _ => {}
            }
            problem = now;
        }
    };
    let rules = async move {
        let boot_id = cni::ready::boot_id();
        let mut rules = Rules::new(target, opts);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            on_result(rules.round(nf, &boot_id).await);
        }
    };
    tokio::join!(plugin, rules);
}

/// `nmi cleanup` (uninstall): the plugin out first, then the rules, then the ready file, so that
/// pods never wait for a ready file that will not come. Succeeds when everything is already gone.
pub async fn cleanup(nf: &dyn Netfilter, flags: &Flags) -> Result<()> {
    let gate = Gate::from_flags(&flags.cni)?;
    if let Some(g) = &gate {
        g.remove()?;
    }
    iptables::cleanup(nf).await?;
    if let Some(g) = &gate {
        cni::ready::unmark(&g.ready_file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
