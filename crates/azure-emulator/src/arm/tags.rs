//! The tags of user-assigned identities through ARM's tags resource, as `az tag` sends it:
//! `GET|PUT|PATCH|DELETE {identity id}/providers/Microsoft.Resources/tags/default` (REST API
//! "Tags - Get / Create Or Update / Update / Delete At Scope", api-version 2019-10-01 on). PATCH
//! carries `{"operation": "Merge"|"Replace"|"Delete", "properties": {"tags": {…}}}` (`az tag
//! update`), PUT `{"properties": {"tags": {…}}}` (`az tag create`, replacing all); both answer
//! the tags wrapper resource `{id, name: "default", type: "Microsoft.Resources/tags",
//! properties: {tags}}`. Writes take effect at once, like ARM's. The emulator keeps no tags for
//! other scopes (VMs, groups, subscriptions) and says so with a 404.

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
    reply::{arm_error, header, not_found, read_body},
    sub_resource,
};
use crate::{
    ids::{self, ArmPath},
    state::Shared,
    sync::lock,
    tags::{self, TagError, Tags},
};

/// Oldest api-version with the tags resource at a scope.
const MIN_API: &str = "2019-10-01";
const SUFFIX: &str = "/providers/microsoft.resources/tags/default";
const TYPE: &str = "Microsoft.Resources/tags";

/// A request path ending in `/providers/Microsoft.Resources/tags/default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TagsPath {
    /// The tagged resource's path, as requested.
    scope: String,
}

/// Recognises tags-resource paths; anything else is left to the other handlers.
pub(super) fn parse(path: &str) -> Option<TagsPath> {
    let trimmed = path.trim_end_matches('/');
    // ASCII lower-casing keeps byte offsets, so the length slices the original.
    let scope_len = trimmed.to_ascii_lowercase().strip_suffix(SUFFIX)?.len();
    Some(TagsPath {
        scope: trimmed[..scope_len].to_owned(),
    })
}

/// ARM's answer to tags that break Azure's limits.
pub(super) fn tag_error(e: TagError) -> Response {
    arm_error(StatusCode::BAD_REQUEST, e.code, &e.message)
}

pub(super) fn invalid_content(e: &serde_json::Error) -> Response {
    arm_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestContent",
        &format!("The request content was invalid and could not be deserialized: '{e}'."),
    )
}

/// The tags wrapper resource. Without tags, `properties` is empty, as in the REST API's example.
fn body(identity_id: &str, tags: &Tags) -> Value {
    let properties = if tags.is_empty() {
        json!({})
    } else {
        json!({ "tags": tags })
    };
    json!({
        "id": format!("{identity_id}/providers/Microsoft.Resources/tags/default"),
        "name": "default",
        "type": TYPE,
        "properties": properties,
    })
}

#[derive(Deserialize)]
struct TagsBody {
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    properties: Option<TagsProperties>,
}

#[derive(Deserialize)]
struct TagsProperties {
    #[serde(default)]
    tags: Option<Tags>,
}

pub(super) async fn handle(
    shared: &Arc<Shared>,
    parts: &http::request::Parts,
    body: Body,
    caller: &str,
    path: TagsPath,
) -> Response {
    if let Err(r) = sub_resource::api_version(parts, MIN_API) {
        return r;
    }
    let identity = match ids::parse_arm_path(&path.scope) {
        Ok(p @ ArmPath::Identity { .. }) => p,
        _ => {
            return arm_error(
                StatusCode::NOT_FOUND,
                "InvalidResourceType",
                &format!(
                    "The resource type '{TYPE}' could not be found at scope '{}': the emulator keeps tags of user-assigned identities only.",
                    path.scope
                ),
            );
        }
    };
    let write = match parts.method {
        Method::GET => Some(false),
        Method::PUT | Method::PATCH | Method::DELETE => Some(true),
        _ => None,
    };
    let rate = match sub_resource::admit(shared, &parts.method, identity.subscription(), write, caller) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let bytes = if matches!(parts.method, Method::PUT | Method::PATCH) {
        match read_body(shared, body).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        Default::default()
    };
    let mut resp = apply(shared, &identity, &parts.method, &bytes);
    if let Some((name, left)) = rate {
        header(&mut resp, name, left);
    }
    resp
}

/// Reads or writes the identity's tags.
fn apply(shared: &Shared, identity: &ArmPath, method: &Method, bytes: &[u8]) -> Response {
    let request = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice::<TagsBody>(bytes) {
            Ok(b) => Some(b),
            Err(e) => return invalid_content(&e),
        }
    };
    let mut inner = lock(&shared.inner);
    let Some(ident) = inner
        .identities
        .get_mut(&identity.resource_key().unwrap_or_default())
    else {
        return not_found(identity);
    };
    let next = match (method, request) {
        (&Method::GET, _) => return Json(body(&ident.id, &ident.tags)).into_response(),
        (&Method::DELETE, _) => {
            ident.tags.clear();
            return StatusCode::OK.into_response();
        }
        (_, None | Some(TagsBody { properties: None, .. })) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: 'properties' is required.",
            );
        }
        (
            &Method::PUT,
            Some(TagsBody {
                properties: Some(p), ..
            }),
        ) => tags::replacement(&p.tags.unwrap_or_default()),
        (
            _,
            Some(TagsBody {
                operation,
                properties: Some(p),
            }),
        ) => {
            let requested = p.tags.unwrap_or_default();
            match operation.unwrap_or_default().to_ascii_lowercase().as_str() {
                "merge" => tags::merge(&ident.tags, &requested),
                "replace" => tags::replacement(&requested),
                "delete" => Ok(tags::delete(&ident.tags, &requested)),
                other => {
                    return arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestContent",
                        &format!(
                            "The request content was invalid and could not be deserialized: the operation '{other}' is not one of 'Merge', 'Replace', 'Delete'."
                        ),
                    );
                }
            }
        }
    };
    match next {
        Ok(t) => {
            ident.tags = t;
            Json(body(&ident.id, &ident.tags)).into_response()
        }
        Err(e) => tag_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_tags_paths_at_any_scope() {
        let id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app";
        let p = parse(&format!("{id}/providers/Microsoft.Resources/tags/default")).unwrap();
        assert_eq!(p.scope, id);
        assert_eq!(
            parse(&format!("{id}/PROVIDERS/microsoft.resources/Tags/Default/"))
                .unwrap()
                .scope,
            id
        );
        assert_eq!(
            parse("/subscriptions/s/providers/Microsoft.Resources/tags/default")
                .unwrap()
                .scope,
            "/subscriptions/s"
        );
        assert_eq!(parse(id), None);
        assert_eq!(
            parse(&format!("{id}/providers/Microsoft.Resources/tags/other")),
            None
        );
    }
}
