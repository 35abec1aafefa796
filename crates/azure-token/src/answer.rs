//! Reading a token endpoint's answer: IMDS's token object (every value a string), Entra v1 (numbers
//! as strings, with `expires_on`) and Entra v2 (numbers, `expires_in` only), or an error status.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::Value;

use crate::{Error, Service, retry_after};

/// How much of an error answer is kept: IMDS's and Entra's errors are a few hundred bytes; more
/// is something else (an HTML page from a proxy) and is not worth carrying around.
pub const BODY_KEPT: usize = 1024;

/// An access token and its times (epoch seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    pub token_type: String,
    pub expires_on: u64,
    pub not_before: u64,
    pub ext_expires_in: u64,
    /// The `oid` claim, when the token is a JWT carrying one: the identity's principal (object) id.
    pub principal_id: Option<String>,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    epoch_secs(SystemTime::now())
}

pub(crate) fn epoch_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// What an answer means: a token for a 2xx with a token in it, else an [`Error`] of the
/// service's that keeps its status, `Retry-After` (`retry_after_header`, read at `now`) and body.
pub fn read_answer(
    service: Service,
    status: u16,
    retry_after_header: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<Token, Error> {
    if !(200..300).contains(&status) {
        return Err(Error::Upstream {
            service,
            status,
            retry_after: retry_after_header.and_then(|v| retry_after(v, now)),
            body: String::from_utf8_lossy(body).chars().take(BODY_KEPT).collect(),
        });
    }
    parse_token(service, body, epoch_secs(now))
}

/// Reads an IMDS or Entra (v1 or v2) token answer, whose numbers may be strings or numbers.
/// `expires_on` wins over `expires_in` (relative to `now`, epoch seconds) when both are given, so
/// a pod handed the token sees the service's own expiry. A body that is not a token is
/// [`Error::BadAnswer`] from `service`, the service that answered it.
pub fn parse_token(service: Service, body: &[u8], now: u64) -> Result<Token, Error> {
    let bad = |detail: String| Error::BadAnswer { service, detail };
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let num = |key: &str| -> Option<u64> {
        match v.get(key)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    let access_token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("no access_token".into()))?
        .to_owned();
    let expires_on = match (num("expires_on"), num("expires_in")) {
        (Some(on), _) => on,
        (None, Some(r#in)) => now + r#in,
        (None, None) => return Err(bad("neither expires_on nor expires_in".into())),
    };
    let principal_id = jwt_claim(&access_token, "oid");
    Ok(Token {
        token_type: v
            .get("token_type")
            .and_then(Value::as_str)
            .unwrap_or("Bearer")
            .to_owned(),
        not_before: num("not_before").unwrap_or(now),
        ext_expires_in: num("ext_expires_in").unwrap_or_else(|| expires_on.saturating_sub(now)),
        expires_on,
        access_token,
        principal_id,
    })
}

/// A string claim of an unverified JWT. Used only to learn the principal id of a token just
/// received from IMDS or Entra, never to authorize anything a caller presents.
pub fn jwt_claim(jwt: &str, claim: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get(claim)?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests;
