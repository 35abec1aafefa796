//! The HTTP side: the pod-facing server (token endpoint, `/host/token`, instance-metadata
//! blocking, pass-through to IMDS), and the probe and metrics servers.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use api::AzureIdentity;
use authorize::Caller;
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::{
    cache::{Cached, TokenCache},
    memo::{Answer, AnswerMemo, Kept},
    metrics::Metrics,
    missing::MissingReports,
    ratelimit::PodRateLimiter,
    refusal::{Reason, Refusal, RefusalLog},
    request::{self, Route, TokenQuery},
    response::{self, TokenBody},
    state::State,
    token::{TokenSource, now},
};

mod authorize;
mod hold;

/// How the pod-facing server behaves.
#[derive(Clone, Debug)]
pub struct Config {
    pub metadata_header_required: bool,
    pub block_instance_metadata: bool,
    /// On a timed-out wait for MIC: 503 + `Retry-After` instead of 404.
    pub set_retry_after_header: bool,
    pub identity_wait: Duration,
    pub pod_wait: Duration,
    /// `http://<metadata-ip>:<metadata-port>`, for pass-through requests and exceptions.
    pub imds: String,
}

/// What the handlers share.
pub struct Nmi<S> {
    pub state: Arc<State>,
    pub cache: Arc<TokenCache<S>>,
    pub config: Config,
    pub metrics: Metrics,
    /// For pass-through requests; has the upstream timeout and no proxy.
    pub http: reqwest::Client,
    /// Per-source-IP token buckets (`--pod-rate-limit`); off until configured.
    pub rate_limit: PodRateLimiter,
    /// Principal (object) ids learned from tokens, by lower-case client id.
    principals: RwLock<HashMap<String, String>>,
    /// Token answers authorized at the current state version, for pods asking the same again.
    memo: AnswerMemo,
    /// Which refusals are logged (one line per pod and reason per window).
    refusals: RefusalLog,
    /// Which findings of identities missing on the VM are written for MIC.
    missing: MissingReports,
}

/// `Retry-After` upstream used with `--set-retry-after-header`.
const RETRY_AFTER_WAITING: Duration = Duration::from_secs(20);
/// `Retry-After` while the watched state cannot be proven.
const RETRY_AFTER_STALE: Duration = Duration::from_secs(5);
/// Largest request body passed through to IMDS.
const MAX_BODY: usize = 1 << 20;

impl<S: TokenSource> Nmi<S> {
    pub fn new(
        state: Arc<State>,
        cache: Arc<TokenCache<S>>,
        config: Config,
        metrics: Metrics,
        http: reqwest::Client,
    ) -> Arc<Self> {
        Arc::new(Self {
            state,
            cache,
            config,
            metrics,
            http,
            rate_limit: PodRateLimiter::default(),
            principals: RwLock::default(),
            memo: AnswerMemo::default(),
            refusals: RefusalLog::default(),
            missing: MissingReports::default(),
        })
    }

    /// Answers a refused token request from `source`: counted by reason, and logged (see
    /// [`RefusalLog`]).
    fn refuse(&self, source: IpAddr, refusal: Refusal) -> Response {
        self.metrics.refused(refusal.reason.label());
        self.refusals.record(&refusal, source, std::time::Instant::now());
        refusal.response
    }

    fn principal_of(&self, client_id: &str) -> Option<String> {
        self.principals
            .read()
            .expect("lock")
            .get(&client_id.to_ascii_lowercase())
            .cloned()
    }

    fn learn(&self, identity: &AzureIdentity, cached: &Cached) {
        if let (Some(client), Some(oid)) = (identity.spec.client_id(), &cached.token.principal_id) {
            let client = client.to_ascii_lowercase();
            // Nearly always known already: a read lock keeps concurrent requests apart.
            if self.principals.read().expect("lock").get(&client) == Some(oid) {
                return;
            }
            self.principals.write().expect("lock").insert(client, oid.clone());
        }
    }
}

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

