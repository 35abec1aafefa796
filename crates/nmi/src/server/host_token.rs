//! `/host/token`: a process on the node (loopback only) names a pod in the `podns` and
//! `podname` headers and gets that pod's token, authorized exactly as the pod's own request
//! would be (see [`crate::authorizer`]), with the client id beside it.

use std::net::IpAddr;

use axum::{
    body::Body,
    http::{Request, StatusCode},
    response::Response,
};
use serde::Serialize;

use super::{
    Nmi,
    response::{self, TokenBody},
    token_query,
};
use crate::{
    refusal::{Reason, Refusal},
    token::{TokenSource, now},
};

#[derive(Serialize)]
struct HostTokenBody<'a> {
    token: TokenBody<'a>,
    clientid: &'a str,
}

pub(super) async fn answer<S: TokenSource>(
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
    let query = token_query::parse_token_query(query_string.as_deref())
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    match nmi.authorizer.grant_to_named(namespace, name, &query).await {
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
