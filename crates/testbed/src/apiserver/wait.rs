//! Waiting for etcd and the apiserver to come up, from blocking code: the readiness probes and
//! the one-off runtime that lets blocking constructors await, apart from what is started.

use std::time::{Duration, Instant};

use kube::Client;

use crate::{Error, Result, Supervised};

pub(super) fn wait_until(
    proc: &mut Supervised,
    limit: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if ready()? {
            return Ok(());
        }
        if !proc.is_running() || Instant::now() > deadline {
            let name = if proc.name() == "etcd" {
                "etcd"
            } else {
                "kube-apiserver"
            };
            return Err(Error::NotReady(name, proc.log_tail()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal blocking HTTP GET, so readiness checks need no runtime.
pub(super) fn http_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
}

/// Runs a future to completion on a runtime of its own, in a thread of its own,
/// so that the blocking constructors work from plain and async tests alike.
pub(super) fn block_on<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime always builds")
                .block_on(f)
        })
        .join()
        .expect("testbed helper thread panicked")
    })
}

pub(super) async fn ready(client: &Client) -> bool {
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("a static request is valid");
    tokio::time::timeout(Duration::from_secs(2), client.request_text(req))
        .await
        .is_ok_and(|r| r.is_ok_and(|body| body.trim() == "ok"))
}
