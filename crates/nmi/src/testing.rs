//! Test values and a counting token source for the unit tests.
//!
//! The values (pods, identities, bindings, exceptions, assignments and their GUIDs) are the
//! shared `fixtures` crate's. The source stands in for Azure at the [`TokenSource`] boundary
//! only, to count calls and script failures; it speaks no IMDS or Entra protocol. Tests of the
//! real clients use the Azure emulator.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::AzureIdentity;
use base64::Engine;
use futures_util::future::BoxFuture;

pub use fixtures::{
    NODE, aai, binding, exception, identity,
    ids::{client_id, principal_id, resource_id},
    pod,
};
use mirror::sync;

use crate::{
    Error, Result,
    token::{Token, TokenSource, now},
};

/// A JWT-shaped token text naming the client and resource, with the identity's `oid`.
pub fn token_text(client: &str, resource: &str, oid: Option<&str>, serial: usize) -> String {
    let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let claims = serde_json::json!({"appid": client, "aud": resource, "oid": oid, "serial": serial});
    format!("{}.{}.sig", e(r#"{"alg":"none"}"#), e(&claims.to_string()))
}

/// Counts calls; hands out tokens with a chosen lifetime, after a chosen delay, or a scripted failure.
#[derive(Default)]
pub struct Counting {
    pub calls: AtomicUsize,
    pub lifetime: Mutex<Option<Duration>>,
    pub delay: Mutex<Duration>,
    pub fail_with: Mutex<Option<(u16, Option<Duration>)>>,
    /// principal ids by client id.
    pub principals: Mutex<BTreeMap<String, String>>,
    /// Client ids the node's IMDS does not have: their fetches fail as IMDS's do.
    pub missing: Mutex<std::collections::BTreeSet<String>>,
}

impl Counting {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TokenSource for Counting {
    fn fetch<'a>(&'a self, identity: &'a AzureIdentity, resource: &'a str) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move {
            let serial = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let delay = *sync::lock(&self.delay);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some((status, retry_after)) = *sync::lock(&self.fail_with) {
                return Err(Error::Upstream {
                    what: "IMDS",
                    status,
                    retry_after,
                    body: "scripted failure".into(),
                });
            }
            let client = identity.spec.client_id().unwrap_or_default().to_owned();
            if sync::lock(&self.missing).contains(&client) {
                return Err(Error::Upstream {
                    what: "IMDS",
                    status: 400,
                    retry_after: None,
                    body: r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into(),
                });
            }
            if let Err(code) = identity.spec.identity_type() {
                return Err(Error::Identity(format!("unsupported identity type {code}")));
            }
            let oid = sync::lock(&self.principals).get(&client).cloned();
            let life = sync::lock(&self.lifetime).unwrap_or(Duration::from_secs(86_399));
            let access_token = token_text(&client, resource, oid.as_deref(), serial);
            let now = now();
            Ok(Token {
                principal_id: crate::token::jwt_claim(&access_token, "oid"),
                access_token,
                token_type: "Bearer".into(),
                expires_on: now + life.as_secs(),
                not_before: now,
                ext_expires_in: life.as_secs(),
            })
        })
    }
}
