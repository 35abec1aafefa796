//! MIC's watches lagging behind its own writes (`--slow-watch-ms`): MIC reaches the apiserver
//! through a proxy here that delivers every watch event late, by a lag drawn from the seed for
//! each watch anew every few seconds (0 to the maximum), while its other requests (reads,
//! writes) go through at once. Each watch lags on its own: MIC may see a pod before the object
//! it created for the pod's last life. That is the skew of a busy apiserver or a congested watch cache, which pausing the whole
//! process (`lag`) does not give: MIC's writes succeed while its caches still show the objects as
//! they were, and every decision made from those caches must survive it. For example, a
//! StatefulSet pod back on another node before MIC's cache has seen the object created for its
//! last life: the object there records the old node, and must not be taken for the new one.
//!
//! The proxy listens on plain HTTP on loopback and forwards through the harness's own
//! authenticated client, so MIC's kubeconfig names only the proxy.

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle, time::Instant};

/// How long one drawn lag holds, at most (it holds 1 s to this).
const MAX_HOLD: Duration = Duration::from_secs(5);
/// Request headers passed on (the client's authentication is the harness's own).
const PASSED_HEADERS: [http::header::HeaderName; 2] = [http::header::CONTENT_TYPE, http::header::ACCEPT];

type ProxyBody = BoxBody<Bytes, Infallible>;

/// A running proxy; stops when dropped.
pub(super) struct Proxy {
    /// A kubeconfig naming the proxy, for MIC.
    pub kubeconfig: PathBuf,
    lags: Arc<Lags>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Watch events (chunks) delivered late so far.
    pub fn late_events(&self) -> u64 {
        self.lags.late.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the proxy in front of `client`'s apiserver, with watch events up to `max_lag` late.
pub(super) async fn start(
    client: kube::Client,
    seed: u64,
    max_lag: Duration,
    dir: &Path,
) -> anyhow::Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let kubeconfig = dir.join("churn-mic-slow-watch.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster: {{server: \"http://{addr}\"}}\n\
             users:\n- name: proxy\n  user: {{}}\ncontexts:\n- name: proxy\n  context: {{cluster: proxy, user: proxy}}\n\
             current-context: proxy\n"
        ),
    )
    .context("writing the proxy's kubeconfig")?;
    let lags = Arc::new(Lags {
        seed: seed ^ 0x0073_6c6f_7720_7761,
        max: max_lag,
        watches: AtomicU64::new(0),
        late: AtomicU64::new(0),
    });
    let server_lags = lags.clone();
    let server = tokio::spawn(async move {
        let lags = server_lags;
        while let Ok((stream, _)) = listener.accept().await {
            let (client, lags) = (client.clone(), lags.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| forward(client.clone(), lags.clone(), req));
                // A connection MIC drops mid-watch ends here; nothing to report.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Proxy {
        kubeconfig,
        lags,
        tasks: vec![server],
    })
}

/// Draws each watch's lags.
struct Lags {
    seed: u64,
    max: Duration,
    /// Watches started so far: each draws from its own sequence.
    watches: AtomicU64,
    /// Watch events delivered late so far.
    late: AtomicU64,
}

/// One watch's lag, drawn anew once it has held for its time.
struct WatchLag {
    rng: fastrand::Rng,
    max: Duration,
    lag: Duration,
    until: Instant,
}

impl WatchLag {
    fn new(lags: &Lags) -> Self {
        let n = lags.watches.fetch_add(1, Ordering::Relaxed);
        Self {
            rng: fastrand::Rng::with_seed(lags.seed.wrapping_add(n)),
            max: lags.max,
            lag: Duration::ZERO,
            until: Instant::now(),
        }
    }

    fn now(&mut self) -> Duration {
        if Instant::now() >= self.until {
            self.lag = self.max.mul_f64(self.rng.f64());
            self.until = Instant::now()
                + Duration::from_secs(1)
                + (MAX_HOLD - Duration::from_secs(1)).mul_f64(self.rng.f64());
        }
        self.lag
    }
}

fn is_watch(req: &Request<Incoming>) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

fn bad_gateway(why: String) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(why)).boxed());
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

async fn forward(
    client: kube::Client,
    lags: Arc<Lags>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let watch = is_watch(&req);
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(bad_gateway("reading the request failed".into()));
    };
    let mut out = Request::builder()
        .method(parts.method)
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for name in PASSED_HEADERS {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    let Ok(out) = out.body(kube::client::Body::from(body.to_vec())) else {
        return Ok(bad_gateway("building the request failed".into()));
    };
    let resp = match client.send(out).await {
        Ok(resp) => resp,
        Err(e) => return Ok(bad_gateway(format!("the apiserver: {e}"))),
    };
    let (parts, mut body) = resp.into_parts();
    let body: ProxyBody = if watch {
        // Each chunk (a watch event) leaves the lag in force when it arrived after it, in order.
        let (tx, rx) = tokio::sync::mpsc::channel::<(Instant, Bytes)>(4096);
        let mut lag = WatchLag::new(&lags);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else { continue };
                let late = lag.now();
                if !late.is_zero() {
                    lags.late.fetch_add(1, Ordering::Relaxed);
                }
                if tx.send((Instant::now() + late, data)).await.is_err() {
                    return;
                }
            }
        });
        let events = stream::unfold(rx, |mut rx| async move {
            let (at, data) = rx.recv().await?;
            tokio::time::sleep_until(at).await;
            Some((Ok::<_, Infallible>(Frame::data(data)), rx))
        });
        StreamBody::new(events).boxed()
    } else {
        match body.collect().await {
            Ok(b) => Full::new(b.to_bytes()).boxed(),
            Err(e) => return Ok(bad_gateway(format!("reading the apiserver's answer: {e}"))),
        }
    };
    Ok(Response::from_parts(parts, body))
}
