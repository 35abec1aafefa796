//! Routing: which answer a request gets. Its path says which route it takes ([`classify`],
//! pure, so that it can be tested exhaustively and fuzzed); then the per-pod rate limit and,
//! where IMDS wants it, the `Metadata: true` header are checked, and the route's endpoint
//! answers. Every refusal is counted, logged and published here ([`refuse`]), and every answer
//! timed.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use axum::{
    body::Body,
    http::{Request, StatusCode},
    response::Response,
};

use super::{Nmi, host_token, passthrough::pass_through, pod_token, response};
use crate::{
    refusal::{Reason, Refusal},
    token::TokenSource,
};

/// Answers one request from `peer`. What `serve` runs for every request; tests call it directly.
pub async fn handle<S: TokenSource>(nmi: &Nmi<S>, peer: SocketAddr, req: Request<Body>) -> Response {
    let started = Instant::now();
    // A cheap clone (shared bytes), kept for the log line after `req` is consumed.
    let uri = req.uri().clone();
    let route = classify(uri.path());
    // Tokio's clock, which the unit tests pause and move on.
    let now = tokio::time::Instant::now().into_std();
    // IMDS's own rule: the value must be exactly `true`.
    let metadata_missing = |req: &Request<Body>| {
        let ok = req
            .headers()
            .get("metadata")
            .is_some_and(|v| v.as_bytes() == b"true");
        (nmi.config.metadata_header_required && !ok).then(response::metadata_header_missing)
    };
    let response = match (nmi.rate_limit.check(peer.ip(), now), route) {
        (Err(wait), _) => {
            let refusal = Refusal::new(
                Reason::RateLimited,
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "too many requests from {}: over NMI's per-pod rate limit; retry later",
                    peer.ip()
                ),
            )
            .retry_after(wait);
            refuse(nmi, peer.ip(), refusal)
        }
        (Ok(()), route) => match route {
            Route::Token => match metadata_missing(&req) {
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
            // Boxed, as pod_token's full path: the rarer routes do not size every connection's
            // request future.
            Route::HostToken => Box::pin(host_token::answer(nmi, peer.ip(), req))
                .await
                .unwrap_or_else(|r| refuse(nmi, peer.ip(), r)),
            Route::Instance if nmi.config.block_instance_metadata => response::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Request blocked by AAD Pod Identity NMI",
            ),
            Route::Instance | Route::Other => match metadata_missing(&req) {
                Some(refusal) => refusal,
                None => Box::pin(pass_through(nmi, req)).await,
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

/// Answers a refused token request from `source`: counted by reason, logged (see
/// [`RefusalLog`](super::refusal_log::RefusalLog)), published on the pod (see
/// [`super::refusal_events`]) and rendered.
fn refuse<S>(nmi: &Nmi<S>, source: IpAddr, refusal: Refusal) -> Response {
    nmi.metrics.refused(refusal.reason.label());
    nmi.refusals.record(&refusal, source, std::time::Instant::now());
    if let Some(events) = nmi.refusal_events.get() {
        events.publish(&refusal);
    }
    response::refusal(refusal)
}

/// Where a request goes, decided from its path, first match wins as upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/metadata/identity/oauth2/token`, in any letter case, optionally followed by `/...`.
    Token,
    /// A mangled path that IMDS might still read as an identity request (backslashes, dot
    /// segments, doubled slashes, encoded separators, other `/metadata/identity/...` paths): 400.
    /// Passing such a path through would hand the node's own identities to any pod.
    Invalid,
    /// `/host/token`: the loopback-only endpoint for host processes acting for a pod.
    HostToken,
    /// `/metadata/instance...`, blocked when `--block-instance-metadata` is on.
    Instance,
    /// Anything else: passed through to IMDS. This includes `/metadata/identity/info` (spelt
    /// plainly), whose answer is the VM's tenant id and nothing a pod could use as a credential.
    Other,
}

const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// IMDS's identity information: `{"tenantId": ...}`, the only identity path passed through.
const INFO_PATH: &str = "/metadata/identity/info";

/// Percent-decodes a path; invalid escapes are kept as written.
pub fn decode_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The path as a lenient server would resolve it: lower case, backslashes as slashes, empty and
/// `.` segments dropped, `..` applied.
fn resolved(decoded: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let lower = decoded.to_ascii_lowercase().replace('\\', "/");
    for seg in lower.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(lower.len() + 1);
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    out
}

/// Whether a raw path is already in the only form passed through: plain characters, no empty or
/// dot segments, no escapes. IMDS's own paths all are.
fn is_plain(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    raw.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        && (rest.is_empty() || rest.split('/').all(|s| !matches!(s, "" | "." | "..")))
}

/// Classifies a raw request path (as it appears on the request line).
pub fn classify(raw: &str) -> Route {
    let decoded = decode_path(raw);
    let lower = decoded.to_ascii_lowercase();
    if let Some(tail) = lower.strip_prefix(TOKEN_PATH)
        && (tail.is_empty() || tail.starts_with('/'))
    {
        return Route::Token;
    }
    let resolved = resolved(&decoded);
    if resolved == INFO_PATH && is_plain(raw) {
        return Route::Other;
    }
    if looks_like_token_path(&lower) || resolved.starts_with("/metadata/identity") {
        return Route::Invalid;
    }
    if decoded.starts_with("/host/token") {
        return Route::HostToken;
    }
    // Only plain paths are passed through: a roundabout one (`/x/../metadata/instance`,
    // `/metadata%2fidentity//../instance`) would reach IMDS as the HTTP client rewrites it,
    // not as it was checked here.
    if !is_plain(raw) {
        return Route::Invalid;
    }
    if resolved.starts_with("/metadata/instance") {
        return Route::Instance;
    }
    Route::Other
}

/// Upstream's `/(?i:metadata)/identity(.*?)oauth2(.*?)token` anywhere in the path (here wholly
/// case-insensitive; `lower` is the lower-cased decoded path).
fn looks_like_token_path(lower: &str) -> bool {
    lower.match_indices("/metadata/identity").any(|(at, m)| {
        let rest = &lower[at + m.len()..];
        rest.find("oauth2")
            .is_some_and(|o| rest[o + "oauth2".len()..].contains("token"))
    })
}

#[cfg(test)]
mod tests;
