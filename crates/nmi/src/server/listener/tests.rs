//! The kernel facts the newest-wins group relies on, checked on the running kernel (loopback of the
//! test's own network namespace; ports drawn by the kernel).

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use super::*;

const N: usize = 32;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A member of the port's group without the program: an NMI before this version's, or a control.
fn plain_reuseport(addr: SocketAddr) -> std::net::TcpListener {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_nonblocking(true).unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(BACKLOG).unwrap();
    s.into()
}

fn connect(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

/// How many connections each listener accepts of the `expected` just made (waiting up to 2 s for
/// the handshakes to land in the queues).
fn accepted(listeners: &[&std::net::TcpListener], expected: usize) -> Vec<usize> {
    let mut counts = vec![0; listeners.len()];
    let deadline = Instant::now() + Duration::from_secs(2);
    while counts.iter().sum::<usize>() < expected && Instant::now() < deadline {
        for (l, count) in listeners.iter().zip(counts.iter_mut()) {
            while l.accept().is_ok() {
                *count += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    counts
}

#[test]
fn while_two_listen_the_newer_gets_every_connection_and_the_older_takes_over_when_it_leaves() {
    let old = bind_shared_std(any_port()).unwrap();
    let addr = old.local_addr().unwrap();
    let new = bind_shared_std(addr).unwrap();
    let _c = connect(addr, N);
    assert_eq!(accepted(&[&old, &new], N), [0, N], "newest wins");

    drop(new);
    let _c = connect(addr, N);
    assert_eq!(
        accepted(&[&old], N),
        [N],
        "the one left gets everything (out of range: the hash)"
    );

    // A third generation: appended after the survivor, so it is index 1 and wins in turn.
    let newer = bind_shared_std(addr).unwrap();
    let _c = connect(addr, N);
    assert_eq!(accepted(&[&old, &newer], N), [0, N]);
}

#[test]
fn the_group_runs_the_program_its_newest_member_attached() {
    // Control: without the program, the kernel's hash spreads connections over both (all N on one
    // side by chance: 2 in 2^32).
    let a = plain_reuseport(any_port());
    let addr = a.local_addr().unwrap();
    let b = plain_reuseport(addr);
    let _c = connect(addr, N);
    let spread = accepted(&[&a, &b], N);
    assert!(spread[0] > 0 && spread[1] > 0, "{spread:?}");
    drop(b);

    // A listener joining with the program sets it for the whole group, the older member's too.
    let new = bind_shared_std(addr).unwrap();
    let _c = connect(addr, N);
    assert_eq!(accepted(&[&a, &new], N), [0, N]);
}

#[test]
fn a_listener_without_so_reuseport_keeps_the_port_from_the_group() {
    // std's listener sets SO_REUSEADDR but not SO_REUSEPORT, as an NMI before this version.
    let old = std::net::TcpListener::bind(any_port()).unwrap();
    let err = bind_shared_std(old.local_addr().unwrap()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == ErrorKind::AddrInUse),
        "{err}"
    );
}

// Two workers: the check below sleeps on its thread while the bind runs on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_by_an_older_nmi_the_port_is_reported_until_it_is_free_then_served() {
    // The first update from an NMI whose listener lacks SO_REUSEPORT: this one cannot bind until
    // that one stops, and says so (readiness must not wait for the bind, or the update would stall).
    let old = std::net::TcpListener::bind(any_port()).unwrap();
    let addr = old.local_addr().unwrap();
    let port = std::sync::Arc::new(PodPort::default());
    let binding = tokio::spawn({
        let port = port.clone();
        async move { bind_pod_facing(addr, || true, &port).await }
    });
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < end, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    until("the port is reported held", &|| port.held_by_older());
    assert!(!port.serving());
    drop(old);
    let listener = binding.await.unwrap().unwrap();
    assert!(port.serving() && !port.held_by_older());
    assert_eq!(listener.local_addr().unwrap(), addr);
}

#[tokio::test]
async fn closing_a_listener_resets_its_queue_and_draining_it_first_does_not() {
    // The kernel's side (net.ipv4.tcp_migrate_req is off by default): queued connections are reset.
    let closed = bind_shared_std(any_port()).unwrap();
    let mut clients = connect(closed.local_addr().unwrap(), 3);
    std::thread::sleep(Duration::from_millis(50));
    drop(closed);
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let err = c.read(&mut [0; 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    }

    // Drained first, every queued connection is NMI's to answer.
    let listener = bind_shared(any_port()).unwrap();
    let mut clients = connect(listener.local_addr().unwrap(), 3);
    std::thread::sleep(Duration::from_millis(50));
    let mut taken = Vec::new();
    assert_eq!(drain(listener, |s, _| taken.push(s)), 3);
    for (server, client) in taken.iter().zip(&mut clients) {
        server.writable().await.unwrap();
        assert_eq!(server.try_write(b"!").unwrap(), 1);
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut byte = [0; 1];
        client.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"!");
        client.write_all(b"ok").unwrap();
    }
}

#[test]
fn listening_ports_reads_the_kernels_tables() {
    let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
               \x20  0: 0100007F:0A33 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1183 1\n\
               \x20  1: 0100007F:0A33 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1184 1\n\
               \x20  2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1185 1\n";
    assert_eq!(listening_ports(tcp).collect::<Vec<_>>(), [2611, 8080]);
    let tcp6 = "  sl  local_address                         remote_address                        st\n\
                \x20  0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 0\n";
    assert_eq!(listening_ports(tcp6).collect::<Vec<_>>(), [8081]);

    let here = std::net::TcpListener::bind(any_port()).unwrap();
    assert!(another_listens(here.local_addr().unwrap().port()));
}
