//! User-assigned identities: GET, PUT that creates one at run time or replaces an existing one's
//! tags, and PATCH that updates tags. `az identity update --tags k=v` sends a GET, then a PUT of
//! the whole resource with the new tags (azure-cli's generated `identity update`, a generic
//! update); SDKs' `update` and `Update-AzUserAssignedIdentity` send PATCH `{location?, tags}`.
//! Either way the given `tags` replace the identity's tags as a whole.

use std::sync::Arc;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{
    reply::{arm_error, not_found},
    tags::{invalid_content, tag_error},
};
use crate::{admin, ids::ArmPath, state::Shared, sync::lock, tags};

pub(super) fn get_identity(shared: &Shared, path: &ArmPath) -> Response {
    let inner = lock(&shared.inner);
    match inner.identities.get(&path.resource_key().unwrap_or_default()) {
        Some(i) => Json(i.arm_body(&shared.tenant)).into_response(),
        None => not_found(path),
    }
}

/// What a PUT or PATCH of an identity may change here; `location`, `properties` and the rest are
/// accepted and ignored.
#[derive(Deserialize, Default)]
struct IdentityWrite {
    #[serde(default)]
    tags: Option<tags::Tags>,
}

/// PUT creates an identity (201) or returns the existing one (200), its tags replaced by the
/// body's (none when absent, as PUT states the whole resource); PATCH replaces the tags only when
/// the body names them, and finds nothing to create.
pub(super) fn put_identity(
    shared: &Arc<Shared>,
    sub: &str,
    rg: &str,
    name: &str,
    create: bool,
    body: &[u8],
) -> Response {
    let write = if body.iter().all(u8::is_ascii_whitespace) {
        IdentityWrite::default()
    } else {
        match serde_json::from_slice::<IdentityWrite>(body) {
            Ok(w) => w,
            Err(e) => return invalid_content(&e),
        }
    };
    let requested = if create {
        Some(write.tags.unwrap_or_default())
    } else {
        write.tags
    };
    let requested = match requested.as_ref().map(tags::replacement).transpose() {
        Ok(t) => t,
        Err(e) => return tag_error(e),
    };
    let path = ArmPath::Identity {
        sub: sub.into(),
        rg: rg.into(),
        name: name.into(),
    };
    let key = path.resource_key().unwrap_or_default();
    if let Some(i) = lock(&shared.inner).identities.get_mut(&key) {
        if let Some(t) = requested {
            i.tags = t;
        }
        return Json(i.arm_body(&shared.tenant)).into_response();
    }
    if !create {
        return not_found(&path);
    }
    let known_rg = shared.world.subscriptions.iter().any(|s| {
        s.id.eq_ignore_ascii_case(sub)
            && (s.resource_groups.is_empty() || s.resource_groups.iter().any(|g| g.eq_ignore_ascii_case(rg)))
    });
    if !known_rg {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        );
    }
    let admin = admin::Admin {
        shared: shared.clone(),
    };
    match admin.create_identity(admin::NewIdentity {
        name: name.into(),
        resource_group: rg.into(),
        subscription: Some(sub.into()),
        client_id: None,
        principal_id: None,
        tags: requested.unwrap_or_default(),
    }) {
        Ok(i) => (StatusCode::CREATED, Json(i.arm_body(&shared.tenant))).into_response(),
        Err(e) => arm_error(StatusCode::BAD_REQUEST, "InvalidParameter", &e.to_string()),
    }
}
