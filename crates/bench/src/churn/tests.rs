#[test]
fn the_world_parses_with_every_node() {
    let w = super::world(2000).unwrap();
    assert_eq!(w.identities.len(), super::IDENTITIES);
    assert_eq!(w.vms.len(), 1);
    let instances: usize = w.vmss.iter().map(|s| s.instances.len()).sum();
    assert_eq!(instances + w.vms.len(), super::NODES.len());
}
