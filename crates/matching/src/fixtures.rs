//! Builders for plain test values.
use std::collections::BTreeMap;

use api::{
    AzureIdentity, AzureIdentityBinding, AzureIdentityBindingSpec, AzureIdentitySpec,
    AzurePodIdentityException, AzurePodIdentityExceptionSpec, LabelValue,
};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};

use crate::PodFacts;

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

pub fn pod(ns: &str, name: &str, label: Option<&str>) -> PodFacts {
    PodFacts {
        namespace: ns.into(),
        name: name.into(),
        labels: label
            .map(|l| BTreeMap::from([("aadpodidbinding".to_owned(), l.to_owned())]))
            .unwrap_or_default(),
        node: Some("node-0".into()),
        ip: Some("10.244.0.5".into()),
        host_network: false,
        phase: Some("Running".into()),
        ..Default::default()
    }
}

pub fn identity(ns: &str, name: &str, client_id: &str) -> AzureIdentity {
    let mut id = AzureIdentity::new(
        name,
        AzureIdentitySpec {
            type_: Some(0),
            resource_id: Some(format!(
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
            )),
            client_id: Some(client_id.into()),
            ..Default::default()
        },
    );
    id.metadata = meta(ns, name);
    id
}

/// A binding created `age_secs` seconds after the epoch: larger is younger.
pub fn binding(ns: &str, name: &str, identity: &str, selector: &str, created: i64) -> AzureIdentityBinding {
    let mut b = AzureIdentityBinding::new(
        name,
        AzureIdentityBindingSpec {
            azure_identity: Some(identity.into()),
            selector: Some(selector.into()),
            ..Default::default()
        },
    );
    b.metadata = meta(ns, name);
    b.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
    b
}

pub fn exception(ns: &str, labels: &[(&str, &str)]) -> AzurePodIdentityException {
    let mut e = AzurePodIdentityException::new(
        "exception",
        AzurePodIdentityExceptionSpec {
            pod_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), LabelValue::from(*v)))
                    .collect(),
            ),
            legacy_pod_labels: None,
        },
    );
    e.metadata = meta(ns, "exception");
    e
}
