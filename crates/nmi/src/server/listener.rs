//! Binding NMI's listeners so that an update of NMI has no gap (issue 22): the old NMI and the new
//! one (the DaemonSet's surge pod, beside it on the host network) listen on the same node ports at
//! once, and the old one hands over without refusing or resetting a pod's connection.
//!
//! Every listener sets `SO_REUSEPORT`, and its group carries a classic BPF program that picks the
//! socket at index 1 ([`NEWEST_WINS`]). The kernel keeps a group's sockets in an array: a new
//! listener is appended at the end, and one that leaves is replaced by the last; an index out of
//! range falls back to the kernel's hash. So while two NMIs listen, index 1 is the newer one, every
//! new connection goes to it and the older one's accept queue only empties; once one is left,
//! index 1 is out of range and the hash picks the only socket. The tests below check these facts
//! on the running kernel.
//!
//! The pod-facing listener joins the group only once NMI can serve ([`bind_pod_facing`]); the probe
//! and metrics listeners join at once. Which NMI a probe port reaches therefore depends on which
//! processes have bound it so far, so the kubelet's readiness probe does not use it: it asks the
//! pod's own NMI on a Unix socket ([`super::ready_socket`]).

use std::{
    net::SocketAddr,
    os::fd::AsFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use nix::{
    libc::{BPF_K, BPF_RET, sock_filter, sock_fprog},
    sys::socket::{setsockopt, sockopt::AttachReusePortCbpf},
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::{Error, Result};

/// The classic BPF program of every NMI listener's `SO_REUSEPORT` group: "return 1", the index
/// of the second-oldest socket in the group, i.e. the newer NMI while two listen.
pub const NEWEST_WINS: [sock_filter; 1] = [sock_filter {
    code: (BPF_RET | BPF_K) as u16,
    jt: 0,
    jf: 0,
    k: 1,
}];

/// tokio's and std's backlog: room for a burst of pods starting at once.
const BACKLOG: i32 = 1024;
/// How often a listener that cannot bind yet, or the pod-facing one waiting to be ready, looks again.
const RETRY: Duration = Duration::from_millis(100);
/// How often a listener that still cannot bind says so again.
const REPEAT_WARNING: Duration = Duration::from_secs(30);

/// A listener on `addr` in the node's shared group: `SO_REUSEPORT`, newest wins.
pub fn bind_shared(addr: SocketAddr) -> Result<TcpListener> {
    let listener = bind_shared_std(addr)?;
    TcpListener::from_std(listener).map_err(io(format!("registering the listener on {addr}")))
}

/// [`bind_shared`] before tokio: a non-blocking std listener.
pub fn bind_shared_std(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let what = |step: &str| format!("{step} the listener on {addr}");
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(io(what("creating")))?;
    // As tokio and std do: connections of an earlier NMI in TIME_WAIT do not block the port.
    socket
        .set_reuse_address(true)
        .map_err(io(what("setting SO_REUSEADDR on")))?;
    socket
        .set_reuse_port(true)
        .map_err(io(what("setting SO_REUSEPORT on")))?;
    socket
        .set_nonblocking(true)
        .map_err(io(what("making non-blocking")))?;
    socket.bind(&addr.into()).map_err(io(what("binding")))?;
    socket.listen(BACKLOG).map_err(io(what("listening on")))?;
    // After listen, not before: only then is the socket in the port's group, and the program is the
    // group's. One attached before joining would be dropped with the socket's own one-member group
    // when it joins the old NMI's. Until here, the group ran the old NMI's program (the same one)
    // or, from an NMI without it, the hash.
    newest_wins(&socket).map_err(io(what("attaching the newest-wins program to")))?;
    Ok(socket.into())
}

/// Makes the group of `listener` (bound, listening, `SO_REUSEPORT`) send new connections to its
/// newest member while it has two.
pub fn newest_wins(listener: &impl AsFd) -> std::io::Result<()> {
    let mut program = NEWEST_WINS;
    // The kernel copies the program during the call; the pointer outlives it.
    let prog = sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    setsockopt(listener, AttachReusePortCbpf, &prog).map_err(std::io::Error::from)
}

/// [`bind_shared`], again every 100 ms while the port is held by a socket without `SO_REUSEPORT`:
/// an NMI of a version before this one, during the first update to it. `held(true)` is called
/// while it is, `held(false)` once bound. That NMI goes away once this pod is Ready, and this one
/// binds a moment later: the one update that still has a gap.
pub async fn bind_retrying(addr: SocketAddr, name: &str, held: impl Fn(bool)) -> Result<TcpListener> {
    let mut warned: Option<Instant> = None;
    loop {
        match bind_shared(addr) {
            Ok(listener) => {
                held(false);
                tracing::info!(%addr, name, "listening");
                return Ok(listener);
            }
            Err(Error::Io { source, what }) if source.kind() == std::io::ErrorKind::AddrInUse => {
                held(true);
                if warned.is_none_or(|t| t.elapsed() >= REPEAT_WARNING) {
                    tracing::warn!(
                        %addr, name, error = %source,
                        "{what}: the port is held by a listener without SO_REUSEPORT (an NMI \
                         before this version?); retrying until it is free"
                    );
                    warned = Some(Instant::now());
                }
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Where this NMI's pod-facing port stands, for its readiness ([`super::answers_ready`]).
#[derive(Debug, Default)]
pub struct PodPort {
    serving: AtomicBool,
    held_by_older: AtomicBool,
}

impl PodPort {
    /// The pod-facing listener is bound: this NMI gets pods' new connections.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// The port is held by a listener without `SO_REUSEPORT` (an NMI before issue 22's, during
    /// the first update from it). This NMI can bind only once that one stops, and the DaemonSet
    /// stops it only once this pod is Ready: so here readiness cannot wait for the bind.
    pub fn held_by_older(&self) -> bool {
        self.held_by_older.load(Ordering::Acquire)
    }

    pub(crate) fn set_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    pub(crate) fn set_held_by_older(&self, held: bool) {
        self.held_by_older.store(held, Ordering::Release);
    }
}

/// The pod-facing listener on `addr`, bound once `ready()` (rules in place, every watch synced)
/// when another NMI listens on the port; `port` follows the bind.
///
/// Under the newest-wins program, the moment this NMI binds it gets every new connection; bound
/// while still starting, it would keep pods waiting on its sync (or refuse them) while the old NMI
/// could answer at once. So while another NMI serves, this one joins only when it can serve too.
///
/// A lone NMI (a node's first boot, or a restart after a crash) binds at once. Nobody else can
/// answer, and a connection that waits in NMI for the first sync (up to `--pod-wait`, as
/// `authorize` does) beats a refused one: some SDKs take a refused IMDS as "no managed identity
/// here" and do not ask again. At first boot the CNI gate keeps pods off the network until the
/// rules exist anyway, and the rules' DNAT leads only to this NMI.
pub async fn bind_pod_facing(
    addr: SocketAddr,
    ready: impl Fn() -> bool,
    port: &PodPort,
) -> Result<TcpListener> {
    if another_listens(addr.port()) {
        tracing::info!(%addr, "another NMI serves pods on this port: joining once ready");
        while !ready() {
            tokio::time::sleep(RETRY).await;
        }
    }
    let listener = bind_retrying(addr, "nmi", |held| port.set_held_by_older(held)).await?;
    port.set_serving();
    Ok(listener)
}

/// Whether a TCP socket of this network namespace listens on `port` (any address), from
/// `/proc/net/tcp` and `/proc/net/tcp6`. When neither can be read: true, the side that waits.
fn another_listens(port: u16) -> bool {
    let tables: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    tables.is_empty() || tables.iter().any(|t| listening_ports(t).any(|p| p == port))
}

/// The local ports of the sockets in state LISTEN (`0A`) of a `/proc/net/tcp{,6}` table.
fn listening_ports(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (_, port) = fields.get(1)?.rsplit_once(':')?;
        (fields.get(3) == Some(&"0A")).then(|| u16::from_str_radix(port, 16).ok())?
    })
}

/// Accepts every connection already queued on `listener` (until the kernel says there is none),
/// handing each to `take`; then closes the listener. Closing a listener resets the connections in
/// its accept queue, and under the newest-wins program no new one is queued on the older NMI's,
/// so an NMI that stops drains it first. Returns how many it took.
pub fn drain(listener: TcpListener, mut take: impl FnMut(TcpStream, SocketAddr)) -> usize {
    // The std listener accepts straight from the kernel; tokio's would wait for the reactor to
    // report readiness, and could stop at a connection the kernel has queued but not yet reported.
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "draining the pod-facing listener failed");
            return 0;
        }
    };
    let mut taken = 0;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                match stream {
                    Ok(s) => {
                        take(s, peer);
                        taken += 1;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, remote = %peer, "taking a drained connection failed")
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return taken,
            // Gone before it was accepted: as `accept_failed`.
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "accepting while draining the pod-facing listener failed");
                return taken;
            }
        }
    }
}

/// An `accept` error of the one connection, not of the listener.
pub(super) fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    )
}

/// An I/O error of `what` ("binding the listener on …") as NMI's error.
pub(super) fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

#[cfg(test)]
#[path = "listener/tests.rs"]
mod tests;
