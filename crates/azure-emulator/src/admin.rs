//! The admin API (loopback only) and its in-process handle: fault injection, the call log,
//! counters, run-time identities, their tags, and grants.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use crate::{
    calls::{CallRecord, CounterSnapshot},
    faults::{EndpointKind, Fault, FaultAction},
};
use crate::{
    error::{Error, Result},
    ids,
    model::Identity,
    state::Shared,
    sync::lock,
    token,
};

/// A request to create a user-assigned identity at run time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIdentity {
    pub name: String,
    pub resource_group: String,
    #[serde(default)]
    pub subscription: Option<String>,
    /// Generated when absent.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub principal_id: Option<String>,
    /// ARM tags (`az identity create --tags`), under Azure's limits.
    #[serde(default)]
    pub tags: crate::tags::Tags,
}

/// The identities a node's IMDS currently serves, and what ARM shows for its VM/scale set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeIdentities {
    pub node: String,
    pub resource_id: String,
    pub provisioning_state: String,
    /// Identity ids IMDS serves now (operations completed).
    pub effective: Vec<String>,
    /// Identity ids ARM GET shows (last accepted write).
    pub model: Vec<String>,
    pub system_assigned: bool,
}

/// In-process handle to the admin functions (the HTTP admin API calls the same methods).
#[derive(Clone)]
pub struct Admin {
    pub(crate) shared: Arc<Shared>,
}

impl Admin {
    pub fn inject(&self, fault: Fault) -> u64 {
        self.shared.faults.add(fault)
    }

    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.log.since(0)
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    pub fn reset_counters(&self) {
        self.shared.counters.reset();
    }

    /// The injected faults still active: id, how often each fired, and the fault.
    pub fn faults(&self) -> Vec<serde_json::Value> {
        self.shared.faults.list()
    }

    /// Stops the emulator's clock (see [`crate::time::Clock`]: IMDS's rate limit, ARM's token
    /// buckets and write latency), so "within one second" or "while the write runs" holds
    /// however long a test takes; [`Admin::advance_clock`] then moves it.
    pub fn freeze_clock(&self) {
        self.shared.clock.freeze();
    }

    /// Moves the emulator's clock forward, frozen or running.
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.shared.clock.advance(by);
    }

    /// Sets a frozen clock running again, from where it stands.
    pub fn resume_clock(&self) {
        self.shared.clock.resume();
    }

    /// Sets the completion latency of identity writes, for one resource (VM or scale set id, or
    /// its name) or, with `None`, the default for all.
    pub fn set_arm_latency(&self, resource: Option<&str>, ms: u64) -> Result<()> {
        let mut inner = lock(&self.shared.inner);
        match resource {
            None => inner.op_latency_ms = ms,
            Some(r) => {
                let key = ids::key(r);
                let c = inner
                    .computes
                    .values_mut()
                    .find(|c| ids::key(&c.id) == key || c.name.eq_ignore_ascii_case(r))
                    .ok_or_else(|| Error::NotFound(r.into()))?;
                c.latency_ms = Some(ms);
            }
        }
        Ok(())
    }

    pub fn create_identity(&self, req: NewIdentity) -> Result<Identity> {
        let sub = match req.subscription {
            Some(s) => s,
            None => self.shared.world.default_subscription()?.to_string(),
        };
        let id = ids::identity_id(&sub, &req.resource_group, &req.name);
        if ids::parse_identity_id(&id).is_none() {
            return Err(Error::BadRequest(format!("invalid identity name {:?}", req.name)));
        }
        let tags = crate::tags::replacement(&req.tags).map_err(|e| Error::BadRequest(e.to_string()))?;
        let mut inner = lock(&self.shared.inner);
        if let Some(existing) = inner.identities.get(&ids::key(&id)) {
            return Ok(existing.clone());
        }
        let ident = Identity {
            id: id.clone(),
            name: req.name,
            subscription: sub,
            resource_group: req.resource_group,
            client_id: req.client_id.unwrap_or_else(token::guid),
            principal_id: req.principal_id.unwrap_or_else(token::guid),
            location: self.shared.location.clone(),
            federated: Vec::new(),
            tags,
        };
        inner.identities.insert(ids::key(&id), ident.clone());
        Ok(ident)
    }

    /// Replaces the tags of an identity (name or id), as its owner would with `az tag create`;
    /// refused with ARM's message when they break Azure's limits.
    pub fn set_identity_tags(&self, identity: &str, tags: crate::tags::Tags) -> Result<Identity> {
        let tags = crate::tags::replacement(&tags).map_err(|e| Error::BadRequest(e.to_string()))?;
        let mut inner = lock(&self.shared.inner);
        let key = ids::key(
            &inner
                .resolve_identity(identity)
                .ok_or_else(|| Error::NotFound(identity.into()))?
                .id,
        );
        let ident = inner
            .identities
            .get_mut(&key)
            .ok_or_else(|| Error::NotFound(identity.into()))?;
        ident.tags = tags;
        Ok(ident.clone())
    }

    /// Lets `principal` (name, client id or object id of an app or identity) assign `scope`
    /// (`*`, an identity name or id), like granting "Managed Identity Operator".
    pub fn grant(&self, principal: &str, scope: &str) -> Result<()> {
        let mut inner = lock(&self.shared.inner);
        let oid = inner
            .principal_object_id(principal)
            .ok_or_else(|| Error::NotFound(principal.into()))?;
        inner.grant(&oid, scope)
    }

    pub fn node_identities(&self) -> Vec<NodeIdentities> {
        let inner = lock(&self.shared.inner);
        let mut out = Vec::new();
        for c in inner.computes.values() {
            for i in &c.instances {
                out.push(NodeIdentities {
                    node: i.node.clone(),
                    resource_id: c.id.clone(),
                    provisioning_state: c.provisioning_state.into(),
                    effective: c.effective.user.values().cloned().collect(),
                    model: c.model.user.values().cloned().collect(),
                    system_assigned: c.effective.system.is_some(),
                });
            }
        }
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// Mints an access token for a service principal (by name or client id) without the OAuth
    /// round trip, for tests that only need a valid bearer token.
    pub fn app_token(&self, principal: &str, resource: &str) -> Result<String> {
        let (client_id, object_id) = {
            let inner = lock(&self.shared.inner);
            let p = inner
                .principals
                .iter()
                .find(|p| p.name == principal || p.client_id.eq_ignore_ascii_case(principal))
                .ok_or_else(|| Error::NotFound(principal.into()))?;
            (p.client_id.clone(), p.object_id.clone())
        };
        let who = crate::state::TokenSubject {
            client_id: &client_id,
            object_id: &object_id,
            appidacr: "1",
            mirid: None,
        };
        Ok(self
            .shared
            .mint(&who, resource, self.shared.world.entra.token_lifetime_secs)?
            .0)
    }
}

