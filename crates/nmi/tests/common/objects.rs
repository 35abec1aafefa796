//! Kubernetes objects as the tests create them: from JSON literals, and pods reported Running
//! as a kubelet would. Free functions, for the tests that run NMI as a binary; [`super::Env`]
//! uses them too.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

/// An object `Env::create_in` can create: namespaced, and readable from a JSON literal.
pub trait Namespaced:
    kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType: Default>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType: Default>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

/// Creates `value`, a JSON literal of a namespaced object, in `ns`.
pub async fn create_in<K: Namespaced>(client: &Client, ns: &str, value: Value) -> K {
    let obj: K = serde_json::from_value(value).expect("a valid object literal");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("the apiserver accepts the object")
}

/// Creates a pod on `node` and reports it Running at `ip`, as a kubelet would, without waiting for
/// anyone to see it.
pub async fn running_pod(
    client: &Client,
    ns: &str,
    name: &str,
    node: &str,
    ip: &str,
    labels: Value,
    host_network: bool,
) {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "hostNetwork": host_network,
                 "containers": [{"name": "app", "image": "app"}]}
    }))
    .expect("a valid pod literal");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("the apiserver accepts the pod");
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})),
    )
    .await
    .expect("the apiserver accepts the pod's status");
}
