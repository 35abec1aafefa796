//! Getting tokens from Azure for an AzureIdentity: the node's IMDS for managed identities (type 0)
//! and Entra ID's v2 client-credentials grant for service principals, with a secret (type 1) or a
//! certificate (type 2). The requests and answers are `azure_token`'s (shared with MIC); this
//! module turns an identity and its Kubernetes secret into a credential, keeps IMDS to 5 calls at a
//! time, counts IMDS calls, and turns the client's errors into NMI's, which keep IMDS's and
//! Entra's status, `Retry-After` and body for the pod.

use std::{sync::Arc, time::Duration};

use api::{AzureIdentity, IdentityType};
use azure_token::{Credential, EntraVersion, TokenRequest};
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use tokio::sync::Semaphore;

use crate::{Error, Result};

pub use azure_token::{Token, jwt_claim, now};

/// Where tokens come from. The production source is [`Azure`]; the cache is generic so that its
/// single-flight and refresh rules can be tested by counting calls.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, identity: &'a AzureIdentity, resource: &'a str) -> BoxFuture<'a, Result<Token>>;
}

/// The key under which a service principal's secret is read from its `clientPassword` secret.
pub const CLIENT_SECRET_KEY: &str = "clientSecret";

/// How NMI reaches Azure.
#[derive(Clone, Debug)]
pub struct AzureConfig {
    /// `http://<metadata-ip>:<metadata-port>`.
    pub imds: String,
    /// Entra's authority host when an identity has no `adEndpoint`, e.g. `https://login.microsoftonline.com/`.
    pub entra: String,
    /// Extra PEM roots for Entra (the emulator's CA in tests).
    pub extra_roots_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// Tokens from the node's IMDS and from Entra ID.
#[derive(Clone)]
pub struct Azure {
    http: reqwest::Client,
    config: AzureConfig,
    kube: Option<kube::Client>,
    /// IMDS serves at most 5 concurrent identity requests per VM; more would only earn 429s.
    imds_slots: Arc<Semaphore>,
    metrics: crate::metrics::Metrics,
}

impl Azure {
    /// `kube` reads service principals' secrets; without it type 1 identities are refused.
    pub fn new(
        config: AzureConfig,
        kube: Option<kube::Client>,
        metrics: crate::metrics::Metrics,
    ) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.timeout)
            .user_agent(concat!("pod-identity/NMI/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("reading the Entra CA bundle: {e}")))?;
            builder = builder.tls_certs_merge(roots);
        }
        let http = builder.build().map_err(|source| Error::Http {
            what: "building the HTTP client",
            source,
        })?;
        Ok(Self {
            http,
            config,
            kube,
            imds_slots: Arc::new(Semaphore::new(5)),
            metrics,
        })
    }

