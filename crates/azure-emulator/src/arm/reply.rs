//! How ARM answers: its error body and headers, and its refusal of a body over the size limit.
//! Handlers in `arm` and its submodules share these; keeping them in this leaf module (rather than
//! in `arm` itself) lets a submodule use them without importing from its parent, which imports it.

use axum::{
    Json,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{ids::ArmPath, state::Shared};

pub(super) fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (status, Json(json!({"error": {"code": code, "message": message}}))).into_response();
    r.headers_mut()
        .insert("x-ms-failure-cause", HeaderValue::from_static("gateway"));
    r
}

pub(super) fn header(r: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        r.headers_mut().insert(name, v);
    }
}

pub(super) fn not_found(path: &ArmPath) -> Response {
    let (ty, rg, name) = match path {
        ArmPath::VirtualMachine { rg, name, .. } => ("Microsoft.Compute/virtualMachines", rg, name),
        ArmPath::ScaleSet { rg, name, .. } => ("Microsoft.Compute/virtualMachineScaleSets", rg, name),
        ArmPath::Identity { rg, name, .. } => ("Microsoft.ManagedIdentity/userAssignedIdentities", rg, name),
        ArmPath::Operation { id, .. } => {
            return arm_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("The operation '{id}' was not found."),
            );
        }
    };
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource '{ty}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFound"
        ),
    )
}

/// A write's body, or ARM's 413 when it exceeds `arm.max_body_bytes`.
pub(super) async fn read_body(
    shared: &Shared,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, Response> {
    let limit = shared.world.arm.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        arm_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("The request content size exceeds the maximum allowed size of {limit} bytes."),
        )
    })
}
