//! The pod-facing listener: accepting connections, serving each over HTTP/1.1 with [`handle`],
//! and the graceful shutdown that lets requests in progress finish.
//!
//! Every pod of the node can reach this listener, bound or not, so it holds against a hostile
//! one (issue 21 §4): a request head must arrive whole within [`ConnectionLimits::header_read_timeout`]
//! and fit [`MAX_HEAD_BYTES`] (and hyper's 100 headers), and one source IP has at most
//! [`ConnectionLimits::per_pod`] connections open; what goes over is closed and counted in
//! `aadpodidentity_nmi_connections_dropped_total`.
//!
//! At shutdown it drains: the connections the kernel has already queued are accepted and served
//! (`listener::drain`), requests in progress finish, idle keep-alive connections close.
//!
//! Connections are counted per source IP ([`PerPodConnections`]): a pod is told apart by its IP,
//! as the rate limiter does, and one that opens connections without end (slowloris: each
//! holding a half-sent request head) gets only so many at once, so NMI's sockets and memory stay
//! available to the other pods of the node.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{body::Body, http::Request};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use mirror::sync;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};

use super::{Nmi, listener, route::handle};
use crate::{metrics::Metrics, token::TokenSource};

/// The largest request head (request line and headers) NMI reads. An SDK's token request is well
/// under 2 KiB (the query with a resource and an `msi_res_id` of a few hundred bytes, a
/// User-Agent, `Metadata`, a request id, a `traceparent`); 16 KiB leaves a margin of eight and is
/// Node.js's default, while bounding what one connection makes NMI hold. Larger: 431.
///
/// The count of headers keeps hyper's default cap of 100 (more: 431), far above SDKs' (under 10)
/// and a service mesh sidecar's additions (some 10 to 15). Not set lower: hyper parses up to its
/// default on the stack, and any explicit cap costs every request a few percent; this byte cap
/// already bounds what the headers hold.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most a connection buffers: a head of [`MAX_HEAD_BYTES`] and what a client pipelines
/// behind it (hyper's default is ~400 KiB per connection, 25 MiB for one pod's 64).
const MAX_BUF_BYTES: usize = 2 * MAX_HEAD_BYTES;

/// How much of the node's NMI one pod's connections may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest a client may take to send a whole request head, from the connection's start or
    /// the previous answer (so also how long an idle keep-alive connection stays open); a
    /// slowloris trickling bytes is cut off all the same. `None`: no limit.
    pub header_read_timeout: Option<Duration>,
    /// Most connections one source IP may have open at once; 0: no limit.
    pub per_pod: usize,
}

impl Default for ConnectionLimits {
    /// `--header-read-timeout` and `--max-connections-per-pod`'s defaults.
    fn default() -> Self {
        Self {
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            per_pod: DEFAULT_MAX_CONNECTIONS_PER_POD,
        }
    }
}

/// A real client sends its whole head in one packet, at once; 10 s is far beyond any node's
/// network delay, and short enough that a slowloris holds a place for only that long.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An SDK credential opens one connection (a few when several threads ask at once, and a pod
/// with many worker processes one per process). 64 covers a pod of dozens of workers asking
/// together, while one pod then holds at most 64 sockets and some 64 × 32 KiB of buffers.
/// All hostNetwork pods of a node share the node's IP, and this cap.
pub const DEFAULT_MAX_CONNECTIONS_PER_POD: usize = 64;

/// Serves the pod-facing endpoint on `listener` with the default [`ConnectionLimits`] until
/// `shutdown` completes; see [`serve_with`].
pub async fn serve<S: TokenSource>(
    listener: TcpListener,
    nmi: Arc<Nmi<S>>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, nmi, ConnectionLimits::default(), shutdown).await
}

/// Serves the pod-facing endpoint on `listener` until `shutdown` completes, then stops accepting
/// and lets the requests in progress finish.
///
/// HTTP/1.1 only, as IMDS. Written on hyper directly, not with axum's `serve` and a router: every
/// token request takes this path, and axum's per-request machinery (the peer's address put into
/// each request's extensions and taken out again, a router with one fallback, a boxed service
/// future) cost about a tenth of NMI's throughput (BENCHMARKS.md, run 7).
pub async fn serve_with<S: TokenSource>(
    listener: TcpListener,
    nmi: Arc<Nmi<S>>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let server = Server::new(nmi, limits);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        server.take(stream, peer);
    }
    // What the kernel queued before the stop is served too: closing the listener would reset it.
    // A newer NMI gets every new connection meanwhile (`listener`'s newest-wins program).
    let drained = listener::drain(listener, |stream, peer| server.take(stream, peer));
    tracing::info!(
        drained,
        "stopped accepting pods' connections; finishing the requests in progress"
    );
    // Idle keep-alive connections close now; those with a request in progress after its answer.
    server.connections.shutdown().await;
}

