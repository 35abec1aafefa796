//! Routing: which answer a request gets, by its path (see [`request::classify`]), once it has
//! passed the per-pod rate limit and, where IMDS wants it, the `Metadata: true` check. Every
//! refusal is counted and logged here, and every answer timed.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use axum::{
    body::Body,
    http::{HeaderMap, Request, StatusCode},
    response::Response,
};

use super::{Config, Nmi, host_token, passthrough::pass_through, pod_token};
use crate::{
    refusal::{Reason, Refusal},
    request::{self, Route},
    response,
    token::TokenSource,
};

/// Answers one request from `peer`. What `serve` runs for every request; tests call it directly.
pub async fn handle<S: TokenSource>(nmi: &Nmi<S>, peer: SocketAddr, req: Request<Body>) -> Response {
    let started = Instant::now();
    // A cheap clone (shared bytes), kept for the log line after `req` is consumed.
    let uri = req.uri().clone();
    let route = request::classify(uri.path());
    // Tokio's clock, which the unit tests pause and move on.
    let now = tokio::time::Instant::now().into_std();
    let response = match (nmi.rate_limit.check(peer.ip(), now), route) {
        (Err(wait), _) => {
            let mut refusal = Refusal::new(
                Reason::RateLimited,
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "too many requests from {}: over NMI's per-pod rate limit; retry later",
                    peer.ip()
                ),
            );
            refusal.response = response::with_retry_after(refusal.response, wait);
            refuse(nmi, peer.ip(), refusal)
        }
        (Ok(()), route) => match route {
            Route::Token => match header_check(&nmi.config, req.headers()) {
                Some(refusal) => refusal,
                None => pod_token::answer(nmi, peer.ip(), req)
                    .await
                    .unwrap_or_else(|r| refuse(nmi, peer.ip(), r)),
            },
            Route::Invalid => {
                let refusal = Refusal::new(
                    Reason::InvalidPath,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Invalid request".into(),
                );
                refuse(nmi, peer.ip(), refusal)
            }
            Route::HostToken => host_token::answer(nmi, peer.ip(), req)
                .await
                .unwrap_or_else(|r| refuse(nmi, peer.ip(), r)),
            Route::Instance if nmi.config.block_instance_metadata => response::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Request blocked by AAD Pod Identity NMI",
            ),
            Route::Instance | Route::Other => match header_check(&nmi.config, req.headers()) {
                Some(refusal) => refusal,
                None => pass_through(nmi, req).await,
            },
        },
    };
    let operation = match route {
        Route::Token => "token",
        Route::Invalid => "invalid",
        Route::HostToken => "host_token",
        Route::Instance => "instance",
        Route::Other => "pass_through",
    };
    let status = response.status().as_u16();
    nmi.metrics.operation(operation, status, started.elapsed());
    tracing::debug!(status, took = ?started.elapsed(), path = uri.path(), remote = %peer.ip(), "request");
    response
}

fn header_check(config: &Config, headers: &HeaderMap) -> Option<Response> {
    // IMDS's own rule: the value must be exactly `true`.
    let ok = headers.get("metadata").is_some_and(|v| v.as_bytes() == b"true");
    (config.metadata_header_required && !ok).then(response::metadata_header_missing)
}

/// Answers a refused token request from `source`: counted by reason, logged (see
/// [`RefusalLog`](crate::refusal::RefusalLog)) and published on the pod (see
/// [`crate::refusal::event`]).
fn refuse<S>(nmi: &Nmi<S>, source: IpAddr, refusal: Refusal) -> Response {
    nmi.metrics.refused(refusal.reason.label());
    nmi.refusals.record(&refusal, source, std::time::Instant::now());
    if let Some(events) = nmi.refusal_events.get() {
        events.publish(&refusal);
    }
    refusal.response
}
