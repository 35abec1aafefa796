//! Benchmark support shared by pod-identity's components: an HTTP/1.1 load generator that keeps
//! many connections busy for a fixed time and reports throughput and latency percentiles, and the
//! writer of `target/bench/summary.json`, which each benchmark merges its flat figures into so
//! that one file (and one printed table) holds every component's numbers.
#![forbid(unsafe_code)]

pub mod load;
pub mod mem;
pub mod summary;

pub use load::{LoadReport, LoadSpec, run};
pub use summary::{default_summary_path, merge_into, print_table};

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("summary file {0} is not a JSON object")]
    NotAnObject(String),
    #[error("summary JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("HTTP: {0}")]
    Http(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
