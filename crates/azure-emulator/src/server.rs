//! Serving: the accept loop (plain or TLS), connection resets on demand, and the middleware that
//! applies injected faults and writes the call log for every request.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use serde_json::json;
use tokio::{net::TcpListener, sync::Notify, task::JoinSet};
use tower::ServiceExt;

use crate::{
    calls::CallRecord,
    error::{Error, Result},
    faults::{EndpointKind, FailOperation, FaultAction, InjectedDelay},
    state::Shared,
    time, token,
};

/// Put in every request's extensions: notifying it makes the connection close with a reset.
#[derive(Clone)]
pub struct ConnCtl(pub Arc<Notify>);

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io(format!("bind {addr}"), e))
}

/// Serves `router` on `listener` until the returned task is aborted (which also drops every
/// open connection).
pub fn spawn(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _peer)) = accepted else { continue };
                    let router = router.clone();
                    let tls = tls.clone();
                    conns.spawn(serve_conn(stream, router, tls));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    })
}

async fn serve_conn(stream: tokio::net::TcpStream, router: Router, tls: Option<tokio_rustls::TlsAcceptor>) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, so a reset can set SO_LINGER=0 after the stream moved into hyper.
    let raw = socket2::SockRef::from(&stream).try_clone().ok();
    let reset = Arc::new(Notify::new());
    let ctl = ConnCtl(reset.clone());
    let svc = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ctl.clone());
        req.map(Body::new)
    });
    let svc = TowerToHyperService::new(svc);
    let builder = hyper::server::conn::http1::Builder::new();
    let served = async {
        match tls {
            Some(acceptor) => {
                if let Ok(s) = acceptor.accept(stream).await {
                    let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                }
            }
            None => {
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            }
        }
    };
    tokio::select! {
        _ = served => {}
        _ = reset.notified() => {
            if let Some(raw) = &raw {
                let _ = raw.set_linger(Some(Duration::ZERO));
            }
        }
    }
}

/// Per-request context for the fault/log middleware.
#[derive(Clone)]
pub struct Endpoint {
    pub kind: EndpointKind,
    pub shared: Arc<Shared>,
    /// Names this server answers to for fault targeting (VM, instance and node names for IMDS).
    pub targets: Arc<Vec<String>>,
}

/// The error body an endpoint kind uses, for injected status faults.
pub fn fault_body(kind: EndpointKind, status: StatusCode) -> serde_json::Value {
    let code = match status.as_u16() {
        429 => "too_many_requests",
        503 => "service_unavailable",
        500..=599 => "server_error",
        _ => "bad_request",
    };
    match kind {
        EndpointKind::Imds => {
            json!({"error": code, "error_description": format!("injected fault: {status}")})
        }
        EndpointKind::Arm => json!({"error": {
            "code": if status.as_u16() == 429 { "TooManyRequests" } else { "InternalServerError" },
            "message": format!("injected fault: {status}")}}),
        EndpointKind::Entra => json!({
            "error": if status.as_u16() == 429 { "temporarily_unavailable" } else { "server_error" },
            "error_description": format!("AADSTS90033: injected fault: {status}"),
            "error_codes": [90033], "timestamp": crate::time::entra_timestamp(),
            "trace_id": token::guid(), "correlation_id": token::guid()}),
    }
}

pub async fn middleware(
    axum::extract::State(ep): axum::extract::State<Endpoint>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let targets: Vec<&str> = match ep.kind {
        EndpointKind::Imds => ep.targets.iter().map(String::as_str).collect(),
        _ => vec![path.as_str()],
    };
    let write = ep.kind == EndpointKind::Arm && matches!(req.method().as_str(), "PATCH" | "PUT");
    let fault = ep.shared.faults.pick(ep.kind, &targets, write);
    let fault_name = fault.as_ref().map(|f| format!("{f:?}"));
    let resp = match fault {
        None => next.run(req).await,
        Some(FaultAction::Latency { ms }) if ep.kind == EndpointKind::Imds => {
            // IMDS is slow inside the VM, where the slow request holds one of its concurrency slots.
            let mut req = req;
            req.extensions_mut()
                .insert(InjectedDelay(Duration::from_millis(ms)));
            next.run(req).await
        }
        Some(FaultAction::Latency { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        Some(FaultAction::Status {
            status,
            retry_after_secs,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = (status, axum::Json(fault_body(ep.kind, status))).into_response();
            if let Some(s) = retry_after_secs.or((status == StatusCode::TOO_MANY_REQUESTS).then_some(1)) {
                r.headers_mut().insert("retry-after", HeaderValue::from(s));
            }
            r
        }
        Some(FaultAction::Timeout { ms }) => {
            record(&ep, method.clone(), path.clone(), 0, fault_name.clone());
            tokio::time::sleep(Duration::from_millis(ms.unwrap_or(600_000))).await;
            if let Some(ctl) = req.extensions().get::<ConnCtl>() {
                ctl.0.notify_one();
            }
            // The connection task drops this future once notified.
            std::future::pending::<Response>().await
        }
        Some(FaultAction::OperationFailed { code, message }) => {
            let mut req = req;
            req.extensions_mut().insert(FailOperation {
                code: code.unwrap_or_else(|| "InternalOperationError".into()),
                message: message
                    .unwrap_or_else(|| "An internal execution error occurred. (injected fault)".into()),
            });
            next.run(req).await
        }
        Some(FaultAction::Reset) => {
            record(&ep, method.clone(), path.clone(), 0, fault_name.clone());
            if let Some(ctl) = req.extensions().get::<ConnCtl>() {
                ctl.0.notify_one();
            }
            // The connection task drops this future once notified.
            std::future::pending::<Response>().await
        }
    };
    record(&ep, method, path, resp.status().as_u16(), fault_name);
    resp
}

fn record(ep: &Endpoint, method: String, path: String, status: u16, fault: Option<String>) {
    ep.shared.counters.request(ep.kind, status, fault.is_some());
    let label = if ep.kind == EndpointKind::Arm {
        crate::arm::call_label(&path)
    } else {
        ""
    };
    if ep.kind == EndpointKind::Arm && method == "GET" {
        ep.shared.counters.arm_read(label);
    }
    ep.shared.log.record(CallRecord {
        seq: 0,
        at_ms: time::now_ms(),
        endpoint: ep.kind,
        target: if ep.kind == EndpointKind::Imds {
            ep.targets.first().cloned().unwrap_or_default()
        } else {
            String::new()
        },
        method,
        path,
        status,
        fault,
        label: label.into(),
    });
}
