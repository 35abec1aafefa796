use super::*;

#[test]
fn call_log_keeps_the_newest_entries() {
    let log = CallLog::default();
    for i in 0..(LOG_CAPACITY + 10) {
        log.record(CallRecord {
            seq: 0,
            at_ms: 0,
            endpoint: EndpointKind::Arm,
            target: String::new(),
            method: "GET".into(),
            path: format!("/{i}"),
            status: 200,
            fault: None,
            label: String::new(),
        });
    }
    let all = log.since(0);
    assert_eq!(all.len(), LOG_CAPACITY);
    assert_eq!(all[0].seq, 11);
    assert_eq!(log.since(all.last().unwrap().seq).len(), 0);
}
