//! ARM: GET/PATCH/PUT of VM and scale-set identities, user-assigned identities, and compute
//! operation status. Writes are asynchronous and take effect for IMDS only when their operation
//! completes; subscription token buckets throttle reads and writes.
// Handlers return ready error responses as `Err`; they are built only on the failure path, so
// boxing them would cost an allocation for nothing.
#![allow(clippy::result_large_err)]

pub mod body;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::{
    ids::{self, ArmPath, PathError},
    imds::parse_query,
    state::{Compute, ComputeKind, IdentityState, Operation, Shared, SystemIdentity, TokenBucket},
    sync::lock,
    time, token,
};

/// Oldest compute api-version with the dictionary form of `userAssignedIdentities` that MIC uses.
const MIN_COMPUTE_API: &str = "2019-12-01";
const MIN_MSI_API: &str = "2018-11-30";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (status, Json(json!({"error": {"code": code, "message": message}}))).into_response();
    r.headers_mut()
        .insert("x-ms-failure-cause", HeaderValue::from_static("gateway"));
    r
}

fn header(r: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        r.headers_mut().insert(name, v);
    }
}

/// The audiences public Azure's ARM accepts.
const AUDS: [&str; 4] = [
    "https://management.azure.com/",
    "https://management.azure.com",
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
];

/// The URLs this ARM endpoint answers to, as a client addressed it (Host header, or the
/// authority of an HTTP/2 request) and as the emulator reports it, without a trailing `/`.
fn endpoint_urls(arm_url: &str, parts: &http::request::Parts) -> Vec<String> {
    let scheme = arm_url.split_once("://").map_or("https", |(s, _)| s);
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let mut urls = vec![arm_url.trim_end_matches('/').to_owned()];
    urls.extend(host.map(|h| format!("{scheme}://{h}")));
    urls
}

/// Whether `aud` is acceptable: one of public Azure's ARM audiences, or, when the world allows
/// it as Azure Stack Hub does, one of `endpoint_urls` (a trailing `/` either way; the scheme
/// and host compared case-insensitively, as URLs are).
fn audience_ok(aud: &str, endpoint_urls: Option<&[String]>) -> bool {
    AUDS.contains(&aud)
        || endpoint_urls.is_some_and(|urls| {
            urls.iter()
                .any(|u| u.eq_ignore_ascii_case(aud.trim_end_matches('/')))
        })
}

/// Checks the bearer token: signed by this emulator's Entra, for ARM, for this tenant, unexpired.
/// Returns the caller's object id.
fn authenticate(shared: &Shared, parts: &http::request::Parts) -> Result<String, Response> {
    let headers = &parts.headers;
    let unauthorized = |code: &str, msg: &str| {
        let mut r = arm_error(StatusCode::UNAUTHORIZED, code, msg);
        header(
            &mut r,
            "www-authenticate",
            format!(
                "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"{msg}\"",
                lock(&shared.entra_url),
                shared.tenant
            ),
        );
        r
    };
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ));
    };
    let Some(tok) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    else {
        return Err(unauthorized(
            "AuthenticationFailedInvalidHeader",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        ));
    };
    let claims = shared
        .key
        .verify(tok.trim())
        .map_err(|_| unauthorized("InvalidAuthenticationToken", "The access token is invalid."))?;
    let s = |n: &str| claims.get(n).and_then(Value::as_str).unwrap_or("").to_string();
    let aud = s("aud");
    let endpoint = shared
        .world
        .arm
        .accept_endpoint_audience
        .then(|| endpoint_urls(&lock(&shared.arm_url), parts));
    if !audience_ok(&aud, endpoint.as_deref()) {
        let allowed: Vec<String> = AUDS
            .iter()
            .map(|a| (*a).to_owned())
            .chain(endpoint.into_iter().flatten())
            .collect();
        return Err(unauthorized(
            "InvalidAuthenticationTokenAudience",
            &format!(
                "The access token has been obtained for wrong audience or resource '{aud}'. It should exactly match with one of the allowed audiences '{}'.",
                allowed.join("','")
            ),
        ));
    }
    if s("iss") != shared.issuer() || !s("tid").eq_ignore_ascii_case(&shared.tenant) {
        return Err(unauthorized(
            "InvalidAuthenticationTokenTenant",
            "The access token is from the wrong issuer. It must match the tenant associated with this subscription.",
        ));
    }
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    if exp <= time::now() {
        return Err(unauthorized(
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        ));
    }
    Ok(s("oid"))
}

