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
    pub fn new(world: World) -> Result<Self> {
        world.validate()?;
        let default_sub = world.default_subscription()?.to_string();
        let mut inner = Inner {
            op_latency_ms: world.arm.operation_latency_ms,
            ..Inner::default()
        };
        for spec in &world.identities {
            let sub = spec.subscription.clone().unwrap_or_else(|| default_sub.clone());
            let id = ids::identity_id(&sub, &spec.resource_group, &spec.name);
            inner.identities.insert(
                ids::key(&id),
                Identity {
                    id,
                    name: spec.name.clone(),
                    subscription: sub,
                    resource_group: spec.resource_group.clone(),
                    client_id: spec.client_id.clone(),
                    principal_id: spec.principal_id.clone(),
                    location: world.location.clone(),
                    federated: spec.federated_credentials.clone(),
                    tags: crate::tags::replacement(&spec.tags).unwrap_or_else(|_| spec.tags.clone()),
                },
            );
        }
        let initial =
            |inner: &Inner, sys: bool, sys_pid: &Option<String>, ua: &[String]| -> Result<IdentityState> {
                let mut st = IdentityState::default();
                if sys {
                    st.system = Some(SystemIdentity {
                        principal_id: sys_pid.clone().unwrap_or_else(token::guid),
                        client_id: token::guid(),
                    });
                }
                for u in ua {
                    let i = inner.resolve_identity(u).ok_or_else(|| {
                        Error::Config(format!("user_assigned {u} names no declared identity"))
                    })?;
                    st.user.insert(ids::key(&i.id), i.id.clone());
                }
                Ok(st)
            };
        for vm in &world.vms {
            let sub = vm.subscription.clone().unwrap_or_else(|| default_sub.clone());
            let id = ids::vm_id(&sub, &vm.resource_group, &vm.name);
            let st = initial(
                &inner,
                vm.system_assigned,
                &vm.system_principal_id,
                &vm.user_assigned,
            )?;
            inner.computes.insert(
                ids::key(&id),
                Compute {
                    kind: ComputeKind::VirtualMachine,
                    id,
                    name: vm.name.clone(),
                    subscription: sub,
                    resource_group: vm.resource_group.clone(),
                    unique_id: token::guid(),
                    model: st.clone(),
                    effective: st,
                    provisioning_state: "Succeeded",
                    write_seq: 0,
                    applied_seq: 0,
                    latency_ms: vm.operation_latency_ms,
                    instances: vec![Instance {
                        name: vm.name.clone(),
                        node: vm.node.clone(),
                        vm_id: token::guid(),
                    }],
                },
            );
        }
        for ss in &world.vmss {
            let sub = ss.subscription.clone().unwrap_or_else(|| default_sub.clone());
            let id = ids::vmss_id(&sub, &ss.resource_group, &ss.name);
            let st = initial(
                &inner,
                ss.system_assigned,
                &ss.system_principal_id,
                &ss.user_assigned,
            )?;
            let instances = ss
                .instances
                .iter()
                .map(|i| Instance {
                    name: i.name.clone(),
                    node: i.node.clone(),
                    vm_id: token::guid(),
                })
                .collect();
            inner.computes.insert(
                ids::key(&id),
                Compute {
                    kind: ComputeKind::ScaleSet,
                    id,
                    name: ss.name.clone(),
                    subscription: sub,
                    resource_group: ss.resource_group.clone(),
                    unique_id: token::guid(),
                    model: st.clone(),
                    effective: st,
                    provisioning_state: "Succeeded",
                    write_seq: 0,
                    applied_seq: 0,
                    latency_ms: ss.operation_latency_ms,
                    instances,
                },
            );
        }
        for sp in &world.service_principals {
            let mut pem = sp.certificate_pem.clone().unwrap_or_default();
            if let Some(f) = &sp.certificate_file {
                pem.push_str(&std::fs::read_to_string(f).map_err(|e| Error::Io(f.display().to_string(), e))?);
            }
            let certs = if pem.is_empty() {
                Vec::new()
            } else {
                token::pem_certs(&pem)?
                    .into_iter()
                    .map(|der| {
                        let (s1, s256) = token::thumbprints(&der);
                        (der, s1, s256)
                    })
                    .collect()
            };
            inner.principals.push(Principal {
                name: sp.name.clone(),
                client_id: sp.client_id.clone(),
                object_id: sp.object_id.clone().unwrap_or_else(token::guid),
                secret: sp.client_secret.clone(),
                certs,
                federated: sp.federated_credentials.clone(),
            });
        }
        let mut grants = Vec::new();
        for (i, sp) in world.service_principals.iter().enumerate() {
            for s in &sp.may_assign {
                grants.push((inner.principals[i].object_id.clone(), s.clone()));
            }
        }
        for spec in &world.identities {
            for s in &spec.may_assign {
                grants.push((spec.principal_id.clone(), s.clone()));
            }
        }
        for (oid, scope) in grants {
            inner
                .grant(&oid, &scope)
                .map_err(|_| Error::Config(format!("may_assign {scope} names no identity")))?;
        }
        Ok(Self {
            tenant: world.tenant_id.clone(),
            location: world.location.clone(),
            key: SigningKey::generate()?,
            inner: Mutex::new(inner),
            token_cache: Mutex::new(HashMap::new()),
            faults: Faults::default(),
            log: CallLog::default(),
            counters: Counters::default(),
            arm_url: Mutex::new(String::new()),
            entra_url: Mutex::new(String::new()),
            oidc_keys: crate::entra::oidc::KeyCache::default(),
            clock: time::Clock::default(),
            world,
        })
    }

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
