//! Reading NMI's side: its pods, their readiness, and what their logs and Events say (staleness,
//! refusals); apart from the reads of MIC's objects, which need none of this.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, LogParams},
};

use super::{Options, kube_err};
use crate::{
    Error,
    facts::{NmiPod, NmiView, RefusalLog},
    nmi_log::stale_since,
};

pub(super) async fn nmi_pods(
    client: &Client,
    selector: &str,
    node: Option<&str>,
) -> Result<Vec<NmiPod>, Error> {
    let mut params = ListParams::default().labels(selector);
    let field;
    if let Some(n) = node {
        field = format!("spec.nodeName={n}");
        params = params.fields(&field);
    }
    let pods = Api::<Pod>::all(client.clone())
        .list(&params)
        .await
        .map_err(kube_err(format!("NMI pods ({selector})")))?;
    Ok(pods.items.iter().map(nmi_pod).collect())
}

fn nmi_pod(p: &Pod) -> NmiPod {
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready");
    NmiPod {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        node: p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        ready: ready.is_some_and(|c| c.status == "True"),
        stale_since: None,
        detail: ready.map_or_else(
            || "no Ready condition yet".to_owned(),
            |c| {
                format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or("NotReady"),
                    c.message.as_deref().unwrap_or_default()
                )
            },
        ),
    }
}

/// The log of every Ready NMI, for its staleness lines. Returns why some could not be read.
pub(super) async fn read_staleness(client: &Client, opts: &Options, pods: &mut [NmiPod]) -> Option<String> {
    let params = LogParams {
        since_seconds: Some(opts.nmi_log_seconds),
        ..LogParams::default()
    };
    let mut unread = None;
    for p in pods.iter_mut().filter(|p| p.ready) {
        match Api::<Pod>::namespaced(client.clone(), &p.namespace)
            .logs(&p.name, &params)
            .await
        {
            Ok(log) => p.stale_since = stale_since(&log),
            Err(e) => {
                unread.get_or_insert_with(|| format!("kubectl logs -n {} {}: {e}", p.namespace, p.name));
            }
        }
    }
    unread
}

pub(super) async fn nmi_on(
    client: &Client,
    opts: &Options,
    node: Option<&str>,
    namespace: &str,
    name: &str,
) -> Result<NmiView, Error> {
    let (pod, lookup_error) = match node {
        Some(n) => match nmi_pods(client, &opts.nmi_selector, Some(n)).await {
            Ok(pods) => (pods.into_iter().next(), None),
            Err(e) => (None, Some(e.to_string())),
        },
        None => (None, None),
    };
    // NMI's staleness is about no pod, so it is only in NMI's log; unread (RBAC `pods/log`, no
    // kubelet) it is simply not shown.
    let stale = match &pod {
        None => None,
        Some(n) => {
            let params = LogParams {
                since_seconds: Some(opts.nmi_log_seconds),
                ..LogParams::default()
            };
            Api::<Pod>::namespaced(client.clone(), &n.namespace)
                .logs(&n.name, &params)
                .await
                .ok()
                .and_then(|log| stale_since(&log))
        }
    };
    // The pod's refusals are Events on it (NMI publishes them), whether or not NMI's pod or log
    // can be read.
    let refusals = match crate::nmi_events::refusals(client, namespace, name).await {
        Ok(refusals) => RefusalLog::Read {
            refusals,
            stale_since: stale,
        },
        Err(e) => RefusalLog::Unread(format!("listing the Events of pod {namespace}/{name}: {e}")),
    };
    Ok(NmiView {
        pod,
        selector: opts.nmi_selector.clone(),
        lookup_error,
        refusals,
    })
}
