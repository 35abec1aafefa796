//! Principal (object) ids learned from tokens: how NMI tells which of a pod's identities an
//! `object_id` request means (the AzureIdentity does not carry it).
//!
//! Keyed by where the token came from ([`CacheKey`]'s identity: a managed identity's resource id,
//! a service principal's own AzureIdentity), never by the client id an AzureIdentity claims. A
//! client id is anyone's to write: keyed by it, one namespace's AzureIdentity claiming another
//! team's client id would file its own token's principal under that team's identity, and the
//! team's `object_id` requests would be decided by it.

use std::{collections::HashMap, sync::RwLock};

use api::AzureIdentity;

use mirror::sync;

use crate::token_cache::{CacheKey, Cached};

#[derive(Default)]
pub(super) struct Principals(RwLock<HashMap<String, String>>);

/// The key of `identity`'s tokens, whatever their resource.
fn source(identity: &AzureIdentity) -> String {
    CacheKey::of(identity, "").identity().to_owned()
}

impl Principals {
    /// The principal id of `identity`, once a token of it has been seen.
    pub(super) fn of(&self, identity: &AzureIdentity) -> Option<String> {
        sync::read(&self.0).get(&source(identity)).cloned()
    }

    /// Remembers the principal id `cached`'s token (one of `identity`'s) names.
    pub(super) fn learn(&self, identity: &AzureIdentity, cached: &Cached) {
        if let Some(oid) = &cached.token.principal_id {
            let source = source(identity);
            // Nearly always known already: a read lock keeps concurrent requests apart.
            if sync::read(&self.0).get(&source) == Some(oid) {
                return;
            }
            sync::write(&self.0).insert(source, oid.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{testing::identity, token::Token};

    fn cached(oid: &str) -> Cached {
        Cached {
            token: Arc::new(Token {
                access_token: "t".into(),
                token_type: "Bearer".into(),
                expires_on: 0,
                not_before: 0,
                ext_expires_in: 0,
                principal_id: Some(oid.into()),
            }),
            hit: false,
        }
    }

    /// Another namespace's AzureIdentity claiming the victim's client id (a managed identity of
    /// its own beside it, or a service principal) files its principal under its own source only.
    #[test]
    fn a_claimed_client_id_never_moves_anothers_principal() {
        let p = Principals::default();
        let victim = identity("team", "victim", 1);
        p.learn(&victim, &cached("victim-oid"));
        let own_msi = identity("evil", "mine", 1);
        let mut sp = identity("evil", "sp", 1);
        sp.spec.type_ = Some(1);
        sp.spec.tenant_id = Some("t".into());
        p.learn(&own_msi, &cached("evil-oid"));
        p.learn(&sp, &cached("sp-oid"));
        assert_eq!(p.of(&victim).as_deref(), Some("victim-oid"));
        assert_eq!(p.of(&own_msi).as_deref(), Some("evil-oid"));
        assert_eq!(p.of(&sp).as_deref(), Some("sp-oid"));
        // Another AzureIdentity naming the victim's resource id is the victim's identity.
        let mut alias = identity("other", "alias", 9);
        alias.spec.resource_id = victim.spec.resource_id.clone();
        assert_eq!(p.of(&alias).as_deref(), Some("victim-oid"));
    }
}