/// Takes a token from the subscription's read or write bucket.
fn throttle(
    shared: &Shared,
    sub: &str,
    write: bool,
    caller: &str,
) -> Result<Option<(&'static str, u64)>, Response> {
    let name = if write {
        "x-ms-ratelimit-remaining-subscription-writes"
    } else {
        "x-ms-ratelimit-remaining-subscription-reads"
    };
    if !shared.world.arm.throttling {
        return Ok(None);
    }
    let cfg = if write {
        shared.world.arm.write_bucket
    } else {
        shared.world.arm.read_bucket
    };
    let mut inner = lock(&shared.inner);
    let bucket = inner
        .buckets
        .entry((sub.to_ascii_lowercase(), write))
        .or_insert_with(|| TokenBucket::new(cfg.size, cfg.refill_per_sec));
    match bucket.take() {
        Ok(left) => Ok(Some((name, left))),
        Err(wait) => {
            let kind = if write { "write" } else { "read" };
            let mut r = arm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "SubscriptionRequestsThrottled",
                &format!(
                    "Number of '{kind}' requests for subscription '{sub}' actor '{caller}' exceeded. Please try again after '{wait}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling"
                ),
            );
            header(&mut r, "retry-after", wait);
            header(&mut r, name, 0);
            Err(r)
        }
    }
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
        Err(e) => return arm_error(StatusCode::BAD_REQUEST, "InvalidQueryParameter", &e),
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
            put_identity(shared, sub, rg, name, parts.method == Method::PUT)
        }
        (_, false) => get_compute(shared, &path),
        (_, true) => {
            let limit = shared.world.arm.max_body_bytes;
            let bytes = match axum::body::to_bytes(body, limit).await {
                Ok(b) => b,
                Err(_) => {
                    return arm_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "RequestEntityTooLarge",
                        &format!(
                            "The request content size exceeds the maximum allowed size of {limit} bytes."
                        ),
                    );
                }
            };
            write_compute(
                shared,
                &path,
                &bytes,
                parts.method == Method::PUT,
                &caller,
                &api,
                parts.extensions.get::<crate::server::FailOperation>().cloned(),
            )
        }
    };
    if let Some((name, left)) = rate {
        header(&mut resp, name, left);
    }
    resp
}

fn not_found(path: &ArmPath) -> Response {
    let (ty, rg, name) = match path {
        ArmPath::VirtualMachine { rg, name, .. } => ("Microsoft.Compute/virtualMachines", rg, name),
        ArmPath::ScaleSet { rg, name, .. } => ("Microsoft.Compute/virtualMachineScaleSets", rg, name),
        ArmPath::Identity { rg, name, .. } => ("Microsoft.ManagedIdentity/userAssignedIdentities", rg, name),
        ArmPath::Operation { id, .. } => {
            return arm_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("The operation '{id}' was not found."),
            );
        }
    };
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource '{ty}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFound"
        ),
    )
}

/// The resource as ARM GET shows it: the model, its provisioning state, and each identity's ids.
pub fn compute_body(
    shared: &Shared,
    c: &Compute,
    identities: &std::collections::HashMap<String, crate::state::Identity>,
) -> Value {
    let mut identity = Map::new();
    identity.insert("type".into(), json!(c.model.type_str()));
    if let Some(s) = &c.model.system {
        identity.insert("principalId".into(), json!(s.principal_id));
        identity.insert("tenantId".into(), json!(shared.tenant));
    }
    if !c.model.user.is_empty() {
        let ua: Map<String, Value> = c
            .model
            .user
            .iter()
            .map(|(k, id)| {
                let v = identities
                    .get(k)
                    .map(|i| json!({"principalId": i.principal_id, "clientId": i.client_id}))
                    .unwrap_or_else(|| json!({}));
                (id.clone(), v)
            })
            .collect();
        identity.insert("userAssignedIdentities".into(), Value::Object(ua));
    }
    let (ty, props) = match c.kind {
        ComputeKind::VirtualMachine => (
            "Microsoft.Compute/virtualMachines",
            json!({"provisioningState": c.provisioning_state, "vmId": c.instances.first().map(|i| i.vm_id.clone())}),
        ),
        ComputeKind::ScaleSet => (
            "Microsoft.Compute/virtualMachineScaleSets",
            json!({"provisioningState": c.provisioning_state, "uniqueId": c.unique_id, "orchestrationMode": "Uniform"}),
        ),
    };
    let mut body =
        json!({"name": c.name, "id": c.id, "type": ty, "location": shared.location, "properties": props});
    if c.model.system.is_some() || !c.model.user.is_empty() {
        body["identity"] = Value::Object(identity);
    }
    if c.kind == ComputeKind::ScaleSet {
        body["sku"] = json!({"name": "Standard_D2s_v3", "tier": "Standard", "capacity": c.instances.len()});
    }
    body
}

