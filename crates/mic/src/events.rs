//! Kubernetes Events on pods and bindings, published in the background.
//!
//! Events tell a user why a pod got (or did not get) its identity, but they must never slow an
//! assignment down: at 1,000 pods they are as many writes as the assignments themselves. So
//! they go through the shared [`::events::Publisher`]: a bounded queue drained by a few
//! workers while assignments go on, dropped and counted when full, never awaited. Events also
//! yield to MIC's own writes: they go out when no assignment write is in flight, since on a
//! busy apiserver every event write would delay an assignment. Warnings (an ARM failure
//! retried every plan, a refusal) go through the series book, so that a lasting failure is one
//! Event per pod whose `series.count` grows, not a new Event per retry.

use std::sync::Arc;

use ::events::{Publisher, SeriesPolicy, publisher::Occurrence};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

pub use ::events::Kind;

/// `reportingController` of MIC's Events.
pub const CONTROLLER: &str = "aadpodidentity.k8s.io/mic";
/// `action` of MIC's Events.
pub const ACTION: &str = "AssignIdentity";
/// Writes waiting; beyond this, new ones are dropped.
const QUEUE: usize = 4096;
/// Writes in flight at once.
const PUBLISHERS: usize = 4;

/// The sending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Events {
    publisher: Publisher,
}

impl Events {
    /// Starts the publishers; they stop when every `Events` is dropped. `writes` bounds MIC's
    /// assignment writes (`max` permits); events wait while any of those is in flight.
    pub fn start(client: Client, metrics: Arc<Metrics>, writes: Arc<Semaphore>, max: usize) -> Self {
        Self::start_with(client, metrics, writes, max, SeriesPolicy::default())
    }

    /// [`Events::start`] with another series policy (tests shorten its write interval).
    pub fn start_with(
        client: Client,
        metrics: Arc<Metrics>,
        writes: Arc<Semaphore>,
        max: usize,
        series: SeriesPolicy,
    ) -> Self {
        let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "mic".into());
        let publisher = Publisher::start(
            client,
            ::events::Config {
                controller: CONTROLLER.into(),
                instance,
                queue: QUEUE,
                workers: PUBLISHERS,
                series,
                ready: Some(Arc::new(move || writes.available_permits() >= max)),
                on_drop: Arc::new(move || metrics.event_dropped()),
            },
        );
        Self { publisher }
    }

    /// Queues an event about `regarding`: a warning joins the series of its object and reason
    /// (see [`::events::SeriesBook`]), a normal event is one of its own.
    pub fn publish(&self, kind: Kind, reason: &'static str, note: String, regarding: ObjectReference) {
        let o = occurrence(kind, reason, note, regarding);
        match kind {
            Kind::Warning => self.publisher.publish(o),
            Kind::Normal => self.publisher.publish_once(o),
        }
    }
}

fn occurrence(kind: Kind, reason: &str, note: String, regarding: ObjectReference) -> Occurrence {
    Occurrence {
        kind,
        reason: reason.into(),
        action: ACTION.into(),
        note,
        regarding,
    }
}

/// A reference to a pod by name, for an event.
pub fn pod_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// A reference to a pod with its uid: `kubectl describe pod` lists only the Events whose
/// reference carries the pod's uid.
pub fn pod_ref_with_uid(namespace: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        uid: uid.map(str::to_owned),
        ..pod_ref(namespace, name)
    }
}

/// A short list of names for a note: the first few, then how many more.
pub fn some_of(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_summarised() {
        let names: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
        assert_eq!(some_of(&names[..2]), "p0, p1");
        assert!(some_of(&names).ends_with("p9 and 2 more"));
    }
}
