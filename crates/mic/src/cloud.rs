//! The cloud configuration MIC reads: `/etc/kubernetes/azure.json` on AKS (the
//! fields upstream read), environment variables without it, and overrides for
//! the ARM and Entra endpoints and a CA file (to reach the Azure emulator).

use std::{collections::BTreeSet, path::Path};

use serde::Deserialize;

use crate::{Error, arm::Credential};

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
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading cloud config {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Config(format!("cloud config {}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).or_else(|json_err| {
            serde_saphyr::from_str(text)
                .map_err(|yaml_err| format!("neither JSON ({json_err}) nor YAML ({yaml_err})"))
        })
    }

    /// Upstream's environment variables, for clusters without azure.json.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            cloud: get("CLOUD"),
            tenant_id: get("TENANT_ID"),
            aad_client_id: get("CLIENT_ID"),
            aad_client_secret: get("CLIENT_SECRET"),
            subscription_id: get("SUBSCRIPTION_ID"),
            resource_group: get("RESOURCE_GROUP"),
            use_managed_identity_extension: get("USE_MSI").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            user_assigned_identity_id: get("USER_ASSIGNED_MSI_CLIENT_ID"),
            vm_type: get("VM_TYPE"),
        }
    }

    /// How to authenticate to ARM.
    pub fn credential(&self, authority: &str, imds: &str) -> Result<Credential, Error> {
        if self.use_managed_identity_extension {
            return Ok(Credential::ManagedIdentity {
                imds: imds.to_owned(),
                client_id: self.user_assigned_identity_id.clone().filter(|s| !s.is_empty()),
            });
        }
        let need = |v: &Option<String>, name: &str| {
            v.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
                Error::Config(format!(
                    "the cloud config has no {name} and useManagedIdentityExtension is false"
                ))
            })
        };
        Ok(Credential::ClientSecret {
            authority: authority.to_owned(),
            tenant: need(&self.tenant_id, "tenantId")?,
            client_id: need(&self.aad_client_id, "aadClientId")?,
            secret: need(&self.aad_client_secret, "aadClientSecret")?,
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
}
