//! The readiness answer of this one NMI process, on a Unix socket in its pod's own directory
//! (`--ready-socket`), and the client behind the chart's readiness probe (`nmi probe`).
//!
//! Why not the TCP `/readyz`: during an update the old NMI and the new one share the node's probe
//! port (SO_REUSEPORT, [`super::listener`]). From the new container's start until its process has
//! bound that port, the kubelet's probe of the *new* pod reaches the *old* NMI, which says ready.
//! The kubelet then marks the new pod Ready, the DaemonSet deletes the old pod, and until the new
//! NMI binds the pod-facing port (once its watches have synced) no NMI listens: pods' token
//! requests are refused. Seen on the real node as one refused ask in ten rollouts (issue 23). A
//! socket in the pod's own emptyDir reaches only the process of that pod, however the node's ports
//! are shared; a probe of a pod whose NMI has not created it yet fails, as it should.
//!
//! The server reads nothing from a client: it writes one line and closes, so a client can make it
//! hold neither a buffer nor a connection.

use std::{
    io::Read,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::UnixListener;

use super::listener::io;
use crate::{Error, Result};

/// The line of a ready NMI.
const READY: &str = "ready";
/// The line of an NMI that cannot serve pods yet (or no longer).
const NOT_READY: &str = "not ready: interception rules, watches or the pod-facing listener not in place";
/// The most of an answer a probe reads: both lines fit.
const MAX_ANSWER: u64 = 256;

/// Binds `path` (replacing a socket a previous run of this container left there) and answers
/// every connection with whether `ready()`, until `stopped` completes; then removes the socket.
pub async fn serve(path: PathBuf, ready: impl Fn() -> bool, stopped: impl Future<Output = ()>) -> Result<()> {
    let (listener, bound) = bind(&path)?;
    tracing::info!(path = %path.display(), "answering readiness probes on the Unix socket");
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a readiness probe failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let line = if ready() { READY } else { NOT_READY };
        // A fresh socket's send buffer takes one short line at once; a client that has already
        // gone only makes this write fail, which changes nothing.
        let _ = stream.try_write(format!("{line}\n").as_bytes());
    }
    // Only the socket this NMI bound: never one another process put in its place.
    if inode(&path) == Some(bound) {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

/// The listener, and the inode of the socket file it made.
fn bind(path: &Path) -> Result<(UnixListener, u64)> {
    let what = |step: &str| format!("{step} the readiness socket {}", path.display());
    match std::fs::symlink_metadata(path) {
        // A container restarted in the same pod finds its predecessor's socket in the emptyDir.
        // One that still answers belongs to a live NMI: two sharing a directory (a hostPath
        // rather than the pod's own emptyDir) would answer each other's probes, the very mix-up
        // this socket exists to avoid.
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::Config(format!(
                    "--ready-socket {}: another process answers on it; each NMI pod needs a \
                     directory of its own (an emptyDir)",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(io(what("removing the stale")))?
        }
        // Never a file someone pointed the flag at by mistake.
        Ok(_) => {
            return Err(Error::Config(format!(
                "--ready-socket {}: the path exists and is not a socket",
                path.display()
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(io(what("binding")))?;
    let bound =
        inode(path).ok_or_else(|| Error::Config(format!("{} vanished once bound", path.display())))?;
    Ok((listener, bound))
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// What a probe of the socket found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// The NMI answered that it is not ready, or did not answer (no socket yet, no line in time):
    /// the reason, one line.
    NotReady(String),
}

/// Asks the NMI listening on `path`, waiting at most `timeout` for its answer.
pub fn ask(path: &Path, timeout: Duration) -> Verdict {
    let answer = (|| {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut text = String::new();
        stream.take(MAX_ANSWER).read_to_string(&mut text)?;
        std::io::Result::Ok(text)
    })();
    match answer {
        Ok(text) if text.trim_end() == READY => Verdict::Ready,
        Ok(text) => Verdict::NotReady(text.trim_end().chars().filter(|c| !c.is_control()).collect()),
        Err(e) => Verdict::NotReady(format!("no answer on {}: {e}", path.display())),
    }
}

#[cfg(test)]
#[path = "ready_socket/tests.rs"]
mod tests;
