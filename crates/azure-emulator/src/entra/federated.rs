//! Federated client assertions (workload identity federation): a token from an external issuer,
//! e.g. a Kubernetes service-account token, accepted in place of a secret when a federated
//! identity credential of the client names its issuer, subject and audience exactly.
//!
//! The checks come in Entra's order, each with its code: a credential for the issuer at all
//! (AADSTS700211), the issuer's keys from its OIDC discovery (AADSTS50166), the signature
//! (AADSTS700027), the time range (AADSTS700024), then issuer, subject and audience together
//! (AADSTS70021).
#![allow(clippy::result_large_err)]

use axum::response::Response;
use serde_json::Value;

use super::{
    oidc,
    reply::{bad_request, invalid_client, unknown_app},
    subject::{SKEW_SECS, Subject},
};
use crate::{state::Shared, sync::lock, time, token::Jwt, world::FederatedCredentialSpec};

/// The client's federated credentials and who it is, read under the state lock.
struct Client {
    subject: Subject,
    credentials: Vec<FederatedCredentialSpec>,
}

fn client(shared: &Shared, client_id: &str) -> Option<Client> {
    let inner = lock(&shared.inner);
    if let Some(p) = inner
        .principals
        .iter()
        .find(|p| p.client_id.eq_ignore_ascii_case(client_id))
    {
        return Some(Client {
            subject: Subject {
                client_id: p.client_id.clone(),
                object_id: p.object_id.clone(),
                appidacr: "2",
                mirid: None,
            },
            credentials: p.federated.clone(),
        });
    }
    let i = inner
        .identities
        .values()
        .find(|i| i.client_id.eq_ignore_ascii_case(client_id))?;
    let key = crate::ids::key(&i.id);
    let mut credentials = i.federated.clone();
    credentials.extend(
        inner
            .federated_credentials
            .values()
            .filter(|c| c.identity_key == key)
            .map(|c| c.spec.clone()),
    );
    Some(Client {
        subject: Subject {
            client_id: i.client_id.clone(),
            object_id: i.principal_id.clone(),
            appidacr: "2",
            mirid: Some(i.id.clone()),
        },
        credentials,
    })
}

fn audiences(aud: &Value) -> Vec<&str> {
    match aud {
        Value::String(s) => vec![s.as_str()],
        Value::Array(v) => v.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

fn shown(aud: &Value) -> String {
    match aud {
        Value::String(s) => s.clone(),
        Value::Array(v) => v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub(super) async fn federated_subject(
    shared: &Shared,
    client_id: Option<&str>,
    jwt: &Jwt,
) -> Result<Subject, Response> {
    let Some(client_id) = client_id else {
        return Err(bad_request(
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    let Some(Client { subject, credentials }) = client(shared, client_id) else {
        return Err(unknown_app(shared, client_id));
    };
    let iss = jwt.claim_str("iss").unwrap_or("").to_string();
    let sub = jwt.claim_str("sub").unwrap_or("").to_string();
    let aud = jwt.claims.get("aud").cloned().unwrap_or(Value::Null);
    // Matching is exact and case-sensitive, as Entra's has been since 2025.
    if !credentials.iter().any(|c| c.issuer == iss) {
        return Err(invalid_client(
            700211,
            &format!(
                "No matching federated identity record found for presented assertion issuer '{iss}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"
            ),
        ));
    }
    let kid = jwt.header.get("kid").and_then(Value::as_str);
    let jwks = match oidc::issuer_keys(shared, &iss, kid).await {
        Ok(j) => j,
        Err(oidc::FetchFailed(detail)) => {
            tracing::info!(issuer = %iss, %detail, "external OIDC discovery failed");
            return Err(bad_request(50166, "Request to External OIDC endpoint failed."));
        }
    };
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
            700027,
            &format!(
                "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '{}']",
                kid.unwrap_or("")
            ),
        ));
    }
    let now = time::now();
    let exp = jwt.claim_u64("exp");
    let nbf = jwt.claim_u64("nbf").or_else(|| jwt.claim_u64("iat"));
    let in_range = exp.is_some_and(|e| e + SKEW_SECS > now) && nbf.is_none_or(|n| n <= now + SKEW_SECS);
    if !in_range {
        let at = |s: Option<u64>| s.map_or_else(|| "(none)".to_owned(), |s| time::rfc3339(s * 1000));
        return Err(invalid_client(
            700024,
            &format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                at(Some(now)),
                at(nbf),
                at(exp)
            ),
        ));
    }
    let auds = audiences(&aud);
    let matches = |c: &FederatedCredentialSpec| {
        c.issuer == iss && c.subject == sub && auds.contains(&c.audience.as_str())
    };
    if !credentials.iter().any(matches) {
        return Err(invalid_client(
            70021,
            &format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'. https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation",
                shown(&aud)
            ),
        ));
    }
    Ok(subject)
}
