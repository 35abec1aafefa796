//! VMs and scale sets: their GET body, identity writes as asynchronous operations, and
//! operation status.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use super::{
    body,
    reply::{arm_error, header, not_found},
};
use crate::{
    ids::{self, ArmPath},
    model::{Compute, ComputeKind, Identity, IdentityState, Operation, SystemIdentity},
    state::Shared,
    sync::lock,
    time, token,
};

/// The resource as ARM GET shows it: the model, its provisioning state, and each identity's ids.
pub fn compute_body(
    shared: &Shared,
    c: &Compute,
    identities: &std::collections::HashMap<String, Identity>,
) -> Value {
    let mut identity = Map::new();
    identity.insert("type".into(), json!(c.model.type_str()));
    if let Some(s) = &c.model.system {
        identity.insert("principalId".into(), json!(s.principal_id));
        identity.insert("tenantId".into(), json!(shared.tenant));
    }
    if !c.model.user.is_empty() {
        let ua: Map<String, Value> = c
            .model
            .user
            .iter()
            .map(|(k, id)| {
                let v = identities
                    .get(k)
                    .map(|i| json!({"principalId": i.principal_id, "clientId": i.client_id}))
                    .unwrap_or_else(|| json!({}));
                (id.clone(), v)
            })
            .collect();
        identity.insert("userAssignedIdentities".into(), Value::Object(ua));
    }
    let (ty, props) = match c.kind {
        ComputeKind::VirtualMachine => (
            "Microsoft.Compute/virtualMachines",
            json!({"provisioningState": c.provisioning_state, "vmId": c.instances.first().map(|i| i.vm_id.clone())}),
        ),
        ComputeKind::ScaleSet => (
            "Microsoft.Compute/virtualMachineScaleSets",
            json!({"provisioningState": c.provisioning_state, "uniqueId": c.unique_id, "orchestrationMode": "Uniform"}),
        ),
    };
    let mut body =
        json!({"name": c.name, "id": c.id, "type": ty, "location": shared.location, "properties": props});
    if c.model.system.is_some() || !c.model.user.is_empty() {
        body["identity"] = Value::Object(identity);
    }
    if c.kind == ComputeKind::ScaleSet {
        body["sku"] = json!({"name": "Standard_D2s_v3", "tier": "Standard", "capacity": c.instances.len()});
    }
    body
}

pub(super) fn get_compute(shared: &Shared, path: &ArmPath) -> Response {
    let inner = lock(&shared.inner);
    let key = path.resource_key().unwrap_or_default();
    match inner.computes.get(&key) {
        Some(c) if kind_matches(c, path) => Json(compute_body(shared, c, &inner.identities)).into_response(),
        _ => not_found(path),
    }
}

fn kind_matches(c: &Compute, path: &ArmPath) -> bool {
    matches!(
        (c.kind, path),
        (ComputeKind::VirtualMachine, ArmPath::VirtualMachine { .. })
            | (ComputeKind::ScaleSet, ArmPath::ScaleSet { .. })
    )
}

