//! Entra ID: the v1 and v2 token endpoints (client credentials with a secret, a certificate
//! assertion or a federated jwt-bearer assertion), OpenID configuration and JWKS.
// Handlers return ready error responses as `Err`; they are built only on the failure path, so
// boxing them would cost an allocation for nothing.
#![allow(clippy::result_large_err)]

mod credentials;
mod discovery;
mod federated;
mod oidc;
mod reply;
mod subject;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::json;

pub use reply::entra_error;

use self::{
    credentials::{assertion_subject, secret_subject},
    discovery::openid_configuration,
    reply::{bad_request, invalid_client},
};
use crate::{
    state::{Shared, TokenSubject},
    sync::lock,
};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const MAX_FORM_BYTES: usize = 64 * 1024;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let base = lock(&shared.entra_url).clone();
    let tenant_ok = |t: &str| t.eq_ignore_ascii_case(&shared.tenant);
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match (req.method().clone(), l.as_slice()) {
        (http::Method::POST, [t, "oauth2", "token"])
        | (http::Method::POST, [t, "oauth2", "v2.0", "token"]) => {
            if !tenant_ok(t) {
                return bad_request(
                    90002,
                    &format!(
                        "Tenant '{}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
                        segs[0]
                    ),
                );
            }
            let v2 = l.len() == 4;
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
                return bad_request(90015, "Requested query string is too long.");
            };
            token_endpoint(&shared, &base, v2, &parts.headers, &bytes).await
        }
        (http::Method::GET, [t, "v2.0", ".well-known", "openid-configuration"]) if tenant_ok(t) => {
            Json(openid_configuration(&shared, &base, true)).into_response()
        }
        (http::Method::GET, [t, ".well-known", "openid-configuration"]) if tenant_ok(t) => {
            Json(openid_configuration(&shared, &base, false)).into_response()
        }
        (http::Method::GET, [t, "discovery", "v2.0", "keys"] | [t, "discovery", "keys"])
            if tenant_ok(t) || *t == "common" =>
        {
            Json(shared.key.jwks()).into_response()
        }
        (http::Method::GET, ["common", "discovery", "instance"]) => {
            let host = base
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .to_string();
            Json(json!({
                "tenant_discovery_endpoint": format!("{base}/{}/v2.0/.well-known/openid-configuration", shared.tenant),
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }))
            .into_response()
        }
        (_, [t, ..]) if !tenant_ok(t) && *t != "common" => bad_request(
            90002,
            &format!(
                "Tenant '{}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
                segs[0]
            ),
        ),
        _ => entra_error(
            StatusCode::NOT_FOUND,
            "not_found",
            900561,
            "The endpoint only accepts POST requests.",
        ),
    }
}

async fn token_endpoint(shared: &Shared, base: &str, v2: bool, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut form: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if form.iter().any(|(x, _)| *x == k) {
            return bad_request(90011, &format!("Request parameter '{k}' is duplicated."));
        }
        form.push((k.into_owned(), v.into_owned()));
    }
    let f = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let missing = |p: &str| {
        bad_request(
            900144,
            &format!("The request body must contain the following parameter: '{p}'."),
        )
    };
    let Some(grant) = f("grant_type") else {
        return missing("grant_type");
    };
    if grant != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let resource = if v2 {
        let Some(scope) = f("scope") else {
            return missing("scope");
        };
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        match scopes.as_slice() {
            [one] if one.ends_with("/.default") => one.trim_end_matches("/.default").to_string(),
            _ => {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                );
            }
        }
    } else {
        let Some(r) = f("resource") else {
            return missing("resource");
        };
        r.to_string()
    };
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let dec = |x: &str| {
                form_urlencoded::parse(format!("x={x}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((dec(id)?, dec(secret)?))
        });
    let subject = if let Some(assertion) = f("client_assertion") {
        if f("client_assertion_type") != Some(JWT_BEARER) {
            return bad_request(
                700024,
                "The client_assertion_type must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.",
            );
        }
        assertion_subject(shared, base, f("client_id"), assertion).await
    } else if let Some((id, secret)) = basic {
        secret_subject(shared, &id, &secret)
    } else {
        let Some(client_id) = f("client_id") else {
            return missing("client_id");
        };
        let Some(secret) = f("client_secret") else {
            return invalid_client(
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        };
        secret_subject(shared, client_id, secret)
    };
    let subject = match subject {
        Ok(s) => s,
        Err(r) => return r,
    };
    let lifetime = shared.world.entra.token_lifetime_secs;
    let who = TokenSubject {
        client_id: &subject.client_id,
        object_id: &subject.object_id,
        appidacr: subject.appidacr,
        mirid: subject.mirid.as_deref(),
    };
    let (access_token, nbf, exp) = match shared.mint(&who, &resource, lifetime) {
        Ok(t) => t,
        Err(e) => {
            return entra_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                90033,
                &e.to_string(),
            );
        }
    };
    shared
        .counters
        .token_issued(subject.mirid.as_deref().unwrap_or(&subject.client_id));
    if v2 {
        #[derive(serde::Serialize)]
        struct V2<'a> {
            token_type: &'a str,
            expires_in: u64,
            ext_expires_in: u64,
            access_token: &'a str,
        }
        Json(V2 {
            token_type: "Bearer",
            expires_in: lifetime,
            ext_expires_in: lifetime,
            access_token: &access_token,
        })
        .into_response()
    } else {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            token_type: &'a str,
            expires_in: String,
            ext_expires_in: String,
            expires_on: String,
            not_before: String,
            resource: &'a str,
            access_token: &'a str,
        }
        Json(V1 {
            token_type: "Bearer",
            expires_in: lifetime.to_string(),
            ext_expires_in: lifetime.to_string(),
            expires_on: exp.to_string(),
            not_before: nbf.to_string(),
            resource: &resource,
            access_token: &access_token,
        })
        .into_response()
    }
}
