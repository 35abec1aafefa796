//! Asking for a token: who asks ([`Credential`]), for what ([`TokenRequest`]), and the HTTP request
//! that makes ([`Prepared`], plain values), sent by [`TokenRequest::send`].

use std::{sync::Arc, time::SystemTime};

use crate::{
    CertificateCredential, Error, Service, Token,
    answer::{epoch_secs, read_answer},
};

/// The IMDS token API version asked for: the one upstream and the Azure SDKs use, whose answer is
/// the all-strings token object.
pub const IMDS_API_VERSION: &str = "2018-02-01";
/// The `client_assertion_type` of a certificate credential's signed assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Who asks for a token.
#[derive(Clone)]
pub enum Credential {
    /// A service principal with a client secret.
    ClientSecret {
        /// Entra's authority host, e.g. `https://login.microsoftonline.com/`.
        authority: String,
        tenant: String,
        client_id: String,
        secret: String,
    },
    /// A service principal with a certificate, which signs a client assertion for each request.
    ClientCertificate {
        authority: String,
        tenant: String,
        client_id: String,
        certificate: Arc<CertificateCredential>,
    },
    /// An application whose proof is an assertion signed by someone Entra trusts for it: a
    /// Kubernetes service-account token exchanged under a federated identity credential. Used
    /// once: the assertion is short-lived and bound to what it was issued for.
    ClientAssertion {
        authority: String,
        tenant: String,
        client_id: String,
        assertion: String,
    },
    /// A managed identity through IMDS at `imds` (`http://169.254.169.254`): the one with
    /// `client_id`, or the VM's only one.
    ManagedIdentity { imds: String, client_id: Option<String> },
    /// The user-assigned identity whose ARM resource id is `resource_id`, through IMDS at `imds`
    /// (IMDS's `msi_res_id`). A resource id names one identity in ARM, where a client id is only
    /// what an AzureIdentity claims: NMI asks by the resource id MIC assigned and checked.
    ManagedIdentityByResourceId { imds: String, resource_id: String },
}

/// Prints everything but the secret.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientSecret {
                authority,
                tenant,
                client_id,
                secret: _,
            } => f
                .debug_struct("ClientSecret")
                .field("authority", authority)
                .field("tenant", tenant)
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Self::ClientCertificate {
                authority,
                tenant,
                client_id,
                certificate,
            } => f
                .debug_struct("ClientCertificate")
                .field("authority", authority)
                .field("tenant", tenant)
                .field("client_id", client_id)
                .field("certificate", certificate)
                .finish(),
            Self::ClientAssertion {
                authority,
                tenant,
                client_id,
                assertion: _,
            } => f
                .debug_struct("ClientAssertion")
                .field("authority", authority)
                .field("tenant", tenant)
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Self::ManagedIdentity { imds, client_id } => f
                .debug_struct("ManagedIdentity")
                .field("imds", imds)
                .field("client_id", client_id)
                .finish(),
            Self::ManagedIdentityByResourceId { imds, resource_id } => f
                .debug_struct("ManagedIdentityByResourceId")
                .field("imds", imds)
                .field("resource_id", resource_id)
                .finish(),
        }
    }
}

/// Which Entra token endpoint a service principal asks: v1 (`/oauth2/token`, a `resource`), as
/// MIC and cloud-provider-azure do for ARM, or v2 (`/oauth2/v2.0/token`, a `scope`), as NMI does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntraVersion {
    V1,
    V2,
}

/// A token for `resource` (a v1 resource, e.g. `https://vault.azure.net`) for `credential`.
#[derive(Clone, Copy, Debug)]
pub struct TokenRequest<'a> {
    pub credential: &'a Credential,
    pub resource: &'a str,
    /// Used by service principals only; IMDS has one endpoint.
    pub entra: EntraVersion,
}

/// The HTTP request for a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub service: Service,
    pub url: String,
    pub call: Call,
}

