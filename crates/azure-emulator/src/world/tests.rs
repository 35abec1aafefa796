use super::*;

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/emulator/world.yaml"
    ))
    .unwrap()
}

#[test]
fn example_world_parses_with_documented_defaults() {
    let w = World::from_yaml(&example()).unwrap();
    w.validate().unwrap();
    assert_eq!(w.vms.len(), 1);
    assert_eq!(w.vmss[0].instances.len(), 2);
    assert!(w.imds.rate_limit);
    assert_eq!((w.imds.requests_per_second, w.imds.max_concurrent), (20, 5));
    assert_eq!((w.arm.write_bucket.size, w.arm.read_bucket.size), (200, 250));
}

#[test]
fn minimal_world_gets_defaults() {
    let w = World::from_yaml("tenant_id: t\nsubscriptions: [{id: s}]\n").unwrap();
    w.validate().unwrap();
    assert_eq!(w.arm.operation_latency_ms, 300);
    assert!(w.tls.enabled);
    assert_eq!(w.location, "eastus");
}

#[test]
fn unknown_fields_are_errors() {
    let err = World::from_yaml(
        "tenant_id: t\nsubscriptions: [{id: s}]\nvms: [{name: a, resource_group: r, node: n, colour: red}]\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn inconsistent_worlds_are_refused() {
    let twice = "tenant_id: t\nsubscriptions: [{id: s}]\nvms: [{name: a, resource_group: r, node: n}, {name: b, resource_group: r, node: n}]\n";
    assert!(
        World::from_yaml(twice)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
            .contains("backed twice")
    );
    let no_cred = "tenant_id: t\nsubscriptions: [{id: s}]\nservice_principals: [{name: x, client_id: c}]\n";
    assert!(World::from_yaml(no_cred).unwrap().validate().is_err());
    let no_sub = "tenant_id: t\nsubscriptions: []\n";
    assert!(World::from_yaml(no_sub).unwrap().validate().is_err());
    let bad_sub = "tenant_id: t\nsubscriptions: [{id: s}]\nidentities: [{name: i, subscription: other, resource_group: r, client_id: c, principal_id: p}]\n";
    assert!(World::from_yaml(bad_sub).unwrap().validate().is_err());
}
