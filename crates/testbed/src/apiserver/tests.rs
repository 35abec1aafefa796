use std::net::TcpListener;

use super::port::{ephemeral_low, free_port};

#[test]
fn free_ports_are_bindable_distinct_and_out_of_reach_of_outgoing_connections() {
    let low = ephemeral_low().expect("Linux shows its range of outgoing ports");
    let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
    for p in &ports {
        assert!(
            *p < low,
            "port {p} is in the range outgoing connections draw from"
        );
        TcpListener::bind(("127.0.0.1", *p)).expect("a drawn port can be bound");
    }
    let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "the same port was drawn twice: {ports:?}"
    );
}
