//! The emulated cloud's mutable state, shared by every server of one emulator. The records it
//! holds (identities, VMs, operations...) are defined in `model`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use serde_json::json;

use crate::{
    calls::{CallLog, Counters},
    error::{Error, Result},
    faults::Faults,
    ids,
    model::{CachedToken, Compute, Identity, KeyCache, Operation, Principal, StoredCredential, TokenBucket},
    time,
    token::{self, SigningKey},
    world::World,
};

mod seed;

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
    pub federated_credentials: BTreeMap<String, StoredCredential>,
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
    pub oidc_keys: KeyCache,
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
