//! Federated identity credentials of user-assigned identities:
//! `GET/PUT/DELETE …/userAssignedIdentities/{identity}/federatedIdentityCredentials/{name}` and the
//! list `GET …/federatedIdentityCredentials`, as `az identity federated-credential
//! create|show|delete|list` send them. Unlike identity writes on VMs these are synchronous: the
//! credential is in force (for Entra's federated assertions) as soon as the PUT returns.

use std::sync::Arc;

use axum::{
    Json,
    body::Body,
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    reply::{arm_error, header, not_found},
    sub_resource,
};
use crate::{
    ids::{self, ArmPath},
    model::StoredCredential,
    state::Shared,
    sync::lock,
    world::FederatedCredentialSpec,
};

/// Oldest api-version that has federated identity credentials.
const MIN_API: &str = "2022-01-31-preview";
/// Azure's limit of federated identity credentials on one identity.
pub const MAX_PER_IDENTITY: usize = 20;
const TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials";

/// The credential as ARM shows it.
fn credential_body(c: &StoredCredential) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "type": TYPE,
        "properties": {
            "issuer": c.spec.issuer,
            "subject": c.spec.subject,
            "audiences": [c.spec.audience],
        },
    })
}

/// A request path under `…/federatedIdentityCredentials`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FicPath {
    identity: ArmPath,
    /// None: the collection.
    name: Option<String>,
}

/// Recognises federated-credential paths; anything else is left to the other handlers.
pub(super) fn parse(path: &str) -> Option<FicPath> {
    let trimmed = path.trim_end_matches('/');
    let lower = trimmed.to_ascii_lowercase();
    let marker = "/federatedidentitycredentials";
    let at = lower.find(marker)?;
    let identity = ids::parse_arm_path(&trimmed[..at]).ok()?;
    if !matches!(identity, ArmPath::Identity { .. }) {
        return None;
    }
    let rest = &trimmed[at + marker.len()..];
    let name = match rest.strip_prefix('/') {
        None if rest.is_empty() => None,
        Some(n) if !n.is_empty() && !n.contains('/') => Some(n.to_owned()),
        _ => return None,
    };
    Some(FicPath { identity, name })
}

/// Azure's rule for credential names: 3-120 characters, letters, digits, `-` and `_`, starting
/// with a letter or digit.
fn valid_name(name: &str) -> bool {
    (3..=120).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[derive(Deserialize)]
struct PutBody {
    properties: Option<PutProperties>,
}

#[derive(Deserialize)]
struct PutProperties {
    issuer: Option<String>,
    subject: Option<String>,
    audiences: Option<Vec<String>>,
}

fn bad(message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

pub(super) async fn handle(
    shared: &Arc<Shared>,
    parts: &http::request::Parts,
    body: Body,
    caller: &str,
    path: FicPath,
) -> Response {
    if let Err(r) = sub_resource::api_version(parts, MIN_API) {
        return r;
    }
    let write = match (&parts.method, &path.name) {
        (&Method::GET, _) => Some(false),
        (&Method::PUT | &Method::DELETE, Some(_)) => Some(true),
        _ => None,
    };
    let rate = match sub_resource::admit(shared, &parts.method, path.identity.subscription(), write, caller) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let identity_key = path.identity.resource_key().unwrap_or_default();
    let Some(identity_id) = lock(&shared.inner)
        .identities
        .get(&identity_key)
        .map(|i| i.id.clone())
    else {
        return not_found(&path.identity);
    };
    let mut resp = match path.name {
        None => list(shared, &identity_key),
        Some(name) => {
            let id = format!("{identity_id}/federatedIdentityCredentials/{name}");
            let key = ids::key(&id);
            match parts.method {
                Method::GET => match lock(&shared.inner).federated_credentials.get(&key) {
                    Some(c) => Json(credential_body(c)).into_response(),
                    None => arm_error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("The federated identity credential '{name}' was not found."),
                    ),
                },
                Method::DELETE => match lock(&shared.inner).federated_credentials.remove(&key) {
                    Some(_) => StatusCode::OK.into_response(),
                    None => StatusCode::NO_CONTENT.into_response(),
                },
                _ => {
                    let limit = shared.world.arm.max_body_bytes;
                    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
                        return bad("The request content is too large.");
                    };
                    put(shared, identity_key, id, name, &bytes)
                }
            }
        }
    };
    if let Some((name, left)) = rate {
        header(&mut resp, name, left);
    }
    resp
}

