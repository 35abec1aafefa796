//! Kubernetes Events that a retrying failure cannot multiply: NMI and MIC both report failures
//! that repeat (a pod polling for a token every 50 ms, an ARM error retried every 30 s), and one
//! Event per occurrence would flood etcd and bury everything else in `kubectl describe`.
//!
//! - [`series`]: the pure part, a bounded [`SeriesBook`] deciding for each occurrence whether
//!   to create an Event, update the series of the one created before, or only count it; the
//!   same rules as client-go's events v1 (6 minutes without a repeat ends a series).
//! - [`publisher`]: the thin kube shell, a bounded queue and a few workers writing
//!   events.k8s.io/v1 Events; the caller never waits for a write, and a full queue drops.
//! - [`note`]: notes fit for the API and for a terminal (≤ 1 KB, control characters escaped).
#![forbid(unsafe_code)]

pub mod note;
pub mod publisher;
pub mod series;

pub use publisher::{Config, Kind, Publisher, Ready};
pub use series::{Decision, SeriesBook, SeriesKey, SeriesPolicy};