/// What serving one accepted connection needs.
struct Server<S> {
    nmi: Arc<Nmi<S>>,
    connections: GracefulShutdown,
    per_pod: Arc<PerPodConnections>,
    http: http1::Builder,
}

impl<S: TokenSource> Server<S> {
    fn new(nmi: Arc<Nmi<S>>, limits: ConnectionLimits) -> Self {
        let per_pod = PerPodConnections::new(limits.per_pod, nmi.metrics.pod_connections.clone());
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(MAX_HEAD_BYTES)
            .max_buf_size(MAX_BUF_BYTES);
        Self {
            nmi,
            connections: GracefulShutdown::new(),
            per_pod,
            http,
        }
    }

    /// Serves one pod's connection in a task of its own, or refuses it over the per-pod cap.
    fn take(&self, stream: TcpStream, peer: SocketAddr) {
        let nmi = &self.nmi;
        let Some(admitted) = self.per_pod.admit(peer.ip()) else {
            refuse(stream, peer.ip(), &nmi.metrics);
            return;
        };
        // One answer per request, written at once: Nagle would only hold it back.
        let _ = stream.set_nodelay(true);
        // Whether a request got this far: a timeout before the first is a head never sent whole;
        // one after it is an idle keep-alive connection closing, which is normal.
        let served = Arc::new(AtomicBool::new(false));
        let service = {
            let (nmi, served) = (nmi.clone(), served.clone());
            hyper::service::service_fn(move |req: Request<Incoming>| {
                served.store(true, Ordering::Relaxed);
                let nmi = nmi.clone();
                async move { Ok::<_, Infallible>(handle(&nmi, peer, req.map(Body::new)).await) }
            })
        };
        let connection = self
            .connections
            .watch(self.http.serve_connection(TokioIo::new(stream), service));
        let metrics = nmi.metrics.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            if let Err(e) = connection.await {
                let dropped = if e.is_timeout() && !served.load(Ordering::Relaxed) {
                    Some("header_timeout")
                } else if e.is_parse_too_large() {
                    Some("head_too_large")
                } else {
                    None
                };
                if let Some(reason) = dropped {
                    metrics.connection_dropped(reason);
                }
                tracing::debug!(error = %e, remote = %peer, "connection ended with an error");
            }
        });
    }
}

/// Closes a connection over the per-pod cap at once, after a best-effort 429 in IMDS's form
/// (written only if the socket takes it now: nothing waits on a refused connection). A client
/// that has already sent its request may see a reset instead; SDKs retry either.
fn refuse(stream: TcpStream, ip: IpAddr, metrics: &Metrics) {
    metrics.connection_dropped("per_pod_limit");
    let body = r#"{"error":"too_many_requests","error_description":"too many connections from this pod at once: over NMI's per-pod connection limit; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    tracing::debug!(remote = %ip, "connection refused: over the per-pod connection limit");
}

/// After a failed `accept`: a connection that went away before it was accepted is nothing; anything
/// else (out of file descriptors, say) is logged and waited out, as hyper and axum do.
async fn accept_failed(e: &std::io::Error) {
    if !listener::is_transient(e) {
        tracing::error!(error = %e, "accepting a pod's connection failed; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The count of connections open per source IP, and the cap.
pub struct PerPodConnections {
    /// 0: no cap (the count is still kept, for the gauge).
    max: usize,
    /// Only IPs with a connection open: an entry goes with its last connection.
    open: Mutex<HashMap<IpAddr, usize>>,
    /// `aadpodidentity_nmi_pod_connections`: every connection open, all IPs together.
    gauge: Gauge,
}

/// One admitted connection; dropping it (when the connection ends) frees its place.
pub struct Admitted {
    owner: Arc<PerPodConnections>,
    ip: IpAddr,
}

impl PerPodConnections {
    pub fn new(max: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::default(),
            gauge,
        })
    }

    /// A place for one more connection from `ip`, or `None` when it has `max` open already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut open = sync::lock(&self.open);
        let n = open.entry(ip).or_default();
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        self.gauge.inc();
        Some(Admitted {
            owner: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        sync::lock(&self.open).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = sync::lock(&self.owner.open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
        self.owner.gauge.dec();
    }
}

#[cfg(test)]
mod tests;
