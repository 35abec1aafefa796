//! The decisions of federated mode, on plain values: whether a pod is served with its service
//! account's federated identity (and which), and whether a request's identity selector names
//! that identity.
//!
//! The rule for a pod that also carries `aadpodidbinding`: **the binding wins**. Such a pod is
//! served in standard mode, exactly as before it was labelled for federation. Why:
//! - annotating a service account (which many pods may share) never silently switches pods that
//!   already run with a binding to another identity;
//! - MIC keeps assigning identities for bound pods; if NMI served them federated tokens, the
//!   identity would sit on the VM for nothing, the very exposure federated mode removes;
//! - migration is one explicit step per workload: drop the `aadpodidbinding` label.

use k8s_openapi::api::core::v1::ServiceAccount;
use matching::{IdentityRequest, PodFacts};

/// Azure Workload Identity's service-account annotation naming the identity's client id.
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// Its optional annotation naming the identity's tenant (else the cluster's).
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// Its pod label opting the pod in; only the value `"true"` does.
pub const USE_LABEL: &str = "azure.workload.identity/use";
/// The audience Entra requires of federated assertions.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// What NMI keeps of a ServiceAccount: its two annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountFacts {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
}

impl From<&ServiceAccount> for AccountFacts {
    fn from(sa: &ServiceAccount) -> Self {
        let get = |k: &str| {
            sa.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Self {
            client_id: get(CLIENT_ID_ANNOTATION),
            tenant_id: get(TENANT_ID_ANNOTATION),
        }
    }
}

/// The federated identity a pod uses: its service account's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedIdentity {
    pub namespace: String,
    pub service_account: String,
    pub client_id: String,
    pub tenant_id: String,
}