fn list(shared: &Shared, identity_key: &str) -> Response {
    let inner = lock(&shared.inner);
    let value: Vec<Value> = inner
        .federated_credentials
        .values()
        .filter(|c| c.identity_key == identity_key)
        .map(credential_body)
        .collect();
    Json(json!({ "value": value })).into_response()
}

fn put(shared: &Shared, identity_key: String, id: String, name: String, bytes: &[u8]) -> Response {
    if !valid_name(&name) {
        return bad(&format!(
            "The federated identity credential name '{name}' is invalid. It must be 3 to 120 characters long, start with a letter or a number, and contain only letters, numbers, '-' and '_'."
        ));
    }
    let Ok(PutBody {
        properties: Some(props),
    }) = serde_json::from_slice::<PutBody>(bytes)
    else {
        return bad(
            "The request content is invalid: 'properties' with 'issuer', 'subject' and 'audiences' is required.",
        );
    };
    let issuer = props.issuer.unwrap_or_default();
    let subject = props.subject.unwrap_or_default();
    let audiences = props.audiences.unwrap_or_default();
    if !issuer.starts_with("https://") {
        return bad(&format!(
            "The issuer '{issuer}' is invalid: it must be an https URL."
        ));
    }
    if subject.is_empty() {
        return bad("The subject is required.");
    }
    let [audience] = audiences.as_slice() else {
        return bad("Exactly one audience is required.");
    };
    let key = ids::key(&id);
    let mut inner = lock(&shared.inner);
    let existing = inner.federated_credentials.contains_key(&key);
    let siblings: Vec<&StoredCredential> = inner
        .federated_credentials
        .values()
        .filter(|c| c.identity_key == identity_key && ids::key(&c.id) != key)
        .collect();
    if siblings
        .iter()
        .any(|c| c.spec.issuer == issuer && c.spec.subject == subject)
    {
        return bad(&format!(
            "A federated identity credential with issuer '{issuer}' and subject '{subject}' already exists on this identity."
        ));
    }
    if siblings.len() >= MAX_PER_IDENTITY {
        return bad(&format!(
            "Too many federated identity credentials: an identity can have at most {MAX_PER_IDENTITY}."
        ));
    }
    let stored = StoredCredential {
        identity_key,
        id,
        name,
        spec: FederatedCredentialSpec {
            issuer,
            subject,
            audience: audience.clone(),
        },
    };
    let body = credential_body(&stored);
    inner.federated_credentials.insert(key, stored);
    let status = if existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_credential_paths_only() {
        let base = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app";
        let one = parse(&format!("{base}/federatedIdentityCredentials/fic-1")).unwrap();
        assert_eq!(one.name.as_deref(), Some("fic-1"));
        assert_eq!(one.identity.resource_key().unwrap(), ids::key(base));
        assert_eq!(
            parse(&format!("{base}/FederatedIdentityCredentials/"))
                .unwrap()
                .name,
            None
        );
        assert_eq!(parse(base), None);
        assert_eq!(parse(&format!("{base}/federatedIdentityCredentials/a/b")), None);
        let vm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm";
        assert_eq!(parse(&format!("{vm}/federatedIdentityCredentials/x")), None);
    }

    #[test]
    fn names_follow_azures_rule() {
        assert!(valid_name("kubernetes-federated_1"));
        assert!(!valid_name("ab"));
        assert!(!valid_name("-leading"));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"x".repeat(121)));
    }
}
