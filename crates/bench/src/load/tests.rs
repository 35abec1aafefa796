use std::time::Duration;

use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

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
    // A request budget, not a short duration: the counts do not depend on how fast the machine
    // answers (the duration is only a limit no run comes near).
    let spec = LoadSpec {
        warmup: Duration::ZERO,
        requests_per_connection: Some(10),
        ..LoadSpec::new(
            emu.imds_addr("n").unwrap(),
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x&client_id=c",
            4,
            Duration::from_secs(120),
        )
    };
    let r = run(spec.clone()).await.unwrap();
    assert_eq!((r.ok, r.non_2xx, r.errors), (40, 0, 0), "{r:?}");
    assert!(r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms);
    assert!(r.measured <= spec.duration);
    // Without the Metadata header every answer is a 400, and the report says so.
    let r = run(LoadSpec {
        headers: vec![],
        ..spec
    })
    .await
    .unwrap();
    assert_eq!((r.ok, r.non_2xx), (0, 40), "{r:?}");
    assert_eq!(r.statuses.get(&400), Some(&40));
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

/// A server that answers each request with `answer`, written in pieces with pauses between
/// them, and counts the connections it accepted.
async fn scripted_server(answer: &'static [u8], pieces: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        for piece in answer.chunks(answer.len().div_ceil(pieces)) {
                            if stream.write_all(piece).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

fn budget(addr: SocketAddr, requests: u64) -> LoadSpec {
    LoadSpec {
        warmup: Duration::ZERO,
        requests_per_connection: Some(requests),
        ..LoadSpec::new(addr, "/", 1, Duration::from_secs(20))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_split_across_reads_and_chunked_bodies_are_read_whole() {
    // Chunked, with the chunks and the head arriving in separate pieces.
    let chunked: &[u8] =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let (addr, accepted) = scripted_server(chunked, 7).await;
    let r = run(budget(addr, 20)).await.unwrap();
    assert_eq!((r.ok, r.errors, r.non_2xx), (20, 0, 0), "{r:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one keep-alive connection");

    let sized: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 11\r\n\r\nunavailable";
    let (addr, _) = scripted_server(sized, 3).await;
    let r = run(budget(addr, 10)).await.unwrap();
    assert_eq!((r.ok, r.errors), (0, 0), "{r:?}");
    assert_eq!(r.statuses.get(&503), Some(&10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_after_each_answer_gets_a_new_connection_each_time() {
    let closing: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
    let (addr, accepted) = scripted_server(closing, 1).await;
    let r = run(budget(addr, 5)).await.unwrap();
    assert_eq!((r.ok, r.errors), (5, 0), "{r:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[test]
fn answers_are_framed_by_length_or_chunks_and_one_without_either_is_an_error() {
    let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
    let (end, answer) = parse_answer(sized).unwrap().unwrap();
    assert_eq!((end, answer.status, answer.close), (40, 200, false));
    assert!(
        parse_answer(&sized[..39]).unwrap().is_none(),
        "body not complete yet"
    );
    assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
    let (end, answer) = parse_answer(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!((end, answer.status, answer.close), (46, 204, true));
    // A body that runs to the connection's end cannot be used on a keep-alive connection.
    assert!(parse_answer(b"HTTP/1.1 200 OK\r\n\r\nbody").is_err());
    assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    assert!(chunked_end(b"5\r\nhel").unwrap().is_none());
    assert_eq!(chunked_end(b"0\r\n\r\n").unwrap(), Some(5));
    assert!(chunked_end(b"zz\r\n").is_err());
}
