//! The records the emulated cloud is made of: user-assigned identities, VMs and scale sets and
//! their identities, operations, principals, token buckets, cached IMDS tokens, federated
//! credentials created through ARM and the keys fetched from OIDC issuers.
//!
//! Plain data, below `state`: `state` holds these records and the servers (`arm`, `entra`,
//! `imds`, `admin`) build and read them, so both import them from here, and `state` needs nothing
//! from the servers, which import it. (A record defined by a server and held by `state`, as the
//! federated credentials and the OIDC key cache would be, makes the two import each other.)

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Instant,
};

use serde::Serialize;
use serde_json::{Value, json};

use crate::{tags::Tags, world::FederatedCredentialSpec};

/// A user-assigned identity as ARM knows it.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub client_id: String,
    pub principal_id: String,
    pub location: String,
    #[serde(skip)]
    pub federated: Vec<FederatedCredentialSpec>,
    /// Its ARM tags; the identity's owner writes them (`az identity update --tags`, `az tag`).
    pub tags: Tags,
}

impl Identity {
    /// The body `az identity create` prints, plus the `properties` block real ARM sends.
    pub fn arm_body(&self, tenant: &str) -> Value {
        json!({
            "clientId": self.client_id,
            "id": self.id,
            "location": self.location,
            "name": self.name,
            "principalId": self.principal_id,
            "resourceGroup": self.resource_group,
            "tags": self.tags,
            "tenantId": tenant,
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "properties": {"tenantId": tenant, "principalId": self.principal_id, "clientId": self.client_id},
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ComputeKind {
    VirtualMachine,
    ScaleSet,
}

/// The system-assigned identity of a VM or scale set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemIdentity {
    pub principal_id: String,
    pub client_id: String,
}

/// Which identities a VM or scale set has: the system one and user-assigned ones keyed by
/// lower-cased id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentityState {
    pub system: Option<SystemIdentity>,
    pub user: BTreeMap<String, String>,
}

impl IdentityState {
    pub fn type_str(&self) -> &'static str {
        match (self.system.is_some(), !self.user.is_empty()) {
            (false, false) => "None",
            (true, false) => "SystemAssigned",
            (false, true) => "UserAssigned",
            (true, true) => "SystemAssigned, UserAssigned",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub name: String,
    pub node: String,
    pub vm_id: String,
}

/// A VM or a scale set.
#[derive(Debug, Clone)]
pub struct Compute {
    pub kind: ComputeKind,
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub unique_id: String,
    /// What ARM GET shows: the last accepted write.
    pub model: IdentityState,
    /// What IMDS serves: the last completed write.
    pub effective: IdentityState,
    pub provisioning_state: &'static str,
    pub write_seq: u64,
    pub applied_seq: u64,
    pub latency_ms: Option<u64>,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    pub id: String,
    pub resource: String,
    pub status: &'static str,
    pub start_time: String,
    pub end_time: Option<String>,
    #[serde(skip)]
    pub due: Instant,
    #[serde(skip)]
    pub seq: u64,
    #[serde(skip)]
    pub snapshot: IdentityState,
    /// The identities before this write, restored when the operation fails.
    #[serde(skip)]
    pub previous: IdentityState,
    /// Set when the operation must end `Failed`: `(code, message)`.
    #[serde(skip)]
    pub fail: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub client_id: String,
    pub object_id: String,
    pub secret: Option<String>,
    /// (DER, x5t, x5t#S256) of each certificate.
    pub certs: Vec<(Vec<u8>, String, String)>,
    pub federated: Vec<FederatedCredentialSpec>,
}

pub struct TokenBucket {
    pub tokens: f64,
    pub size: f64,
    pub refill: f64,
    pub last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now` (the emulator's clock).
    pub fn new(size: u32, refill: f64, now: Instant) -> Self {
        Self {
            tokens: f64::from(size),
            size: f64::from(size),
            refill,
            last: now,
        }
    }

    /// Takes one token at `now`; on failure returns the whole seconds until one is back.
    pub fn take(&mut self, now: Instant) -> std::result::Result<u64, u64> {
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.refill).min(self.size);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.tokens as u64)
        } else {
            let wait = if self.refill > 0.0 {
                (1.0 - self.tokens) / self.refill
            } else {
                3600.0
            };
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

/// A cached IMDS token: IMDS hands the same token out until close to expiry, so `expires_in`
/// counts down between calls.
#[derive(Clone)]
pub struct CachedToken {
    pub access_token: Arc<str>,
    pub not_before: u64,
    pub expires_on: u64,
}

/// A credential created through ARM.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    /// Lower-cased id of the identity it belongs to.
    pub identity_key: String,
    pub id: String,
    pub name: String,
    pub spec: FederatedCredentialSpec,
}

/// Signing keys fetched from external OIDC issuers, per issuer: `entra::oidc` reads and fills it.
#[derive(Default)]
pub struct KeyCache(pub(crate) Mutex<HashMap<String, FetchedKeys>>);

/// One issuer's JWKS and when it was fetched.
pub(crate) struct FetchedKeys {
    pub(crate) at: Instant,
    pub(crate) jwks: Value,
}
