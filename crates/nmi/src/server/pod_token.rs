//! The IMDS token endpoint for pods (`/metadata/identity/oauth2/token`). An answer this pod got
//! for this very query is replayed while the watched state has not changed (see [`crate::memo`]);
//! otherwise the pod is found by its source IP and authorized, its token issued (see
//! [`authorize`](super::authorize)), and the answer rendered and kept for the next time. Excepted
//! pods are passed through to IMDS, as upstream does.

use std::{net::IpAddr, sync::Arc};

use axum::{
    body::{Body, Bytes},
    http::{Request, StatusCode},
    response::Response,
};

use super::{Nmi, authorize::Caller, passthrough::pass_through};
use crate::{
    memo::{Answer, Kept},
    refusal::Refusal,
    request::{self, TokenQuery},
    response::{self, TokenBody},
    token::{TokenSource, now},
};

/// Answers a pod's token request (its `Metadata` header already checked).
pub(super) async fn answer<S: TokenSource>(
    nmi: &Nmi<S>,
    ip: IpAddr,
    req: Request<Body>,
) -> Result<Response, Refusal> {
    if let Some(answer) = remembered(nmi, ip, req.uri().query()) {
        return Ok(answer);
    }
    match request::parse_imds_token_query(req.uri().query()) {
        // IMDS's own refusal body (`newest-versions`), not the usual error shape.
        Err(request::QueryError::ApiVersion) => Ok(crate::api_version::refusal(&nmi.metrics)),
        Err(e) => Err(Refusal::bad_request(e.to_string())),
        Ok(query) => token_for_ip(nmi, ip, query, req).await,
    }
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

/// The full path: the pod behind `ip`, passed through if excepted, else authorized and issued a
/// token; the answer is kept if nothing changed since the decision.
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
            pod = pod.name.as_str(), namespace = pod.namespace.as_str(), resource = query.resource.as_str(), source = %ip,
            "excepted pod: passed through to the node's identity"
        );
        nmi.metrics.issued(false);
        return Ok(pass_through(nmi, req).await);
    }
    let raw_query = req.uri().query().unwrap_or_default().to_owned();
    let issued = match nmi.issue_federated(&pod, &query).await {
        Some(federated) => federated,
        None => nmi.issue(&caller, pod, &query).await,
    }
    .map_err(|r| r.asking(&query.identity))?;
    let second = now();
    let body: Bytes = TokenBody::new(
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
