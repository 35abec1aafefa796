//! The `consent` link: every identity in use that MIC would refuse because its owner has not
//! allowed the namespaces using it (`arm::consent`, the rule MIC applies), so that an upgrade
//! from a MIC that did not check (upstream's, or ours with `--identity-consent=false`) breaks
//! nobody by surprise.

use std::collections::{BTreeMap, BTreeSet};

use api::{AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, IdentityType};
use arm::consent::{Claim, Read, Verdict, verdict};

use crate::{explain::name_of, report::Link};

/// What ARM said of the identities in use, or why it was not asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsentReads {
    NotRead(String),
    /// By lower-cased resource id.
    Read(BTreeMap<String, Read>),
}

/// An identity in use: named by a binding in its namespace, or by an AzureAssignedIdentity.
#[derive(Clone, Debug)]
pub struct InUse<'a> {
    pub identity: &'a AzureIdentity,
    /// The identity's own resource id, as written.
    pub resource_id: &'a str,
    /// The namespaces of the pods using it (the identity's own, with namespaced matching).
    pub pod_namespaces: BTreeSet<String>,
}

/// The user-assigned identities in use, for the shell to read from ARM.
pub fn in_use<'a>(
    identities: &'a [AzureIdentity],
    bindings: &[AzureIdentityBinding],
    assigned: &[AzureAssignedIdentity],
) -> Vec<InUse<'a>> {
    identities
        .iter()
        .filter(|i| i.spec.identity_type() == Ok(IdentityType::UserAssignedMsi))
        .filter_map(|i| {
            let (ns, name) = (i.metadata.namespace.as_deref(), i.metadata.name.as_deref());
            let bound = bindings
                .iter()
                .any(|b| b.metadata.namespace.as_deref() == ns && b.spec.azure_identity() == name);
            let mut pod_namespaces: BTreeSet<String> = assigned
                .iter()
                .filter(|a| {
                    a.spec.azure_identity_ref.as_ref().is_some_and(|r| {
                        r.metadata.name.as_deref() == name && r.metadata.namespace.as_deref() == ns
                    })
                })
                .map(|a| a.spec.pod_namespace.clone())
                .collect();
            if !bound && pod_namespaces.is_empty() {
                return None;
            }
            pod_namespaces.insert(ns.unwrap_or_default().to_owned());
            Some(InUse {
                identity: i,
                resource_id: i.spec.resource_id()?,
                pod_namespaces,
            })
        })
        .collect()
}

pub fn consent_link(in_use: &[InUse<'_>], reads: &ConsentReads) -> Link {
    let reads = match reads {
        ConsentReads::NotRead(why) => {
            return Link::unchecked("consent", "identity owners' consent", why.clone());
        }
        ConsentReads::Read(r) => r,
    };
    let mut refused = Vec::new();
    let mut fixes = BTreeSet::new();
    for u in in_use {
        let name = name_of(&u.identity.metadata);
        let own = u.identity.metadata.namespace.as_deref().unwrap_or_default();
        for pod_ns in &u.pod_namespaces {
            let claim = Claim {
                resource_id: u.resource_id,
                client_id: u.identity.spec.client_id(),
                identity_name: u.identity.metadata.name.as_deref().unwrap_or_default(),
                identity_namespace: own,
                pod_namespace: pod_ns,
            };
            if let Verdict::Refused(r) = verdict(&claim, reads.get(&u.resource_id.to_ascii_lowercase())) {
                refused.push(format!("{name} (pods in {pod_ns}): {}: {}", r.reason, r.message));
                fixes.insert(crate::fix::assignment_fix(r.reason, &r.message, u.resource_id));
            }
        }
    }
    if refused.is_empty() {
        return Link::pass(
            "consent",
            format!(
                "{} user-assigned identity(s) in use, each allowed by its owner for the namespaces using it",
                in_use.len()
            ),
        );
    }
    fixes.insert(
        "or, on a cluster that trusts everyone who may write an AzureIdentity, run MIC with --identity-consent=false"
            .to_owned(),
    );
    Link::fail(
        "consent",
        format!(
            "{} use(s) of identities MIC refuses (or will, once upgraded): their owners have not consented",
            refused.len()
        ),
        fixes.into_iter().collect::<Vec<_>>().join("; "),
    )
    .facts(refused)
}
