//! User-assigned identities: GET, and PUT that creates one at run time.

use std::sync::Arc;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::reply::{arm_error, not_found};
use crate::{admin, ids::ArmPath, state::Shared, sync::lock};

pub(super) fn get_identity(shared: &Shared, path: &ArmPath) -> Response {
    let inner = lock(&shared.inner);
    match inner.identities.get(&path.resource_key().unwrap_or_default()) {
        Some(i) => Json(i.arm_body(&shared.tenant)).into_response(),
        None => not_found(path),
    }
}

/// PUT creates an identity (201) or returns the existing one (200); PATCH only finds it.
pub(super) fn put_identity(shared: &Arc<Shared>, sub: &str, rg: &str, name: &str, create: bool) -> Response {
    let path = ArmPath::Identity {
        sub: sub.into(),
        rg: rg.into(),
        name: name.into(),
    };
    let key = path.resource_key().unwrap_or_default();
    if let Some(i) = lock(&shared.inner).identities.get(&key) {
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
    }) {
        Ok(i) => (StatusCode::CREATED, Json(i.arm_body(&shared.tenant))).into_response(),
        Err(e) => arm_error(StatusCode::BAD_REQUEST, "InvalidParameter", &e.to_string()),
    }
}
