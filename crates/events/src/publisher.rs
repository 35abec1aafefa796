//! The kube shell around the [`SeriesBook`]: occurrences are decided at once (the book is a
//! mutex held for a map lookup), and the writes they need go to a bounded queue drained by a
//! few workers. A caller never waits for the apiserver; when the queue is full a write is
//! dropped and counted (`Config::on_drop`), because a slow apiserver must not slow token
//! answers or assignments. Nothing but the book is kept per Event: kube's `Recorder` kept
//! every Event for minutes and scanned them all on each publish.

use std::{
    sync::{Arc, Mutex, PoisonError, Weak},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use tokio::sync::mpsc;

use crate::{
    note,
    series::{Decision, SeriesBook, SeriesKey, SeriesPolicy, event_name},
};

/// Whether Events may be written now; they wait while it says no (MIC: while its own writes
/// are in flight, since on a busy apiserver every Event write would delay one of those).
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;
/// Called for each write dropped because the queue was full (a metric's counter).
pub type Dropped = Arc<dyn Fn() + Send + Sync>;

/// How often a waiting write asks [`Ready`] again.
const YIELD: Duration = Duration::from_millis(25);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// Who writes, and the bounds of the queue and the book.
#[derive(Clone)]
pub struct Config {
    /// `reportingController`, e.g. `aadpodidentity.k8s.io/nmi`; also the field manager.
    pub controller: String,
    /// `reportingInstance`: the node or pod name.
    pub instance: String,
    /// Writes waiting; beyond this, new ones are dropped.
    pub queue: usize,
    /// Writes in flight at once.
    pub workers: usize,
    pub series: SeriesPolicy,
    pub ready: Option<Ready>,
    pub on_drop: Dropped,
}

/// One thing that happened, about one object.
#[derive(Clone, Debug)]
pub struct Occurrence {
    pub kind: Kind,
    /// CamelCase, e.g. `IdentityNotBound`.
    pub reason: String,
    /// What was tried, e.g. `GetToken`.
    pub action: String,
    /// Made one line and cut to fit ([`note::one_line`]).
    pub note: String,
    pub regarding: ObjectReference,
}

impl Occurrence {
    fn key(&self) -> SeriesKey {
        SeriesKey {
            namespace: self.regarding.namespace.clone().unwrap_or_default(),
            name: self.regarding.name.clone().unwrap_or_default(),
            uid: self.regarding.uid.clone(),
            reason: self.reason.clone(),
            action: self.action.clone(),
        }
    }
}

/// A write waiting in the queue. It holds what its Event needs, not the Event: an `Event` is 1,000
/// bytes of mostly unset fields before its dozen strings, about twice a [`Pending`], and a queue
/// holds thousands (MIC's 4,096 while 10,000 pods are assigned: issue 23 §7). The worker that
/// writes it builds the Event.
#[derive(Debug)]
enum Write {
    Create(Box<Pending>),
    /// A new count for the Event `name`; when it is gone (its create was dropped, or it
    /// was deleted), `fallback` is created in its place.
    Series {
        namespace: String,
        name: String,
        series: EventSeries,
        fallback: Option<Box<Pending>>,
    },
}

/// An Event to create: its occurrence, its name, when it happened, and its series if it has one.
#[derive(Debug)]
struct Pending {
    occurrence: Occurrence,
    name: String,
    at: Timestamp,
    series: Option<EventSeries>,
}

impl Pending {
    fn new(occurrence: Occurrence, name: String, series: Option<EventSeries>) -> Box<Self> {
        Box::new(Self {
            occurrence,
            name,
            at: Timestamp::now(),
            series,
        })
    }
}

/// Who reports the Events (`reportingController`, `reportingInstance`).
#[derive(Clone)]
struct Reporter {
    controller: String,
    instance: String,
}

struct Inner {
    tx: mpsc::Sender<Write>,
    book: Mutex<SeriesBook>,
    on_drop: Dropped,
}

/// The sending side: cheap to clone, never blocks. The workers stop when every clone is dropped.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl Publisher {
    /// Starts the workers, and a timer that writes the counts of series that stopped repeating.
    pub fn start(client: Client, config: Config) -> Self {
        let (tx, rx) = mpsc::channel::<Write>(config.queue.max(1));
        let inner = Arc::new(Inner {
            tx,
            book: Mutex::new(SeriesBook::new(config.series, fastrand::u64(..))),
            on_drop: config.on_drop.clone(),
        });
        let reporter = Reporter {
            controller: config.controller.clone(),
            instance: note::truncate(&config.instance, 128),
        };
        tokio::spawn(drain(client, rx, config.clone(), reporter));
        tokio::spawn(flush(Arc::downgrade(&inner), config.series.write_every));
        Self { inner }
    }

    /// Publishes `o` through the series book: a new Event, a series update, or only a count.
    pub fn publish(&self, o: Occurrence) {
        let decision = self.book().observe(&o.key(), Instant::now());
        let name = |id| event_name(o.regarding.name.as_deref().unwrap_or_default(), id);
        let write = match decision {
            Decision::Suppress => return,
            Decision::Create { id } => {
                let name = name(id);
                Write::Create(Pending::new(o, name, None))
            }
            Decision::UpdateSeries { id, count } => {
                let (name, series) = (name(id), series(count));
                Write::Series {
                    namespace: o.regarding.namespace.clone().unwrap_or_default(),
                    name: name.clone(),
                    fallback: Some(Pending::new(o, name, Some(series.clone()))),
                    series,
                }
            }
        };
        self.inner.send(write);
    }

    /// Publishes `o` as an Event of its own, outside any series (a success worth one line each).
    /// Successes fill at most a quarter of the queue ([`admits_success`]).
    pub fn publish_once(&self, o: Occurrence) {
        let (free, max) = (self.inner.tx.capacity(), self.inner.tx.max_capacity());
        if !admits_success(free, max) {
            (self.inner.on_drop)();
            return;
        }
        let name = event_name(o.regarding.name.as_deref().unwrap_or_default(), fastrand::u64(..));
        self.inner.send(Write::Create(Pending::new(o, name, None)));
    }

    fn book(&self) -> std::sync::MutexGuard<'_, SeriesBook> {
        self.inner.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a success may join a queue with `free` of its `max` places left: only while fewer than a
/// quarter are taken. A burst of successes (MIC assigning 10,000 pods at once, one Event each)
/// then neither crowds out the warnings a user needs to see why something failed, nor holds
/// thousands of Events in memory: a queue full of them was some 7 MiB of MIC's 64 (issue 23 §7).
/// Dropped successes are counted as any dropped write.
fn admits_success(free: usize, max: usize) -> bool {
    let taken = max.saturating_sub(free);
    taken < max.div_ceil(4)
}

impl Inner {
    fn send(&self, write: Write) {
        if let Err(e) = self.tx.try_send(write) {
            (self.on_drop)();
            tracing::debug!(error = %e, "event queue full; dropping an event");
        }
    }
}

impl Reporter {
    fn event(&self, p: &Pending) -> Event {
        let o = &p.occurrence;
        Event {
            metadata: ObjectMeta {
                name: Some(p.name.clone()),
                namespace: o.regarding.namespace.clone(),
                ..Default::default()
            },
            action: Some(note::truncate(&o.action, 128)),
            event_time: Some(MicroTime(p.at)),
            note: Some(note::one_line(&o.note)),
            reason: Some(note::truncate(&o.reason, 128)),
            regarding: Some(o.regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            series: p.series.clone(),
            type_: Some(
                match o.kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}

fn series(count: u32) -> EventSeries {
    EventSeries {
        count: i32::try_from(count).unwrap_or(i32::MAX),
        last_observed_time: MicroTime(Timestamp::now()),
    }
}

async fn drain(client: Client, mut rx: mpsc::Receiver<Write>, config: Config, reporter: Reporter) {
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    stream
        .for_each_concurrent(config.workers.max(1), |w| {
            let client = client.clone();
            let (config, reporter) = (&config, &reporter);
            async move {
                if let Some(ready) = &config.ready {
                    while !ready() {
                        tokio::time::sleep(YIELD).await;
                    }
                }
                if let Err(e) = write(client, w, reporter).await {
                    tracing::debug!(error = %e, "publishing an event failed");
                }
            }
        })
        .await;
}

async fn write(client: Client, w: Write, reporter: &Reporter) -> Result<(), kube::Error> {
    let post = PostParams {
        field_manager: Some(reporter.controller.clone()),
        ..Default::default()
    };
    match w {
        Write::Create(p) => {
            let e = reporter.event(&p);
            let ns = e.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            Api::<Event>::namespaced(client, &ns).create(&post, &e).await?;
        }
        Write::Series {
            namespace,
            name,
            series,
            fallback,
        } => {
            let api = Api::<Event>::namespaced(client, &namespace);
            let patch = serde_json::json!({ "series": series });
            let params = PatchParams {
                field_manager: Some(reporter.controller.clone()),
                ..Default::default()
            };
            match (api.patch(&name, &params, &Patch::Merge(&patch)).await, fallback) {
                (Err(kube::Error::Api(s)), Some(p)) if s.code == 404 => {
                    api.create(&post, &reporter.event(&p)).await?;
                }
                (r, _) => {
                    r?;
                }
            }
        }
    }
    Ok(())
}

/// Every `every`, writes the counts the book holds back, until the publisher is dropped.
async fn flush(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let due = inner
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due(Instant::now());
        for d in due {
            inner.send(Write::Series {
                name: event_name(&d.key.name, d.id),
                namespace: d.key.namespace,
                series: series(d.count),
                fallback: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::admits_success;

    #[test]
    fn successes_take_at_most_a_quarter_of_the_queue() {
        assert!(admits_success(4096, 4096), "an empty queue");
        assert!(admits_success(4096 - 1023, 4096), "1,023 taken");
        assert!(!admits_success(4096 - 1024, 4096), "a quarter taken");
        assert!(!admits_success(0, 4096), "a full queue");
        // A queue of one still takes a success when empty, so Events are never off.
        assert!(admits_success(1, 1));
        assert!(!admits_success(0, 1));
    }
}
