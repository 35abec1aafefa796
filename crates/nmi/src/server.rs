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
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use matching::{IdentityRequest, NotChosen, PodFacts};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::{
    Error,
    cache::{Cached, TokenCache},
    memo::{Answer, AnswerMemo, Audit, Kept},
    metrics::Metrics,
    ratelimit::PodRateLimiter,
    request::{self, Route, TokenQuery},
    response::{self, TokenBody},
    state::{Decision, PodLookup, State},
    token::{TokenSource, now},
};

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
        })
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
            nmi.metrics.refused("rate_limited");
            response::with_retry_after(
                response::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    &format!(
                        "too many requests from {}: over NMI's per-pod rate limit; retry later",
                        peer.ip()
                    ),
                ),
                wait,
            )
        }
        (Ok(()), route) => match route {
            Route::Token => {
                if let Some(refusal) = header_check(&nmi.config, req.headers()) {
                    refusal
                } else if let Some(answer) = remembered(nmi, peer.ip(), req.uri().query()) {
                    answer
                } else {
                    match request::parse_imds_token_query(req.uri().query()) {
                        Err(request::QueryError::ApiVersion) => crate::api_version::refusal(&nmi.metrics),
                        Err(e) => bad_request(&nmi.metrics, &e.to_string()),
                        Ok(q) => token_for_ip(nmi, peer.ip(), q, req).await,
                    }
                }
            }
            Route::Invalid => {
                nmi.metrics.refused("invalid_path");
                response::error(StatusCode::BAD_REQUEST, "invalid_request", "Invalid request")
            }
            Route::HostToken => host_token(nmi, peer.ip(), req).await,
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

fn bad_request(metrics: &Metrics, description: &str) -> Response {
    metrics.refused("bad_request");
    response::error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Who a token request is for.
enum Caller {
    /// A pod, found by the request's source IP.
    Ip(IpAddr),
    /// `/host/token`: a host process names the pod.
    Named { namespace: String, name: String },
}

impl Caller {
    fn describe(&self) -> String {
        match self {
            Self::Ip(ip) => format!("IP {ip}"),
            Self::Named { namespace, name } => format!("pod {namespace}/{name}"),
        }
    }
}

/// A request NMI will not answer with a token, as the response to give.
struct Refusal(Response);

impl<S: TokenSource> Nmi<S> {
    fn lookup(&self, caller: &Caller) -> PodLookup {
        match caller {
            Caller::Ip(ip) => self.state.pods.by_addr(*ip),
            Caller::Named { namespace, name } => self
                .state
                .pods
                .by_name(namespace, name)
                .map_or(PodLookup::NotFound, PodLookup::Found),
        }
    }

    /// A retryable refusal while NMI's view of the cluster cannot prove anything, counted as `reason`.
    fn unavailable(&self, reason: &str, description: &str) -> Refusal {
        self.metrics.refused(reason);
        Refusal(response::with_retry_after(
            response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                description,
            ),
            RETRY_AFTER_STALE,
        ))
    }

    /// Waits, up to `--pod-wait`, until every watch has listed once. Until then NMI (just
    /// started) may know a pod but not yet its bindings or identities, and an answer would refuse
    /// a bound pod for good: the SDKs do not retry a 403. Past the wait: 503, retryable.
    async fn wait_synced(&self, caller: &Caller) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + self.config.pod_wait;
        // Subscribed before looking, so that the last list's change is not missed.
        let mut changes = self.state.subscribe();
        while !self.state.is_synced() {
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                return Err(self.unavailable(
                    "not_synced",
                    &format!(
                        "NMI has not yet read the cluster's pods, bindings and identities (it has just \
                         started): it cannot tell which identity {} may use; retry later",
                        caller.describe()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The caller's pod, waiting (woken by the pod watch) up to `--pod-wait` for a pod just started.
    /// Refuses (503, retryable) while the watched state is too old to prove anything.
    async fn find_pod(&self, caller: &Caller) -> Result<Arc<PodFacts>, Refusal> {
        if self.state.is_stale() {
            // `aadpodidentity_nmi_state_stale` is kept by `track_staleness`.
            return Err(self.unavailable(
                "state_stale",
                &format!(
                    "NMI cannot reach the Kubernetes API (watches failing for {:?}): it cannot prove \
                     which identity {} may use; retry later",
                    self.state.unproven_for().unwrap_or_default(),
                    caller.describe()
                ),
            ));
        }
        if !self.state.is_synced() {
            self.wait_synced(caller).await?;
        }
        // The common case, a known pod, needs no subscription to later changes.
        if let PodLookup::Found(pod) = self.lookup(caller) {
            return Ok(pod);
        }
        let deadline = tokio::time::Instant::now() + self.config.pod_wait;
        // Subscribed before looking again, so that no change after the look is missed.
        let mut changes = self.state.subscribe();
        loop {
            match self.lookup(caller) {
                PodLookup::Found(pod) => return Ok(pod),
                PodLookup::Ambiguous(pods) => {
                    self.metrics.refused("ambiguous_ip");
                    return Err(Refusal(response::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        &format!(
                            "failed to match pod IP: {} is claimed by several pods ({}); refusing",
                            caller.describe(),
                            pods.join(", ")
                        ),
                    )));
                }
                PodLookup::NotFound => {
                    let timed_out = tokio::select! {
                        r = changes.changed() => r.is_err(),
                        () = tokio::time::sleep_until(deadline) => true,
                    };
                    if timed_out {
                        self.metrics.refused("no_pod");
                        return Err(Refusal(response::error(
                            StatusCode::NOT_FOUND,
                            "not_found",
                            &format!(
                                "no Pending or Running pod on node {} matches {}",
                                self.state.node,
                                caller.describe()
                            ),
                        )));
                    }
                }
            }
        }
    }

    /// Decides, waiting for MIC (woken by the AzureAssignedIdentity watch) up to `--identity-wait`.
    async fn authorize(
        &self,
        caller: &Caller,
        pod: Arc<PodFacts>,
        query: &TokenQuery,
    ) -> Result<(Arc<PodFacts>, Arc<AzureIdentity>, String, u64), Refusal> {
        let deadline = tokio::time::Instant::now() + self.config.identity_wait;
        // Subscribed only once a wait is needed (then the state is decided again first, so that no
        // change after the subscription is missed).
        let mut changes: Option<tokio::sync::watch::Receiver<u64>> = None;
        let mut pod = pod;
        let mut learned = false;
        let mut learn_failure: Option<Arc<Error>> = None;
        loop {
            // Read before deciding: a change that lands during the decision moves it.
            let version = self.state.version();
            match self.state.decide(&pod, &query.identity, |c| self.principal_of(c)) {
                Decision::Use {
                    identity,
                    binding,
                    out_of,
                } => {
                    if out_of > 1 && query.identity == IdentityRequest::Default {
                        tracing::info!(
                            pod = %pod.name, namespace = %pod.namespace, binding,
                            identity = identity.metadata.name.as_deref().unwrap_or_default(),
                            out_of,
                            "request names no identity; chose the identity of the oldest binding"
                        );
                    }
                    return Ok((pod, identity, binding, version));
                }
                Decision::LearnPrincipals(identities) if !learned => {
                    learned = true;
                    for identity in identities {
                        match self.cache.get(&identity, &query.resource).await {
                            Ok(cached) => self.learn(&identity, &cached),
                            Err(e) => learn_failure = Some(e),
                        }
                    }
                    continue;
                }
                Decision::LearnPrincipals(_) => {
                    // An identity whose principal could not be learned may be the one asked for:
                    // a transient failure must stay retryable rather than become a refusal.
                    return Err(match learn_failure {
                        Some(e) => Refusal(upstream_error(&self.metrics, &e)),
                        None => self.forbidden(&pod, &NotChosen::NotBound(query.identity.clone())),
                    });
                }
                Decision::Refused(why) => return Err(self.forbidden(&pod, &why)),
                Decision::Waiting { .. } if changes.is_none() => {
                    changes = Some(self.state.subscribe());
                    continue;
                }
                Decision::Waiting { identity } => {
                    let changes = changes.as_mut().expect("subscribed before waiting");
                    let timed_out = tokio::select! {
                        r = changes.changed() => r.is_err(),
                        () = tokio::time::sleep_until(deadline) => true,
                    };
                    if timed_out {
                        self.metrics.refused("not_assigned");
                        let text = format!(
                            "identity {identity} is not yet assigned to pod {}/{} on node {} (waiting for MIC); retry later",
                            pod.namespace, pod.name, self.state.node
                        );
                        return Err(Refusal(if self.config.set_retry_after_header {
                            response::with_retry_after(
                                response::error(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "service_unavailable",
                                    &text,
                                ),
                                RETRY_AFTER_WAITING,
                            )
                        } else {
                            response::error(StatusCode::NOT_FOUND, "not_found", &text)
                        }));
                    }
                }
            }
            // The pod itself may have gone (or its IP moved) while waiting.
            pod = self.find_pod(caller).await?;
        }
    }

    fn forbidden(&self, pod: &PodFacts, why: &NotChosen) -> Refusal {
        let text = match why {
            NotChosen::Unbound => {
                self.metrics.refused("unbound");
                format!(
                    "pod {}/{} is not bound to any AzureIdentity (label {}, bindings of its namespace)",
                    pod.namespace,
                    pod.name,
                    api::v1::BINDING_LABEL
                )
            }
            NotChosen::NotBound(r) => {
                self.metrics.refused("not_bound");
                let what = match r {
                    IdentityRequest::Default => "the default identity".to_owned(),
                    IdentityRequest::ClientId(c) => format!("client_id {c}"),
                    IdentityRequest::ObjectId(o) => format!("object_id {o}"),
                    IdentityRequest::ResourceId(m) => format!("msi_res_id {m}"),
                };
                format!(
                    "pod {}/{} is not bound to the identity with {what}",
                    pod.namespace, pod.name
                )
            }
        };
        Refusal(response::error(StatusCode::FORBIDDEN, "forbidden", &text))
    }

    /// Authorizes the caller's `pod` and fetches; re-checks authorization after the fetch, since the
    /// pod or its binding may have gone while NMI talked to Azure (unless nothing changed at all).
    async fn issue(
        &self,
        caller: &Caller,
        pod: Arc<PodFacts>,
        query: &TokenQuery,
    ) -> Result<Issued, Refusal> {
        let (pod, identity, binding, decided_at) = self.authorize(caller, pod, query).await?;
        let cached = self
            .cache
            .get(&identity, &query.resource)
            .await
            .map_err(|e| Refusal(upstream_error(&self.metrics, &e)))?;
        self.learn(&identity, &cached);
        // Nothing mirrored changed since the decision (the usual case of a cached token): it holds.
        let still = self.state.version() == decided_at
            || match self.lookup(caller) {
                PodLookup::Found(now) if now.namespace == pod.namespace && now.name == pod.name => {
                    match self.state.decide(&now, &query.identity, |c| self.principal_of(c)) {
                        Decision::Use { identity: again, .. } => again.metadata == identity.metadata,
                        _ => false,
                    }
                }
                _ => false,
            };
        if !still {
            self.metrics.refused("changed_during_fetch");
            return Err(Refusal(response::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!(
                    "pod {}/{} lost its binding to {} while its token was fetched",
                    pod.namespace,
                    pod.name,
                    identity.metadata.name.as_deref().unwrap_or_default()
                ),
            )));
        }
        let audit = Audit {
            pod: pod.name.clone(),
            namespace: pod.namespace.clone(),
            identity: format!(
                "{}/{}",
                identity.metadata.namespace.as_deref().unwrap_or_default(),
                identity.metadata.name.as_deref().unwrap_or_default()
            ),
            binding,
            client_id: identity.spec.client_id().unwrap_or_default().to_owned(),
            resource: query.resource.clone(),
        };
        audit.log(&caller.describe(), cached.hit);
        self.metrics.issued(cached.hit);
        Ok(Issued {
            cached,
            audit,
            decided_at,
        })
    }
}

struct Issued {
    cached: Cached,
    audit: Audit,
    /// The state version the authorization was decided at.
    decided_at: u64,
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
) -> Response {
    let caller = Caller::Ip(ip);
    let pod = match nmi.find_pod(&caller).await {
        Ok(p) => p,
        Err(Refusal(r)) => return r,
    };
    if nmi.state.is_excepted(&pod) {
        tracing::info!(
            target: "nmi::audit",
            pod = %pod.name, namespace = %pod.namespace, resource = %query.resource, source = %ip,
            "excepted pod: passed through to the node's identity"
        );
        nmi.metrics.issued(false);
        return pass_through(nmi, req).await;
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
            response::json_body(StatusCode::OK, body)
        }
        Err(Refusal(r)) => r,
    }
}

#[derive(Serialize)]
struct HostTokenBody<'a> {
    token: TokenBody<'a>,
    clientid: &'a str,
}

async fn host_token<S: TokenSource>(nmi: &Nmi<S>, peer: IpAddr, req: Request<Body>) -> Response {
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
        return bad_request(&nmi.metrics, "missing 'podname' and 'podns' from request header");
    };
    if !peer.is_loopback() {
        nmi.metrics.refused("host_token_not_loopback");
        return response::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "request remote address is not from a host",
        );
    }
    let query = match request::parse_token_query(query_string.as_deref()) {
        Ok(q) => q,
        Err(e) => return bad_request(&nmi.metrics, &e.to_string()),
    };
    let caller = Caller::Named { namespace, name };
    let pod = match nmi.find_pod(&caller).await {
        Ok(p) => p,
        Err(Refusal(r)) => return r,
    };
    match nmi.issue(&caller, pod, &query).await {
        Ok(issued) => response::json(
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
        ),
        Err(Refusal(r)) => r,
    }
}

