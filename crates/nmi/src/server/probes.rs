//! NMI's own health: the liveness and readiness probes, the metrics endpoint, and the tracking
//! of whether the watched state is too old to decide on. Separate from the pod-facing server.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    http::{StatusCode, header},
    routing::get,
};

use super::listener::PodPort;
use crate::{metrics::Metrics, state::State};

/// Keeps `aadpodidentity_nmi_state_stale` current (every second), requests or not, and logs each
/// change. Runs forever; the binary spawns it next to the servers.
pub async fn track_staleness(state: Arc<State>, metrics: Metrics) {
    let mut was = false;
    loop {
        let stale = state.is_stale();
        metrics.state_stale.set(i64::from(stale));
        if stale != was {
            if stale {
                tracing::warn!(
                    unproven_for = ?state.unproven_for(),
                    "cluster state too old: refusing token requests"
                );
            } else {
                tracing::info!("cluster state proven again: serving token requests");
            }
            was = stale;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// NMI can serve pods: its interception rules are in place and every watch has synced. `/readyz`
/// says so, and the pod-facing listener of an NMI that replaces another waits for it.
pub fn is_ready(state: &State, rules_in_place: &AtomicBool) -> bool {
    rules_in_place.load(Ordering::Acquire) && state.is_synced()
}

/// What `/readyz` and the readiness socket (`--ready-socket`) answer: NMI [`is_ready`], and its
/// pod-facing listener is bound (or cannot be until an older NMI without `SO_REUSEPORT` stops,
/// which the DaemonSet does only once this pod is Ready: [`PodPort::held_by_older`]).
pub fn answers_ready(state: &State, rules_in_place: &AtomicBool, pod_port: &PodPort) -> bool {
    is_ready(state, rules_in_place) && (pod_port.serving() || pod_port.held_by_older())
}

/// Liveness and readiness. `/healthz` says `Active` once the rules are in place (as upstream);
/// `/readyz` is 200 only when NMI [`answers_ready`]. The pod-facing listener matters in an update:
/// the DaemonSet stops the old NMI once the new pod is Ready, and the new NMI binds only once
/// ready; a Ready before the bind would leave a moment with neither listening. For the same reason
/// the chart's readiness probe asks `--ready-socket`, not this port, which the old NMI shares
/// ([`super::ready_socket`]).
pub fn probe_router(state: Arc<State>, rules_in_place: Arc<AtomicBool>, pod_port: Arc<PodPort>) -> Router {
    let rules = rules_in_place.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let active = rules.load(Ordering::Acquire);
                async move { if active { "Active" } else { "Not Active" } }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = answers_ready(&state, &rules_in_place, &pod_port);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let text = metrics.encode();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    )
}
