//! The ARM client for VM and scale-set identities: GET, delta PATCH with long-running-operation
//! polling, `Retry-After` honoured per subscription, exponential backoff with jitter for 5xx and
//! timeouts. Tokens come from Entra's v1 endpoint (a service principal, with a secret or a
//! certificate) or from IMDS (the controller's managed identity), for the audience of the cloud's
//! ARM, through the `azure_token` client that NMI uses too; this module only caches the one token.

use std::{collections::HashMap, sync::Arc, time::Duration};

use azure_token::{Credential, EntraVersion, Token, TokenRequest};
use matching::ComputeTarget;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::{sync::Mutex, time::Instant};

use crate::{
    Error,
    body::{ArmError, IdentityState},
    consent::{IdentityFacts, Read},
    observe::{CallObserver, CallResult},
    retry::{RetryPolicy, backoff, hinted},
};

/// The api-version used for `Microsoft.Compute` reads and writes (the identity dictionary form).
pub const COMPUTE_API_VERSION: &str = "2023-09-01";
/// The api-version used to read user-assigned identities (`Microsoft.ManagedIdentity`).
pub const IDENTITY_API_VERSION: &str = "2023-01-31";
/// The public cloud's ARM audience, for clients built with [`ArmClient::new`].
pub const MANAGEMENT_RESOURCE: &str = "https://management.azure.com/";
/// A token this close to its expiry is replaced before it is used.
const TOKEN_MARGIN_SECS: u64 = 300;

/// Where ARM is and how MIC gets its tokens: what the cloud config selects.
#[derive(Clone, Debug)]
pub struct Connection {
    /// ARM's base URL.
    pub endpoint: String,
    /// The audience of ARM tokens (the cloud's; Azure Stack Hub's own).
    pub resource: String,
    pub credential: Credential,
}

/// The ARM client. Cheap to clone.
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: String,
    credential: Credential,
    /// The audience of ARM tokens.
    resource: String,
    retry: RetryPolicy,
    token: Mutex<Option<Token>>,
    /// Per subscription: no call before this instant (set by 429 `Retry-After`), for reads and writes alike.
    gates: Mutex<HashMap<String, Instant>>,
    observer: Arc<dyn CallObserver>,
}