/// How the request is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// IMDS: a GET with this query and the `Metadata: true` header.
    ImdsGet { query: Vec<(&'static str, String)> },
    /// Entra: a POST of this form.
    EntraPost { form: Vec<(&'static str, String)> },
}

/// The v2 scope for a v1 resource: `<resource>/.default`, unless it already is a scope. A
/// resource ending in `/` keeps it (`https://database.windows.net//.default`), as Entra expects.
pub fn scope_of(resource: &str) -> String {
    if resource.ends_with("/.default") {
        resource.to_owned()
    } else {
        format!("{resource}/.default")
    }
}

/// How a service principal proves itself.
enum Proof<'a> {
    Secret(&'a String),
    Certificate(&'a CertificateCredential),
    Assertion(&'a String),
}

impl TokenRequest<'_> {
    /// The HTTP request, at `now` (epoch seconds: a certificate's assertion is valid from then).
    pub fn prepare(&self, now: u64) -> Result<Prepared, Error> {
        let (authority, tenant, client_id, proof) = match self.credential {
            Credential::ManagedIdentity { imds, client_id } => {
                let selector = client_id.as_ref().map(|id| ("client_id", id.clone()));
                return Ok(self.imds(imds, selector));
            }
            Credential::ManagedIdentityByResourceId { imds, resource_id } => {
                return Ok(self.imds(imds, Some(("msi_res_id", resource_id.clone()))));
            }
            Credential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret,
            } => (authority, tenant, client_id, Proof::Secret(secret)),
            Credential::ClientCertificate {
                authority,
                tenant,
                client_id,
                certificate,
            } => (authority, tenant, client_id, Proof::Certificate(certificate)),
            Credential::ClientAssertion {
                authority,
                tenant,
                client_id,
                assertion,
            } => (authority, tenant, client_id, Proof::Assertion(assertion)),
        };
        let authority = authority.trim_end_matches('/');
        let url = match self.entra {
            EntraVersion::V1 => format!("{authority}/{tenant}/oauth2/token"),
            EntraVersion::V2 => format!("{authority}/{tenant}/oauth2/v2.0/token"),
        };
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", client_id.clone()),
        ];
        match self.entra {
            EntraVersion::V1 => form.push(("resource", self.resource.to_owned())),
            EntraVersion::V2 => form.push(("scope", scope_of(self.resource))),
        }
        match proof {
            Proof::Secret(secret) => form.push(("client_secret", secret.clone())),
            Proof::Certificate(certificate) => {
                // The assertion's audience is the token endpoint it is sent to.
                let assertion = certificate.assertion(client_id, &url, now)?;
                form.push(("client_assertion_type", JWT_BEARER.to_owned()));
                form.push(("client_assertion", assertion));
            }
            Proof::Assertion(assertion) => {
                form.push(("client_assertion_type", JWT_BEARER.to_owned()));
                form.push(("client_assertion", assertion.clone()));
            }
        }
        Ok(Prepared {
            service: Service::Entra,
            url,
            call: Call::EntraPost { form },
        })
    }

    /// IMDS's token request, naming the identity by `selector` (a query parameter) if given.
    fn imds(&self, imds: &str, selector: Option<(&'static str, String)>) -> Prepared {
        let mut query = vec![
            ("api-version", IMDS_API_VERSION.to_owned()),
            ("resource", self.resource.to_owned()),
        ];
        query.extend(selector);
        Prepared {
            service: Service::Imds,
            url: format!("{}/metadata/identity/oauth2/token", imds.trim_end_matches('/')),
            call: Call::ImdsGet { query },
        }
    }

    /// Asks for the token with `http` and reads the answer.
    pub async fn send(&self, http: &reqwest::Client) -> Result<Token, Error> {
        let prepared = self.prepare(epoch_secs(SystemTime::now()))?;
        let service = prepared.service;
        let request = match &prepared.call {
            Call::ImdsGet { query } => http.get(&prepared.url).header("Metadata", "true").query(query),
            Call::EntraPost { form } => http.post(&prepared.url).form(form),
        };
        let response = request.send().await.map_err(|e| Error::transport(service, e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(|e| Error::transport(service, e))?;
        read_answer(service, status, retry_after.as_deref(), &body, SystemTime::now())
    }
}

#[cfg(test)]
mod tests;
