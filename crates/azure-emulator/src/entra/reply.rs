//! How Entra answers a refused request: its error body and the common refusals.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{state::Shared, time, token};

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

pub(super) fn bad_request(code: u32, message: &str) -> Response {
    entra_error(StatusCode::BAD_REQUEST, "invalid_request", code, message)
}

pub(super) fn invalid_client(code: u32, message: &str) -> Response {
    entra_error(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
}

pub(super) fn unknown_app(shared: &Shared, client_id: &str) -> Response {
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