impl ArmClient {
    /// A client for ARM at `endpoint` with tokens for the public cloud's ARM audience.
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        credential: Credential,
        retry: RetryPolicy,
        observer: Arc<dyn CallObserver>,
    ) -> Self {
        Self::connect(
            http,
            Connection {
                endpoint: endpoint.to_owned(),
                resource: MANAGEMENT_RESOURCE.to_owned(),
                credential,
            },
            retry,
            observer,
        )
    }

    /// A client for the cloud the configuration selected ([`crate::cloud::CloudConfig::connection`]).
    /// `observer` is told of every request (MIC's metrics count them).
    pub fn connect(
        http: reqwest::Client,
        connection: Connection,
        retry: RetryPolicy,
        observer: Arc<dyn CallObserver>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                endpoint: connection.endpoint.trim_end_matches('/').to_owned(),
                credential: connection.credential,
                resource: connection.resource,
                retry,
                token: Mutex::new(None),
                gates: Mutex::new(HashMap::new()),
                observer,
            }),
        }
    }

    fn url(&self, target: &ComputeTarget) -> String {
        format!(
            "{}{}?api-version={COMPUTE_API_VERSION}",
            self.inner.endpoint,
            target.arm_id()
        )
    }

    fn operation(target: &ComputeTarget, write: bool) -> &'static str {
        match (target.kind, write) {
            (matching::ComputeKind::ScaleSet, false) => "vmss_get",
            (matching::ComputeKind::ScaleSet, true) => "vmss_update",
            (matching::ComputeKind::VirtualMachine, false) => "vm_get",
            (matching::ComputeKind::VirtualMachine, true) => "vm_update",
        }
    }

    /// Reads the identities of a VM or scale set.
    pub async fn get(&self, target: &ComputeTarget) -> Result<IdentityState, Error> {
        let op = Self::operation(target, false);
        let (_, body) = self
            .call(op, &target.subscription, Method::GET, &self.url(target), None)
            .await?;
        Ok(IdentityState::from_resource(&body))
    }

    /// Reads a user-assigned identity (its client id and tags: [`crate::consent`]). The
    /// subscription is the id's own, for `Retry-After` gates.
    pub async fn get_identity(&self, resource_id: &str) -> Result<Value, Error> {
        let subscription = resource_id.split('/').nth(2).unwrap_or_default();
        let url = format!(
            "{}{resource_id}?api-version={IDENTITY_API_VERSION}",
            self.inner.endpoint
        );
        let (_, body) = self
            .call("identity_get", subscription, Method::GET, &url, None)
            .await?;
        Ok(body)
    }

    /// One identity's read, as the consent decision needs it ([`crate::consent::verdict`]): MIC's
    /// consent cache and `kubectl pod-identity check` both read identities this way.
    pub async fn read_identity(&self, id: &str) -> Read {
        // The id comes from a namespace's object: it goes into a URL path, so nothing but the
        // characters ARM ids are made of (no `?`, `#`, `%` or `..` tricks).
        let plain = id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.()".contains(c))
            && !id.contains("..");
        if !plain {
            return Read::Failed("the resource id has characters no ARM id has".into());
        }
        match self.get_identity(id).await {
            Ok(body) => IdentityFacts::from_arm(&body).map_or_else(
                || Read::Failed("ARM's answer has no clientId".into()),
                Read::Facts,
            ),
            Err(Error::Arm { status: 404, .. }) => Read::NotFound,
            Err(e) => Read::Failed(e.to_string()),
        }
    }

    /// Sends one PATCH body and waits for its long-running operation to finish.
    pub async fn patch(&self, target: &ComputeTarget, body: &Value) -> Result<(), Error> {
        let op = Self::operation(target, true);
        let (headers, _) = self
            .call(
                op,
                &target.subscription,
                Method::PATCH,
                &self.url(target),
                Some(body),
            )
            .await?;
        let Some(poll) = headers
            .get("azure-asyncoperation")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return Ok(());
        };
        let deadline = Instant::now() + self.inner.retry.operation_timeout;
        let mut wait = hinted(&headers).unwrap_or(self.inner.retry.poll_interval);
        loop {
            tokio::time::sleep(wait.min(self.inner.retry.poll_interval)).await;
            let (headers, status) = self
                .call("operation_get", &target.subscription, Method::GET, &poll, None)
                .await?;
            match status["status"].as_str().unwrap_or("InProgress") {
                "Succeeded" => return Ok(()),
                s @ ("Failed" | "Canceled") => {
                    let error = ArmError::parse(200, &status.to_string());
                    return Err(Error::Operation {
                        operation: op,
                        status: s.to_owned(),
                        error,
                    });
                }
                _ if Instant::now() > deadline => {
                    return Err(Error::Transport {
                        operation: op,
                        message: format!(
                            "operation still running after {:?}",
                            self.inner.retry.operation_timeout
                        ),
                    });
                }
                _ => wait = hinted(&headers).unwrap_or(self.inner.retry.poll_interval),
            }
        }
    }

    /// One ARM request with throttling and retries. 429 waits for `Retry-After` (shared by the
    /// subscription, so no other call there goes out before it); 5xx and transport errors back off
    /// exponentially with jitter. The error returned is the last one, so a retry that succeeds
    /// reports success (upstream reported the first error even then).
    async fn call(
        &self,
        operation: &'static str,
        subscription: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(reqwest::header::HeaderMap, Value), Error> {
        let retry = &self.inner.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.wait_gate(subscription).await;
            let token = self.token().await?;
            let started = Instant::now();
            let mut req = self.inner.http.request(method.clone(), url).bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let outcome = req.send().await;
            self.inner.observer.duration(operation, started.elapsed());
            let failure = match outcome {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let text = resp.text().await.unwrap_or_default();
                    if status.is_success() {
                        self.inner.observer.result(operation, CallResult::Ok);
                        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        return Ok((headers, value));
                    }
                    let error = ArmError::parse(status.as_u16(), &text);
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.inner.observer.result(operation, CallResult::Throttled);
                        let wait = hinted(&headers).unwrap_or(Duration::from_secs(10));
                        self.close_gate(subscription, wait).await;
                    } else if status == StatusCode::UNAUTHORIZED {
                        self.inner.observer.result(operation, CallResult::Unauthorized);
                        *self.inner.token.lock().await = None;
                    } else if status.is_server_error() {
                        self.inner.observer.result(operation, CallResult::ServerError);
                    } else {
                        self.inner.observer.result(operation, CallResult::ClientError);
                        return Err(Error::Arm {
                            operation,
                            status: status.as_u16(),
                            error,
                        });
                    }
                    Error::Arm {
                        operation,
                        status: status.as_u16(),
                        error,
                    }
                }
                Err(e) => {
                    self.inner.observer.result(operation, CallResult::TransportError);
                    Error::Transport {
                        operation,
                        message: e.to_string(),
                    }
                }
            };
            if attempt >= retry.attempts {
                return Err(failure);
            }
            self.inner.observer.retry(operation);
            let throttled = matches!(&failure, Error::Arm { status: 429, .. });
            if !throttled {
                tokio::time::sleep(backoff(retry, attempt)).await;
            }
            tracing::debug!(operation, attempt, error = %failure, "retrying ARM call");
        }
    }

    async fn wait_gate(&self, subscription: &str) {
        let until = self.inner.gates.lock().await.get(subscription).copied();
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    async fn close_gate(&self, subscription: &str, wait: Duration) {
        let until = Instant::now() + wait;
        let mut gates = self.inner.gates.lock().await;
        let gate = gates.entry(subscription.to_owned()).or_insert(until);
        *gate = (*gate).max(until);
    }

    async fn token(&self) -> Result<String, Error> {
        let mut cached = self.inner.token.lock().await;
        if let Some(token) = cached.as_ref()
            && azure_token::now() + TOKEN_MARGIN_SECS < token.expires_on
        {
            return Ok(token.access_token.clone());
        }
        let token = TokenRequest {
            credential: &self.inner.credential,
            resource: &self.inner.resource,
            entra: EntraVersion::V1,
        }
        .send(&self.inner.http)
        .await
        .map_err(Error::Token)?;
        let access_token = token.access_token.clone();
        *cached = Some(token);
        Ok(access_token)
    }
}
