//! The per-pod connection cap, and the flags that set the accept loop's limits.

use super::*;

#[test]
fn each_ip_gets_max_at_once_and_a_closed_connection_frees_its_place() {
    let gauge = Gauge::default();
    let c = PerPodConnections::new(2, gauge.clone());
    let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let first = c.admit(a).unwrap();
    let _second = c.admit(a).unwrap();
    assert!(c.admit(a).is_none(), "a third from the same IP");
    let _other = c.admit(b).expect("another pod is not affected");
    assert_eq!((c.open(a), c.open(b), gauge.get()), (2, 1, 3));
    drop(first);
    assert_eq!(c.open(a), 1);
    assert!(c.admit(a).is_some());
}

#[test]
fn no_cap_with_zero_and_no_entry_left_behind() {
    let c = PerPodConnections::new(0, Gauge::default());
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    let all: Vec<_> = (0..1000).map(|_| c.admit(ip).unwrap()).collect();
    assert_eq!(c.open(ip), 1000);
    drop(all);
    assert!(sync::lock(&c.open).is_empty());
}

#[test]
fn flags_default_to_10_seconds_and_64_connections_and_0_turns_each_off() {
    use crate::server::ConnectionLimits;
    use clap::Parser;
    use std::time::Duration;
    let f = crate::flags::Flags::try_parse_from(["nmi", "--node=n"]).unwrap();
    assert_eq!(
        f.connection_limits(),
        ConnectionLimits {
            header_read_timeout: Some(Duration::from_secs(10)),
            per_pod: 64
        }
    );
    assert_eq!(f.connection_limits(), ConnectionLimits::default());
    let f = crate::flags::Flags::try_parse_from([
        "nmi",
        "--node=n",
        "--header-read-timeout=0",
        "--max-connections-per-pod=0",
    ])
    .unwrap();
    assert_eq!(
        f.connection_limits(),
        ConnectionLimits {
            header_read_timeout: None,
            per_pod: 0
        }
    );
    let f = crate::flags::Flags::try_parse_from(["nmi", "--node=n", "--header-read-timeout=2.5s"]).unwrap();
    assert_eq!(
        f.connection_limits().header_read_timeout,
        Some(Duration::from_millis(2500))
    );
}
