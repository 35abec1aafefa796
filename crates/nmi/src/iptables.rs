//! The interception rules: nat chain `aad-metadata`, jumped to first thing in PREROUTING, DNATs
//! pods' traffic for 169.254.169.254:80 to NMI. They are checked and repaired periodically (module
//! `interception`) and are deliberately left in place when NMI stops (fail-closed): only
//! `nmi cleanup` removes them.
//!
//! The commands run through [`Netfilter`], so the logic can be tested without root and the real
//! binaries can be tested in a network namespace.

use std::net::IpAddr;

use futures_util::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use crate::{Error, Result};

pub const CHAIN: &str = "aad-metadata";
pub const METADATA_IP: &str = "169.254.169.254";

/// Runs `iptables` and `iptables-restore`.
pub trait Netfilter: Send + Sync {
    /// `iptables -w <args>`; the output on success.
    fn iptables<'a>(&'a self, args: &'a [&'a str]) -> BoxFuture<'a, Result<String>>;
    /// `iptables-restore -w --noflush` fed with `input`.
    fn restore<'a>(&'a self, input: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// The system's `iptables` binaries (whichever backend, nft or legacy, the node uses).
#[derive(Clone, Debug)]
pub struct System {
    pub iptables: String,
    pub iptables_restore: String,
}

impl Default for System {
    fn default() -> Self {
        Self {
            iptables: "iptables".into(),
            iptables_restore: "iptables-restore".into(),
        }
    }
}

impl Netfilter for System {
    fn iptables<'a>(&'a self, args: &'a [&'a str]) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let out = tokio::process::Command::new(&self.iptables)
                .arg("-w")
                .args(args)
                .output()
                .await
                .map_err(|source| Error::Io {
                    what: format!("running {}", self.iptables),
                    source,
                })?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(Error::Command {
                    command: format!("{} -w {}", self.iptables, args.join(" ")),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                })
            }
        })
    }

    fn restore<'a>(&'a self, input: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let io = |what: &str| {
                let what = format!("{what} {}", self.iptables_restore);
                move |source| Error::Io { what, source }
            };
            let mut child = tokio::process::Command::new(&self.iptables_restore)
                .args(["-w", "--noflush"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(io("running"))?;
            let mut stdin = child.stdin.take().expect("stdin is piped");
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(io("writing to"))?;
            drop(stdin);
            let out = child.wait_with_output().await.map_err(io("waiting for"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(Error::Command {
                    command: format!("{} -w --noflush", self.iptables_restore),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                })
            }
        })
    }
}

/// Where intercepted traffic goes.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub ip: IpAddr,
    pub port: u16,
}

impl Target {
    /// Upstream's rule: a wildcard listen address is reached through loopback.
    pub fn new(listen: IpAddr, port: u16) -> Self {
        let ip = if listen.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            listen
        };
        Self { ip, port }
    }

    /// The chain's rules, exactly as `iptables -t nat -S aad-metadata` prints them.
    pub fn expected_chain(&self) -> Vec<String> {
        vec![
            format!("-N {CHAIN}"),
            format!(
                "-A {CHAIN} ! -s 127.0.0.1/32 -d {METADATA_IP}/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination {}:{}",
                self.ip, self.port
            ),
            format!("-A {CHAIN} -j RETURN"),
        ]
    }

    /// An `iptables-restore --noflush` input that (re)creates the chain with exactly its rules,
    /// atomically: declaring a chain in a restore flushes it.
    fn restore_input(&self) -> String {
        let mut s = format!("*nat\n:{CHAIN} - [0:0]\n");
        for rule in self.expected_chain().iter().skip(1) {
            s.push_str(rule);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// What a reconcile found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    None,
    /// The chain was missing or differed and was rewritten.
    Chain,
    /// The PREROUTING jump was missing or not first.
    Jump,
    Both,
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Makes the rules what they should be.
pub async fn ensure(nf: &dyn Netfilter, target: Target) -> Result<Repair> {
    let chain = nf
        .iptables(&["-t", "nat", "-S", CHAIN])
        .await
        .map(|s| lines(&s))
        .unwrap_or_default();
    let chain_ok = chain == target.expected_chain();
    if !chain_ok {
        nf.restore(&target.restore_input()).await?;
    }
    let jump = format!("-A PREROUTING -j {CHAIN}");
    let prerouting = lines(&nf.iptables(&["-t", "nat", "-S", "PREROUTING"]).await?);
    let rules: Vec<&String> = prerouting.iter().filter(|l| l.starts_with("-A ")).collect();
    let jump_ok =
        rules.first().is_some_and(|r| **r == jump) && rules.iter().filter(|r| ***r == jump).count() == 1;
    if !jump_ok {
        // Intercepting must come before any other PREROUTING rule could accept or redirect the traffic.
        for _ in rules.iter().filter(|r| ***r == jump) {
            nf.iptables(&["-t", "nat", "-D", "PREROUTING", "-j", CHAIN])
                .await?;
        }
        nf.iptables(&["-t", "nat", "-I", "PREROUTING", "1", "-j", CHAIN])
            .await?;
    }
    Ok(match (chain_ok, jump_ok) {
        (true, true) => Repair::None,
        (false, true) => Repair::Chain,
        (true, false) => Repair::Jump,
        (false, false) => Repair::Both,
    })
}

/// Removes the rules (`nmi cleanup`). Succeeds when they are already gone.
pub async fn cleanup(nf: &dyn Netfilter) -> Result<()> {
    while nf
        .iptables(&["-t", "nat", "-D", "PREROUTING", "-j", CHAIN])
        .await
        .is_ok()
    {}
    if nf.iptables(&["-t", "nat", "-S", CHAIN]).await.is_ok() {
        nf.iptables(&["-t", "nat", "-F", CHAIN]).await?;
        nf.iptables(&["-t", "nat", "-X", CHAIN]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
