//! Getting tokens from Azure for an AzureIdentity: the node's IMDS for managed identities (type 0)
//! and Entra ID's v2 client-credentials grant for service principals, with a secret (type 1) or a
//! certificate (type 2). The requests and answers are `azure_token`'s (shared with MIC); this
//! module turns an identity and its Kubernetes secret into a credential, keeps IMDS to 5 calls at a
//! time, counts IMDS calls, and turns the client's errors into NMI's, which keep IMDS's status,
//! `Retry-After` and body for the pod, and Entra's status, `Retry-After` and error codes only.
//!
//! A managed identity is asked for by its `resourceID`, the identity MIC assigned and checked, not
//! by its `clientID`, which is only what the AzureIdentity claims: a namespace naming its own
//! identity's resource id beside another team's client id would otherwise get that team's token
//! whenever both identities are on the VM. A service principal's credential goes only to an Entra
//! authority (see `authority`). The client follows no redirect, so neither IMDS nor Entra can send
//! a request, or a credential, anywhere else.

use std::{sync::Arc, time::Duration};

use api::{AzureIdentity, IdentityType};
use azure_token::{Credential, EntraVersion, TokenRequest};
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use tokio::sync::Semaphore;

use crate::{Error, Result};

pub use authority::{Authorities, CLOUD_AUTHORITIES};

pub mod assertion;
mod authority;

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
    /// Where service principals' credentials may be sent.
    authorities: Authorities,
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
            // A redirect would send the request (a service principal's form included) where the
            // authority check never looked.
            .redirect(reqwest::redirect::Policy::none())
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
        let authorities = Authorities::new(&config.entra, &[])?;
        Ok(Self {
            http,
            config,
            kube,
            imds_slots: Arc::new(Semaphore::new(5)),
            authorities,
            metrics,
        })
    }

    /// Also trusts these authorities for `adEndpoint` (`--allowed-ad-endpoint`; https only).
    pub fn allow_ad_endpoints(mut self, allowed: &[String]) -> Result<Self> {
        self.authorities = Authorities::new(&self.config.entra, allowed)?;
        Ok(self)
    }

    /// The HTTP client, shared with the pass-through proxy.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn imds_base(&self) -> &str {
        &self.config.imds
    }

    /// The token of the user-assigned identity `resource_id`, from the node's IMDS.
    async fn imds_token(&self, resource_id: &str, resource: &str) -> Result<Token> {
        let _slot = self
            .imds_slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let started = std::time::Instant::now();
        let credential = Credential::ManagedIdentityByResourceId {
            imds: self.config.imds.clone(),
            resource_id: resource_id.to_owned(),
        };
        let result = self.ask(&credential, resource).await;
        let status = match &result {
            Ok(_) => "200".to_owned(),
            Err(e) => e.status().map_or_else(|| "error".to_owned(), |s| s.to_string()),
        };
        self.metrics.imds_operation(&status, started.elapsed());
        let token = result?;
        check_mirid(&token, resource_id)?;
        Ok(token)
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
        // Checked before the secret is even read: nothing is asked of anyone for an identity
        // whose credential would go astray.
        let authority = match spec.ad_endpoint.as_deref().filter(|e| !e.is_empty()) {
            Some(endpoint) => self.authorities.check(endpoint, &format!("{ns}/{name}"))?,
            None => self.config.entra.clone(),
        };
        if !authority::is_tenant(tenant) {
            return Err(Error::Identity(format!(
                "AzureIdentity {ns}/{name}: tenantID `{tenant}` is neither a GUID nor a domain name"
            )));
        }
        let (secret_name, secret) = self.secret(identity).await?;
        let (tenant, client_id) = (tenant.to_owned(), client_id.to_owned());
        let credential = if spec.identity_type() == Ok(IdentityType::ServicePrincipalCertificate) {
            Credential::ClientCertificate {
                authority,
                tenant,
                client_id,
                certificate: Arc::new(assertion::from_secret(&secret, &secret_name)?),
            }
        } else {
            Credential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret: client_secret_of(&secret, &secret_name)?,
            }
        };
        self.ask(&credential, resource)
            .await
            .map_err(|e| Error::from(entra_summary(e, ns, name)))
    }
}