impl FederatedIdentity {
    /// `system:serviceaccount:<ns>:<name>`, the subject of its tokens and of its credential.
    pub fn subject(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// How a pod is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodMode {
    /// Not labelled for federation, or bound with `aadpodidbinding`: bindings decide.
    Standard,
    Federated(FederatedIdentity),
    /// Labelled for federation, but its service account does not name an identity: refused
    /// with this explanation (a pod that opted in must not fall back to another identity).
    Misconfigured(String),
}

/// The service account a pod runs as (Kubernetes' default when the spec names none).
pub fn service_account_of(pod: &PodFacts) -> &str {
    pod.service_account
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Whether `pod` is served in federated mode, given its service account's facts (`None`: the
/// account does not exist) and the cluster's tenant (empty: none configured).
pub fn pod_mode(pod: &PodFacts, account: Option<&AccountFacts>, cluster_tenant: &str) -> PodMode {
    if pod.labels.get(USE_LABEL).map(String::as_str) != Some("true") || pod.binding_label().is_some() {
        return PodMode::Standard;
    }
    let sa = service_account_of(pod);
    let who = format!("pod {}/{}", pod.namespace, pod.name);
    let Some(account) = account else {
        return PodMode::Misconfigured(format!(
            "{who} is labelled {USE_LABEL}=true but its service account {}/{sa} does not exist",
            pod.namespace
        ));
    };
    let Some(client_id) = account.client_id.clone() else {
        return PodMode::Misconfigured(format!(
            "{who} is labelled {USE_LABEL}=true but its service account {}/{sa} has no {CLIENT_ID_ANNOTATION} annotation",
            pod.namespace
        ));
    };
    let tenant_id = match (&account.tenant_id, cluster_tenant) {
        (Some(t), _) => t.clone(),
        (None, t) if !t.is_empty() => t.to_owned(),
        (None, _) => {
            return PodMode::Misconfigured(format!(
                "{who}: service account {}/{sa} has no {TENANT_ID_ANNOTATION} annotation and NMI has no --federated-tenant-id",
                pod.namespace
            ));
        }
    };
    PodMode::Federated(FederatedIdentity {
        namespace: pod.namespace.clone(),
        service_account: sa.to_owned(),
        client_id,
        tenant_id,
    })
}

/// Whether a request's identity selector may be answered with the federated identity's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    Allowed,
    /// `object_id` or `msi_res_id`: only the token (its `oid` / `xms_mirid`) tells.
    CheckToken,
    Refused,
}

pub fn selector(request: &IdentityRequest, identity: &FederatedIdentity) -> Selector {
    match request {
        IdentityRequest::Default => Selector::Allowed,
        IdentityRequest::ClientId(c) if c.eq_ignore_ascii_case(&identity.client_id) => Selector::Allowed,
        IdentityRequest::ClientId(_) => Selector::Refused,
        IdentityRequest::ObjectId(_) | IdentityRequest::ResourceId(_) => Selector::CheckToken,
    }
}

/// For [`Selector::CheckToken`]: whether the token's principal (`oid`) or managed-identity
/// resource id (`xms_mirid`) is the one asked for. ARM ids compare without regard to case.
pub fn token_matches(request: &IdentityRequest, oid: Option<&str>, mirid: Option<&str>) -> bool {
    let same = |a: &str, b: Option<&str>| {
        b.is_some_and(|b| {
            a.trim_end_matches('/')
                .eq_ignore_ascii_case(b.trim_end_matches('/'))
        })
    };
    match request {
        IdentityRequest::ObjectId(o) => same(o, oid),
        IdentityRequest::ResourceId(r) => same(r, mirid),
        IdentityRequest::Default | IdentityRequest::ClientId(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pod(labels: &[(&str, &str)], sa: Option<&str>) -> PodFacts {
        PodFacts {
            namespace: "shop".into(),
            name: "checkout-1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            service_account: sa.map(str::to_owned),
            ..Default::default()
        }
    }

    fn account(client: Option<&str>, tenant: Option<&str>) -> AccountFacts {
        AccountFacts {
            client_id: client.map(str::to_owned),
            tenant_id: tenant.map(str::to_owned),
        }
    }

    #[test]
    fn a_labelled_pod_of_an_annotated_account_is_federated() {
        let m = pod_mode(
            &pod(&[(USE_LABEL, "true")], Some("checkout")),
            Some(&account(Some("cid"), None)),
            "cluster-tenant",
        );
        assert_eq!(
            m,
            PodMode::Federated(FederatedIdentity {
                namespace: "shop".into(),
                service_account: "checkout".into(),
                client_id: "cid".into(),
                tenant_id: "cluster-tenant".into(),
            })
        );
        let PodMode::Federated(f) = m else { unreachable!() };
        assert_eq!(f.subject(), "system:serviceaccount:shop:checkout");
    }

    #[test]
    fn the_accounts_tenant_overrides_the_clusters() {
        let m = pod_mode(
            &pod(&[(USE_LABEL, "true")], None),
            Some(&account(Some("cid"), Some("other-tenant"))),
            "cluster-tenant",
        );
        let PodMode::Federated(f) = m else { panic!("{m:?}") };
        assert_eq!(
            (f.tenant_id.as_str(), f.service_account.as_str()),
            ("other-tenant", "default")
        );
    }

    #[test]
    fn only_the_label_value_true_opts_in() {
        let acct = account(Some("cid"), None);
        for labels in [vec![], vec![(USE_LABEL, "false")], vec![(USE_LABEL, "True ")]] {
            assert_eq!(pod_mode(&pod(&labels, None), Some(&acct), "t"), PodMode::Standard);
        }
    }

    #[test]
    fn a_binding_label_wins_over_federation() {
        let p = pod(&[(USE_LABEL, "true"), ("aadpodidbinding", "legacy")], None);
        assert_eq!(
            pod_mode(&p, Some(&account(Some("cid"), None)), "t"),
            PodMode::Standard
        );
        // An empty binding label selects nothing, so it does not keep the pod from federation.
        let p = pod(&[(USE_LABEL, "true"), ("aadpodidbinding", "")], None);
        assert!(matches!(
            pod_mode(&p, Some(&account(Some("cid"), None)), "t"),
            PodMode::Federated(_)
        ));
    }

    #[test]
    fn an_opted_in_pod_without_an_identity_is_refused_not_downgraded() {
        let p = pod(&[(USE_LABEL, "true")], Some("checkout"));
        let no_account = pod_mode(&p, None, "t");
        assert!(matches!(&no_account, PodMode::Misconfigured(m) if m.contains("does not exist")));
        let unannotated = pod_mode(&p, Some(&account(None, None)), "t");
        assert!(matches!(&unannotated, PodMode::Misconfigured(m) if m.contains(CLIENT_ID_ANNOTATION)));
        let no_tenant = pod_mode(&p, Some(&account(Some("cid"), None)), "");
        assert!(matches!(&no_tenant, PodMode::Misconfigured(m) if m.contains(TENANT_ID_ANNOTATION)));
    }

    #[test]
    fn annotations_are_read_trimmed_and_empty_means_absent() {
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "annotations": {CLIENT_ID_ANNOTATION: " cid ", TENANT_ID_ANNOTATION: ""}}
        }))
        .unwrap();
        assert_eq!(AccountFacts::from(&sa), account(Some("cid"), None));
    }

    #[test]
    fn a_request_must_name_the_accounts_own_identity() {
        let f = FederatedIdentity {
            namespace: "shop".into(),
            service_account: "checkout".into(),
            client_id: "AbC".into(),
            tenant_id: "t".into(),
        };
        assert_eq!(selector(&IdentityRequest::Default, &f), Selector::Allowed);
        assert_eq!(
            selector(&IdentityRequest::ClientId("abc".into()), &f),
            Selector::Allowed
        );
        assert_eq!(
            selector(&IdentityRequest::ClientId("other".into()), &f),
            Selector::Refused
        );
        let by_oid = IdentityRequest::ObjectId("OID-1".into());
        assert_eq!(selector(&by_oid, &f), Selector::CheckToken);
        assert!(token_matches(&by_oid, Some("oid-1"), None));
        assert!(!token_matches(&by_oid, Some("oid-2"), None));
        assert!(!token_matches(&by_oid, None, None));
        let by_id = IdentityRequest::ResourceId("/subscriptions/S/resourceGroups/rg/x/".into());
        assert!(token_matches(
            &by_id,
            None,
            Some("/subscriptions/s/resourcegroups/RG/x")
        ));
        assert!(!token_matches(
            &by_id,
            None,
            Some("/subscriptions/s/resourcegroups/rg/y")
        ));
    }
}
