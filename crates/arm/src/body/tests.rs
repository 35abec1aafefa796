use super::*;

fn id(n: usize) -> String {
    format!(
        "/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/id{n}"
    )
}

fn state(system: bool, ids: &[usize]) -> IdentityState {
    IdentityState {
        system_assigned: system,
        user_assigned: ids.iter().map(|n| (id(*n), UserIdentity::default())).collect(),
        provisioning_state: Some("Succeeded".into()),
    }
}

fn change(add: &[usize], remove: &[usize]) -> TargetChange {
    TargetChange {
        add: add.iter().map(|n| id(*n)).collect(),
        remove: remove.iter().map(|n| id(*n)).collect(),
    }
}

#[test]
fn reads_a_get_in_any_case() {
    let body = json!({
        "identity": {"type": "SystemAssigned, UserAssigned", "principalId": "p",
            "userAssignedIdentities": {
                "/subscriptions/S/resourceGroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ID1":
                    {"principalId": "p1", "clientId": "C1"}}},
        "properties": {"provisioningState": "Succeeded"}
    });
    let s = IdentityState::from_resource(&body);
    assert!(s.system_assigned);
    assert_eq!(s.ids(), [id(1)].into());
    assert_eq!(s.user_assigned[&id(1)].client_id.as_deref(), Some("C1"));
    assert_eq!(s.ids_with_client_ids(&["c1".to_owned()].into()), [id(1)].into());
    assert_eq!(IdentityState::from_resource(&json!({})), IdentityState::default());
}

#[test]
fn sends_only_the_delta_with_the_right_type() {
    assert_eq!(
        patch_bodies(&state(false, &[1]), &change(&[2], &[1])),
        [json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {id(2): {}, id(1): null}}})]
    );
    assert_eq!(
        patch_bodies(&state(true, &[]), &change(&[1], &[])),
        [
            json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {id(1): {}}}})
        ]
    );
}

#[test]
fn removing_the_last_identity_keeps_the_system_one() {
    assert_eq!(
        patch_bodies(&state(true, &[1]), &change(&[], &[1])),
        [json!({"identity": {"type": "SystemAssigned"}})]
    );
    assert_eq!(
        patch_bodies(&state(false, &[1]), &change(&[], &[1])),
        [json!({"identity": {"type": "None"}})]
    );
}

#[test]
fn nothing_to_do_sends_nothing() {
    assert!(patch_bodies(&state(false, &[1]), &change(&[1], &[2])).is_empty());
}

#[test]
fn at_most_150_changes_per_request() {
    let adds: Vec<usize> = (0..320).collect();
    let bodies = patch_bodies(&state(false, &[]), &change(&adds, &[]));
    let sizes: Vec<usize> = bodies
        .iter()
        .map(|b| b["identity"]["userAssignedIdentities"].as_object().unwrap().len())
        .collect();
    assert_eq!(sizes, [150, 150, 20]);
}

#[test]
fn authorization_errors_name_the_identities_to_drop() {
    let e = ArmError::parse(
        403,
        &json!({"error": {"code": "LinkedAuthorizationFailed", "message": format!(
            "The client 'c' with object id 'o' has permission to perform action 'Microsoft.Compute/virtualMachineScaleSets/write' on scope 'x'; however, it does not have permission to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{}' or the linked scope(s) are invalid.",
            id(7).replace("resourcegroups", "resourceGroups"))}})
        .to_string(),
    );
    assert_eq!(e.code, "LinkedAuthorizationFailed");
    assert_eq!(e.blamed_identities(), [id(7)].into());
    let throttled = ArmError::parse(429, r#"{"error":{"code":"TooManyRequests","message":"x"}}"#);
    assert!(throttled.blamed_identities().is_empty());
    let garbage = ArmError::parse(502, "<html>bad gateway</html>");
    assert_eq!(garbage.code, "HTTP502");
}

#[test]
fn applying_the_bodies_yields_the_target_set() {
    let start = state(true, &[1, 2]);
    let c = change(&(3..200).collect::<Vec<_>>(), &[1]);
    let mut s = start.clone();
    for b in patch_bodies(&start, &c) {
        s.apply(&b);
    }
    let mut want: BTreeSet<String> = (2..200).map(id).collect();
    want.insert(id(2));
    assert_eq!(s.ids(), want);
    let mut emptied = state(true, &[1]);
    for b in patch_bodies(&emptied.clone(), &change(&[], &[1])) {
        emptied.apply(&b);
    }
    assert!(emptied.ids().is_empty());
}
