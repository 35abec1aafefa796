//! Reading a request: which route a path takes and what a token query asks for.
//! Pure functions, so they can be tested exhaustively and fuzzed.

use matching::IdentityRequest;

/// Where a request goes, decided from its path, first match wins as upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/metadata/identity/oauth2/token`, in any letter case, optionally followed by `/...`.
    Token,
    /// A mangled path that IMDS might still read as an identity request (backslashes, dot
    /// segments, doubled slashes, encoded separators, other `/metadata/identity/...` paths): 400.
    /// Passing such a path through would hand the node's own identities to any pod.
    Invalid,
    /// `/host/token`: the loopback-only endpoint for host processes acting for a pod.
    HostToken,
    /// `/metadata/instance...`, blocked when `--block-instance-metadata` is on.
    Instance,
    /// Anything else: passed through to IMDS. This includes `/metadata/identity/info` (spelt
    /// plainly), whose answer is the VM's tenant id and nothing a pod could use as a credential.
    Other,
}

const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// IMDS's identity information: `{"tenantId": ...}`, the only identity path passed through.
const INFO_PATH: &str = "/metadata/identity/info";

/// Percent-decodes a path; invalid escapes are kept as written.
pub fn decode_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The path as a lenient server would resolve it: lower case, backslashes as slashes, empty and
/// `.` segments dropped, `..` applied.
fn resolved(decoded: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let lower = decoded.to_ascii_lowercase().replace('\\', "/");
    for seg in lower.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(lower.len() + 1);
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    out
}

/// Whether a raw path is already in the only form passed through: plain characters, no empty or
/// dot segments, no escapes. IMDS's own paths all are.
fn is_plain(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    raw.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        && (rest.is_empty() || rest.split('/').all(|s| !matches!(s, "" | "." | "..")))
}

/// Classifies a raw request path (as it appears on the request line).
pub fn classify(raw: &str) -> Route {
    let decoded = decode_path(raw);
    let lower = decoded.to_ascii_lowercase();
    if let Some(tail) = lower.strip_prefix(TOKEN_PATH)
        && (tail.is_empty() || tail.starts_with('/'))
    {
        return Route::Token;
    }
    let resolved = resolved(&decoded);
    if resolved == INFO_PATH && is_plain(raw) {
        return Route::Other;
    }
    if looks_like_token_path(&lower) || resolved.starts_with("/metadata/identity") {
        return Route::Invalid;
    }
    if decoded.starts_with("/host/token") {
        return Route::HostToken;
    }
    // Only plain paths are passed through: a roundabout one (`/x/../metadata/instance`,
    // `/metadata%2fidentity//../instance`) would reach IMDS as the HTTP client rewrites it,
    // not as it was checked here.
    if !is_plain(raw) {
        return Route::Invalid;
    }
    if resolved.starts_with("/metadata/instance") {
        return Route::Instance;
    }
    Route::Other
}

/// Upstream's `/(?i:metadata)/identity(.*?)oauth2(.*?)token` anywhere in the path (here wholly
/// case-insensitive; `lower` is the lower-cased decoded path).
fn looks_like_token_path(lower: &str) -> bool {
    lower.match_indices("/metadata/identity").any(|(at, m)| {
        let rest = &lower[at + m.len()..];
        rest.find("oauth2")
            .is_some_and(|o| rest[o + "oauth2".len()..].contains("token"))
    })
}

/// What a token request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenQuery {
    pub resource: String,
    pub identity: IdentityRequest,
}

/// Why a token query is refused (all 400: `invalid_request`, except [`QueryError::ApiVersion`],
/// which has IMDS's own body, see [`crate::api_version`]).
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
    if api_version_required && !api_version.as_deref().is_some_and(crate::api_version::supported) {
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

#[cfg(test)]
mod tests;
