//! The cloud configuration MIC reads (and `kubectl pod-identity --cloud-config` after it):
//! `/etc/kubernetes/azure.json` on AKS (the fields upstream read, and cloud-provider-azure's
//! certificate service principal), environment variables without it, and overrides for the ARM
//! and Entra endpoints (to reach the Azure emulator).

mod environment;

pub use environment::{CloudEndpoints, ENVIRONMENT_FILEPATH, from_environment_file, known_cloud, select};

use std::{collections::BTreeSet, path::Path, sync::Arc};

use azure_token::{CertificateCredential, Credential, Error as CredentialError};
use serde::Deserialize;

use crate::{Error, client::Connection};

/// Endpoints given on MIC's command line, which win over the cloud's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointOverrides {
    /// `--arm-endpoint`.
    pub arm: Option<String>,
    /// `--aad-endpoint`.
    pub aad: Option<String>,
}

/// The fields of azure.json that MIC uses (the file has many more; they are ignored).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloudConfig {
    #[serde(default)]
    pub cloud: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub aad_client_id: Option<String>,
    #[serde(default)]
    pub aad_client_secret: Option<String>,
    /// A PKCS#12 file (or PEM) with the service principal's certificate and key, used when there
    /// is no `aadClientSecret`, as cloud-provider-azure does.
    #[serde(default)]
    pub aad_client_cert_path: Option<String>,
    #[serde(default)]
    pub aad_client_cert_password: Option<String>,
    #[serde(default)]
    pub subscription_id: Option<String>,
    #[serde(default)]
    pub resource_group: Option<String>,
    #[serde(default)]
    pub use_managed_identity_extension: bool,
    /// The cluster's own identity (a client id); never removed from a VM.
    #[serde(default, rename = "userAssignedIdentityID")]
    pub user_assigned_identity_id: Option<String>,
    #[serde(default)]
    pub vm_type: Option<String>,
}

