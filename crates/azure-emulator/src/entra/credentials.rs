//! Client authentication: which application a secret, certificate assertion or federated
//! assertion proves the caller to be.
// Handlers return ready error responses as `Err`; they are built only on the failure path, so
// boxing them would cost an allocation for nothing.
#![allow(clippy::result_large_err)]

use axum::response::Response;
use serde_json::Value;

use super::{
    reply::{invalid_client, unknown_app},
    subject::{SKEW_SECS, Subject},
};
use crate::{state::Shared, sync::lock, time, token::Jwt};

pub(super) fn secret_subject(shared: &Shared, client_id: &str, secret: &str) -> Result<Subject, Response> {
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

pub(super) fn times_ok(jwt: &Jwt) -> bool {
    let now = time::now();
    let Some(exp) = jwt.claim_u64("exp") else {
        return false;
    };
    exp + SKEW_SECS > now && jwt.claim_u64("nbf").is_none_or(|nbf| nbf <= now + SKEW_SECS)
}

pub(super) async fn assertion_subject(
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
    super::federated::federated_subject(shared, client_id, &jwt).await
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
