//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending the
//! next request as soon as the previous answer is read, for a fixed duration.
//!
//! The client side is written by hand: each connection sends one pre-rendered request and
//! parses only what it needs to find the answer's status and end. The generator shares the
//! machine's two cores with the server it measures, and hyper's client spent about as much CPU
//! per request as NMI does answering it: CPU taken from the server under test.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{Error, Result};

/// What to send, where, how hard and for how long.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// Paths and queries, e.g. `/metadata/identity/oauth2/token?...`; connection `i` sends
    /// `paths[i % paths.len()]`.
    pub paths: Vec<String>,
    pub headers: Vec<(String, String)>,
    pub connections: usize,
    pub duration: Duration,
    /// Requests before this much time has passed are not counted (connection setup, caches).
    pub warmup: Duration,
    /// Source addresses: connection `i` binds `local_addrs[i % len]` (a pod's IP, so that NMI
    /// sees the request come from that pod). Empty: the system's choice.
    pub local_addrs: Vec<IpAddr>,
    /// When set, each connection stops after this many requests (and `duration` is only a limit).
    pub requests_per_connection: Option<u64>,
    /// When set, each connection sends at most this many requests per second (open pacing: a
    /// late answer does not shift the schedule), instead of the next one at once.
    pub rate_per_connection: Option<f64>,
}

