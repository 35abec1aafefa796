use std::time::Duration;

use super::*;

#[test]
fn percentiles_pick_the_right_rank() {
    let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
    assert_eq!(percentile_ms(&v, 0.5), 50.0);
    assert_eq!(percentile_ms(&v, 0.99), 99.0);
    assert_eq!(percentile_ms(&v, 1.0), 100.0);
    assert_eq!(percentile_ms(&[], 0.5), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_a_real_server_and_counts_answers() {
    let mut world = azure_emulator::World::from_yaml(
        "tenant_id: t\nsubscriptions: [{id: s}]\nidentities: [{name: i, resource_group: r, client_id: c, principal_id: p}]\nvms: [{name: v, resource_group: r, node: n, user_assigned: [i]}]\ntls: {enabled: false}\n",
    )
    .unwrap();
    world.imds.rate_limit = false;
    let emu = azure_emulator::Emulator::start(world).await.unwrap();
    let spec = LoadSpec {
        addr: emu.imds_addr("n").unwrap(),
        path_and_query:
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x&client_id=c".into(),
        headers: vec![("Metadata".into(), "true".into())],
        connections: 4,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(50),
    };
    let r = run(spec.clone()).await.unwrap();
    assert!(r.ok > 0, "{r:?}");
    assert_eq!((r.non_2xx, r.errors), (0, 0));
    assert!(r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms);
    // Without the Metadata header every answer is a 400, and the report says so.
    let r = run(LoadSpec {
        headers: vec![],
        ..spec
    })
    .await
    .unwrap();
    assert_eq!(r.ok, 0);
    assert!(r.non_2xx > 0);
}
