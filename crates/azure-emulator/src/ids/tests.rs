use super::*;

#[test]
fn parses_compute_and_identity_paths_case_insensitively() {
    assert_eq!(
        parse_arm_path("/SUBSCRIPTIONS/s/resourcegroups/RG/providers/microsoft.compute/VIRTUALMACHINES/vm1"),
        Ok(ArmPath::VirtualMachine {
            sub: "s".into(),
            rg: "RG".into(),
            name: "vm1".into()
        })
    );
    assert!(matches!(
        parse_arm_path(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss"
        ),
        Ok(ArmPath::ScaleSet { .. })
    ));
    assert!(matches!(parse_identity_id(&identity_id("s", "rg", "id1")), Some((_, _, n)) if n == "id1"));
    assert!(matches!(
        parse_arm_path("/subscriptions/s/providers/Microsoft.Compute/locations/eastus/operations/abc"),
        Ok(ArmPath::Operation { .. })
    ));
}

#[test]
fn refuses_malformed_and_unsupported_paths() {
    assert!(matches!(
        parse_arm_path("/subscriptions/s"),
        Err(PathError::Malformed(_))
    ));
    assert!(matches!(
        parse_arm_path("/subscriptions/s/resourceGroups/rg/vm"),
        Err(PathError::Malformed(_))
    ));
    assert!(matches!(
        parse_arm_path("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x"),
        Err(PathError::UnsupportedType(_))
    ));
    assert!(parse_identity_id("app-identity").is_none());
    assert!(
        parse_identity_id("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v")
            .is_none()
    );
    assert!(parse_identity_id(&identity_id("s", "rg", "a:b")).is_none());
}

#[test]
fn keys_ignore_case_and_trailing_slash() {
    assert_eq!(key("/Subscriptions/S/x/"), key("/subscriptions/s/X"));
}
