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
        warmup: Duration::from_millis(50),
        ..LoadSpec::new(
            emu.imds_addr("n").unwrap(),
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x&client_id=c",
            4,
            Duration::from_millis(300),
        )
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
    assert_eq!(r.statuses.get(&400), Some(&r.non_2xx));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_budget_and_source_addresses_are_honoured() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            seen2.lock().unwrap().insert(peer.ip());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let ips: Vec<IpAddr> = ["127.0.77.1", "127.0.77.2", "127.0.77.3"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let r = run(LoadSpec {
        warmup: Duration::ZERO,
        local_addrs: ips.clone(),
        requests_per_connection: Some(25),
        ..LoadSpec::new(addr, "/", 6, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(r.ok, 150, "{r:?}");
    assert_eq!(*seen.lock().unwrap(), ips.into_iter().collect());
}
