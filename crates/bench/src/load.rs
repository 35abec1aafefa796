//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending the
//! next request as soon as the previous answer is read, for a fixed duration.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::{Error, Result};

/// What to send, where, how hard and for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// Path and query, e.g. `/metadata/identity/oauth2/token?...`.
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub connections: usize,
    pub duration: Duration,
    /// Requests before this much time has passed are not counted (connection setup, caches).
    pub warmup: Duration,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Counted requests (after warm-up) answered with 2xx.
    pub ok: u64,
    /// Counted requests answered with anything else.
    pub non_2xx: u64,
    /// Connection or protocol failures.
    pub errors: u64,
    pub measured: Duration,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The value at quantile `q` (0..=1) of sorted latencies in microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[idx]) / 1000.0
}

/// Stops a connection's driver task when the loop using that connection leaves.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct ConnResult {
    latencies_us: Vec<u32>,
    non_2xx: u64,
    errors: u64,
}

async fn one_connection(spec: LoadSpec, start: Instant) -> ConnResult {
    let mut out = ConnResult {
        latencies_us: Vec::with_capacity(64 * 1024),
        non_2xx: 0,
        errors: 0,
    };
    let end = start + spec.warmup + spec.duration;
    let counting_from = start + spec.warmup;
    'reconnect: while Instant::now() < end {
        let Ok(stream) = tokio::net::TcpStream::connect(spec.addr).await else {
            out.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            out.errors += 1;
            continue;
        };
        let _driver = AbortOnDrop(tokio::spawn(conn));
        loop {
            let now = Instant::now();
            if now >= end {
                break 'reconnect;
            }
            let mut req = http::Request::get(&spec.path_and_query).header("host", spec.addr.to_string());
            for (k, v) in &spec.headers {
                req = req.header(k, v);
            }
            let Ok(req) = req.body(Empty::<Bytes>::new()) else {
                out.errors += 1;
                break 'reconnect;
            };
            if sender.ready().await.is_err() {
                out.errors += 1;
                continue 'reconnect;
            }
            let sent = Instant::now();
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    out.errors += 1;
                    continue 'reconnect;
                }
            };
            let status = resp.status();
            if resp.into_body().collect().await.is_err() {
                out.errors += 1;
                continue 'reconnect;
            }
            if sent >= counting_from {
                if status.is_success() {
                    out.latencies_us
                        .push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    out.non_2xx += 1;
                }
            }
        }
    }
    out
}

/// Runs the load and reports what was measured after warm-up.
pub async fn run(spec: LoadSpec) -> Result<LoadReport> {
    if spec.connections == 0 {
        return Err(Error::Http("at least one connection is needed".into()));
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..spec.connections)
        .map(|_| tokio::spawn(one_connection(spec.clone(), start)))
        .collect();
    let mut all = Vec::new();
    let (mut non_2xx, mut errors) = (0, 0);
    for t in tasks {
        let r = t
            .await
            .map_err(|e| Error::Http(format!("load task failed: {e}")))?;
        all.extend(r.latencies_us);
        non_2xx += r.non_2xx;
        errors += r.errors;
    }
    let measured = spec.duration;
    all.sort_unstable();
    Ok(LoadReport {
        ok: all.len() as u64,
        non_2xx,
        errors,
        measured,
        requests_per_sec: all.len() as f64 / measured.as_secs_f64(),
        p50_ms: percentile_ms(&all, 0.50),
        p99_ms: percentile_ms(&all, 0.99),
        max_ms: percentile_ms(&all, 1.0),
    })
}

#[cfg(test)]
mod tests;
