//! Kubernetes Events on pods and bindings, published in the background.
//!
//! Events tell a user why a pod got (or did not get) its identity, but they must never slow an
//! assignment down: at 1,000 pods they are as many writes as the assignments themselves. So
//! they queue here and a few publishers drain the queue while assignments go on. Unlike kube's
//! `Recorder`, nothing is cached per event: its cache kept every event for minutes and scanned
//! all of them on each publish, which at 10,000 pods cost tens of MiB and quadratic time.
//! When the queue is full an event is dropped and counted, never awaited. Events also yield to
//! MIC's own writes: they go out when no assignment write is in flight, since on a busy
//! apiserver every event write would delay an assignment.

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client};
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::Metrics;

/// Events waiting to be written; beyond this, new ones are dropped.
const QUEUE: usize = 4096;
/// Events written at once.
const PUBLISHERS: usize = 4;
/// How often a waiting event checks whether assignment writes are done.
const YIELD: std::time::Duration = std::time::Duration::from_millis(25);
/// The longest note the API accepts is 1 KB.
const MAX_NOTE: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

#[derive(Debug)]
struct Queued {
    kind: Kind,
    reason: &'static str,
    note: String,
    regarding: ObjectReference,
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// Starts the publishers; they stop when every `Events` is dropped. `writes` bounds MIC's
    /// assignment writes (`max` permits); events wait while any of those is in flight.
    pub fn start(client: Client, metrics: Arc<Metrics>, writes: Arc<Semaphore>, max: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Queued>(QUEUE);
        let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "mic".into());
        tokio::spawn(async move {
            tokio_stream(rx)
                .for_each_concurrent(PUBLISHERS, |q| {
                    let client = client.clone();
                    let instance = instance.clone();
                    let writes = writes.clone();
                    async move {
                        while writes.available_permits() < max {
                            tokio::time::sleep(YIELD).await;
                        }
                        let ns = q.regarding.namespace.clone().unwrap_or_else(|| "default".into());
                        let api = Api::<Event>::namespaced(client, &ns);
                        if let Err(e) = api.create(&crate::post_params(), &event(q, &instance)).await {
                            tracing::debug!(error = %e, "publishing an event failed");
                        }
                    }
                })
                .await;
        });
        Self { tx, metrics }
    }

    /// Queues an event about `regarding`.
    pub fn publish(&self, kind: Kind, reason: &'static str, note: String, regarding: ObjectReference) {
        let q = Queued {
            kind,
            reason,
            note,
            regarding,
        };
        if let Err(e) = self.tx.try_send(q) {
            self.metrics.event_dropped();
            tracing::debug!(error = %e, "event queue full; dropping an event");
        }
    }
}

fn tokio_stream<T>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn event(q: Queued, instance: &str) -> Event {
    let name = q.regarding.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            // As kubectl and kube's recorder name them: the object, then a unique suffix.
            name: Some(format!("{name}.{:x}", fastrand::u64(..))),
            namespace: q.regarding.namespace.clone(),
            ..Default::default()
        },
        action: Some("AssignIdentity".into()),
        event_time: Some(MicroTime(Timestamp::now())),
        note: Some(truncate(&q.note, MAX_NOTE)),
        reason: Some(q.reason.into()),
        regarding: Some(q.regarding),
        reporting_controller: Some("aadpodidentity.k8s.io/mic".into()),
        reporting_instance: Some(truncate(instance, 128)),
        type_: Some(
            match q.kind {
                Kind::Normal => "Normal",
                Kind::Warning => "Warning",
            }
            .into(),
        ),
        ..Default::default()
    }
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
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
    use kube::ResourceExt;

    #[test]
    fn events_name_their_object_and_fit_the_api() {
        let q = Queued {
            kind: Kind::Warning,
            reason: "IdentityAssignmentFailed",
            note: "é".repeat(600),
            regarding: pod_ref("ns", "web-0"),
        };
        let e = event(q, "mic-0");
        assert!(e.metadata.name.as_deref().unwrap().starts_with("web-0."));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert!(e.note.as_ref().unwrap().len() <= MAX_NOTE);
        assert_eq!(e.regarding.as_ref().unwrap().kind.as_deref(), Some("Pod"));
        assert_eq!(
            e.reporting_controller.as_deref(),
            Some("aadpodidentity.k8s.io/mic")
        );
        assert_eq!(e.namespace().as_deref(), Some("ns"));
    }

    #[test]
    fn long_lists_are_summarised() {
        let names: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
        assert_eq!(some_of(&names[..2]), "p0, p1");
        assert!(some_of(&names).ends_with("p9 and 2 more"));
    }
}
