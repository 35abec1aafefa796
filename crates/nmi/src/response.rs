//! What NMI answers, byte for byte where SDKs care: IMDS's token object and IMDS-style errors.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::token::Token;

/// The token answer: every value a string, keys in the order IMDS emits them (MSAL.NET lets the
/// later of `expires_in`/`expires_on` win, so the order matters).
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct TokenBody<'a> {
    pub access_token: &'a str,
    pub client_id: &'a str,
    pub expires_in: String,
    pub expires_on: String,
    pub ext_expires_in: String,
    pub not_before: String,
    pub resource: &'a str,
    pub token_type: &'a str,
}

impl<'a> TokenBody<'a> {
    /// `expires_in` is counted from `now` (epoch seconds), as IMDS's own cache does.
    pub fn new(token: &'a Token, client_id: &'a str, resource: &'a str, now: u64) -> Self {
        Self {
            access_token: &token.access_token,
            client_id,
            expires_in: token.expires_on.saturating_sub(now).max(1).to_string(),
            expires_on: token.expires_on.to_string(),
            ext_expires_in: token.ext_expires_in.to_string(),
            not_before: token.not_before.to_string(),
            resource,
            token_type: &token.token_type,
        }
    }
}

/// Serialises a body as the JSON answer NMI gives.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).expect("NMI's answers always serialise");
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        bytes,
    )
        .into_response()
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// An IMDS-style error, `{"error": code, "error_description": text}`.
pub fn error(status: StatusCode, code: &str, description: &str) -> Response {
    json(
        status,
        &ErrorBody {
            error: code,
            error_description: description,
        },
    )
}

/// The answer to a request without `Metadata: true`; SDK probes take any 400 as "IMDS is here".
pub fn metadata_header_missing() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "Required metadata header not specified",
    )
}

/// Adds `Retry-After` (whole seconds, at least 1).
pub fn with_retry_after(mut response: Response, after: std::time::Duration) -> Response {
    let secs = after.as_secs().max(1);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header value"),
    );
    response
}
