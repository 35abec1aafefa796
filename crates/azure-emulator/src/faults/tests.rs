use super::*;

fn fault(action: FaultAction, count: Option<u64>, rate: Option<f64>, target: Option<&str>) -> Fault {
    Fault {
        endpoint: EndpointKind::Imds,
        target: target.map(String::from),
        action,
        count,
        rate,
    }
}

#[test]
fn count_limited_faults_expire() {
    let f = Faults::default();
    f.add(fault(FaultAction::Reset, Some(2), None, None));
    assert!(f.pick(EndpointKind::Imds, &["vm"], false).is_some());
    assert!(
        f.pick(EndpointKind::Arm, &["vm"], false).is_none(),
        "other endpoint kinds are untouched"
    );
    assert!(f.pick(EndpointKind::Imds, &["vm"], false).is_some());
    assert!(f.pick(EndpointKind::Imds, &["vm"], false).is_none());
    assert!(f.list().is_empty());
}

#[test]
fn targets_and_rates_filter() {
    let f = Faults::default();
    f.add(fault(FaultAction::Latency { ms: 1 }, None, None, Some("node-a")));
    assert!(f.pick(EndpointKind::Imds, &["vm-b", "node-b"], false).is_none());
    assert!(f.pick(EndpointKind::Imds, &["vm-a", "NODE-A"], false).is_some());
    f.clear();
    f.add(fault(FaultAction::Reset, None, Some(0.0), None));
    assert!((0..100).all(|_| f.pick(EndpointKind::Imds, &[], false).is_none()));
}

#[test]
fn fault_json_is_flat() {
    let f: Fault =
        serde_json::from_str(r#"{"endpoint":"arm","kind":"status","status":503,"count":3}"#).unwrap();
    assert_eq!(
        f.action,
        FaultAction::Status {
            status: 503,
            retry_after_secs: None
        }
    );
    assert_eq!(f.count, Some(3));
}

#[test]
fn failed_operations_fire_only_on_writes() {
    let f = Faults::default();
    f.add(Fault {
        endpoint: EndpointKind::Arm,
        ..fault(
            FaultAction::OperationFailed {
                code: None,
                message: None,
            },
            Some(1),
            None,
            None,
        )
    });
    let path = ["/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss"];
    assert!(
        f.pick(EndpointKind::Arm, &path, false).is_none(),
        "a read is not failed and does not use the fault up"
    );
    assert!(matches!(
        f.pick(EndpointKind::Arm, &path, true),
        Some(FaultAction::OperationFailed { .. })
    ));
    assert!(
        f.pick(EndpointKind::Arm, &path, true).is_none(),
        "count 1 is used up"
    );
}
