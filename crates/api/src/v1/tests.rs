use super::*;

#[test]
fn reads_the_seed_spellings() {
    let spec: AzureIdentitySpec = serde_json::from_value(serde_json::json!({
        "type": 0,
        "ResourceID": "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
        "ClientID": "00000000-0000-0000-0000-000000000001",
    }))
    .unwrap();
    assert_eq!(spec.identity_type(), Ok(IdentityType::UserAssignedMsi));
    assert_eq!(
        spec.resource_id(),
        Some(
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
        )
    );
    assert_eq!(spec.client_id(), Some("00000000-0000-0000-0000-000000000001"));

    let binding: AzureIdentityBindingSpec =
        serde_json::from_value(serde_json::json!({"AzureIdentity": "id1", "Selector": "app"})).unwrap();
    assert_eq!(binding.azure_identity(), Some("id1"));
    assert_eq!(binding.selector(), Some("app"));
}

#[test]
fn camel_case_wins_and_empty_means_unset() {
    let spec = AzureIdentitySpec {
        client_id: Some("a".into()),
        legacy_client_id: Some("b".into()),
        resource_id: Some(String::new()),
        legacy_resource_id: Some("r".into()),
        ..Default::default()
    };
    assert_eq!(spec.client_id(), Some("a"));
    assert_eq!(spec.resource_id(), Some("r"));
}

#[test]
fn identity_type_defaults_to_zero_and_reports_unknown_codes() {
    assert_eq!(
        AzureIdentitySpec::default().identity_type(),
        Ok(IdentityType::UserAssignedMsi)
    );
    let spec = AzureIdentitySpec {
        type_: Some(5),
        ..Default::default()
    };
    assert_eq!(spec.identity_type(), Err(5));
    for t in [
        IdentityType::UserAssignedMsi,
        IdentityType::ServicePrincipal,
        IdentityType::ServicePrincipalCertificate,
    ] {
        assert_eq!(IdentityType::from_code(t.code()), Some(t));
    }
}

#[test]
fn exception_labels_accept_yaml_scalars() {
    let spec: AzurePodIdentityExceptionSpec = serde_json::from_value(serde_json::json!({
        "PodLabels": {"noaad": true, "tier": 3, "app": "web", "odd": {"x": 1}}
    }))
    .unwrap();
    let labels: Vec<_> = spec.pod_labels().collect();
    assert_eq!(labels, vec![("app", "web"), ("noaad", "true"), ("tier", "3")]);
}

#[test]
fn assigned_identity_name_and_legacy_state() {
    assert_eq!(AzureAssignedIdentity::object_name("p", "ns", "id"), "p-ns-id");
    let mut aai = AzureAssignedIdentity::new("x", AzureAssignedIdentitySpec::default());
    assert_eq!(aai.state(), AssignmentState::Assigned);
    // Our MIC created it and its status write has not landed: not assigned yet.
    let entry = |manager: &str| k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some("Update".into()),
        ..Default::default()
    };
    aai.metadata.managed_fields = Some(vec![entry("kubectl-client-side-apply")]);
    assert_eq!(aai.state(), AssignmentState::Assigned);
    aai.metadata.managed_fields = Some(vec![entry("kubectl-client-side-apply"), entry(MIC_FIELD_MANAGER)]);
    assert_eq!(aai.state(), AssignmentState::Created);
    aai.status = Some(AzureAssignedIdentityStatus {
        status: Some(AssignmentState::Assigned),
        available_replicas: Some(1),
        ..Default::default()
    });
    assert_eq!(aai.state(), AssignmentState::Assigned);
}

#[test]
fn writes_only_camel_case() {
    let spec = AzureIdentitySpec {
        client_id: Some("c".into()),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&spec).unwrap(),
        serde_json::json!({"clientID": "c"})
    );
}

#[test]
fn copies_in_upstream_spelling_say_only_camel_case() {
    let spec: AzureIdentitySpec = serde_json::from_value(serde_json::json!({
        "type": 1,
        "ClientID": "00000000-0000-0000-0000-000000000001",
        "TenantID": "t",
        "ClientPassword": {"name": "s", "namespace": "n"},
        "adEndpoint": "https://login.example/",
    }))
    .unwrap();
    let copy = serde_json::to_value(spec.in_upstream_spelling()).unwrap();
    assert_eq!(
        copy,
        serde_json::json!({
            "type": 1,
            "clientID": "00000000-0000-0000-0000-000000000001",
            "tenantID": "t",
            "clientPassword": {"name": "s", "namespace": "n"},
            "adEndpoint": "https://login.example/",
        })
    );
    // camelCase wins where both are set, as the accessors read it.
    let both = AzureIdentitySpec {
        resource_id: Some("/a".into()),
        legacy_resource_id: Some("/b".into()),
        ..Default::default()
    };
    assert_eq!(both.in_upstream_spelling().resource_id.as_deref(), Some("/a"));
    assert_eq!(both.in_upstream_spelling().legacy_resource_id, None);

    let binding: AzureIdentityBindingSpec =
        serde_json::from_value(serde_json::json!({"AzureIdentity": "id1", "Selector": "app", "weight": 2}))
            .unwrap();
    assert_eq!(
        serde_json::to_value(binding.in_upstream_spelling()).unwrap(),
        serde_json::json!({"azureIdentity": "id1", "selector": "app", "weight": 2})
    );
}