fn admin_error(e: Error) -> Response {
    let status = match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

#[derive(Deserialize)]
struct SinceQuery {
    #[serde(default)]
    since: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyReq {
    #[serde(default)]
    resource: Option<String>,
    latency_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockReq {
    /// Freezes (true) or sets running (false) the clock first; absent: as it is.
    #[serde(default)]
    frozen: Option<bool>,
    /// Then moves it forward by this much.
    #[serde(default)]
    advance_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsReq {
    /// Identity name or id.
    identity: String,
    tags: crate::tags::Tags,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantReq {
    principal: String,
    scope: String,
}

/// The admin API. See README "Azure emulator" for the routes.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route(
            "/admin/faults",
            get(|State(a): State<Admin>| async move { Json(json!({"faults": a.faults()})) })
                .post(|State(a): State<Admin>, Json(f): Json<Fault>| async move {
                    Json(json!({"id": a.inject(f)}))
                })
                .delete(|State(a): State<Admin>| async move {
                    a.clear_faults();
                    StatusCode::NO_CONTENT
                }),
        )
        .route(
            "/admin/calls",
            get(|State(a): State<Admin>, Query(q): Query<SinceQuery>| async move {
                Json(json!({"calls": a.shared.log.since(q.since)}))
            }),
        )
        .route(
            "/admin/counters",
            get(|State(a): State<Admin>| async move { Json(a.counters()) }).delete(
                |State(a): State<Admin>| async move {
                    a.reset_counters();
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/admin/arm/latency",
            put(|State(a): State<Admin>, Json(r): Json<LatencyReq>| async move {
                match a.set_arm_latency(r.resource.as_deref(), r.latency_ms) {
                    Ok(()) => StatusCode::NO_CONTENT.into_response(),
                    Err(e) => admin_error(e),
                }
            }),
        )
        .route(
            "/admin/clock",
            post(|State(a): State<Admin>, Json(r): Json<ClockReq>| async move {
                match r.frozen {
                    Some(true) => a.freeze_clock(),
                    Some(false) => a.resume_clock(),
                    None => {}
                }
                a.advance_clock(std::time::Duration::from_millis(r.advance_ms));
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/admin/identities",
            post(|State(a): State<Admin>, Json(r): Json<NewIdentity>| async move {
                match a.create_identity(r) {
                    Ok(i) => (StatusCode::CREATED, Json(i.arm_body(&a.shared.tenant))).into_response(),
                    Err(e) => admin_error(e),
                }
            }),
        )
        .route(
            "/admin/identities/tags",
            put(|State(a): State<Admin>, Json(r): Json<TagsReq>| async move {
                match a.set_identity_tags(&r.identity, r.tags) {
                    Ok(i) => Json(i.arm_body(&a.shared.tenant)).into_response(),
                    Err(e) => admin_error(e),
                }
            }),
        )
        .route(
            "/admin/roles",
            post(|State(a): State<Admin>, Json(r): Json<GrantReq>| async move {
                match a.grant(&r.principal, &r.scope) {
                    Ok(()) => StatusCode::NO_CONTENT.into_response(),
                    Err(e) => admin_error(e),
                }
            }),
        )
        .route(
            "/admin/nodes",
            get(|State(a): State<Admin>| async move { Json(a.node_identities()) }),
        )
        .with_state(admin)
}
