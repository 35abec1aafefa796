//! The pod-facing listener: accepting connections, serving each over HTTP/1.1 with [`handle`],
//! and the graceful shutdown that lets requests in progress finish.

use std::{convert::Infallible, pin::pin, sync::Arc, time::Duration};

use axum::{body::Body, http::Request};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::net::TcpListener;

use super::{Nmi, route::handle};
use crate::token::TokenSource;

/// Serves the pod-facing endpoint on `listener` until `shutdown` completes, then stops accepting
/// and lets the requests in progress finish.
///
/// HTTP/1.1 only, as IMDS. Written on hyper directly, not with axum's `serve` and a router: every
/// token request takes this path, and axum's per-request machinery (the peer's address put into
/// each request's extensions and taken out again, a router with one fallback, a boxed service
/// future) cost about a tenth of NMI's throughput (BENCHMARKS.md, run 7).
pub async fn serve<S: TokenSource>(
    listener: TcpListener,
    nmi: Arc<Nmi<S>>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = GracefulShutdown::new();
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
        // One answer per request, written at once: Nagle would only hold it back.
        let _ = stream.set_nodelay(true);
        let nmi = nmi.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let nmi = nmi.clone();
            async move { Ok::<_, Infallible>(handle(&nmi, peer, req.map(Body::new)).await) }
        });
        let connection =
            connections.watch(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, remote = %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// After a failed `accept`: a connection that went away before it was accepted is nothing; anything
/// else (out of file descriptors, say) is logged and waited out, as hyper and axum do.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        tracing::error!(error = %e, "accepting a pod's connection failed; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
