use super::*;

#[test]
fn a_node_without_an_azure_provider_id_has_no_target() {
    let mut node = Node::default();
    assert_eq!(node_target(&node), NodeTarget::NoProviderId);
    node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        provider_id: Some("kind://docker/kind/kind-control-plane".into()),
        ..Default::default()
    });
    assert!(
        matches!(node_target(&node), NodeTarget::NotAzure(bad) if bad.0.contains("kind://")),
        "{:?}",
        node_target(&node)
    );
    assert_eq!(node_target(&node).target(), None);
    node.spec.as_mut().unwrap().provider_id = Some(
        "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1".into(),
    );
    assert_eq!(node_target(&node).target().unwrap().name, "vm-1");
}

#[test]
fn copies_of_identities_leave_managed_fields_and_last_applied_behind() {
    let mut id = AzureIdentity::new("x", Default::default());
    id.metadata.managed_fields = Some(vec![Default::default()]);
    id.metadata.annotations = Some(
        [
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                "{}".to_owned(),
            ),
            ("team".to_owned(), "a".to_owned()),
        ]
        .into(),
    );
    let id = pruned(id);
    assert_eq!(id.metadata.managed_fields, None);
    assert_eq!(
        id.metadata.annotations.unwrap().keys().collect::<Vec<_>>(),
        ["team"]
    );
}
