//! `--enable-conntrack-deletion` (on by default): cuts pods' connections to 169.254.169.254:80
//! that bypass NMI. A connection keeps the NAT decision conntrack made for its first packet, so a
//! keep-alive connection a pod opened before the DNAT existed (a node's first seconds, or while
//! the rules were missing) keeps reaching IMDS, with the node's identities, after the rules are
//! back. Deleting its conntrack entry makes the kernel take its next packet for a new flow: that
//! packet meets the DNAT and reaches NMI's socket, which knows no such connection and resets it,
//! so the pod's SDK reconnects, through NMI.
//!
//! Only entries whose reply does not come from NMI's DNAT target are deleted: connections that
//! already go to NMI stay up, so flushing after a repair does not cut the pods NMI serves. The
//! entries are listed and deleted one by one with the `conntrack` tool (conntrack-tools; NMI's
//! image carries it), in the network namespace NMI runs in: the node's.

use futures_util::future::BoxFuture;

use crate::{
    Error, Result,
    iptables::{METADATA_IP, Target},
};

/// The intercepted port (the DNAT rule's `--dport`).
pub const METADATA_PORT: u16 = 80;

/// One conntrack entry: its original direction (the pod's view) and its reply direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
    pub reply_src: String,
    pub reply_sport: u16,
}

impl Entry {
    /// Whether the flow is DNATed to NMI (its replies come from the DNAT target).
    pub fn goes_to(&self, target: Target) -> bool {
        self.reply_src == target.ip.to_string() && self.reply_sport == target.port
    }
}

/// Parses `conntrack -L` output: `tcp 6 431999 ESTABLISHED src=… dst=… sport=… dport=… src=…
/// dst=… sport=… dport=… [ASSURED] …`, where the first four keys are the original direction and the
/// next four the reply. Lines it cannot read are skipped.
pub fn parse(listing: &str) -> Vec<Entry> {
    listing
        .lines()
        .filter_map(|line| {
            let mut seen: Vec<(&str, &str)> = Vec::new();
            for field in line.split_whitespace() {
                if let Some((k, v)) = field.split_once('=')
                    && matches!(k, "src" | "dst" | "sport" | "dport")
                {
                    seen.push((k, v));
                }
            }
            let nth = |key: &str, n: usize| seen.iter().filter(|(k, _)| *k == key).nth(n).map(|(_, v)| *v);
            Some(Entry {
                src: nth("src", 0)?.to_owned(),
                sport: nth("sport", 0)?.parse().ok()?,
                dst: nth("dst", 0)?.to_owned(),
                dport: nth("dport", 0)?.parse().ok()?,
                reply_src: nth("src", 1)?.to_owned(),
                reply_sport: nth("sport", 1)?.parse().ok()?,
            })
        })
        .collect()
}

/// Lists and deletes conntrack entries (the `conntrack` tool; a fake in unit tests).
pub trait Tool: Send + Sync {
    /// The TCP entries whose original destination is 169.254.169.254:80, as `conntrack -L` prints them.
    fn list(&self) -> BoxFuture<'_, Result<String>>;
    /// Deletes the entry of `e`'s original tuple; false when it was already gone.
    fn delete<'a>(&'a self, e: &'a Entry) -> BoxFuture<'a, Result<bool>>;
}

/// The `conntrack` binary of conntrack-tools.
#[derive(Clone, Debug)]
pub struct System {
    pub program: String,
}

impl Default for System {
    fn default() -> Self {
        Self {
            program: "conntrack".into(),
        }
    }
}

impl System {
    async fn run(&self, args: &[&str]) -> Result<std::process::Output> {
        tokio::process::Command::new(&self.program)
            .args(args)
            .output()
            .await
            .map_err(|source| Error::Io {
                what: format!("running {} (conntrack-tools)", self.program),
                source,
            })
    }

    fn failed(&self, args: &[&str], out: &std::process::Output) -> Error {
        Error::Command {
            command: format!("{} {}", self.program, args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }
    }
}

impl Tool for System {
    fn list(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let port = METADATA_PORT.to_string();
            let args = [
                "-L",
                "-p",
                "tcp",
                "--orig-dst",
                METADATA_IP,
                "--orig-port-dst",
                &port,
            ];
            let out = self.run(&args).await?;
            if !out.status.success() {
                return Err(self.failed(&args, &out));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })
    }

    fn delete<'a>(&'a self, e: &'a Entry) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (sport, dport) = (e.sport.to_string(), e.dport.to_string());
            let args = [
                "-D",
                "-p",
                "tcp",
                "--orig-src",
                &e.src,
                "--orig-dst",
                &e.dst,
                "--orig-port-src",
                &sport,
                "--orig-port-dst",
                &dport,
            ];
            let out = self.run(&args).await?;
            if out.status.success() {
                return Ok(true);
            }
            // conntrack exits 1 when nothing matched: the flow ended since it was listed.
            if String::from_utf8_lossy(&out.stderr).contains(" 0 flow entries") {
                return Ok(false);
            }
            Err(self.failed(&args, &out))
        })
    }
}

/// Deletes the entries of connections to 169.254.169.254:80 that do not go to NMI (`target`);
/// how many it deleted.
pub async fn cut_bypassing(tool: &dyn Tool, target: Target) -> Result<usize> {
    let mut cut = 0;
    for e in parse(&tool.list().await?) {
        if e.dst != METADATA_IP || e.dport != METADATA_PORT || e.goes_to(target) {
            continue;
        }
        if tool.delete(&e).await? {
            tracing::info!(
                pod_ip = %e.src,
                pod_port = e.sport,
                reached = %format!("{}:{}", e.reply_src, e.reply_sport),
                "cut a connection to the metadata address that bypassed NMI (opened before its rules)"
            );
            cut += 1;
        }
    }
    Ok(cut)
}

#[cfg(test)]
mod tests;
