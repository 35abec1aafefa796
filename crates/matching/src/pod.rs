use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// What the rules need to know about a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub node: Option<String>,
    pub ip: Option<String>,
    pub host_network: bool,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: Option<String>,
    /// For NMI's federated mode, which asks for a token of the pod's service account bound to
    /// this very pod (name and UID).
    pub uid: Option<String>,
    pub service_account: Option<String>,
}

impl PodFacts {
    /// The value of the pod's `aadpodidbinding` label, when it has a non-empty one.
    pub fn binding_label(&self) -> Option<&str> {
        self.labels
            .get(api::v1::BINDING_LABEL)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether a request from this pod's IP may be attributed to it: a pod that shares the
    /// node's network stack has the node's IP, so its requests cannot be told from the node's.
    pub fn is_addressable(&self) -> bool {
        !self.host_network && matches!(self.phase.as_deref(), Some("Pending" | "Running"))
    }
}

impl From<&Pod> for PodFacts {
    fn from(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()),
            ip: status.and_then(|s| s.pod_ip.clone()),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            phase: status.and_then(|s| s.phase.clone()),
            uid: pod.metadata.uid.clone(),
            service_account: spec.and_then(|s| s.service_account_name.clone()),
        }
    }
}
