//! Getting tokens from Azure: the node's IMDS for managed identities (type 0) and Entra ID's
//! client-credentials grant for service principals, with a secret (type 1) or a certificate (type 2).

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use api::{AzureIdentity, IdentityType};
use base64::Engine;
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::{Error, Result};

/// An access token and its times (epoch seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    pub token_type: String,
    pub expires_on: u64,
    pub not_before: u64,
    pub ext_expires_in: u64,
    /// The `oid` claim, when the token is a JWT carrying one: the identity's principal (object) id.
    pub principal_id: Option<String>,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Where tokens come from. The production source is [`Azure`]; the cache is generic so that its
/// single-flight and refresh rules can be tested by counting calls.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, identity: &'a AzureIdentity, resource: &'a str) -> BoxFuture<'a, Result<Token>>;
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

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
        let url = format!("{}/metadata/identity/oauth2/token", self.config.imds);
        let sent = self
            .http
            .get(url)
            .header("Metadata", "true")
            .query(&[
                ("api-version", "2018-02-01"),
                ("resource", resource),
                ("client_id", client_id),
            ])
            .send()
            .await;
        let result = match sent {
            Ok(r) => read_token("IMDS", r).await,
            Err(source) => Err(Error::Http { what: "IMDS", source }),
        };
        let status = match &result {
            Ok(_) => "200".to_owned(),
            Err(Error::Upstream { status, .. }) => status.to_string(),
            Err(_) => "error".to_owned(),
        };
        self.metrics.imds_operation(&status, started.elapsed());
        result
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
            .trim_end_matches('/');
        let url = format!("{authority}/{tenant}/oauth2/v2.0/token");
        let scope = scope_of(resource);
        let unusable = |e: String| Error::Identity(format!("secret {secret_name}: {e}"));
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", client_id.to_owned()),
            ("scope", scope),
        ];
        if spec.identity_type() == Ok(IdentityType::ServicePrincipalCertificate) {
            let credential = crate::assertion::Credential::from_secret(&secret).map_err(unusable)?;
            let assertion = credential.assertion(client_id, &url, now()).map_err(unusable)?;
            form.push(("client_assertion_type", JWT_BEARER.to_owned()));
            form.push(("client_assertion", assertion));
        } else {
            form.push(("client_secret", client_secret_of(&secret).map_err(unusable)?));
        }
        let sent = self.http.post(url).form(&form).send().await;
        match sent {
            Ok(r) => read_token("Entra ID", r).await,
            Err(source) => Err(Error::Http {
                what: "Entra ID",
                source,
            }),
        }
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

/// The v2 scope for a v1 resource: `<resource>/.default`, unless it already is a scope.
pub fn scope_of(resource: &str) -> String {
    if resource.ends_with("/.default") {
        resource.to_owned()
    } else {
        format!("{resource}/.default")
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

async fn read_token(what: &'static str, response: reqwest::Response) -> Result<Token> {
    let status = response.status();
    let retry = retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|source| Error::Http { what, source })?;
    if !status.is_success() {
        return Err(Error::Upstream {
            what,
            status: status.as_u16(),
            retry_after: retry,
            body: String::from_utf8_lossy(&body).chars().take(1024).collect(),
        });
    }
    parse_token(&body, now()).map_err(|detail| Error::BadUpstreamBody { what, detail })
}

/// Reads an IMDS or Entra (v1 or v2) token answer, whose numbers may be strings or numbers.
pub fn parse_token(body: &[u8], now: u64) -> std::result::Result<Token, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let num = |key: &str| -> Option<u64> {
        match v.get(key)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    let access_token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("no access_token")?
        .to_owned();
    let expires_on = match (num("expires_on"), num("expires_in")) {
        (Some(on), _) => on,
        (None, Some(r#in)) => now + r#in,
        (None, None) => return Err("neither expires_on nor expires_in".into()),
    };
    let principal_id = jwt_claim(&access_token, "oid");
    Ok(Token {
        token_type: v
            .get("token_type")
            .and_then(Value::as_str)
            .unwrap_or("Bearer")
            .to_owned(),
        not_before: num("not_before").unwrap_or(now),
        ext_expires_in: num("ext_expires_in").unwrap_or_else(|| expires_on.saturating_sub(now)),
        expires_on,
        access_token,
        principal_id,
    })
}

/// A string claim of an unverified JWT. Used only to learn the principal id of a token NMI itself
/// just received from IMDS or Entra, never to authorize anything a pod presents.
pub fn jwt_claim(jwt: &str, claim: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get(claim)?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests;
