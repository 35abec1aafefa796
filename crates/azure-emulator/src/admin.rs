//! Fault injection, the call log, counters, and the admin API that exposes them (loopback only).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    Error, Result, ids,
    state::{Identity, Shared, lock},
    token,
};

/// Which of the emulator's servers a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    Imds,
    Arm,
    Entra,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Imds => "imds",
            EndpointKind::Arm => "arm",
            EndpointKind::Entra => "entra",
        }
    }
}

/// What an injected fault does to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Delay, then serve the request normally.
    Latency { ms: u64 },
    /// Answer with this status (5xx, 429...) and an error body in the endpoint's own format.
    Status {
        status: u16,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Hold the request without answering for `ms` (default 10 minutes), then drop the connection.
    Timeout {
        #[serde(default)]
        ms: Option<u64>,
    },
    /// Drop the connection with a TCP reset, without an answer.
    Reset,
    /// ARM writes only: accept the write (202-style, with its operation), then end the
    /// long-running operation `Failed` with this error; the change does not take effect and
    /// the resource's provisioning state becomes `Failed`. Reads are not affected.
    OperationFailed {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
}

/// A fault rule. With `count`, it fires on the next N matching calls; with `rate` (0..1), on
/// that fraction of calls; with both, on that fraction until N have fired; with neither, always.
// No deny_unknown_fields: serde does not support it together with `flatten`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub endpoint: EndpointKind,
    /// Restricts an IMDS fault to a VM/instance name or node name; an ARM fault to requests whose
    /// path contains this text (case-insensitive).
    #[serde(default)]
    pub target: Option<String>,
    #[serde(flatten)]
    pub action: FaultAction,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub rate: Option<f64>,
}

struct Rule {
    id: u64,
    fault: Fault,
    fired: u64,
}

#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    active: AtomicUsize,
    next_id: AtomicU64,
    rng: AtomicU64,
}

impl Faults {
    pub fn add(&self, fault: Fault) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut rules = lock(&self.rules);
        rules.push(Rule { id, fault, fired: 0 });
        self.active.store(rules.len(), Ordering::Release);
        id
    }

    pub fn clear(&self) {
        let mut rules = lock(&self.rules);
        rules.clear();
        self.active.store(0, Ordering::Release);
    }

    fn random(&self) -> f64 {
        // A splitmix step is plenty for "fail about this fraction of calls".
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The fault to apply to this call, if any; `targets` are the names the call answers to.
    /// `write`: whether the call is an ARM write (only those take `OperationFailed`).
    pub fn pick(&self, kind: EndpointKind, targets: &[&str], write: bool) -> Option<FaultAction> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut rules = lock(&self.rules);
        let mut hit = None;
        for (i, r) in rules.iter_mut().enumerate() {
            if r.fault.endpoint != kind
                || (matches!(r.fault.action, FaultAction::OperationFailed { .. }) && !write)
            {
                continue;
            }
            if let Some(t) = &r.fault.target {
                let t = t.to_ascii_lowercase();
                let matches = match kind {
                    EndpointKind::Arm | EndpointKind::Entra => {
                        targets.iter().any(|x| x.to_ascii_lowercase().contains(&t))
                    }
                    EndpointKind::Imds => targets.iter().any(|x| x.eq_ignore_ascii_case(&t)),
                };
                if !matches {
                    continue;
                }
            }
            if let Some(rate) = r.fault.rate
                && self.random() >= rate
            {
                continue;
            }
            r.fired += 1;
            hit = Some((
                i,
                r.fault.action.clone(),
                r.fault.count.is_some_and(|c| r.fired >= c),
            ));
            break;
        }
        let (i, action, exhausted) = hit?;
        if exhausted {
            rules.remove(i);
            self.active.store(rules.len(), Ordering::Release);
        }
        Some(action)
    }

    pub fn list(&self) -> Vec<Value> {
        lock(&self.rules)
            .iter()
            .map(|r| json!({"id": r.id, "fired": r.fired, "fault": r.fault}))
            .collect()
    }
}

/// One served request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    pub seq: u64,
    pub at_ms: u64,
    pub endpoint: EndpointKind,
    /// The VM/instance for IMDS; empty otherwise.
    pub target: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Set when a fault was injected into this call.
    pub fault: Option<String>,
}

const LOG_CAPACITY: usize = 20_000;

#[derive(Default)]
pub struct CallLog {
    seq: AtomicU64,
    entries: Mutex<VecDeque<CallRecord>>,
}

impl CallLog {
    pub fn record(&self, mut rec: CallRecord) {
        rec.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut e = lock(&self.entries);
        if e.len() == LOG_CAPACITY {
            e.pop_front();
        }
        e.push_back(rec);
    }

    pub fn since(&self, seq: u64) -> Vec<CallRecord> {
        lock(&self.entries)
            .iter()
            .filter(|r| r.seq > seq)
            .cloned()
            .collect()
    }
}

/// Counts a test can assert on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CounterSnapshot {
    /// Requests served, by endpoint kind.
    pub requests: BTreeMap<String, u64>,
    /// ARM writes accepted (PATCH/PUT that started an operation), by resource id.
    pub arm_writes: BTreeMap<String, u64>,
    /// 429 answers served, by endpoint kind (limits, throttling and injected ones alike).
    pub throttled: BTreeMap<String, u64>,
    /// Tokens handed out, by identity resource id (managed identities) or client id (apps).
    pub tokens_issued: BTreeMap<String, u64>,
    /// Faults injected, by endpoint kind.
    pub faults_injected: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Counters {
    inner: Mutex<CounterSnapshot>,
}

impl Counters {
    pub fn request(&self, kind: EndpointKind, status: u16, faulted: bool) {
        let mut c = lock(&self.inner);
        *c.requests.entry(kind.as_str().into()).or_default() += 1;
        if status == 429 {
            *c.throttled.entry(kind.as_str().into()).or_default() += 1;
        }
        if faulted {
            *c.faults_injected.entry(kind.as_str().into()).or_default() += 1;
        }
    }

    pub fn arm_write(&self, resource_id: &str) {
        *lock(&self.inner)
            .arm_writes
            .entry(resource_id.into())
            .or_default() += 1;
    }

    pub fn token_issued(&self, who: &str) {
        let mut c = lock(&self.inner);
        if let Some(n) = c.tokens_issued.get_mut(who) {
            *n += 1;
        } else {
            c.tokens_issued.insert(who.into(), 1);
        }
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        lock(&self.inner).clone()
    }

    pub fn reset(&self) {
        *lock(&self.inner) = CounterSnapshot::default();
    }
}

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
        };
        inner.identities.insert(ids::key(&id), ident.clone());
        Ok(ident)
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
struct GrantReq {
    principal: String,
    scope: String,
}

/// The admin API. See README "Azure emulator" for the routes.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route(
            "/admin/faults",
            get(|State(a): State<Admin>| async move { Json(json!({"faults": a.shared.faults.list()})) })
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
            "/admin/identities",
            post(|State(a): State<Admin>, Json(r): Json<NewIdentity>| async move {
                match a.create_identity(r) {
                    Ok(i) => (StatusCode::CREATED, Json(i.arm_body(&a.shared.tenant))).into_response(),
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

#[cfg(test)]
mod tests;