/// Answers one request from `peer`. What `serve` runs for every request; tests call it directly.
pub async fn handle<S: TokenSource>(nmi: &Nmi<S>, peer: SocketAddr, req: Request<Body>) -> Response {
    let started = Instant::now();
    // A cheap clone (shared bytes), kept for the log line after `req` is consumed.
    let uri = req.uri().clone();
    let route = request::classify(uri.path());
    let response = match (nmi.rate_limit.check(peer.ip(), started), route) {
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
            nmi.refuse(peer.ip(), refusal)
        }
        (Ok(()), route) => match route {
            Route::Token => {
                if let Some(refusal) = header_check(&nmi.config, req.headers()) {
                    refusal
                } else if let Some(answer) = remembered(nmi, peer.ip(), req.uri().query()) {
                    answer
                } else {
                    let answer = match request::parse_imds_token_query(req.uri().query()) {
                        // IMDS's own refusal body (`newest-versions`), not the usual error shape.
                        Err(request::QueryError::ApiVersion) => Ok(crate::api_version::refusal(&nmi.metrics)),
                        Err(e) => Err(Refusal::bad_request(e.to_string())),
                        Ok(q) => token_for_ip(nmi, peer.ip(), q, req).await,
                    };
                    answer.unwrap_or_else(|r| nmi.refuse(peer.ip(), r))
                }
            }
            Route::Invalid => {
                let refusal = Refusal::new(
                    Reason::InvalidPath,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Invalid request".into(),
                );
                nmi.refuse(peer.ip(), refusal)
            }
            Route::HostToken => host_token(nmi, peer.ip(), req)
                .await
                .unwrap_or_else(|r| nmi.refuse(peer.ip(), r)),
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

/// The answer this pod got for this very query before, if the state has not changed since
/// (see [`crate::memo`]), rendered for this second.
fn remembered<S: TokenSource>(nmi: &Nmi<S>, ip: IpAddr, query: Option<&str>) -> Option<Response> {
    if nmi.state.is_stale() {
        return None;
    }
    let query = query.unwrap_or_default();
    let version = nmi.state.version();
    let mut kept = nmi.memo.get(ip, query, version)?;
    let second = now();
    if kept.second != second {
        // Once the token is due for refresh, the request goes through the token cache, which
        // refreshes it; the memo then keeps the new one.
        let token = &kept.answer.token;
        if token.expires_on <= second + nmi.cache.policy().refresh_ahead.as_secs() {
            return None;
        }
        let audit = &kept.answer.audit;
        kept.body = TokenBody::new(token, &audit.client_id, &audit.resource, second)
            .to_json()
            .into();
        kept.second = second;
        nmi.memo.put(ip, query, version, kept.clone());
    }
    // The same `source` as the full path's (`Caller::describe`).
    kept.answer.audit.log(&format_args!("IP {ip}"), true);
    nmi.metrics.issued(true);
    Some(response::json_body(StatusCode::OK, kept.body))
}

async fn token_for_ip<S: TokenSource>(
    nmi: &Nmi<S>,
    ip: IpAddr,
    query: TokenQuery,
    req: Request<Body>,
) -> Result<Response, Refusal> {
    let caller = Caller::Ip(ip);
    let pod = nmi
        .find_pod(&caller)
        .await
        .map_err(|r| r.asking(&query.identity))?;
    if nmi.state.is_excepted(&pod) {
        tracing::info!(
            target: "nmi::audit",
            pod = %pod.name, namespace = %pod.namespace, resource = %query.resource, source = %ip,
            "excepted pod: passed through to the node's identity"
        );
        nmi.metrics.issued(false);
        return Ok(pass_through(nmi, req).await);
    }
    let raw_query = req.uri().query().unwrap_or_default().to_owned();
    match nmi.issue(&caller, pod, &query).await {
        Ok(issued) => {
            let second = now();
            let body: axum::body::Bytes = TokenBody::new(
                &issued.cached.token,
                &issued.audit.client_id,
                &query.resource,
                second,
            )
            .to_json()
            .into();
            // Kept only if nothing changed since the decision: a later change moves the version.
            if nmi.state.version() == issued.decided_at {
                nmi.memo.put(
                    ip,
                    &raw_query,
                    issued.decided_at,
                    Kept {
                        answer: Arc::new(Answer {
                            token: issued.cached.token.clone(),
                            audit: issued.audit,
                        }),
                        second,
                        body: body.clone(),
                    },
                );
            }
            Ok(response::json_body(StatusCode::OK, body))
        }
        Err(r) => Err(r.asking(&query.identity)),
    }
}

#[derive(Serialize)]
struct HostTokenBody<'a> {
    token: TokenBody<'a>,
    clientid: &'a str,
}

async fn host_token<S: TokenSource>(
    nmi: &Nmi<S>,
    peer: IpAddr,
    req: Request<Body>,
) -> Result<Response, Refusal> {
    let headers = req.headers().clone();
    let query_string = req.uri().query().map(str::to_owned);
    drop(req);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (Some(namespace), Some(name)) = (header("podns"), header("podname")) else {
        return Err(Refusal::bad_request(
            "missing 'podname' and 'podns' from request header".into(),
        ));
    };
    if !peer.is_loopback() {
        return Err(Refusal::new(
            Reason::HostTokenNotLoopback,
            StatusCode::FORBIDDEN,
            "forbidden",
            "request remote address is not from a host".into(),
        ));
    }
    let query = request::parse_token_query(query_string.as_deref())
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    let caller = Caller::Named { namespace, name };
    let issued = match nmi.find_pod(&caller).await {
        Ok(pod) => nmi.issue(&caller, pod, &query).await,
        Err(r) => Err(r),
    };
    match issued {
        Ok(issued) => Ok(response::json(
            StatusCode::OK,
            &HostTokenBody {
                token: TokenBody::new(
                    &issued.cached.token,
                    &issued.audit.client_id,
                    &query.resource,
                    now(),
                ),
                clientid: &issued.audit.client_id,
            },
        )),
        Err(r) => Err(r.asking(&query.identity)),
    }
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
];

/// Passes a request to IMDS unchanged but for `X-Forwarded-For` (IMDS refuses requests that carry
/// it) and hop-by-hop headers, with a timeout.
async fn pass_through<S>(nmi: &Nmi<S>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path_and_query}", nmi.config.imds);
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "request body too large",
            );
        }
    };
    let mut out = nmi.http.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if !HOP_BY_HOP.contains(&n) && n != "x-forwarded-for" && n != "forwarded" {
            out = out.header(name, value);
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            return response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                &format!("IMDS did not answer: {e}"),
            );
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return response::error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                &format!("reading IMDS's answer: {e}"),
            );
        }
    };
    let mut response = (status, bytes).into_response();
    // IMDS's own headers replace the defaults of a bytes body (content-type), rather than
    // joining them: a doubled content-type makes the SDKs refuse the answer. The length is
    // the body's, set already.
    for name in headers.keys() {
        if name != header::CONTENT_LENGTH {
            response.headers_mut().remove(name);
        }
    }
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != header::CONTENT_LENGTH {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

/// Keeps `aadpodidentity_nmi_state_stale` current (every second), requests or not, and logs each
/// change. Runs forever; the binary spawns it next to the servers.
pub async fn track_staleness(state: Arc<State>, metrics: Metrics) {
    let mut was = false;
    loop {
        let stale = state.is_stale();
        metrics.state_stale.set(i64::from(stale));
        if stale != was {
            if stale {
                tracing::warn!(
                    unproven_for = ?state.unproven_for(),
                    "cluster state too old: refusing token requests"
                );
            } else {
                tracing::info!("cluster state proven again: serving token requests");
            }
            was = stale;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Liveness and readiness. `/healthz` says `Active` once the rules are in place (as upstream);
/// `/readyz` is 200 only when the rules are in place and every watch has synced.
pub fn probe_router(state: Arc<State>, rules_in_place: Arc<AtomicBool>) -> Router {
    let rules = rules_in_place.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let active = rules.load(Ordering::Acquire);
                async move { if active { "Active" } else { "Not Active" } }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = rules_in_place.load(Ordering::Acquire) && state.is_synced();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let text = metrics.encode();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests;
