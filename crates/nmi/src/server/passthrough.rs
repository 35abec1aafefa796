//! The pass-through to IMDS: every path that is not a token path (unless instance metadata is
//! blocked), and token requests of excepted pods.

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{Nmi, response};

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
];

/// Largest request body passed through to IMDS.
const MAX_BODY: usize = 1 << 20;

/// Passes a request to IMDS unchanged but for `X-Forwarded-For` (IMDS refuses requests that carry
/// it) and hop-by-hop headers, with a timeout.
pub(super) async fn pass_through<S>(nmi: &Nmi<S>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path_and_query}", nmi.config.imds);
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "request body too large",
            );
        }
    };
    let mut out = nmi.http.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if !HOP_BY_HOP.contains(&n) && n != "x-forwarded-for" && n != "forwarded" {
            out = out.header(name, value);
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            return response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                &format!("IMDS did not answer: {e}"),
            );
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return response::error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                &format!("reading IMDS's answer: {e}"),
            );
        }
    };
    let mut response = (status, bytes).into_response();
    // IMDS's own headers replace the defaults of a bytes body (content-type), rather than
    // joining them: a doubled content-type makes the SDKs refuse the answer. The length is
    // the body's, set already.
    for name in headers.keys() {
        if name != header::CONTENT_LENGTH {
            response.headers_mut().remove(name);
        }
    }
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != header::CONTENT_LENGTH {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