fn get_compute(shared: &Shared, path: &ArmPath) -> Response {
    let inner = lock(&shared.inner);
    let key = path.resource_key().unwrap_or_default();
    match inner.computes.get(&key) {
        Some(c) if kind_matches(c, path) => Json(compute_body(shared, c, &inner.identities)).into_response(),
        _ => not_found(path),
    }
}

fn kind_matches(c: &Compute, path: &ArmPath) -> bool {
    matches!(
        (c.kind, path),
        (ComputeKind::VirtualMachine, ArmPath::VirtualMachine { .. })
            | (ComputeKind::ScaleSet, ArmPath::ScaleSet { .. })
    )
}

fn write_compute(
    shared: &Arc<Shared>,
    path: &ArmPath,
    bytes: &[u8],
    replace: bool,
    caller: &str,
    api: &str,
    fail: Option<crate::server::FailOperation>,
) -> Response {
    let update = match body::parse(bytes) {
        Ok(u) => u.unwrap_or_default(),
        Err(e) => return arm_error(StatusCode::BAD_REQUEST, e.code, &e.message),
    };
    let key = path.resource_key().unwrap_or_default();
    let mut inner = lock(&shared.inner);
    let Some(c) = inner.computes.get(&key).filter(|c| kind_matches(c, path)) else {
        return not_found(path);
    };
    if c.provisioning_state == "Deleting" {
        return arm_error(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            "The resource is being deleted.",
        );
    }
    let (system, user) = match body::next_state(c.model.system.is_some(), &c.model.user, &update, replace) {
        Ok(s) => s,
        Err(e) => return arm_error(StatusCode::BAD_REQUEST, e.code, &e.message),
    };
    // Every identity newly linked must exist, and the caller must hold assign/action on it.
    for (k, id) in &user {
        if c.model.user.contains_key(k) {
            continue;
        }
        if !inner.identities.contains_key(k) {
            let (_, rg, name) = ids::parse_identity_id(id).unwrap_or_default();
            return arm_error(
                StatusCode::BAD_REQUEST,
                "FailedIdentityOperation",
                &format!(
                    "Identity operation for resource '{}' failed with error 'Failed to perform resource identity operation. Status: 'NotFound'. Response: '{{\"error\":{{\"code\":\"ResourceNotFound\",\"message\":\"The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/{name}' under resource group '{rg}' was not found.\"}}}}'.'.",
                    c.id
                ),
            );
        }
    }
    let denied: Vec<&String> = user
        .iter()
        .filter(|(k, _)| !c.model.user.contains_key(*k) && !inner.may_assign(caller, k))
        .map(|(_, id)| id)
        .collect();
    if !denied.is_empty() {
        let action = match c.kind {
            ComputeKind::VirtualMachine => "Microsoft.Compute/virtualMachines/write",
            ComputeKind::ScaleSet => "Microsoft.Compute/virtualMachineScaleSets/write",
        };
        let scopes: Vec<&str> = denied.iter().map(|s| s.as_str()).collect();
        return arm_error(
            StatusCode::FORBIDDEN,
            "LinkedAuthorizationFailed",
            &format!(
                "The client '{caller}' with object id '{caller}' has permission to perform action '{action}' on scope '{}'; however, it does not have permission to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{}' or the linked scope(s) are invalid.",
                c.id,
                scopes.join(",")
            ),
        );
    }
    let latency = c.latency_ms.unwrap_or(inner.op_latency_ms);
    let c = inner.computes.get_mut(&key).expect("looked up above");
    let system = match (system, &c.model.system) {
        (true, Some(s)) => Some(s.clone()),
        (true, None) => Some(SystemIdentity {
            principal_id: token::guid(),
            client_id: token::guid(),
        }),
        (false, _) => None,
    };
    let previous = std::mem::replace(&mut c.model, IdentityState { system, user });
    c.write_seq += 1;
    c.provisioning_state = "Updating";
    let seq = c.write_seq;
    let op = Operation {
        id: token::guid(),
        resource: key.clone(),
        status: "InProgress",
        start_time: time::rfc3339(time::now_ms()),
        end_time: None,
        due: std::time::Instant::now() + Duration::from_millis(latency),
        seq,
        snapshot: c.model.clone(),
        previous,
        fail: fail.map(|f| (f.code, f.message)),
    };
    let op_id = op.id.clone();
    let resource_id = c.id.clone();
    let sub = c.subscription.clone();
    inner.operations.insert(op_id.clone(), op);
    let body = {
        let c = &inner.computes[&key];
        compute_body(shared, c, &inner.identities)
    };
    drop(inner);
    shared.counters.arm_write(&resource_id);
    let s = shared.clone();
    let id = op_id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(latency)).await;
        complete(&s, &id);
    });
    let mut r = Json(body).into_response();
    let base = lock(&shared.arm_url).clone();
    header(
        &mut r,
        "azure-asyncoperation",
        format!(
            "{base}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{}/operations/{op_id}?api-version={api}",
            shared.location
        ),
    );
    header(&mut r, "retry-after", latency.div_ceil(1000));
    r
}

