//! IMDS: one server per VM or scale-set instance, as the link-local endpoint is per VM. Serves
//! managed-identity tokens for the identities currently assigned (operations completed) and
//! compute metadata, with the per-VM limits of the managed-identity category.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    error::Error,
    ids,
    model::{CachedToken, ComputeKind, Identity},
    state::{Shared, TokenSubject},
    sync::lock,
    time,
};

mod limit;
pub use limit::{Limiter, Window};

/// One IMDS endpoint: which VM (or which instance of which scale set) it answers for.
#[derive(Clone)]
pub struct ImdsCtx {
    pub shared: Arc<Shared>,
    pub compute_key: String,
    pub instance: usize,
    pub limiter: Arc<Limiter>,
}

pub fn router(ctx: ImdsCtx) -> Router {
    Router::new().fallback(handle).with_state(ctx)
}

fn err(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn bad(description: &str) -> Response {
    err(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Whether IMDS serves `category` at api-version `v`: a `YYYY-MM-DD` date from the category's
/// first version on (`since`). Later versions than any listed are served, as a VM's IMDS learns
/// new versions before clients use them.
pub fn api_version_ok(v: Option<&str>, since: &str) -> bool {
    let Some(v) = v else { return false };
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && v >= since
}

/// The first api-version of the identity endpoints, and of the instance endpoint.
const IDENTITY_SINCE: &str = "2018-02-01";
const INSTANCE_SINCE: &str = "2017-03-01";

fn api_version_error() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
            "newest-versions": ["2023-07-01", "2021-12-13", "2021-11-15"],
        })),
    )
        .into_response()
}

