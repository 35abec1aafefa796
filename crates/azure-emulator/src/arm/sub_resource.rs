//! The checks ARM makes on a request for a sub-resource of an identity (its tags, its federated
//! credentials) before the sub-resource's own: api-version, subscription, method, throttling. One
//! copy, so both answer the same errors in the same order. (Requests for VMs, scale sets and
//! identities themselves go through `handle_inner`, which also refuses a malformed query.)

use axum::{
    http::{Method, StatusCode},
    response::Response,
};

use super::{auth::throttle, reply::arm_error};
use crate::{imds::parse_query, state::Shared};

/// The rate-limit header to add to the answer, when throttling is on: its name and what is left.
pub(super) type Rate = Option<(&'static str, u64)>;

/// The request's api-version is there and at least `min_api`. A query that does not parse counts
/// as one without an api-version.
pub(super) fn api_version(parts: &http::request::Parts, min_api: &str) -> Result<(), Response> {
    let api = parse_query(parts.uri.query())
        .ok()
        .and_then(|q| q.into_iter().find(|(k, _)| k.eq_ignore_ascii_case("api-version")))
        .map(|(_, v)| v);
    let Some(api) = api else {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    if api.len() < 10 || api.as_str() < min_api {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            &format!("The api-version '{api}' is invalid. The supported versions start at '{min_api}'."),
        ));
    }
    Ok(())
}

/// The subscription `sub` exists, the sub-resource takes `method` (`write` says whether it
/// writes; `None`: it does not take it), and the subscription's read or write bucket has a token.
pub(super) fn admit(
    shared: &Shared,
    method: &Method,
    sub: &str,
    write: Option<bool>,
    caller: &str,
) -> Result<Rate, Response> {
    if !shared
        .world
        .subscriptions
        .iter()
        .any(|s| s.id.eq_ignore_ascii_case(sub))
    {
        return Err(arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!("The subscription '{sub}' could not be found."),
        ));
    }
    let Some(write) = write else {
        return Err(arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("The method '{method}' is not supported for this resource."),
        ));
    };
    throttle(shared, sub, write, caller)
}
