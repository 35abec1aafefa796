//! The world file: what exists in the emulated Azure before the first request.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    ids,
};

mod settings;
use settings::default_listen;
pub use settings::{AdminSettings, ArmSettings, Bucket, EntraSettings, ImdsSettings, TlsSettings};

/// Everything the emulator serves, as read from the world YAML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    pub tenant_id: String,
    #[serde(default = "default_location")]
    pub location: String,
    pub subscriptions: Vec<Subscription>,
    #[serde(default)]
    pub identities: Vec<IdentitySpec>,
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    #[serde(default)]
    pub vmss: Vec<VmssSpec>,
    #[serde(default)]
    pub service_principals: Vec<ServicePrincipalSpec>,
    #[serde(default)]
    pub oidc_issuers: Vec<OidcIssuerSpec>,
    #[serde(default)]
    pub arm: ArmSettings,
    #[serde(default)]
    pub entra: EntraSettings,
    #[serde(default)]
    pub imds: ImdsSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub tls: TlsSettings,
    /// Let ARM, Entra and IMDS listen on addresses other than loopback. Only for a network of
    /// namespaces of your own (the sandbox): on a shared network anyone could mint tokens. The
    /// admin API stays on loopback regardless.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

fn default_location() -> String {
    "eastus".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub id: String,
    #[serde(default)]
    pub resource_groups: Vec<String>,
}

