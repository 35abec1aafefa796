//! ARM: GET/PATCH/PUT of VM and scale-set identities, user-assigned identities (and their tags),
//! and compute operation status. Compute writes are asynchronous and take effect for IMDS only
//! when their operation completes; subscription token buckets throttle reads and writes.
// Handlers return ready error responses as `Err`; they are built only on the failure path, so
// boxing them would cost an allocation for nothing.
#![allow(clippy::result_large_err)]

mod auth;
pub mod body;
mod compute;
pub mod federated;
mod identities;
mod reply;
mod sub_resource;
mod tags;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{Method, StatusCode},
    response::Response,
};

pub use compute::compute_body;

use self::{
    auth::{authenticate, throttle},
    compute::{get_compute, operation_status, write_compute},
    identities::{get_identity, put_identity},
    reply::{arm_error, header, read_body},
};
use crate::{
    ids::{self, ArmPath, PathError},
    imds::parse_query,
    state::Shared,
    token,
};
/// Oldest compute api-version with the dictionary form of `userAssignedIdentities` that MIC uses.
const MIN_COMPUTE_API: &str = "2019-12-01";
const MIN_MSI_API: &str = "2018-11-30";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut resp = handle_inner(&shared, &parts, body).await;
    header(&mut resp, "x-ms-request-id", token::guid());
    header(&mut resp, "x-ms-correlation-request-id", token::guid());
    resp
}

async fn handle_inner(
    shared: &Arc<Shared>,
    parts: &http::request::Parts,
    body: axum::body::Body,
) -> Response {
    let caller = match authenticate(shared, parts) {
        Ok(oid) => oid,
        Err(r) => return r,
    };
    if let Some(t) = tags::parse(parts.uri.path()) {
        return tags::handle(shared, parts, body, &caller, t).await;
    }
    if let Some(fic) = federated::parse(parts.uri.path()) {
        return federated::handle(shared, parts, body, &caller, fic).await;
    }
    let path = match ids::parse_arm_path(parts.uri.path()) {
        Ok(p) => p,
        Err(PathError::Malformed(p)) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidResourceId",
                &format!("The resource id '{p}' is not a valid Azure Resource Manager resource id."),
            );
        }
        Err(PathError::UnsupportedType(t)) => {
            return arm_error(
                StatusCode::NOT_FOUND,
                "InvalidResourceType",
                &format!("The resource type '{t}' could not be found in the namespace for api version."),
            );
        }
    };
    let query = match parse_query(parts.uri.query()) {
        Ok(q) => q,
        Err(e) => return arm_error(StatusCode::BAD_REQUEST, "InvalidQueryParameter", &e.to_string()),
    };
    let api = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v.clone());
    let Some(api) = api else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    };
    let min = match path {
        ArmPath::Identity { .. } => MIN_MSI_API,
        ArmPath::Operation { .. } => "2015-01-01",
        _ => MIN_COMPUTE_API,
    };
    if api.len() < 10 || api.as_str() < min {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            &format!("The api-version '{api}' is invalid. The supported versions start at '{min}'."),
        );
    }
    if !shared
        .world
        .subscriptions
        .iter()
        .any(|s| s.id.eq_ignore_ascii_case(path.subscription()))
    {
        return arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!("The subscription '{}' could not be found.", path.subscription()),
        );
    }
    let write = match parts.method {
        Method::GET => false,
        Method::PATCH | Method::PUT if !matches!(path, ArmPath::Operation { .. }) => true,
        _ => {
            return arm_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!(
                    "The method '{}' is not supported by this emulator for this resource.",
                    parts.method
                ),
            );
        }
    };
    let rate = match throttle(shared, path.subscription(), write, &caller) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut resp = match (&path, write) {
        (ArmPath::Operation { id, .. }, _) => operation_status(shared, id),
        (ArmPath::Identity { .. }, false) => get_identity(shared, &path),
        (ArmPath::Identity { sub, rg, name }, true) => {
            let bytes = match read_body(shared, body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            put_identity(shared, sub, rg, name, parts.method == Method::PUT, &bytes)
        }
        (_, false) => get_compute(shared, &path),
        (_, true) => {
            let bytes = match read_body(shared, body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            write_compute(
                shared,
                &path,
                &bytes,
                parts.method == Method::PUT,
                &caller,
                &api,
                parts.extensions.get::<crate::faults::FailOperation>().cloned(),
            )
        }
    };
    if let Some((name, left)) = rate {
        header(&mut resp, name, left);
    }
    resp
}

/// What an ARM request path (query included or not) addresses, as the call log and the
/// `arm_reads` counter label it, so a test can tell MIC's identity reads from its compute reads.
pub fn call_label(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or_default();
    if tags::parse(path).is_some() {
        return "tags";
    }
    if federated::parse(path).is_some() {
        return "federated-credential";
    }
    match ids::parse_arm_path(path) {
        Ok(ArmPath::Identity { .. }) => "identity",
        Ok(ArmPath::VirtualMachine { .. }) => "vm",
        Ok(ArmPath::ScaleSet { .. }) => "vmss",
        Ok(ArmPath::Operation { .. }) => "operation",
        Err(_) => "other",
    }
}
