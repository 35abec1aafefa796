//! Who may call ARM, and how often: bearer-token checks and the subscription token buckets.
// Handlers return ready error responses as `Err`; they are built only on the failure path, so
// boxing them would cost an allocation for nothing.
#![allow(clippy::result_large_err)]

use axum::{http::StatusCode, response::Response};
use serde_json::Value;

use super::reply::{arm_error, header};
use crate::{model::TokenBucket, state::Shared, sync::lock, time};

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
pub(super) fn authenticate(shared: &Shared, parts: &http::request::Parts) -> Result<String, Response> {
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
pub(super) fn throttle(
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
    let now = shared.clock.now();
    let mut inner = lock(&shared.inner);
    let bucket = inner
        .buckets
        .entry((sub.to_ascii_lowercase(), write))
        .or_insert_with(|| TokenBucket::new(cfg.size, cfg.refill_per_sec, now));
    match bucket.take(now) {
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

#[cfg(test)]
mod tests;
