//! Whether the owner of a user-assigned identity lets a namespace use it: a pure decision over
//! what ARM says of the identity ([`Read`]) and what a namespace's `AzureIdentity` claims.
//!
//! An `AzureIdentity` is only a claim: anyone who may write one in their namespace can put
//! another team's `clientID` and `resourceID` in it. So MIC authorizes on what the identity's
//! owner declared in Azure, where only they can write (as a federated credential does for
//! workload identity):
//! - the `clientID` must be the `clientId` ARM reports for the `resourceID` (otherwise NMI
//!   would be asked for one identity while MIC checked another);
//! - the identity's tag [`NAMESPACES_TAG`] (and any tag whose name starts with it, for lists
//!   longer than a tag value's 256 characters) must list the namespace, or be `*`. Tag names
//!   cannot hold `/`, so the tag cannot be named `aadpodidentity.k8s.io/...`.
//!
//! Writing a tag needs `Microsoft.Resources/tags/write` on the identity (Tag Contributor,
//! Contributor or Owner): the identity's owner, never the cluster (MIC's Managed Identity
//! Operator role only reads identities). The I/O is apart: [`ArmClient::read_identity`] reads an
//! identity, and MIC's `controller::consent` caches the reads and reads again on a schedule;
//! `kubectl pod-identity check` reads and decides as MIC does, with this module.
//!
//! [`ArmClient::read_identity`]: crate::ArmClient::read_identity

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The tag on a user-assigned identity that lists the namespaces allowed to use it.
pub const NAMESPACES_TAG: &str = "pod-identity-namespaces";

/// Which namespaces an identity's owner allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `*`: every namespace.
    All,
    /// These namespaces (possibly none).
    Namespaces(BTreeSet<String>),
}

impl Grant {
    /// From an identity's tags: every tag named [`NAMESPACES_TAG`] or starting with it (tag
    /// names compare case-insensitively in ARM), each a comma-separated list.
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Self {
        let mut namespaces = BTreeSet::new();
        let prefix = NAMESPACES_TAG.to_ascii_lowercase();
        for (name, value) in tags {
            if !name.to_ascii_lowercase().starts_with(&prefix) {
                continue;
            }
            for ns in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if ns == "*" {
                    return Self::All;
                }
                namespaces.insert(ns.to_owned());
            }
        }
        Self::Namespaces(namespaces)
    }

    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Namespaces(n) => n.contains(namespace),
        }
    }

    /// The tag value that adds `missing` to this grant (what the owner runs to consent).
    fn with(&self, missing: &BTreeSet<&str>) -> String {
        match self {
            Self::All => "*".to_owned(),
            Self::Namespaces(n) => {
                let all: BTreeSet<&str> = n
                    .iter()
                    .map(String::as_str)
                    .chain(missing.iter().copied())
                    .collect();
                all.into_iter().collect::<Vec<_>>().join(",")
            }
        }
    }
}

/// What ARM says of a user-assigned identity, as far as consent goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityFacts {
    /// Lower-cased.
    pub client_id: String,
    pub grant: Grant,
}

impl IdentityFacts {
    /// From ARM's identity body: `properties.clientId` (the 2018+ shape; `clientId` at the top
    /// level as some older answers have it) and `tags`.
    pub fn from_arm(body: &Value) -> Option<Self> {
        let client_id = body["properties"]["clientId"]
            .as_str()
            .or_else(|| body["clientId"].as_str())?
            .to_ascii_lowercase();
        let tags: BTreeMap<String, String> = body["tags"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            client_id,
            grant: Grant::from_tags(&tags),
        })
    }
}

/// The latest read of an identity from ARM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Facts(IdentityFacts),
    /// ARM answered 404: there is no such identity.
    NotFound,
    /// No usable answer (403, 5xx after retries, no token, a body without a client id), and no
    /// earlier answer to fall back on.
    Failed(String),
}

/// What an `AzureAssignedIdentity` records when its identity may not be assigned: `reason`
/// and `message` of its status, and the Event's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

