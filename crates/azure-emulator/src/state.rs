//! The emulated cloud's mutable state, shared by every server of one emulator.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Instant,
};

use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Error, Result,
    calls::{CallLog, Counters},
    faults::Faults,
    ids, time,
    token::{self, SigningKey},
    world::{FederatedCredentialSpec, World},
};

mod seed;

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
    pub tags: crate::tags::Tags,
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

#[derive(Default)]
pub struct Inner {
    pub identities: HashMap<String, Identity>,
    pub computes: HashMap<String, Compute>,
    pub principals: Vec<Principal>,
    /// Object id -> identity keys (or `*`) it may assign.
    pub grants: HashMap<String, Vec<String>>,
    pub operations: HashMap<String, Operation>,
    pub buckets: HashMap<(String, bool), TokenBucket>,
    pub op_latency_ms: u64,
    /// Federated identity credentials created through ARM, by lower-cased resource id.
    pub federated_credentials: BTreeMap<String, crate::arm::federated::StoredCredential>,
}

impl Inner {
    /// Finds a user-assigned identity by name (unique in the world) or full id.
    pub fn resolve_identity(&self, name_or_id: &str) -> Option<&Identity> {
        if name_or_id.starts_with('/') {
            return self.identities.get(&ids::key(name_or_id));
        }
        let mut found = self
            .identities
            .values()
            .filter(|i| i.name.eq_ignore_ascii_case(name_or_id));
        match (found.next(), found.next()) {
            (Some(i), None) => Some(i),
            _ => None,
        }
    }

    pub fn may_assign(&self, object_id: &str, identity_key: &str) -> bool {
        self.grants
            .get(&object_id.to_ascii_lowercase())
            .is_some_and(|g| g.iter().any(|s| s == "*" || s == identity_key))
    }

    /// Records a role grant; `scope` is `*`, an identity name or an identity id.
    pub fn grant(&mut self, object_id: &str, scope: &str) -> Result<()> {
        let scope = if scope == "*" {
            "*".to_string()
        } else {
            ids::key(
                &self
                    .resolve_identity(scope)
                    .ok_or_else(|| Error::NotFound(scope.into()))?
                    .id,
            )
        };
        self.grants
            .entry(object_id.to_ascii_lowercase())
            .or_default()
            .push(scope);
        Ok(())
    }

    /// An object id for a principal given by name, client id or object id (SP or identity).
    pub fn principal_object_id(&self, who: &str) -> Option<String> {
        for p in &self.principals {
            if p.name == who || p.client_id.eq_ignore_ascii_case(who) || p.object_id.eq_ignore_ascii_case(who)
            {
                return Some(p.object_id.clone());
            }
        }
        if let Some(i) = self.resolve_identity(who) {
            return Some(i.principal_id.clone());
        }
        self.identities
            .values()
            .find(|i| i.client_id.eq_ignore_ascii_case(who) || i.principal_id.eq_ignore_ascii_case(who))
            .map(|i| i.principal_id.clone())
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

pub struct Shared {
    pub tenant: String,
    pub location: String,
    pub world: World,
    pub key: SigningKey,
    pub inner: Mutex<Inner>,
    pub token_cache: Mutex<HashMap<(String, String), CachedToken>>,
    pub faults: Faults,
    pub log: CallLog,
    pub counters: Counters,
    pub arm_url: Mutex<String>,
    pub entra_url: Mutex<String>,
    /// Signing keys fetched from external OIDC issuers' discovery, as Entra caches them.
    pub oidc_keys: crate::entra::oidc::KeyCache,
    /// The clock IMDS's rate limit reads: the system's unless a test froze it.
    pub clock: time::Clock,
}

impl Shared {
    pub fn issuer(&self) -> String {
        format!("https://sts.windows.net/{}/", self.tenant)
    }

    /// Mints a v1 access token with the claims Entra puts in app and managed-identity tokens.
    pub fn mint(&self, who: &TokenSubject<'_>, resource: &str, lifetime: u64) -> Result<(String, u64, u64)> {
        let iat = time::now();
        let nbf = iat;
        let exp = iat + lifetime;
        let iss = self.issuer();
        let mut claims = json!({
            "aud": resource,
            "iss": iss,
            "iat": iat,
            "nbf": nbf,
            "exp": exp,
            "aio": token::random_text(24),
            "appid": who.client_id,
            "appidacr": who.appidacr,
            "idp": iss,
            "idtyp": "app",
            "oid": who.object_id,
            "rh": format!("0.{}.", token::random_text(18)),
            "sub": who.object_id,
            "tid": self.tenant,
            "uti": token::random_text(16),
            "ver": "1.0",
        });
        if let Some(mirid) = who.mirid {
            claims["xms_mirid"] = json!(mirid);
        }
        let tok = self.key.sign(&claims)?;
        Ok((tok, nbf, exp))
    }
}

pub struct TokenSubject<'a> {
    pub client_id: &'a str,
    pub object_id: &'a str,
    pub appidacr: &'a str,
    pub mirid: Option<&'a str>,
}
