//! The IMDS token endpoint for pods (`/metadata/identity/oauth2/token`), read top-down in
//! [`answer`]: an answer this pod got for this very query is replayed while the watched state has
//! not changed (see `answer_memo`); otherwise the query is read, the authorizer grants the pod
//! behind the source IP a token (see [`crate::authorizer`]) or passes an excepted pod through to
//! IMDS, as upstream does, and the answer is rendered and kept for the next time.

use std::{net::IpAddr, sync::Arc};

use axum::{
    body::Body,
    http::{Request, StatusCode},
    response::Response,
};

use super::{
    Nmi,
    answer_memo::{Answer, Kept},
    passthrough::pass_through,
    response::{self, TokenBody},
    token_query::{self, QueryError},
};
use crate::{
    authorizer::Grant,
    refusal::Refusal,
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
    let query = match token_query::parse_imds_token_query(req.uri().query()) {
        Ok(query) => query,
        // IMDS's own refusal body (`newest-versions`), not the usual error shape.
        Err(QueryError::ApiVersion) => return Ok(token_query::api_version_refusal(&nmi.metrics)),
        Err(e) => return Err(Refusal::bad_request(e.to_string())),
    };
    // Boxed, so only a request that takes this path pays for its state (pod wait, single flight,
    // IMDS or Entra calls): hyper allocates a box the size of the request future for every
    // connection, as it is accepted and for as long as it stays open, and this path inline made
    // it 6.6 KiB (issue 23 §7). A remembered answer (above) never takes it.
    let grant = Box::pin(nmi.authorizer.grant_to_ip(ip, &query)).await;
    let issued = match grant.map_err(|r| r.asking(&query.identity))? {
        Grant::Token(issued) => issued,
        Grant::NodeIdentity => return Ok(Box::pin(pass_through(nmi, req)).await),
    };
    let second = now();
    let (answer, body) = response::token_answer(
        &issued.cached.token,
        &issued.audit.client_id,
        &query.resource,
        second,
    );
    // Kept only if nothing changed since the decision: a later change moves the version.
    if nmi.authorizer.state.version() == issued.decided_at {
        nmi.memo.put(
            ip,
            req.uri().query().unwrap_or_default(),
            issued.decided_at,
            Kept {
                answer: Arc::new(Answer {
                    token: issued.cached.token.clone(),
                    audit: issued.audit,
                }),
                second,
                body,
            },
        );
    }
    Ok(answer)
}

/// The answer this pod got for this very query before, if the state has not changed since
/// (see `answer_memo`), rendered for this second.
fn remembered<S: TokenSource>(nmi: &Nmi<S>, ip: IpAddr, query: Option<&str>) -> Option<Response> {
    let state = &nmi.authorizer.state;
    if state.is_stale() {
        return None;
    }
    let query = query.unwrap_or_default();
    let version = state.version();
    let mut kept = nmi.memo.get(ip, query, version)?;
    let second = now();
    if kept.second != second {
        // Once the token is due for refresh, the request goes through the token cache, which
        // refreshes it; the memo then keeps the new one.
        let token = &kept.answer.token;
        if token.expires_on <= second + nmi.authorizer.cache.policy().refresh_ahead.as_secs() {
            return None;
        }
        let audit = &kept.answer.audit;
        kept.body = TokenBody::new(token, &audit.client_id, &audit.resource, second)
            .to_json()
            .into();
        kept.second = second;
        nmi.memo.put(ip, query, version, kept.clone());
    }
    // The same `source` as the full path's (the authorizer's `Caller`).
    kept.answer
        .audit
        .issued(&format_args!("IP {ip}"), true, &nmi.metrics);
    Some(response::json_body(StatusCode::OK, kept.body))
}
