use std::cmp::Ordering;

use api::{AzureIdentity, AzureIdentityBinding, v1::BEHAVIOR_ANNOTATION, v1::BEHAVIOR_NAMESPACED};

use crate::{PodFacts, Policy};

/// An identity a pod may use, and the binding that grants it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate<'a> {
    pub binding: &'a AzureIdentityBinding,
    pub identity: &'a AzureIdentity,
}

impl Candidate<'_> {
    /// The client id of the identity (either spelling).
    pub fn client_id(&self) -> Option<&str> {
        self.identity.spec.client_id()
    }

    /// The resource id of the identity (either spelling).
    pub fn resource_id(&self) -> Option<&str> {
        self.identity.spec.resource_id()
    }
}

/// Every identity the pod is bound to, in the deterministic order [`choose`] relies on.
///
/// A binding selects the pod when its selector equals the pod's `aadpodidbinding`
/// label (plain string equality, as upstream). Its identity is looked up by name in
/// the binding's namespace. Under [`Policy::namespaced`], or when the identity
/// carries upstream's `aadpodidentity.k8s.io/Behavior: namespaced` annotation, the
/// binding must be in the pod's namespace. hostNetwork pods are never bound.
///
/// Order: oldest binding first (creation time), then binding namespace and name,
/// then identity name, so the first candidate is the same on every node and after
/// every restart.
pub fn candidates<'a>(
    policy: &Policy,
    pod: &PodFacts,
    bindings: impl IntoIterator<Item = &'a AzureIdentityBinding>,
    identities: impl IntoIterator<Item = &'a AzureIdentity> + Clone,
) -> Vec<Candidate<'a>> {
    let Some(label) = pod.binding_label() else {
        return Vec::new();
    };
    if pod.host_network {
        return Vec::new();
    }
    let mut out: Vec<Candidate<'a>> = bindings
        .into_iter()
        .filter(|b| b.spec.selector() == Some(label))
        .filter(|b| !policy.namespaced || namespace_of(&b.metadata) == pod.namespace)
        .filter_map(|binding| {
            let name = binding.spec.azure_identity()?;
            let ns = namespace_of(&binding.metadata);
            let identity = identities
                .clone()
                .into_iter()
                .find(|i| i.metadata.name.as_deref() == Some(name) && namespace_of(&i.metadata) == ns)?;
            let confined = identity
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(BEHAVIOR_ANNOTATION))
                .is_some_and(|v| v == BEHAVIOR_NAMESPACED);
            (!confined || ns == pod.namespace).then_some(Candidate { binding, identity })
        })
        .collect();
    out.sort_by(|a, b| order(a, b));
    out
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

fn order(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    let key = |c: &Candidate<'_>| {
        (
            c.binding.metadata.creation_timestamp.as_ref().map(|t| t.0),
            namespace_of(&c.binding.metadata).to_owned(),
            c.binding.metadata.name.clone(),
            c.identity.metadata.name.clone(),
        )
    };
    // A binding without a creation time (only in tests and hand-built objects) sorts last.
    let (ka, kb) = (key(a), key(b));
    match (ka.0, kb.0) {
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        _ => ka.cmp(&kb),
    }
}

/// Which identity a token request names, from its query parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityRequest {
    /// No `client_id`, `object_id`, `msi_res_id` or `mi_res_id`: the pod's default identity.
    Default,
    ClientId(String),
    /// Matched against the identity's principal (object) id.
    ObjectId(String),
    /// `msi_res_id` (IMDS) or `mi_res_id` (App Service spelling).
    ResourceId(String),
}

/// The outcome of [`choose`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice<'a> {
    pub candidate: Candidate<'a>,
    /// How many identities the pod had to choose from; more than one with [`IdentityRequest::Default`] is worth a log line.
    pub out_of: usize,
}

/// Why no identity was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotChosen {
    /// The pod is bound to no identity at all.
    Unbound,
    /// The pod is bound, but not to the identity the request names.
    NotBound(IdentityRequest),
}

/// Picks the identity a request gets among the pod's candidates (in [`candidates`] order).
///
/// A request naming an identity gets it only if the pod is bound to it; ids are
/// compared case-insensitively (upstream compared client ids exactly at the end,
/// so a differently-cased id waited 80 s and then failed). A request naming none
/// gets the first candidate: the oldest binding. `principal_id` supplies an
/// identity's object id, which the CRD does not carry.
pub fn choose<'a>(
    candidates: &[Candidate<'a>],
    request: &IdentityRequest,
    principal_id: impl Fn(&Candidate<'a>) -> Option<String>,
) -> Result<Choice<'a>, NotChosen> {
    if candidates.is_empty() {
        return Err(NotChosen::Unbound);
    }
    let eq = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
    let found = match request {
        IdentityRequest::Default => candidates.first(),
        IdentityRequest::ClientId(id) => candidates.iter().find(|c| eq(c.client_id(), id)),
        IdentityRequest::ResourceId(id) => candidates.iter().find(|c| eq(c.resource_id(), id)),
        IdentityRequest::ObjectId(id) => candidates.iter().find(|c| eq(principal_id(c).as_deref(), id)),
    };
    found
        .map(|c| Choice {
            candidate: *c,
            out_of: candidates.len(),
        })
        .ok_or_else(|| NotChosen::NotBound(request.clone()))
}

#[cfg(test)]
mod tests;
