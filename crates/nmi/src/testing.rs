//! Test values and a counting token source for the unit tests.
//!
//! The source stands in for Azure at the [`TokenSource`] boundary only, to count calls and
//! script failures; it speaks no IMDS or Entra protocol. Tests of the real clients use the
//! Azure emulator.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::{
    AssignmentState, AzureAssignedIdentity, AzureAssignedIdentitySpec, AzureAssignedIdentityStatus,
    AzureIdentity, AzureIdentityBinding, AzureIdentityBindingSpec, AzureIdentitySpec,
    AzurePodIdentityException, AzurePodIdentityExceptionSpec, LabelValue,
};
use base64::Engine;
use futures_util::future::BoxFuture;
use k8s_openapi::{
    api::core::v1::{Pod, PodSpec, PodStatus},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};

use mirror::sync;

use crate::{
    Error, Result,
    token::{Token, TokenSource, now},
};

pub const NODE: &str = "node-0";

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

pub fn pod(ns: &str, name: &str, ip: &str, label: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            labels: label.map(|l| BTreeMap::from([(api::v1::BINDING_LABEL.to_owned(), l.to_owned())])),
            ..meta(ns, name)
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some(ip.into()),
            phase: Some("Running".into()),
            ..Default::default()
        }),
    }
}

pub fn client_id(n: u8) -> String {
    format!("00000000-0000-0000-0000-0000000000{n:02x}")
}

pub fn principal_id(n: u8) -> String {
    format!("11111111-0000-0000-0000-0000000000{n:02x}")
}

pub fn resource_id(name: &str) -> String {
    format!(
        "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

/// A managed identity whose client id is `client_id(n)`.
pub fn identity(ns: &str, name: &str, n: u8) -> AzureIdentity {
    let mut id = AzureIdentity::new(
        name,
        AzureIdentitySpec {
            type_: Some(0),
            resource_id: Some(resource_id(name)),
            client_id: Some(client_id(n)),
            ..Default::default()
        },
    );
    id.metadata = meta(ns, name);
    id
}

pub fn binding(ns: &str, name: &str, identity: &str, selector: &str, created: i64) -> AzureIdentityBinding {
    let mut b = AzureIdentityBinding::new(
        name,
        AzureIdentityBindingSpec {
            azure_identity: Some(identity.into()),
            selector: Some(selector.into()),
            ..Default::default()
        },
    );
    b.metadata = meta(ns, name);
    b.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
    b
}

pub fn aai(pod: &Pod, identity: &AzureIdentity, state: Option<AssignmentState>) -> AzureAssignedIdentity {
    let pod_ns = pod.metadata.namespace.clone().unwrap();
    let pod_name = pod.metadata.name.clone().unwrap();
    let id_name = identity.metadata.name.clone().unwrap();
    let name = AzureAssignedIdentity::object_name(&pod_name, &pod_ns, &id_name);
    let mut a = AzureAssignedIdentity::new(
        &name,
        AzureAssignedIdentitySpec {
            azure_identity_ref: Some(identity.clone()),
            azure_binding_ref: None,
            pod: pod_name,
            pod_namespace: pod_ns,
            node_name: NODE.into(),
            replicas: None,
        },
    );
    a.metadata = meta("default", &name);
    a.status = state.map(|s| AzureAssignedIdentityStatus {
        status: Some(s),
        available_replicas: Some(1),
        ..Default::default()
    });
    a
}

pub fn exception(ns: &str, labels: &[(&str, &str)]) -> AzurePodIdentityException {
    let mut e = AzurePodIdentityException::new(
        "exception",
        AzurePodIdentityExceptionSpec {
            pod_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), LabelValue::from(*v)))
                    .collect(),
            ),
            legacy_pod_labels: None,
        },
    );
    e.metadata = meta(ns, "exception");
    e
}

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