/// Splits a raw query, refusing repeated names as IMDS does.
pub fn parse_query(raw: Option<&str>) -> Result<Vec<(String, String)>, Error> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if out.iter().any(|(x, _)| x.eq_ignore_ascii_case(&k)) {
            return Err(Error::DuplicateQueryParameter(k.into_owned()));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn q<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn metadata_ok(headers: &HeaderMap) -> bool {
    headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

async fn handle(State(ctx): State<ImdsCtx>, req: Request) -> Response {
    let path = req.uri().path().to_ascii_lowercase();
    let path = path.trim_end_matches('/');
    if req.headers().contains_key("x-forwarded-for") {
        return bad("Request contains X-Forwarded-For header; IMDS does not accept proxied requests");
    }
    if req.method() != http::Method::GET {
        return err(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "The method is not allowed",
        );
    }
    let query = match parse_query(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return bad(&e.to_string()),
    };
    match path {
        "/metadata/identity/oauth2/token" => {
            if !metadata_ok(req.headers()) {
                return bad("Required metadata header not specified");
            }
            let _permit = match ctx.limiter.admit(ctx.shared.clock.now()) {
                Ok(p) => p,
                Err(()) => {
                    let mut r = err(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_requests",
                        "Too many requests to IMDS",
                    );
                    r.headers_mut()
                        .insert("retry-after", http::HeaderValue::from_static("1"));
                    return r;
                }
            };
            if let Some(d) = req.extensions().get::<crate::faults::InjectedDelay>() {
                tokio::time::sleep(d.0).await;
            }
            token(&ctx, &query)
        }
        "/metadata/instance" | "/metadata/instance/compute" => {
            if !metadata_ok(req.headers()) {
                return bad("Required metadata header not specified");
            }
            if !api_version_ok(q(&query, "api-version"), INSTANCE_SINCE) {
                return api_version_error();
            }
            if let Some(d) = req.extensions().get::<crate::faults::InjectedDelay>() {
                tokio::time::sleep(d.0).await;
            }
            instance(&ctx, path.ends_with("/compute"))
        }
        "/metadata/identity/info" => {
            if !metadata_ok(req.headers()) {
                return bad("Required metadata header not specified");
            }
            if !api_version_ok(q(&query, "api-version"), IDENTITY_SINCE) {
                return api_version_error();
            }
            info(&ctx)
        }
        _ => err(StatusCode::NOT_FOUND, "not_found", "Resource not found"),
    }
}

/// `/metadata/identity/info`: the tenant of the VM's identities, when it has any.
fn info(ctx: &ImdsCtx) -> Response {
    let has_identity = lock(&ctx.shared.inner)
        .computes
        .get(&ctx.compute_key)
        .is_some_and(|c| c.effective.system.is_some() || !c.effective.user.is_empty());
    if !has_identity {
        return bad("Identity not found");
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Info<'a> {
        tenant_id: &'a str,
    }
    Json(Info {
        tenant_id: &ctx.shared.tenant,
    })
    .into_response()
}

fn token(ctx: &ImdsCtx, query: &[(String, String)]) -> Response {
    if !api_version_ok(q(query, "api-version"), IDENTITY_SINCE) {
        return api_version_error();
    }
    let Some(resource) = q(query, "resource").filter(|r| !r.is_empty()) else {
        return bad("Required audience parameter not specified");
    };
    let selectors: Vec<(&str, &str)> = ["client_id", "object_id", "msi_res_id", "mi_res_id"]
        .into_iter()
        .filter_map(|k| q(query, k).map(|v| (k, v)))
        .collect();
    if selectors.len() > 1 {
        return bad("Only one of client_id, object_id or msi_res_id may be specified");
    }
    // Look the identity up in what IMDS currently serves: writes still in flight do not count.
    let found = {
        let inner = lock(&ctx.shared.inner);
        let Some(c) = inner.computes.get(&ctx.compute_key) else {
            return bad("Identity not found");
        };
        let user = |pred: &dyn Fn(&Identity) -> bool| {
            c.effective
                .user
                .keys()
                .filter_map(|k| inner.identities.get(k))
                .find(|i| pred(i))
                .map(|i| (i.client_id.clone(), i.principal_id.clone(), i.id.clone()))
        };
        let system = c
            .effective
            .system
            .as_ref()
            .map(|s| (s.client_id.clone(), s.principal_id.clone(), c.id.clone()));
        match selectors.first() {
            None => match (system, c.effective.user.len()) {
                (Some(s), _) => Some(s),
                (None, 1) => user(&|_| true),
                (None, 0) => None,
                (None, _) => {
                    return bad(
                        "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
                    );
                }
            },
            Some(("client_id", v)) => user(&|i| i.client_id.eq_ignore_ascii_case(v))
                .or(system.filter(|s| s.0.eq_ignore_ascii_case(v))),
            Some(("object_id", v)) => user(&|i| i.principal_id.eq_ignore_ascii_case(v))
                .or(system.filter(|s| s.1.eq_ignore_ascii_case(v))),
            Some((_, v)) => {
                let k = ids::key(v);
                user(&|i| ids::key(&i.id) == k)
            }
        }
    };
    let Some((client_id, object_id, mirid)) = found else {
        return bad("Identity not found");
    };
    let now = time::now();
    let cache_key = (mirid.to_ascii_lowercase(), resource.to_string());
    let cached = lock(&ctx.shared.token_cache)
        .get(&cache_key)
        .filter(|t| t.expires_on > now + 300)
        .cloned();
    let tok = match cached {
        Some(t) => t,
        None => {
            let who = TokenSubject {
                client_id: &client_id,
                object_id: &object_id,
                appidacr: "2",
                mirid: Some(&mirid),
            };
            let (access_token, not_before, expires_on) =
                match ctx
                    .shared
                    .mint(&who, resource, ctx.shared.world.imds.token_lifetime_secs)
                {
                    Ok(t) => t,
                    Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.to_string()),
                };
            let t = CachedToken {
                access_token: access_token.into(),
                not_before,
                expires_on,
            };
            lock(&ctx.shared.token_cache).insert(cache_key, t.clone());
            t
        }
    };
    ctx.shared.counters.token_issued(&mirid);
    token_response(
        &tok,
        &client_id,
        resource,
        ctx.shared.world.imds.token_lifetime_secs,
        now,
    )
}

/// The IMDS token body: every value a string, keys in the order IMDS writes them.
fn token_response(t: &CachedToken, client_id: &str, resource: &str, lifetime: u64, now: u64) -> Response {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        access_token: &'a str,
        client_id: &'a str,
        expires_in: String,
        expires_on: String,
        ext_expires_in: String,
        not_before: String,
        resource: &'a str,
        token_type: &'a str,
    }
    Json(Body {
        access_token: &t.access_token,
        client_id,
        expires_in: t.expires_on.saturating_sub(now).to_string(),
        expires_on: t.expires_on.to_string(),
        ext_expires_in: lifetime.to_string(),
        not_before: t.not_before.to_string(),
        resource,
        token_type: "Bearer",
    })
    .into_response()
}

fn instance(ctx: &ImdsCtx, compute_only: bool) -> Response {
    let inner = lock(&ctx.shared.inner);
    let Some(c) = inner.computes.get(&ctx.compute_key) else {
        return err(StatusCode::NOT_FOUND, "not_found", "Resource not found");
    };
    let Some(inst) = c.instances.get(ctx.instance) else {
        return err(StatusCode::NOT_FOUND, "not_found", "Resource not found");
    };
    let (vmss_name, resource_id) = match c.kind {
        ComputeKind::VirtualMachine => (String::new(), c.id.clone()),
        ComputeKind::ScaleSet => {
            let idx = inst.name.rsplit('_').next().unwrap_or("0");
            (c.name.clone(), format!("{}/virtualMachines/{idx}", c.id))
        }
    };
    let compute: Value = json!({
        "azEnvironment": "AzurePublicCloud",
        "location": ctx.shared.location,
        "name": inst.name,
        "osType": "Linux",
        "provider": "Microsoft.Compute",
        "resourceGroupName": c.resource_group,
        "resourceId": resource_id,
        "subscriptionId": c.subscription,
        "tags": "",
        "vmId": inst.vm_id,
        "vmScaleSetName": vmss_name,
        "vmSize": "Standard_D2s_v3",
        "zone": "",
    });
    if compute_only {
        Json(compute).into_response()
    } else {
        Json(json!({"compute": compute, "network": {"interface": []}})).into_response()
    }
}

#[cfg(test)]
mod tests;
