//! How ARM answers: its error body and headers.

use axum::{
    Json,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::ids::ArmPath;

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