impl CloudConfig {
    /// Reads azure.json (JSON; YAML is accepted too, as upstream parsed it with a YAML decoder).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadCloudConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_from(&text, Some(path))
    }

    /// Reads azure.json's text: [`Error::CloudConfigSyntax`] when it is neither JSON nor YAML.
    pub fn parse(text: &str) -> Result<Self, Error> {
        Self::parse_from(text, None)
    }

    /// [`Self::parse`], naming in its error the file `text` was read from, if any.
    fn parse_from(text: &str, path: Option<&Path>) -> Result<Self, Error> {
        serde_json::from_str(text).or_else(|json| {
            serde_saphyr::from_str(text).map_err(|yaml| Error::CloudConfigSyntax {
                path: path.map(Path::to_owned),
                json,
                yaml: Box::new(yaml),
            })
        })
    }

    /// Upstream's environment variables, for clusters without azure.json.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            cloud: get("CLOUD"),
            tenant_id: get("TENANT_ID"),
            aad_client_id: get("CLIENT_ID"),
            aad_client_secret: get("CLIENT_SECRET"),
            aad_client_cert_path: None,
            aad_client_cert_password: None,
            subscription_id: get("SUBSCRIPTION_ID"),
            resource_group: get("RESOURCE_GROUP"),
            use_managed_identity_extension: get("USE_MSI").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            user_assigned_identity_id: get("USER_ASSIGNED_MSI_CLIENT_ID"),
            vm_type: get("VM_TYPE"),
        }
    }

    /// The cloud's endpoints: those its `cloud` name selects (`AzureStackCloud`: from the file
    /// that `env("AZURE_ENVIRONMENT_FILEPATH")` names), then `overrides` on top.
    pub fn endpoints(
        &self,
        overrides: &EndpointOverrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<CloudEndpoints, Error> {
        let file = env(ENVIRONMENT_FILEPATH);
        let mut endpoints = select(self.cloud.as_deref(), file.as_deref(), |path| {
            std::fs::read_to_string(path)
        })?;
        if let Some(arm) = overrides.arm.as_ref().filter(|s| !s.is_empty()) {
            endpoints.resource_manager = arm.clone();
        }
        if let Some(aad) = overrides.aad.as_ref().filter(|s| !s.is_empty()) {
            endpoints.active_directory = aad.clone();
        }
        Ok(endpoints)
    }

    /// Where ARM is and how MIC gets its tokens for it: [`Self::endpoints`] and
    /// [`Self::credential`] together. What MIC and the plugin build their [`crate::ArmClient`] from.
    pub fn connection(
        &self,
        overrides: &EndpointOverrides,
        imds: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Connection, Error> {
        let endpoints = self.endpoints(overrides, env)?;
        tracing::info!(
            cloud = %endpoints.name, arm = %endpoints.resource_manager,
            aad = %endpoints.active_directory, audience = %endpoints.token_audience,
            "Azure cloud"
        );
        Ok(Connection {
            credential: self.credential(&endpoints.active_directory, imds)?,
            endpoint: endpoints.resource_manager,
            resource: endpoints.token_audience,
        })
    }

    /// How to authenticate to ARM: the managed identity (`useManagedIdentityExtension`), else a
    /// service principal with `aadClientSecret`, else with the certificate at `aadClientCertPath`.
    pub fn credential(&self, authority: &str, imds: &str) -> Result<Credential, Error> {
        if self.use_managed_identity_extension {
            return Ok(Credential::ManagedIdentity {
                imds: imds.to_owned(),
                client_id: self.user_assigned_identity_id.clone().filter(|s| !s.is_empty()),
            });
        }
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let need =
            |v: &Option<String>, field: &'static str| given(v).ok_or(Error::NoCredentialField { field });
        let tenant = need(&self.tenant_id, "tenantId")?;
        let client_id = need(&self.aad_client_id, "aadClientId")?;
        if let Some(secret) = given(&self.aad_client_secret) {
            return Ok(Credential::ClientSecret {
                authority: authority.to_owned(),
                tenant,
                client_id,
                secret,
            });
        }
        let Some(path) = given(&self.aad_client_cert_path) else {
            return Err(Error::NoSecretNorCertificate);
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(source) => return Err(Error::ReadCertificate { path, source }),
        };
        let password = self.aad_client_cert_password.as_deref();
        let certificate = match CertificateCredential::read(&bytes, None, password) {
            Ok(certificate) => certificate,
            Err(CredentialError::WrongPassword) => return Err(Error::CertificatePassword { path }),
            Err(source) => return Err(Error::Certificate { path, source }),
        };
        Ok(Credential::ClientCertificate {
            authority: authority.to_owned(),
            tenant,
            client_id,
            certificate: Arc::new(certificate),
        })
    }

    /// Client ids never to remove: `--immutable-user-msis` plus the cluster's own identity, lower-cased.
    pub fn protected_client_ids(&self, immutable: &[String]) -> BTreeSet<String> {
        immutable
            .iter()
            .chain(self.user_assigned_identity_id.iter())
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_aks_azure_json() {
        let c = CloudConfig::parse(
            r#"{"cloud":"AzurePublicCloud","tenantId":"t","aadClientId":"c","aadClientSecret":"s",
                "subscriptionId":"sub","resourceGroup":"MC_rg","vmType":"vmss","useManagedIdentityExtension":false,
                "userAssignedIdentityID":"","location":"westeurope","loadBalancerSku":"Standard"}"#,
        )
        .unwrap();
        assert_eq!(c.resource_group.as_deref(), Some("MC_rg"));
        match c
            .credential("https://login.microsoftonline.com", "http://169.254.169.254")
            .unwrap()
        {
            Credential::ClientSecret {
                tenant,
                client_id,
                secret,
                ..
            } => assert_eq!((tenant, client_id, secret), ("t".into(), "c".into(), "s".into())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreadable_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("azure.json");
        std::fs::write(&file, "{ not: [json").unwrap();
        let e = CloudConfig::from_file(&file).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cloud config {}: neither JSON (", file.display())),
            "{e}"
        );
        let e = CloudConfig::parse("{ not: [json").unwrap_err().to_string();
        assert!(e.starts_with("neither JSON ("), "{e}");
        let missing = dir.path().join("missing.json");
        let e = CloudConfig::from_file(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("reading cloud config {}: ", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn managed_identity_and_protected_ids() {
        let c =
            CloudConfig::parse("useManagedIdentityExtension: true\nuserAssignedIdentityID: ABC\n").unwrap();
        assert!(
            matches!(c.credential("a", "http://imds").unwrap(), Credential::ManagedIdentity { client_id: Some(id), .. } if id == "ABC")
        );
        assert_eq!(
            c.protected_client_ids(&["X ".into()]),
            ["abc".to_owned(), "x".to_owned()].into()
        );
    }

    #[test]
    fn a_secretless_service_principal_is_a_clear_error() {
        let c = CloudConfig::parse(r#"{"tenantId":"t","aadClientId":"c"}"#).unwrap();
        let e = c.credential("a", "b").unwrap_err().to_string();
        assert!(e.contains("aadClientSecret"), "{e}");
        let env = CloudConfig::from_env(|k| (k == "USE_MSI").then(|| "True".to_owned()));
        assert!(env.use_managed_identity_extension);
    }

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pkcs12");

    fn cert_config(file: &str, password: &str) -> CloudConfig {
        CloudConfig::parse(
            &serde_json::json!({
                "tenantId": "t", "aadClientId": "c",
                "aadClientCertPath": format!("{FIXTURES}/{file}"), "aadClientCertPassword": password,
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn a_certificate_service_principal_reads_its_pkcs12_file() {
        for file in ["sp-aes.p12", "sp-legacy.p12"] {
            match cert_config(file, "pod-identity-test")
                .credential("https://aad", "imds")
                .unwrap()
            {
                Credential::ClientCertificate {
                    tenant, client_id, ..
                } => assert_eq!((tenant.as_str(), client_id.as_str()), ("t", "c")),
                other => panic!("{other:?}"),
            }
        }
        let e = cert_config("sp-aes.p12", "nope")
            .credential("a", "b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("aadClientCertPassword") && e.contains("wrong"), "{e}");
        let e = cert_config("certs-only.p12", "pod-identity-test")
            .credential("a", "b")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("aadClientCertPath") && e.contains("no private key"),
            "{e}"
        );
        let e = cert_config("missing.p12", "")
            .credential("a", "b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("reading aadClientCertPath"), "{e}");
        let e = CloudConfig::parse(r#"{"tenantId":"t","aadClientId":"c"}"#)
            .unwrap()
            .credential("a", "b")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("aadClientSecret") && e.contains("aadClientCertPath"),
            "{e}"
        );
    }

    #[test]
    fn the_cloud_name_selects_endpoints_and_flags_override_them() {
        let c =
            CloudConfig::parse(r#"{"cloud":"AzureChinaCloud","useManagedIdentityExtension":true}"#).unwrap();
        let none = |_: &str| None;
        let conn = c
            .connection(&EndpointOverrides::default(), "http://imds", none)
            .unwrap();
        assert_eq!(conn.endpoint, "https://management.chinacloudapi.cn/");
        assert_eq!(conn.resource, "https://management.chinacloudapi.cn/");
        let c = CloudConfig::parse(
            r#"{"cloud":"AzureUSGovernmentCloud","tenantId":"t","aadClientId":"c","aadClientSecret":"s"}"#,
        )
        .unwrap();
        match c
            .connection(&EndpointOverrides::default(), "i", none)
            .unwrap()
            .credential
        {
            Credential::ClientSecret { authority, .. } => {
                assert_eq!(authority, "https://login.microsoftonline.us/")
            }
            other => panic!("{other:?}"),
        }
        let flags = EndpointOverrides {
            arm: Some("https://127.0.0.1:1".into()),
            aad: Some("https://127.0.0.1:2".into()),
        };
        let conn = c.connection(&flags, "i", none).unwrap();
        assert_eq!(conn.endpoint, "https://127.0.0.1:1");
        // The audience stays the cloud's: the emulator stands in for that cloud's ARM.
        assert_eq!(conn.resource, "https://management.usgovcloudapi.net/");
        match conn.credential {
            Credential::ClientSecret { authority, .. } => assert_eq!(authority, "https://127.0.0.1:2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn azure_stack_reads_the_file_that_the_environment_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env.json");
        std::fs::write(
            &file,
            r#"{"name":"AzureStackCloud","resourceManagerEndpoint":"https://arm.stack/","activeDirectoryEndpoint":"https://aad.stack/adfs/"}"#,
        )
        .unwrap();
        let c =
            CloudConfig::parse(r#"{"cloud":"AzureStackCloud","useManagedIdentityExtension":true}"#).unwrap();
        let path = file.display().to_string();
        let env = |k: &str| (k == ENVIRONMENT_FILEPATH).then(|| path.clone());
        let e = c.endpoints(&EndpointOverrides::default(), env).unwrap();
        assert_eq!(
            (
                e.resource_manager.as_str(),
                e.active_directory.as_str(),
                e.token_audience.as_str()
            ),
            (
                "https://arm.stack/",
                "https://aad.stack/adfs/",
                "https://arm.stack/"
            )
        );
        let err = c
            .endpoints(&EndpointOverrides::default(), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENVIRONMENT_FILEPATH), "{err}");
    }
}