/// A user-assigned managed identity. Its ARM id is derived from subscription, group and name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    pub name: String,
    /// Defaults to the first subscription.
    #[serde(default)]
    pub subscription: Option<String>,
    pub resource_group: String,
    pub client_id: String,
    pub principal_id: String,
    /// Identities this identity itself may assign (when it is the caller of ARM, as MIC may be).
    #[serde(default)]
    pub may_assign: Vec<String>,
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredentialSpec>,
    /// The identity's ARM tags, under Azure's limits (see [`crate::tags`]).
    #[serde(default)]
    pub tags: crate::tags::Tags,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: String,
    #[serde(default)]
    pub subscription: Option<String>,
    pub resource_group: String,
    /// The Kubernetes node this VM backs.
    pub node: String,
    #[serde(default)]
    pub system_assigned: bool,
    /// Principal id of the system-assigned identity; generated when absent.
    #[serde(default)]
    pub system_principal_id: Option<String>,
    /// Identities assigned at start, as names of `identities` or full resource ids.
    #[serde(default)]
    pub user_assigned: Vec<String>,
    /// Where this VM's IMDS listens; defaults to 127.0.0.1 on a free port.
    #[serde(default = "default_listen")]
    pub imds: SocketAddr,
    /// Overrides `arm.operation_latency_ms` for writes to this VM.
    #[serde(default)]
    pub operation_latency_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmssSpec {
    pub name: String,
    #[serde(default)]
    pub subscription: Option<String>,
    pub resource_group: String,
    #[serde(default)]
    pub system_assigned: bool,
    #[serde(default)]
    pub system_principal_id: Option<String>,
    #[serde(default)]
    pub user_assigned: Vec<String>,
    /// Overrides `arm.operation_latency_ms`; real scale sets take 20-60 s.
    #[serde(default)]
    pub operation_latency_ms: Option<u64>,
    pub instances: Vec<VmssInstanceSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmssInstanceSpec {
    /// Instance name as IMDS reports it, e.g. `pool_0`.
    pub name: String,
    pub node: String,
    #[serde(default = "default_listen")]
    pub imds: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePrincipalSpec {
    pub name: String,
    pub client_id: String,
    /// Generated when absent.
    #[serde(default)]
    pub object_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// PEM of the certificate whose key signs client assertions.
    #[serde(default)]
    pub certificate_pem: Option<String>,
    /// Same, read from a file (relative paths are relative to the world file).
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// Identity names or resource ids this principal may assign to VMs; `*` for all. The
    /// equivalent of holding "Managed Identity Operator" on them.
    #[serde(default)]
    pub may_assign: Vec<String>,
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredentialSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredentialSpec {
    pub issuer: String,
    pub subject: String,
    #[serde(default = "default_fic_audience")]
    pub audience: String,
}

fn default_fic_audience() -> String {
    "api://AzureADTokenExchange".into()
}

/// An external OIDC issuer (e.g. a cluster's service-account issuer) whose tokens Entra accepts as
/// jwt-bearer client assertions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerSpec {
    pub issuer: String,
    /// A JWKS document (`{"keys":[...]}`) with RSA keys.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Without `jwks` or `jwks_file`, Entra fetches the issuer's keys from its OIDC discovery
    /// (`{issuer}/.well-known/openid-configuration`), trusting this CA (PEM) besides none other:
    /// a cluster's apiserver has a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl World {
    pub fn from_yaml(text: &str) -> Result<Self> {
        serde_saphyr::from_str(text).map_err(|e| Error::Config(format!("world YAML: {e}")))
    }

    /// Reads a world file; relative certificate and JWKS paths are resolved against its folder.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
        let mut world = Self::from_yaml(&text)?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        for sp in &mut world.service_principals {
            if let Some(f) = &mut sp.certificate_file
                && f.is_relative()
            {
                *f = base.join(&*f);
            }
        }
        for iss in &mut world.oidc_issuers {
            for f in [&mut iss.jwks_file, &mut iss.ca_file].into_iter().flatten() {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        Ok(world)
    }

    pub(crate) fn default_subscription(&self) -> Result<&str> {
        self.subscriptions
            .first()
            .map(|s| s.id.as_str())
            .ok_or_else(|| Error::Config("the world needs at least one subscription".into()))
    }

    /// Checks references between the parts of the world, so mistakes show at start.
    pub fn validate(&self) -> Result<()> {
        let sub = self.default_subscription()?;
        let known_sub = |s: &Option<String>| -> Result<()> {
            match s {
                Some(s) if !self.subscriptions.iter().any(|x| x.id.eq_ignore_ascii_case(s)) => {
                    Err(Error::Config(format!("unknown subscription {s}")))
                }
                _ => Ok(()),
            }
        };
        let mut seen = std::collections::HashSet::new();
        for id in &self.identities {
            known_sub(&id.subscription)?;
            let rid = ids::identity_id(
                id.subscription.as_deref().unwrap_or(sub),
                &id.resource_group,
                &id.name,
            );
            if !seen.insert(rid.to_ascii_lowercase()) {
                return Err(Error::Config(format!("identity {rid} is declared twice")));
            }
            crate::tags::replacement(&id.tags)
                .map_err(|e| Error::Config(format!("tags of identity {}: {e}", id.name)))?;
        }
        let mut nodes = std::collections::HashSet::new();
        for vm in &self.vms {
            known_sub(&vm.subscription)?;
            if !nodes.insert(vm.node.clone()) {
                return Err(Error::Config(format!("node {} is backed twice", vm.node)));
            }
        }
        for ss in &self.vmss {
            known_sub(&ss.subscription)?;
            for inst in &ss.instances {
                if !nodes.insert(inst.node.clone()) {
                    return Err(Error::Config(format!("node {} is backed twice", inst.node)));
                }
            }
        }
        for sp in &self.service_principals {
            if sp.client_secret.is_none()
                && sp.certificate_pem.is_none()
                && sp.certificate_file.is_none()
                && sp.federated_credentials.is_empty()
            {
                return Err(Error::Config(format!(
                    "service principal {} has no secret, certificate or federated credential",
                    sp.name
                )));
            }
        }
        for iss in &self.oidc_issuers {
            if iss.jwks.is_none() && iss.jwks_file.is_none() && !iss.issuer.starts_with("https://") {
                return Err(Error::Config(format!(
                    "OIDC issuer {} needs jwks or jwks_file, or an https URL to fetch its discovery from",
                    iss.issuer
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
