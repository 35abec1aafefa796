//! What NMI answers, byte for byte where SDKs care: IMDS's token object, IMDS-style errors, and
//! the answer of a [`Refusal`] (which the authorizer gives without knowing how it is written).

use axum::{
    body::Bytes,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{refusal::Refusal, token::Token};

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

impl TokenBody<'_> {
    /// The same bytes as serde's rendering, written directly: this is every cached request's
    /// answer, and a JWT needs no escaping, so it is copied rather than escaped byte by byte.
    pub fn to_json(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            // No early exit: the loop vectorises, and tokens are always plain.
            let plain = !s
                .bytes()
                .fold(false, |any, b| any | (b < 0x20) | (b == b'"') | (b == b'\\'));
            if plain {
                out.push(b'"');
                out.extend_from_slice(s.as_bytes());
                out.push(b'"');
            } else {
                serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
            }
        }
        let mut out = Vec::with_capacity(self.access_token.len() + self.resource.len() + 256);
        let fields: [(&str, &str); 8] = [
            ("access_token", self.access_token),
            ("client_id", self.client_id),
            ("expires_in", &self.expires_in),
            ("expires_on", &self.expires_on),
            ("ext_expires_in", &self.ext_expires_in),
            ("not_before", &self.not_before),
            ("resource", self.resource),
            ("token_type", self.token_type),
        ];
        for (i, (key, value)) in fields.into_iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"{\"" } else { b",\"" });
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            string(&mut out, value);
        }
        out.push(b'}');
        out
    }
}

/// The token answer for `now`, and its body, which the answer memo keeps (shared with the
/// answer, not copied).
pub fn token_answer(token: &Token, client_id: &str, resource: &str, now: u64) -> (Response, Bytes) {
    let body: Bytes = TokenBody::new(token, client_id, resource, now).to_json().into();
    (json_body(StatusCode::OK, body.clone()), body)
}

/// Serialises a body as the JSON answer NMI gives.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    json_bytes(
        status,
        serde_json::to_vec(body).expect("NMI's answers always serialise"),
    )
}

/// A JSON answer already rendered.
pub fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    json_body(status, bytes.into())
}

/// A JSON answer already rendered, shared without copying.
pub fn json_body(status: StatusCode, bytes: Bytes) -> Response {
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

/// The answer to a refused request: `{"error": ..., "error_description": detail}` with the
/// refusal's status, and its `Retry-After` if it has one.
pub fn refusal(refusal: Refusal) -> Response {
    let response = error(refusal.status, refusal.error, &refusal.detail);
    match refusal.retry_after {
        Some(after) => with_retry_after(response, after),
        None => response,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refusal(self)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Error;

    fn token(access_token: String, token_type: String) -> Token {
        Token {
            access_token,
            token_type,
            expires_on: 1_800_000_000,
            not_before: 1_799_990_000,
            ext_expires_in: 86_399,
            principal_id: None,
        }
    }

    proptest! {
        /// The hand-written rendering is serde's, byte for byte, whatever the strings hold.
        #[test]
        fn token_json_is_serdes(
            access in "[A-Za-z0-9._-]{0,64}|\\PC{0,32}|[\\x00-\\x7f]{0,32}",
            client in "\\PC{0,16}",
            resource in "https://[a-z./\"\\\\]{0,20}|\\PC{0,16}",
            kind in "Bearer|\\PC{0,8}",
            now in 1_700_000_000u64..1_900_000_000,
        ) {
            let t = token(access, kind);
            let body = TokenBody::new(&t, &client, &resource, now);
            prop_assert_eq!(body.to_json(), serde_json::to_vec(&body).unwrap());
        }
    }

    #[test]
    fn a_real_looking_answer_keeps_imds_key_order() {
        let t = token("eyJ0eXAi.eyJhdWQi.c2ln".into(), "Bearer".into());
        let body = TokenBody::new(&t, "cid", "https://storage.azure.com/", 1_799_996_400);
        let text = String::from_utf8(body.to_json()).unwrap();
        assert_eq!(
            text,
            r#"{"access_token":"eyJ0eXAi.eyJhdWQi.c2ln","client_id":"cid","expires_in":"3600","expires_on":"1800000000","ext_expires_in":"86399","not_before":"1799990000","resource":"https://storage.azure.com/","token_type":"Bearer"}"#
        );
    }

    /// Upstream's transient failures stay retryable for the SDKs; its refusals become 403, never
    /// 400; its `Retry-After` is passed on.
    #[test]
    fn upstream_errors_map_to_retryable_answers_or_403() {
        let upstream = |status, retry_after| Error::Upstream {
            what: "IMDS",
            status,
            retry_after,
            body: "{}".into(),
        };
        let cases = [
            (
                upstream(429, Some(std::time::Duration::from_secs(7))),
                429,
                "too_many_requests",
                Some("7"),
            ),
            (upstream(404, None), 404, "service_unavailable", None),
            (upstream(410, None), 410, "service_unavailable", None),
            (upstream(503, None), 503, "service_unavailable", None),
            (upstream(400, None), 403, "forbidden", None),
            (upstream(401, None), 403, "forbidden", None),
            (
                Error::BadUpstreamBody {
                    what: "Entra",
                    detail: "not JSON".into(),
                },
                502,
                "bad_gateway",
                None,
            ),
            (Error::Identity("unknown type".into()), 403, "forbidden", None),
        ];
        for (e, status, code, retry_after) in cases {
            let r = refusal(Refusal::upstream(&e));
            assert_eq!(r.status(), status, "{e}");
            assert_eq!(
                r.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()),
                retry_after,
                "{e}"
            );
            let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(r.into_body(), 1 << 16))
                .expect("a ready body")
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"], code, "{e}");
            assert_eq!(body["error_description"], e.to_string());
        }
    }
}
