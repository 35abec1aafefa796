//! Entra ID: the v1 and v2 token endpoints (client credentials with a secret, a certificate
//! assertion or a federated jwt-bearer assertion), OpenID configuration and JWKS.
// Handlers return ready error responses as `Err`; they are built only on the failure path, so
// boxing them would cost an allocation for nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

use crate::{
    state::{Shared, TokenSubject},
    sync::lock,
    time,
    token::{self, Jwt},
};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Clock skew Entra tolerates on assertion times.
const SKEW_SECS: u64 = 300;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// An Entra error: `{"error","error_description","error_codes","timestamp","trace_id","correlation_id"}`.
pub fn entra_error(status: StatusCode, error: &str, code: u32, message: &str) -> Response {
    let (trace, corr, ts) = (token::guid(), token::guid(), time::entra_timestamp());
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": "https://login.microsoftonline.com/error?code={code}".replace("{code}", &code.to_string()),
    });
    (status, Json(body)).into_response()
}

fn bad_request(code: u32, message: &str) -> Response {
    entra_error(StatusCode::BAD_REQUEST, "invalid_request", code, message)
}

fn invalid_client(code: u32, message: &str) -> Response {
    entra_error(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
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
            token_endpoint(&shared, &base, v2, &parts.headers, &bytes)
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

fn openid_configuration(shared: &Shared, base: &str, v2: bool) -> Value {
    let t = &shared.tenant;
    let (oauth, issuer, keys) = if v2 {
        (
            "oauth2/v2.0",
            format!("{base}/{t}/v2.0"),
            format!("{base}/{t}/discovery/v2.0/keys"),
        )
    } else {
        ("oauth2", shared.issuer(), format!("{base}/common/discovery/keys"))
    };
    json!({
        "token_endpoint": format!("{base}/{t}/{oauth}/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": keys,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{base}/{t}/{oauth}/authorize"),
        "device_authorization_endpoint": format!("{base}/{t}/{oauth}/devicecode"),
        "end_session_endpoint": format!("{base}/{t}/{oauth}/logout"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    })
}

/// Who the token is for, once the client is authenticated.
struct Subject {
    client_id: String,
    object_id: String,
    appidacr: &'static str,
    mirid: Option<String>,
}

fn token_endpoint(shared: &Shared, base: &str, v2: bool, headers: &HeaderMap, body: &[u8]) -> Response {
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
        assertion_subject(shared, base, f("client_id"), assertion)
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

fn unknown_app(shared: &Shared, client_id: &str) -> Response {
    entra_error(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
        &format!(
            "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
            shared.tenant
        ),
    )
}

fn secret_subject(shared: &Shared, client_id: &str, secret: &str) -> Result<Subject, Response> {
    let inner = lock(&shared.inner);
    let Some(p) = inner
        .principals
        .iter()
        .find(|p| p.client_id.eq_ignore_ascii_case(client_id))
    else {
        return Err(unknown_app(shared, client_id));
    };
    match &p.secret {
        Some(s) if s == secret => Ok(Subject {
            client_id: p.client_id.clone(),
            object_id: p.object_id.clone(),
            appidacr: "1",
            mirid: None,
        }),
        _ => Err(invalid_client(
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                p.client_id
            ),
        )),
    }
}

fn audience_ok(shared: &Shared, base: &str, aud: &Value) -> bool {
    let t = &shared.tenant;
    let accepted: Vec<String> = [base, "https://login.microsoftonline.com"]
        .iter()
        .flat_map(|b| {
            [
                format!("{b}/{t}/oauth2/token"),
                format!("{b}/{t}/oauth2/v2.0/token"),
                format!("{b}/{t}/v2.0"),
                format!("{b}/{t}"),
                format!("{b}/{t}/"),
            ]
        })
        .collect();
    let one = |a: &str| accepted.iter().any(|x| x.eq_ignore_ascii_case(a));
    match aud {
        Value::String(a) => one(a),
        Value::Array(v) => v.iter().filter_map(Value::as_str).any(one),
        _ => false,
    }
}

fn times_ok(jwt: &Jwt) -> bool {
    let now = time::now();
    let Some(exp) = jwt.claim_u64("exp") else {
        return false;
    };
    exp + SKEW_SECS > now && jwt.claim_u64("nbf").is_none_or(|nbf| nbf <= now + SKEW_SECS)
}

fn assertion_subject(
    shared: &Shared,
    base: &str,
    client_id: Option<&str>,
    assertion: &str,
) -> Result<Subject, Response> {
    let Ok(jwt) = Jwt::parse(assertion) else {
        return Err(invalid_client(50027, "JWT token is invalid or malformed."));
    };
    let x5t = jwt.header.get("x5t").and_then(Value::as_str);
    let x5t256 = jwt.header.get("x5t#S256").and_then(Value::as_str);
    if x5t.is_some() || x5t256.is_some() {
        return certificate_subject(shared, base, client_id, &jwt, x5t, x5t256);
    }
    federated_subject(shared, client_id, &jwt)
}

fn certificate_subject(
    shared: &Shared,
    base: &str,
    client_id: Option<&str>,
    jwt: &Jwt,
    x5t: Option<&str>,
    x5t256: Option<&str>,
) -> Result<Subject, Response> {
    let iss = jwt.claim_str("iss").unwrap_or("");
    let client_id = client_id.unwrap_or(iss);
    if !iss.eq_ignore_ascii_case(client_id)
        || !jwt.claim_str("sub").unwrap_or("").eq_ignore_ascii_case(client_id)
    {
        return Err(invalid_client(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let inner = lock(&shared.inner);
    let Some(p) = inner
        .principals
        .iter()
        .find(|p| p.client_id.eq_ignore_ascii_case(client_id))
    else {
        return Err(unknown_app(shared, client_id));
    };
    // Clients write thumbprints as base64url with or without padding (MSAL Python pads them).
    let norm = |t: Option<&str>| t.map(|t| t.trim_end_matches('=').replace('+', "-").replace('/', "_"));
    let (x5t_n, x5t256_n) = (norm(x5t), norm(x5t256));
    let cert = p.certs.iter().find(|(_, s1, s256)| {
        x5t_n.as_deref() == Some(s1.as_str()) || x5t256_n.as_deref() == Some(s256.as_str())
    });
    let Some((der, _, _)) = cert else {
        return Err(invalid_client(
            700027,
            &format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Entra ID, App registrations, Certificates & secrets to upload the certificate.]",
                x5t.or(x5t256).unwrap_or("")
            ),
        ));
    };
    if jwt.verify_cert(der).is_err() {
        return Err(invalid_client(
            700027,
            "Client assertion contains an invalid signature.",
        ));
    }
    if !audience_ok(shared, base, jwt.claims.get("aud").unwrap_or(&Value::Null)) {
        return Err(invalid_client(
            700023,
            "Client assertion audience claim does not match Realm issuer.",
        ));
    }
    if !times_ok(jwt) {
        return Err(invalid_client(
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(Subject {
        client_id: p.client_id.clone(),
        object_id: p.object_id.clone(),
        appidacr: "2",
        mirid: None,
    })
}

fn federated_subject(shared: &Shared, client_id: Option<&str>, jwt: &Jwt) -> Result<Subject, Response> {
    let iss = jwt.claim_str("iss").unwrap_or("").to_string();
    let sub = jwt.claim_str("sub").unwrap_or("").to_string();
    let aud = jwt.claims.get("aud").cloned().unwrap_or(Value::Null);
    let no_match = || {
        invalid_client(
            70021,
            &format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'.",
                match &aud {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            ),
        )
    };
    let Some(issuer) = shared.world.oidc_issuers.iter().find(|i| i.issuer == iss) else {
        return Err(no_match());
    };
    let jwks = match (&issuer.jwks, &issuer.jwks_file) {
        (Some(j), _) => j.clone(),
        (None, Some(f)) => std::fs::read(f)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null),
        (None, None) => Value::Null,
    };
    let kid = jwt.header.get("kid").and_then(Value::as_str);
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let verified = keys
        .iter()
        .filter(|k| kid.is_none() || k.get("kid").and_then(Value::as_str) == kid)
        .any(|k| jwt.verify_jwk(k).is_ok());
    if !verified {
        return Err(invalid_client(
            700212,
            &format!(
                "No matching federated identity record found for presented assertion audience. Unable to verify the signature of the token issued by '{iss}'."
            ),
        ));
    }
    if !times_ok(jwt) {
        return Err(invalid_client(
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    let auds: Vec<&str> = match &aud {
        Value::String(s) => vec![s.as_str()],
        Value::Array(v) => v.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let fic_ok = |f: &crate::world::FederatedCredentialSpec| {
        f.issuer == iss && f.subject == sub && auds.contains(&f.audience.as_str())
    };
    let Some(client_id) = client_id else {
        return Err(bad_request(
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    let inner = lock(&shared.inner);
    if let Some(p) = inner
        .principals
        .iter()
        .find(|p| p.client_id.eq_ignore_ascii_case(client_id))
    {
        if p.federated.iter().any(fic_ok) {
            return Ok(Subject {
                client_id: p.client_id.clone(),
                object_id: p.object_id.clone(),
                appidacr: "2",
                mirid: None,
            });
        }
        return Err(no_match());
    }
    if let Some(i) = inner
        .identities
        .values()
        .find(|i| i.client_id.eq_ignore_ascii_case(client_id))
    {
        if i.federated.iter().any(fic_ok) {
            return Ok(Subject {
                client_id: i.client_id.clone(),
                object_id: i.principal_id.clone(),
                appidacr: "2",
                mirid: Some(i.id.clone()),
            });
        }
        return Err(no_match());
    }
    Err(unknown_app(shared, client_id))
}