    /// The HTTP client, shared with the pass-through proxy.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn imds_base(&self) -> &str {
        &self.config.imds
    }

    async fn imds_token(&self, client_id: &str, resource: &str) -> Result<Token> {
        let _slot = self
            .imds_slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let started = std::time::Instant::now();
        let credential = Credential::ManagedIdentity {
            imds: self.config.imds.clone(),
            client_id: Some(client_id.to_owned()),
        };
        let result = self.ask(&credential, resource).await;
        let status = match &result {
            Ok(_) => "200".to_owned(),
            Err(e) => e.status().map_or_else(|| "error".to_owned(), |s| s.to_string()),
        };
        self.metrics.imds_operation(&status, started.elapsed());
        result.map_err(Error::from)
    }

    async fn ask(&self, credential: &Credential, resource: &str) -> Result<Token, azure_token::Error> {
        TokenRequest {
            credential,
            resource,
            entra: EntraVersion::V2,
        }
        .send(&self.http)
        .await
    }

    /// The identity's `clientPassword` secret, and its `<namespace>/<name>`.
    async fn secret(&self, identity: &AzureIdentity) -> Result<(String, Secret)> {
        let ns = identity.metadata.namespace.as_deref().unwrap_or_default();
        let name = identity.metadata.name.as_deref().unwrap_or_default();
        let reference = identity.spec.client_password().ok_or_else(|| {
            Error::Identity(format!(
                "AzureIdentity {ns}/{name} is a service principal but has no clientPassword"
            ))
        })?;
        // Upstream read the secret from any namespace the identity named, with cluster-wide
        // rights; a secret outside the identity's own namespace is refused here.
        if let Some(other) = reference
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty() && *n != ns)
        {
            return Err(Error::Identity(format!(
                "AzureIdentity {ns}/{name}: clientPassword names a secret in namespace {other}; \
                 NMI reads secrets only from the identity's own namespace"
            )));
        }
        let secret_name = reference
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Error::Identity(format!("AzureIdentity {ns}/{name}: clientPassword has no name"))
            })?;
        let kube = self.kube.clone().ok_or_else(|| {
            Error::Identity("NMI has no Kubernetes client to read service principal secrets".into())
        })?;
        let secret = kube::Api::<Secret>::namespaced(kube, ns)
            .get_opt(secret_name)
            .await?
            .ok_or_else(|| Error::Identity(format!("secret {ns}/{secret_name} does not exist")))?;
        Ok((format!("{ns}/{secret_name}"), secret))
    }

    async fn entra_token(&self, identity: &AzureIdentity, resource: &str) -> Result<Token> {
        let spec = &identity.spec;
        let (ns, name) = (
            identity.metadata.namespace.as_deref().unwrap_or_default(),
            identity.metadata.name.as_deref().unwrap_or_default(),
        );
        let missing = |what: &str| Error::Identity(format!("AzureIdentity {ns}/{name} has no {what}"));
        let tenant = spec.tenant_id().ok_or_else(|| missing("tenantID"))?;
        let client_id = spec.client_id().ok_or_else(|| missing("clientID"))?;
        let (secret_name, secret) = self.secret(identity).await?;
        let authority = spec
            .ad_endpoint
            .as_deref()
            .filter(|e| !e.is_empty())
            .unwrap_or(&self.config.entra)
            .to_owned();
        let (tenant, client_id) = (tenant.to_owned(), client_id.to_owned());
        let unusable = |e: String| Error::Identity(format!("secret {secret_name}: {e}"));
        let credential = if spec.identity_type() == Ok(IdentityType::ServicePrincipalCertificate) {
            Credential::ClientCertificate {
                authority,
                tenant,
                client_id,
                certificate: Arc::new(crate::assertion::from_secret(&secret).map_err(unusable)?),
            }
        } else {
            Credential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret: client_secret_of(&secret).map_err(unusable)?,
            }
        };
        self.ask(&credential, resource).await.map_err(Error::from)
    }
}

impl TokenSource for Azure {
    fn fetch<'a>(&'a self, identity: &'a AzureIdentity, resource: &'a str) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move {
            match identity.spec.identity_type() {
                Ok(IdentityType::UserAssignedMsi) => {
                    let client_id = identity.spec.client_id().ok_or_else(|| {
                        Error::Identity("a managed identity (type 0) needs a clientID".into())
                    })?;
                    self.imds_token(client_id, resource).await
                }
                Ok(IdentityType::ServicePrincipal | IdentityType::ServicePrincipalCertificate) => {
                    self.entra_token(identity, resource).await
                }
                Err(code) => Err(Error::Identity(format!("unsupported identity type {code}"))),
            }
        })
    }
}

/// The client secret in a service principal's secret: the key `clientSecret`, or the only key
/// when there is exactly one (upstream took the first of any number, in random order).
pub fn client_secret_of(secret: &Secret) -> std::result::Result<String, String> {
    let mut data: Vec<(String, Vec<u8>)> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    data.extend(
        secret
            .string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
    );
    let value = match data.iter().find(|(k, _)| k == CLIENT_SECRET_KEY) {
        Some((_, v)) => v.clone(),
        None if data.len() == 1 => data[0].1.clone(),
        None if data.is_empty() => return Err("the secret is empty".into()),
        None => {
            return Err(format!(
                "the secret has several keys and none is `{CLIENT_SECRET_KEY}`; put the client secret under `{CLIENT_SECRET_KEY}`"
            ));
        }
    };
    String::from_utf8(value).map_err(|_| format!("`{CLIENT_SECRET_KEY}` is not UTF-8 text"))
}

/// The token client's errors as NMI's: a service's answer keeps its status, `Retry-After` and body
/// (what the pod is told is `crate::server`'s to decide); a request that could not be made is a
/// problem of the identity's configuration.
impl From<azure_token::Error> for Error {
    fn from(e: azure_token::Error) -> Self {
        use azure_token::Error as E;
        match e {
            E::Transport { service, source } | E::Timeout { service, source } => Error::Http {
                what: service.name(),
                source,
            },
            E::Upstream {
                service,
                status,
                retry_after,
                body,
            } => Error::Upstream {
                what: service.name(),
                status,
                retry_after,
                body,
            },
            E::BadAnswer { service, detail } => Error::BadUpstreamBody {
                what: service.name(),
                detail,
            },
            other => Error::Identity(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