impl LoadSpec {
    /// A closed-loop spec for one path with the defaults of the optional parts.
    pub fn new(addr: SocketAddr, path: impl Into<String>, connections: usize, duration: Duration) -> Self {
        Self {
            addr,
            paths: vec![path.into()],
            headers: vec![("Metadata".into(), "true".into())],
            connections,
            duration,
            warmup: Duration::from_secs(1),
            local_addrs: Vec::new(),
            requests_per_connection: None,
            rate_per_connection: None,
        }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadReport {
    /// Counted requests (after warm-up) answered with 2xx.
    pub ok: u64,
    /// Counted requests answered with anything else.
    pub non_2xx: u64,
    /// Connection or protocol failures.
    pub errors: u64,
    /// Counted non-2xx answers by status code.
    pub statuses: BTreeMap<u16, u64>,
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

struct ConnResult {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

async fn connect(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = local else {
        return tokio::net::TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

/// `GET path` with a `Host` header and `headers`, as bytes on the wire.
fn render_request(path: &str, host: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// One keep-alive connection and what it has read but not yet consumed.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// An answer's status, and whether the server will close the connection after it.
struct Answer {
    status: u16,
    close: bool,
}

fn protocol_error(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Where a chunked body that starts at `buf[0]` ends, once all of it has arrived.
fn chunked_end(buf: &[u8]) -> std::io::Result<Option<usize>> {
    let mut pos = 0;
    loop {
        match httparse::parse_chunk_size(&buf[pos..]).map_err(|_| protocol_error("bad chunk size"))? {
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete((used, 0)) => {
                // No trailers: the last chunk is followed by an empty line.
                let end = pos + used + 2;
                return Ok((buf.len() >= end).then_some(end));
            }
            httparse::Status::Complete((used, size)) => {
                let size = usize::try_from(size).map_err(|_| protocol_error("chunk too large"))?;
                pos += used + size + 2;
                if pos > buf.len() {
                    return Ok(None);
                }
            }
        }
    }
}

impl Conn {
    /// Sends `request` and reads its whole answer.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<Answer> {
        self.stream.write_all(request).await?;
        loop {
            if let Some((end, answer)) = parse_answer(&self.buf)? {
                self.buf.drain(..end);
                return Ok(answer);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// The answer at the start of `buf` and where it ends, once all of it has arrived.
fn parse_answer(buf: &[u8]) -> std::io::Result<Option<(usize, Answer)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf).map_err(|e| protocol_error(e.to_string()))? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) => n,
    };
    let status = response.code.unwrap_or_default();
    let (mut length, mut chunked, mut close) = (None, false, false);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| protocol_error("bad content-length"))?;
            length = Some(
                text.trim()
                    .parse::<usize>()
                    .map_err(|_| protocol_error("bad content-length"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let end = if chunked {
        match chunked_end(&buf[head..])? {
            Some(n) => head + n,
            None => return Ok(None),
        }
    } else if (100..200).contains(&status) || status == 204 || status == 304 {
        head
    } else {
        // Without a length the body runs to the connection's end, which a keep-alive load
        // cannot use.
        head + length.ok_or_else(|| protocol_error("an answer without Content-Length"))?
    };
    Ok((buf.len() >= end).then_some((end, Answer { status, close })))
}

async fn one_connection(spec: LoadSpec, index: usize, start: Instant) -> ConnResult {
    let mut out = ConnResult {
        latencies_us: Vec::with_capacity(if spec.rate_per_connection.is_some() {
            4096
        } else {
            64 * 1024
        }),
        statuses: BTreeMap::new(),
        errors: 0,
    };
    let end = start + spec.warmup + spec.duration;
    let counting_from = start + spec.warmup;
    let request = render_request(
        &spec.paths[index % spec.paths.len()],
        &spec.addr.to_string(),
        &spec.headers,
    );
    let local = (!spec.local_addrs.is_empty()).then(|| spec.local_addrs[index % spec.local_addrs.len()]);
    let interval = spec
        .rate_per_connection
        .map(|r| Duration::from_secs_f64(1.0 / r.max(1e-3)));
    // Spread paced connections over one interval so that they do not all fire together.
    let mut next_send = start + interval.map_or(Duration::ZERO, |i| i.mul_f64((index % 97) as f64 / 97.0));
    let mut sent_count = 0u64;
    let mut last_answer = start;
    let budget_spent = |sent: u64| spec.requests_per_connection.is_some_and(|n| sent >= n);
    'reconnect: while Instant::now() < end && !budget_spent(sent_count) {
        let Ok(stream) = connect(spec.addr, local).await else {
            out.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        };
        loop {
            if budget_spent(sent_count) {
                break 'reconnect;
            }
            // Paced: when the previous answer came after this request was due, latency counts
            // from when it was due, so a stalled server cannot hide its stall by delaying the
            // requests that would have measured it. (Otherwise from the send: the timer's
            // millisecond granularity is the load generator's, not the server's.)
            let mut due = None;
            if let Some(interval) = interval {
                tokio::time::sleep_until(next_send.into()).await;
                due = Some(next_send);
                next_send += interval;
            }
            let now = Instant::now();
            if now >= end {
                break 'reconnect;
            }
            sent_count += 1;
            let sent = due.filter(|d| last_answer > *d).unwrap_or(now);
            let Ok(answer) = conn.exchange(&request).await else {
                out.errors += 1;
                continue 'reconnect;
            };
            last_answer = Instant::now();
            if sent >= counting_from {
                if (200..300).contains(&answer.status) {
                    out.latencies_us
                        .push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    *out.statuses.entry(answer.status).or_default() += 1;
                }
            }
            if answer.close {
                continue 'reconnect;
            }
        }
    }
    out
}

/// Runs the load and reports what was measured after warm-up.
pub async fn run(spec: LoadSpec) -> Result<LoadReport> {
    if spec.connections == 0 || spec.paths.is_empty() {
        return Err(Error::Http(
            "at least one connection and one path are needed".into(),
        ));
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..spec.connections)
        .map(|i| tokio::spawn(one_connection(spec.clone(), i, start)))
        .collect();
    let mut all = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut errors = 0;
    for t in tasks {
        let r = t
            .await
            .map_err(|e| Error::Http(format!("load task failed: {e}")))?;
        all.extend(r.latencies_us);
        for (k, v) in r.statuses {
            *statuses.entry(k).or_default() += v;
        }
        errors += r.errors;
    }
    // A run with a request budget may end before `duration`: count the time it really took.
    let measured = if spec.requests_per_connection.is_some() {
        start.elapsed().saturating_sub(spec.warmup).min(spec.duration)
    } else {
        spec.duration
    };
    let non_2xx = statuses.values().sum();
    all.sort_unstable();
    Ok(LoadReport {
        ok: all.len() as u64,
        non_2xx,
        errors,
        statuses,
        measured,
        requests_per_sec: all.len() as f64 / measured.as_secs_f64().max(1e-9),
        p50_ms: percentile_ms(&all, 0.50),
        p99_ms: percentile_ms(&all, 0.99),
        max_ms: percentile_ms(&all, 1.0),
    })
}

#[cfg(test)]
mod tests;