pub(super) fn write_compute(
    shared: &Arc<Shared>,
    path: &ArmPath,
    bytes: &[u8],
    replace: bool,
    caller: &str,
    api: &str,
    fail: Option<crate::faults::FailOperation>,
) -> Response {
    let update = match body::parse(bytes) {
        Ok(u) => u.unwrap_or_default(),
        Err(e) => return arm_error(StatusCode::BAD_REQUEST, e.code, &e.message),
    };
    let key = path.resource_key().unwrap_or_default();
    let mut inner = lock(&shared.inner);
    let Some(c) = inner.computes.get(&key).filter(|c| kind_matches(c, path)) else {
        return not_found(path);
    };
    if c.provisioning_state == "Deleting" {
        return arm_error(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            "The resource is being deleted.",
        );
    }
    let (system, user) = match body::next_state(c.model.system.is_some(), &c.model.user, &update, replace) {
        Ok(s) => s,
        Err(e) => return arm_error(StatusCode::BAD_REQUEST, e.code, &e.message),
    };
    // Every identity newly linked must exist, and the caller must hold assign/action on it.
    for (k, id) in &user {
        if c.model.user.contains_key(k) {
            continue;
        }
        if !inner.identities.contains_key(k) {
            let (_, rg, name) = ids::parse_identity_id(id).unwrap_or_default();
            return arm_error(
                StatusCode::BAD_REQUEST,
                "FailedIdentityOperation",
                &format!(
                    "Identity operation for resource '{}' failed with error 'Failed to perform resource identity operation. Status: 'NotFound'. Response: '{{\"error\":{{\"code\":\"ResourceNotFound\",\"message\":\"The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/{name}' under resource group '{rg}' was not found.\"}}}}'.'.",
                    c.id
                ),
            );
        }
    }
    let denied: Vec<&String> = user
        .iter()
        .filter(|(k, _)| !c.model.user.contains_key(*k) && !inner.may_assign(caller, k))
        .map(|(_, id)| id)
        .collect();
    if !denied.is_empty() {
        let action = match c.kind {
            ComputeKind::VirtualMachine => "Microsoft.Compute/virtualMachines/write",
            ComputeKind::ScaleSet => "Microsoft.Compute/virtualMachineScaleSets/write",
        };
        let scopes: Vec<&str> = denied.iter().map(|s| s.as_str()).collect();
        return arm_error(
            StatusCode::FORBIDDEN,
            "LinkedAuthorizationFailed",
            &format!(
                "The client '{caller}' with object id '{caller}' has permission to perform action '{action}' on scope '{}'; however, it does not have permission to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{}' or the linked scope(s) are invalid.",
                c.id,
                scopes.join(",")
            ),
        );
    }
    let latency = c.latency_ms.unwrap_or(inner.op_latency_ms);
    let c = inner.computes.get_mut(&key).expect("looked up above");
    let system = match (system, &c.model.system) {
        (true, Some(s)) => Some(s.clone()),
        (true, None) => Some(SystemIdentity {
            principal_id: token::guid(),
            client_id: token::guid(),
        }),
        (false, _) => None,
    };
    let previous = std::mem::replace(&mut c.model, IdentityState { system, user });
    c.write_seq += 1;
    c.provisioning_state = "Updating";
    let seq = c.write_seq;
    let due = shared.clock.now() + Duration::from_millis(latency);
    let op = Operation {
        id: token::guid(),
        resource: key.clone(),
        status: "InProgress",
        start_time: time::rfc3339(time::now_ms()),
        end_time: None,
        due,
        seq,
        snapshot: c.model.clone(),
        previous,
        fail: fail.map(|f| (f.code, f.message)),
    };
    let op_id = op.id.clone();
    let resource_id = c.id.clone();
    let sub = c.subscription.clone();
    inner.operations.insert(op_id.clone(), op);
    let body = {
        let c = &inner.computes[&key];
        compute_body(shared, c, &inner.identities)
    };
    drop(inner);
    shared.counters.arm_write(&resource_id);
    let s = shared.clone();
    let id = op_id.clone();
    tokio::spawn(async move {
        s.clock.sleep_until(due).await;
        complete(&s, &id);
    });
    let mut r = Json(body).into_response();
    let base = lock(&shared.arm_url).clone();
    header(
        &mut r,
        "azure-asyncoperation",
        format!(
            "{base}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{}/operations/{op_id}?api-version={api}",
            shared.location
        ),
    );
    header(&mut r, "retry-after", latency.div_ceil(1000));
    r
}

/// Finishes an identity write: from now on IMDS serves what it assigned.
fn complete(shared: &Shared, op_id: &str) {
    let mut inner = lock(&shared.inner);
    let Some(op) = inner.operations.get_mut(op_id) else {
        return;
    };
    op.end_time = Some(time::rfc3339(time::now_ms()));
    if op.fail.is_some() {
        // The change never takes effect: IMDS keeps serving what it did, and the resource shows
        // its identities from before the write, in provisioning state `Failed`.
        op.status = "Failed";
        let (key, seq, previous) = (op.resource.clone(), op.seq, op.previous.clone());
        if let Some(c) = inner.computes.get_mut(&key)
            && c.write_seq == seq
        {
            c.model = previous;
            c.provisioning_state = "Failed";
        }
        return;
    }
    op.status = "Succeeded";
    let (key, seq, snap) = (op.resource.clone(), op.seq, op.snapshot.clone());
    if let Some(c) = inner.computes.get_mut(&key) {
        // Operations can finish out of order when latency changed between them; the newest wins.
        if seq > c.applied_seq {
            c.applied_seq = seq;
            c.effective = snap;
        }
        if c.write_seq == seq {
            c.provisioning_state = "Succeeded";
        }
    }
}

pub(super) fn operation_status(shared: &Shared, id: &str) -> Response {
    let inner = lock(&shared.inner);
    let Some(op) = inner.operations.get(id) else {
        return not_found(&ArmPath::Operation {
            sub: String::new(),
            location: String::new(),
            id: id.into(),
        });
    };
    let mut body = json!({"startTime": op.start_time, "status": op.status, "name": op.id});
    if let (Some((code, message)), "Failed") = (&op.fail, op.status) {
        body["error"] = json!({"code": code, "message": message});
    }
    if let Some(end) = &op.end_time {
        body["endTime"] = json!(end);
    }
    let mut r = Json(body).into_response();
    if op.status == "InProgress" {
        let left = op.due.saturating_duration_since(shared.clock.now());
        header(&mut r, "retry-after", left.as_millis().div_ceil(1000).max(1));
    }
    r
}