/// How an IMDS or Entra failure reaches the pod: transient ones stay retryable for the SDKs
/// (429, 5xx, IMDS's 404/410 "updating"), with `Retry-After` when upstream gave one; a refusal
/// by Azure is a 403, never a 400 (which SDKs read as "no identity here, stop").
pub fn upstream_error(metrics: &Metrics, e: &Error) -> Response {
    metrics.refused("upstream");
    let text = e.to_string();
    match e {
        Error::Upstream {
            status, retry_after, ..
        } => {
            let (code, name) = match *status {
                429 => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
                404 | 410 => (
                    StatusCode::from_u16(*status).expect("a valid status"),
                    "service_unavailable",
                ),
                s if s >= 500 => (
                    StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    "service_unavailable",
                ),
                _ => (StatusCode::FORBIDDEN, "forbidden"),
            };
            let r = response::error(code, name, &text);
            match retry_after {
                Some(after) => response::with_retry_after(r, *after),
                None => r,
            }
        }
        Error::Http { .. } | Error::Kube(_) => {
            response::error(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", &text)
        }
        Error::BadUpstreamBody { .. } => response::error(StatusCode::BAD_GATEWAY, "bad_gateway", &text),
        _ => response::error(StatusCode::FORBIDDEN, "forbidden", &text),
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
