//! IMDS's `api-version` rule on the token endpoint, and its refusal, which NMI gives as IMDS gives
//! it: a token request without a version IMDS serves identities at (from 2018-02-01) gets
//! `400 {"error": "Bad request. api-version is invalid or was not specified ...",
//! "newest-versions": [...]}`, not upstream's silence. Clients read `newest-versions[0]` to find a
//! version to use.
//!
//! "Supported" is a well-formed date no older than the identity endpoints: a version IMDS
//! publishes later is accepted before NMI learns of it, and a pod can never be refused a token
//! because NMI's list is behind IMDS's.

use axum::{http::StatusCode, response::Response};
use serde::Serialize;

use crate::{metrics::Metrics, response};

/// The first api-version of IMDS's identity endpoints.
pub const IDENTITY_SINCE: &str = "2018-02-01";

/// What IMDS lists as its newest versions in the refusal.
pub const NEWEST_VERSIONS: [&str; 3] = ["2023-07-01", "2021-12-13", "2021-11-15"];

/// IMDS's refusal text, for a missing and for an unsupported version alike.
pub const REFUSAL: &str = "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds";

/// Whether IMDS serves identities at `version`: `YYYY-MM-DD`, from [`IDENTITY_SINCE`] on.
pub fn supported(version: &str) -> bool {
    let b = version.as_bytes();
    let well_formed = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    well_formed && version >= IDENTITY_SINCE
}

#[derive(Serialize)]
struct Refusal {
    error: &'static str,
    #[serde(rename = "newest-versions")]
    newest_versions: [&'static str; 3],
}

/// The 400 IMDS answers to a missing or unsupported api-version, counted as `api_version`.
pub fn refusal(metrics: &Metrics) -> Response {
    metrics.refused("api_version");
    response::json(
        StatusCode::BAD_REQUEST,
        &Refusal {
            error: REFUSAL,
            newest_versions: NEWEST_VERSIONS,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_the_identity_endpoints_on() {
        for ok in ["2018-02-01", "2019-08-01", "2023-07-01", "2031-01-01"] {
            assert!(supported(ok), "{ok}");
        }
        for bad in [
            "",
            "2017-12-01",
            "2018-01-31",
            "latest",
            "2018-02-1",
            "2018-02-01x",
            "2018/02/01",
            "9999-99-9a",
        ] {
            assert!(!supported(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_refusal_is_imdss_body() {
        let r = refusal(&Metrics::new());
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"error":"Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds","newest-versions":["2023-07-01","2021-12-13","2021-11-15"]}"#
        );
    }
}
