//! The HTTPS server: an accept loop with a bound on connections, TLS from [`super::tls::ReloadingCert`],
//! HTTP/1.1 with bounded and timed request reads, and `POST /mutate` answered by
//! [`super::review`].

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};

use super::review::{self, Outcome};
use crate::metrics::Metrics;

/// The apiserver's own limit on a request body (3 MiB); a review is the pod plus a little.
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// Connections served at once; more wait in the listen backlog. The apiservers keep a few
/// connections each; the bound keeps a flood from exhausting memory.
pub const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to read a request's headers, and how long an idle kept-alive connection stays open
/// (hyper's header timer covers both). Above Go's 90 s idle timeout of the apiserver's client,
/// so that it closes idle connections first: a POST sent on a connection the server has just
/// closed is not retried by Go, and would fail the call.
const HEADER_TIMEOUT: Duration = Duration::from_secs(120);
/// Time to read a request's body once its headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The accept loop over `listener` until the task running it is aborted; aborting it drops the
/// listener and every connection with it.
pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    metrics: Arc<Metrics>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // Reap finished connections so that the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, metrics) = (acceptor.clone(), metrics.clone());
        conns.spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, acceptor, metrics).await;
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    metrics: Arc<Metrics>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "webhook TLS handshake timed out");
            return;
        }
    };
    let service = hyper::service::service_fn(move |req| {
        let metrics = metrics.clone();
        async move { Ok::<_, Infallible>(handle(req, &metrics).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
    }
}

async fn handle(req: Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if req.uri().path() != "/mutate" {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), MAX_BODY).collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                metrics.webhook_request("error");
                tracing::warn!(error = %e, "webhook request body unreadable or over {MAX_BODY} bytes");
                return plain(StatusCode::PAYLOAD_TOO_LARGE, "body unreadable or too large");
            }
            Err(_) => {
                metrics.webhook_request("error");
                tracing::warn!("webhook request body not received within {BODY_TIMEOUT:?}");
                return plain(StatusCode::REQUEST_TIMEOUT, "body too slow");
            }
        };
    match review::review(&body) {
        Err(e) => {
            metrics.webhook_request("error");
            tracing::warn!(error = %e, "malformed AdmissionReview");
            plain(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Ok(r) => {
            metrics.webhook_request(r.outcome.label());
            match &r.outcome {
                Outcome::GateAdded => tracing::debug!(pod = %r.pod, "readiness gate added"),
                Outcome::Skipped(why) => {
                    tracing::debug!(pod = %r.pod, reason = why.as_str(), "no readiness gate")
                }
                Outcome::NotAPodCreate => {
                    tracing::warn!("webhook called for something else than a pod CREATE; check its rules")
                }
                Outcome::UnreadablePod(e) => {
                    tracing::warn!(error = %e, "pod in an AdmissionReview unreadable; allowed without the gate")
                }
            }
            let json = serde_json::to_vec(&r.response).expect("a review response always serialises");
            let mut resp = Response::new(Full::new(Bytes::from(json)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            resp
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    resp
}
