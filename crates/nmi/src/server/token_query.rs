//! Reading a token request's query: what it asks for, as IMDS reads it ([`parse_imds_token_query`])
//! or as `/host/token` does ([`parse_token_query`]). Pure functions, so that they can be tested
//! exhaustively and fuzzed.
//!
//! IMDS's `api-version` rule on the token endpoint is part of reading the query, and its refusal
//! ([`api_version_refusal`]) is given as IMDS gives it: a token request without a version IMDS
//! serves identities at (from 2018-02-01) gets `400 {"error": "Bad request. api-version is
//! invalid or was not specified ...", "newest-versions": [...]}`, not upstream's silence.
//! Clients read `newest-versions[0]` to find a version to use.
//!
//! "Supported" is a well-formed date no older than the identity endpoints: a version IMDS
//! publishes later is accepted before NMI learns of it, and a pod can never be refused a token
//! because NMI's list is behind IMDS's.

use axum::{http::StatusCode, response::Response};
use matching::IdentityRequest;
use serde::Serialize;

use super::response;
pub use crate::authorizer::TokenQuery;
use crate::metrics::Metrics;

/// Why a token query is refused (all 400: `invalid_request`, except [`QueryError::ApiVersion`],
/// which has IMDS's own body, see [`api_version_refusal`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No `api-version`, or one IMDS does not serve identities at.
    #[error("api-version is invalid or was not specified in the request")]
    ApiVersion,
    /// IMDS refuses repeated parameters; so do we, since two `client_id`s could be read two ways.
    #[error("parameter {0} is given more than once")]
    Duplicate(String),
    #[error("parameter resource cannot be empty")]
    MissingResource,
    #[error("only one of client_id, object_id and msi_res_id (or mi_res_id) may be given")]
    ConflictingSelectors,
}

/// Parses a query of IMDS's token endpoint, in the order IMDS checks it: repeated parameters,
/// then `api-version` (its name in any letter case, as IMDS reads it), then the rest as
/// [`parse_token_query`].
pub fn parse_imds_token_query(query: Option<&str>) -> Result<TokenQuery, QueryError> {
    parse(query, true)
}

/// Parses a token request's query string without IMDS's `api-version` rule (`/host/token`, which
/// upstream's host clients call without one). Unknown parameters (`bypass_cache`, the .NET
/// probe's `msi-res-id`, ...) are accepted and ignored, as IMDS and upstream do.
pub fn parse_token_query(query: Option<&str>) -> Result<TokenQuery, QueryError> {
    parse(query, false)
}

fn parse(query: Option<&str>, api_version_required: bool) -> Result<TokenQuery, QueryError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut api_version: Option<String> = None;
    let (mut resource, mut client_id, mut object_id, mut msi_res_id, mut mi_res_id) =
        (None, None, None, None, None);
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !seen.insert(k.clone().into_owned()) {
            return Err(QueryError::Duplicate(k.into_owned()));
        }
        if k.eq_ignore_ascii_case("api-version") {
            api_version = Some(v.clone().into_owned());
        }
        let v = Some(v.into_owned()).filter(|v| !v.is_empty());
        match k.as_ref() {
            "resource" => resource = v,
            "client_id" => client_id = v,
            "object_id" => object_id = v,
            "msi_res_id" => msi_res_id = v,
            "mi_res_id" => mi_res_id = v,
            _ => {}
        }
    }
    if api_version_required && !api_version.as_deref().is_some_and(api_version_supported) {
        return Err(QueryError::ApiVersion);
    }
    let resource = resource.ok_or(QueryError::MissingResource)?;
    // msi_res_id wins over mi_res_id, as upstream; they are two spellings of one selector.
    let res_id = msi_res_id.or(mi_res_id);
    let identity = match (client_id, object_id, res_id) {
        (None, None, None) => IdentityRequest::Default,
        (Some(c), None, None) => IdentityRequest::ClientId(c),
        (None, Some(o), None) => IdentityRequest::ObjectId(o),
        (None, None, Some(r)) => IdentityRequest::ResourceId(r),
        _ => return Err(QueryError::ConflictingSelectors),
    };
    Ok(TokenQuery { resource, identity })
}

/// The first api-version of IMDS's identity endpoints.
pub const IDENTITY_SINCE: &str = "2018-02-01";

/// What IMDS lists as its newest versions in the refusal.
pub const NEWEST_VERSIONS: [&str; 3] = ["2023-07-01", "2021-12-13", "2021-11-15"];

/// IMDS's refusal text, for a missing and for an unsupported version alike.
pub const API_VERSION_REFUSAL: &str = "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds";

/// Whether IMDS serves identities at `version`: `YYYY-MM-DD`, from [`IDENTITY_SINCE`] on.
pub fn api_version_supported(version: &str) -> bool {
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
struct ApiVersionRefusal {
    error: &'static str,
    #[serde(rename = "newest-versions")]
    newest_versions: [&'static str; 3],
}

/// The 400 IMDS answers to a missing or unsupported api-version, counted as `api_version`.
pub fn api_version_refusal(metrics: &Metrics) -> Response {
    metrics.refused("api_version");
    response::json(
        StatusCode::BAD_REQUEST,
        &ApiVersionRefusal {
            error: API_VERSION_REFUSAL,
            newest_versions: NEWEST_VERSIONS,
        },
    )
}

#[cfg(test)]
mod tests;