/// Entra's error answer with its body replaced by [`authority::summarize`]'s summary: the pod hears
/// the status, `Retry-After` and Entra's codes, never bytes it did not check. The answer itself
/// goes to NMI's log, for the administrator.
fn entra_summary(e: azure_token::Error, ns: &str, name: &str) -> azure_token::Error {
    match e {
        azure_token::Error::Upstream {
            service,
            status,
            retry_after,
            body,
        } => {
            tracing::info!(
                target: "nmi::entra", namespace = ns, identity = name, status, body = ?body,
                "Entra ID refused a service principal's token request"
            );
            azure_token::Error::Upstream {
                service,
                status,
                retry_after,
                body: authority::summarize(&body),
            }
        }
        other => other,
    }
}

/// Refuses a token whose `xms_mirid` claim (the managed identity it was issued to) is not
/// `resource_id`. IMDS was asked by that resource id, so this holds unless something between NMI
/// and IMDS (a proxy, an emulator, an IMDS ignoring `msi_res_id`) answered for another identity:
/// a pod must never get an identity MIC did not assign and check. A token without the claim (not
/// a JWT, or a system-assigned identity's) is taken on the request's word.
fn check_mirid(token: &Token, resource_id: &str) -> Result<()> {
    let Some(mirid) = jwt_claim(&token.access_token, "xms_mirid") else {
        return Ok(());
    };
    let same = mirid
        .trim_end_matches('/')
        .eq_ignore_ascii_case(resource_id.trim_end_matches('/'));
    if same {
        return Ok(());
    }
    Err(Error::Identity(format!(
        "IMDS answered with a token for {mirid}, not for the AzureIdentity's resourceID {resource_id}: \
         NMI hands out only the identity MIC assigned"
    )))
}

impl TokenSource for Azure {
    fn fetch<'a>(&'a self, identity: &'a AzureIdentity, resource: &'a str) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move {
            match identity.spec.identity_type() {
                Ok(IdentityType::UserAssignedMsi) => {
                    // The CRD requires resourceID for type 0; objects older than that rule may
                    // lack it, and are refused rather than asked for by a client id alone.
                    let resource_id = identity.spec.resource_id().ok_or_else(|| {
                        Error::Identity(format!(
                            "AzureIdentity {}/{} is a managed identity (type 0) without resourceID: \
                             NMI asks IMDS for the identity MIC assigned, by its resource id; set \
                             spec.resourceID to /subscriptions/<subscription>/resourcegroups/<group>/\
                             providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>",
                            identity.metadata.namespace.as_deref().unwrap_or_default(),
                            identity.metadata.name.as_deref().unwrap_or_default(),
                        ))
                    })?;
                    self.imds_token(resource_id, resource).await
                }
                Ok(IdentityType::ServicePrincipal | IdentityType::ServicePrincipalCertificate) => {
                    self.entra_token(identity, resource).await
                }
                Err(code) => Err(Error::Identity(format!("unsupported identity type {code}"))),
            }
        })
    }
}

/// The client secret in a service principal's secret `name` (`<namespace>/<name>`): the key
/// `clientSecret`, or the only key when there is exactly one (upstream took the first of any
/// number, in random order).
pub fn client_secret_of(secret: &Secret, name: &str) -> Result<String> {
    let unusable = |problem: String| Error::UnusableSecret {
        secret: name.to_owned(),
        problem,
    };
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
        None if data.is_empty() => return Err(unusable("the secret is empty".into())),
        None => {
            return Err(unusable(format!(
                "the secret has several keys and none is `{CLIENT_SECRET_KEY}`; put the client secret under `{CLIENT_SECRET_KEY}`"
            )));
        }
    };
    String::from_utf8(value).map_err(|_| unusable(format!("`{CLIENT_SECRET_KEY}` is not UTF-8 text")))
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