/// Finishes an identity write: from now on IMDS serves what it assigned.
fn complete(shared: &Shared, op_id: &str) {
    let mut inner = lock(&shared.inner);
    let Some(op) = inner.operations.get_mut(op_id) else {
        return;
    };
    op.end_time = Some(time::rfc3339(time::now_ms()));
    if op.fail.is_some() {
        // The change never takes effect: IMDS keeps serving what it did, and the resource shows
        // its identities from before the write, in provisioning state `Failed`.
        op.status = "Failed";
        let (key, seq, previous) = (op.resource.clone(), op.seq, op.previous.clone());
        if let Some(c) = inner.computes.get_mut(&key)
            && c.write_seq == seq
        {
            c.model = previous;
            c.provisioning_state = "Failed";
        }
        return;
    }
    op.status = "Succeeded";
    let (key, seq, snap) = (op.resource.clone(), op.seq, op.snapshot.clone());
    if let Some(c) = inner.computes.get_mut(&key) {
        // Operations can finish out of order when latency changed between them; the newest wins.
        if seq > c.applied_seq {
            c.applied_seq = seq;
            c.effective = snap;
        }
        if c.write_seq == seq {
            c.provisioning_state = "Succeeded";
        }
    }
}

fn operation_status(shared: &Shared, id: &str) -> Response {
    let inner = lock(&shared.inner);
    let Some(op) = inner.operations.get(id) else {
        return not_found(&ArmPath::Operation {
            sub: String::new(),
            location: String::new(),
            id: id.into(),
        });
    };
    let mut body = json!({"startTime": op.start_time, "status": op.status, "name": op.id});
    if let (Some((code, message)), "Failed") = (&op.fail, op.status) {
        body["error"] = json!({"code": code, "message": message});
    }
    if let Some(end) = &op.end_time {
        body["endTime"] = json!(end);
    }
    let mut r = Json(body).into_response();
    if op.status == "InProgress" {
        let left = op.due.saturating_duration_since(std::time::Instant::now());
        header(&mut r, "retry-after", left.as_millis().div_ceil(1000).max(1));
    }
    r
}

fn get_identity(shared: &Shared, path: &ArmPath) -> Response {
    let inner = lock(&shared.inner);
    match inner.identities.get(&path.resource_key().unwrap_or_default()) {
        Some(i) => Json(i.arm_body(&shared.tenant)).into_response(),
        None => not_found(path),
    }
}

/// PUT creates an identity (201) or returns the existing one (200); PATCH only finds it.
fn put_identity(shared: &Arc<Shared>, sub: &str, rg: &str, name: &str, create: bool) -> Response {
    let path = ArmPath::Identity {
        sub: sub.into(),
        rg: rg.into(),
        name: name.into(),
    };
    let key = path.resource_key().unwrap_or_default();
    if let Some(i) = lock(&shared.inner).identities.get(&key) {
        return Json(i.arm_body(&shared.tenant)).into_response();
    }
    if !create {
        return not_found(&path);
    }
    let known_rg = shared.world.subscriptions.iter().any(|s| {
        s.id.eq_ignore_ascii_case(sub)
            && (s.resource_groups.is_empty() || s.resource_groups.iter().any(|g| g.eq_ignore_ascii_case(rg)))
    });
    if !known_rg {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        );
    }
    let admin = crate::admin::Admin {
        shared: shared.clone(),
    };
    match admin.create_identity(crate::admin::NewIdentity {
        name: name.into(),
        resource_group: rg.into(),
        subscription: Some(sub.into()),
        client_id: None,
        principal_id: None,
    }) {
        Ok(i) => (StatusCode::CREATED, Json(i.arm_body(&shared.tenant))).into_response(),
        Err(e) => arm_error(StatusCode::BAD_REQUEST, "InvalidParameter", &e.to_string()),
    }
}

#[cfg(test)]
mod tests;
