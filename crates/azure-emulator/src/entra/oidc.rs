//! The signing keys of an external OIDC issuer (a cluster's service-account issuer), as Entra
//! gets them to check a federated assertion: from `{issuer}/.well-known/openid-configuration`
//! and the `jwks_uri` it names, over HTTPS, kept a while and fetched again when an assertion
//! names a key the kept set lacks (the issuer rotated its key). Issuers the world gives a JWKS
//! for directly are not fetched.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{model::FetchedKeys, state::Shared, sync::lock};

/// How long fetched keys are used before they are fetched again.
const KEEP: Duration = Duration::from_secs(300);
/// How long one discovery request may take (Entra gives up on slow issuers too).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an issuer's keys could not be had: Entra's AADSTS50166 ("Request to External OIDC
/// endpoint failed"), with our detail for the emulator's log.
#[derive(Debug)]
pub(super) struct FetchFailed(pub String);

fn has_kid(jwks: &Value, kid: Option<&str>) -> bool {
    let Some(kid) = kid else { return true };
    jwks.get("keys").and_then(Value::as_array).is_some_and(|keys| {
        keys.iter()
            .any(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
    })
}

/// The JWKS to check an assertion from `issuer` signed with key `kid`.
pub(super) async fn issuer_keys(
    shared: &Shared,
    issuer: &str,
    kid: Option<&str>,
) -> Result<Value, FetchFailed> {
    let spec = shared.world.oidc_issuers.iter().find(|i| i.issuer == issuer);
    if let Some(spec) = spec {
        match (&spec.jwks, &spec.jwks_file) {
            (Some(j), _) => return Ok(j.clone()),
            (None, Some(f)) => {
                let bytes = std::fs::read(f).map_err(|e| FetchFailed(format!("{}: {e}", f.display())))?;
                return serde_json::from_slice(&bytes)
                    .map_err(|e| FetchFailed(format!("{}: {e}", f.display())));
            }
            (None, None) => {}
        }
    }
    if let Some(kept) = lock(&shared.oidc_keys.0).get(issuer)
        && kept.at.elapsed() < KEEP
        && has_kid(&kept.jwks, kid)
    {
        return Ok(kept.jwks.clone());
    }
    let ca = spec.and_then(|s| s.ca_file.as_deref());
    let jwks = fetch(issuer, ca).await?;
    lock(&shared.oidc_keys.0).insert(
        issuer.to_owned(),
        FetchedKeys {
            at: Instant::now(),
            jwks: jwks.clone(),
        },
    );
    Ok(jwks)
}

async fn fetch(issuer: &str, ca: Option<&std::path::Path>) -> Result<Value, FetchFailed> {
    if !issuer.starts_with("https://") {
        return Err(FetchFailed(format!("issuer {issuer} is not an https URL")));
    }
    let mut builder = reqwest::Client::builder().no_proxy().timeout(FETCH_TIMEOUT);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| FetchFailed(format!("{}: {e}", ca.display())))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| FetchFailed(format!("{}: {e}", ca.display())))?;
        builder = builder.tls_certs_merge(roots);
    }
    let http = builder
        .build()
        .map_err(|e| FetchFailed(format!("HTTP client: {e}")))?;
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http
                .get(&url)
                .send()
                .await
                .map_err(|e| FetchFailed(format!("GET {url}: {e}")))?;
            if !r.status().is_success() {
                return Err(FetchFailed(format!("GET {url}: {}", r.status())));
            }
            r.json::<Value>()
                .await
                .map_err(|e| FetchFailed(format!("GET {url}: {e}")))
        }
    };
    let config = get(format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))
    .await?;
    // OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was fetched for.
    if config.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(FetchFailed(format!(
            "discovery of {issuer} names issuer {}",
            config.get("issuer").unwrap_or(&Value::Null)
        )));
    }
    let Some(jwks_uri) = config.get("jwks_uri").and_then(Value::as_str) else {
        return Err(FetchFailed(format!("discovery of {issuer} has no jwks_uri")));
    };
    get(jwks_uri.to_owned()).await
}
