//! The two calls behind a federated token: a service-account token bound to the pod, from the
//! apiserver's TokenRequest, then its exchange at Entra (v2 client credentials with the token as
//! `client_assertion`). The service-account token lives only in this function's locals: it is
//! never cached, returned, logged or put in an error.

use std::time::Duration;

use azure_token::{Credential, EntraVersion};
use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, api::PostParams};

use super::decide::{FederatedIdentity, TOKEN_EXCHANGE_AUDIENCE};
use crate::{Error, Result, token::Token};

/// The shortest lifetime the apiserver grants: the token is used once, within a second.
const SA_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// The pod a service-account token is bound to.
pub(super) struct BoundPod<'a> {
    pub name: &'a str,
    pub uid: &'a str,
}

pub(super) struct Exchange<'a> {
    pub kube: &'a kube::Client,
    pub http: &'a reqwest::Client,
    /// Entra's authority host, e.g. `https://login.microsoftonline.com/`.
    pub authority: &'a str,
}

impl Exchange<'_> {
    pub(super) async fn token(
        &self,
        identity: &FederatedIdentity,
        pod: BoundPod<'_>,
        resource: &str,
    ) -> Result<Token> {
        let credential = Credential::ClientAssertion {
            authority: self.authority.to_owned(),
            tenant: identity.tenant_id.clone(),
            client_id: identity.client_id.clone(),
            assertion: self.service_account_token(identity, &pod).await?,
        };
        let request = azure_token::TokenRequest {
            credential: &credential,
            resource,
            entra: EntraVersion::V2,
        };
        Ok(request.send(self.http).await?)
    }

    /// TokenRequest for the pod's service account, audience `api://AzureADTokenExchange`, bound to
    /// the pod by name and UID: the apiserver refuses it for a pod that is gone (or replaced by a
    /// namesake), and the token stops validating when the pod is deleted.
    async fn service_account_token(
        &self,
        identity: &FederatedIdentity,
        pod: &BoundPod<'_>,
    ) -> Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()],
                expiration_seconds: Some(SA_TOKEN_LIFETIME.as_secs() as i64),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.name.to_owned()),
                    uid: Some(pod.uid.to_owned()),
                }),
            },
            ..Default::default()
        };
        let api = Api::<ServiceAccount>::namespaced(self.kube.clone(), &identity.namespace);
        let answer = api
            .create_token_request(&identity.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                Error::Identity(format!(
                    "the apiserver gave no token of service account {}/{} bound to pod {}: {e}",
                    identity.namespace, identity.service_account, pod.name
                ))
            })?;
        answer
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Identity("the apiserver's TokenRequest answer has no token".into()))
    }
}