pub use api::v1::{REASON_CLIENT_ID_MISMATCH, REASON_CONSENT_MISSING, REASON_NOT_FOUND};
/// Not one of [`api::v1::REFUSAL_REASONS`]: a failed read is retried, so NMI keeps holding.
pub const REASON_READ_FAILED: &str = "IdentityReadFailed";

/// Whether an assignment may go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Not read yet: nothing is decided for the assignment until it is (a new one waits; an
    /// existing one stays as it is, so a restarted MIC does not flap what works).
    Unknown,
    Refused(Refusal),
}

/// One assignment's claim: the identity as the `AzureIdentity` names it, and the namespaces
/// that would act as it (the identity's own and the pod's; they differ only with
/// cross-namespace matching).
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    pub resource_id: &'a str,
    pub client_id: Option<&'a str>,
    /// The `AzureIdentity`'s name and namespace (messages name it `<namespace>/<name>`, formatted
    /// only for a refusal: MIC decides every assignment on every plan).
    pub identity_name: &'a str,
    pub identity_namespace: &'a str,
    pub pod_namespace: &'a str,
}

/// `<namespace>/<name>`, written only when a message is.
#[derive(Clone, Copy)]
struct QualifiedName<'a> {
    namespace: &'a str,
    name: &'a str,
}

impl std::fmt::Display for QualifiedName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Decides an assignment from the identity's latest read (`None`: not read yet).
pub fn verdict(claim: &Claim<'_>, read: Option<&Read>) -> Verdict {
    let Claim {
        resource_id,
        client_id,
        identity_name,
        identity_namespace,
        pod_namespace,
    } = *claim;
    let identity = QualifiedName {
        namespace: identity_namespace,
        name: identity_name,
    };
    let facts = match read {
        None => return Verdict::Unknown,
        Some(Read::Facts(f)) => f,
        Some(Read::NotFound) => {
            return refuse(
                REASON_NOT_FOUND,
                format!("AzureIdentity {identity}: ARM has no identity {resource_id}; check resourceID"),
            );
        }
        Some(Read::Failed(why)) => {
            return refuse(
                REASON_READ_FAILED,
                format!(
                    "AzureIdentity {identity}: reading identity {resource_id} from ARM failed ({why}); \
                     MIC assigns no identity whose owner's consent it cannot read (MIC needs \
                     Microsoft.ManagedIdentity/userAssignedIdentities/read, part of Managed Identity Operator)"
                ),
            );
        }
    };
    let claimed = client_id.unwrap_or_default();
    if !claimed.eq_ignore_ascii_case(&facts.client_id) {
        return refuse(
            REASON_CLIENT_ID_MISMATCH,
            format!(
                "AzureIdentity {identity}: clientID {claimed:?} is not the clientId of {resource_id} \
                 ({}); set clientID to {}",
                facts.client_id, facts.client_id
            ),
        );
    }
    let missing: BTreeSet<&str> = [identity_namespace, pod_namespace]
        .into_iter()
        .filter(|ns| !facts.grant.allows(ns))
        .collect();
    if missing.is_empty() {
        return Verdict::Allowed;
    }
    let listed = missing.iter().copied().collect::<Vec<_>>().join(", ");
    refuse(
        REASON_CONSENT_MISSING,
        format!(
            "AzureIdentity {identity}: the owner of identity {resource_id} has not allowed namespace {listed} \
             to use it (tag {NAMESPACES_TAG}); the owner grants it with: {}",
            grant_command(resource_id, &facts.grant, &missing)
        ),
    )
}

fn refuse(reason: &'static str, message: String) -> Verdict {
    Verdict::Refused(Refusal { reason, message })
}

/// The `az` command that adds `missing` to the identity's grant, keeping what it allows.
pub fn grant_command(resource_id: &str, grant: &Grant, missing: &BTreeSet<&str>) -> String {
    format!(
        "az tag update --resource-id {resource_id} --operation Merge --tags {NAMESPACES_TAG}={}",
        grant.with(missing)
    )
}

#[cfg(test)]
mod tests;
