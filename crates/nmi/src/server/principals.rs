//! Principal (object) ids learned from tokens, by lower-case client id: how NMI tells which of a
//! pod's identities an `object_id` request means (the AzureIdentity names only the client id).

use std::{collections::HashMap, sync::RwLock};

use api::AzureIdentity;

use mirror::sync;

use crate::cache::Cached;

#[derive(Default)]
pub(super) struct Principals(RwLock<HashMap<String, String>>);

impl Principals {
    /// The principal id of `client_id`, once a token of it has been seen.
    pub(super) fn of(&self, client_id: &str) -> Option<String> {
        sync::read(&self.0).get(&client_id.to_ascii_lowercase()).cloned()
    }

    /// Remembers the principal id `cached`'s token names for `identity`'s client id.
    pub(super) fn learn(&self, identity: &AzureIdentity, cached: &Cached) {
        if let (Some(client), Some(oid)) = (identity.spec.client_id(), &cached.token.principal_id) {
            let client = client.to_ascii_lowercase();
            // Nearly always known already: a read lock keeps concurrent requests apart.
            if sync::read(&self.0).get(&client) == Some(oid) {
                return;
            }
            sync::write(&self.0).insert(client, oid.clone());
        }
    }
}
