//! What the emulator served: the call log and the counters a test asserts on.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use crate::{faults::EndpointKind, sync::lock};

/// One served request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    pub seq: u64,
    pub at_ms: u64,
    pub endpoint: EndpointKind,
    /// The VM/instance for IMDS; empty otherwise.
    pub target: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Set when a fault was injected into this call.
    pub fault: Option<String>,
    /// What an ARM call addressed (see [`crate::arm::call_label`]): `identity`, `tags`,
    /// `federated-credential`, `vm`, `vmss`, `operation`, `other`; empty for IMDS and Entra.
    #[serde(default)]
    pub label: String,
}

const LOG_CAPACITY: usize = 20_000;

#[derive(Default)]
pub struct CallLog {
    seq: AtomicU64,
    entries: Mutex<VecDeque<CallRecord>>,
}

impl CallLog {
    pub fn record(&self, mut rec: CallRecord) {
        rec.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut e = lock(&self.entries);
        if e.len() == LOG_CAPACITY {
            e.pop_front();
        }
        e.push_back(rec);
    }

    pub fn since(&self, seq: u64) -> Vec<CallRecord> {
        lock(&self.entries)
            .iter()
            .filter(|r| r.seq > seq)
            .cloned()
            .collect()
    }
}

/// Counts a test can assert on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CounterSnapshot {
    /// Requests served, by endpoint kind.
    pub requests: BTreeMap<String, u64>,
    /// ARM writes accepted (PATCH/PUT that started an operation), by resource id.
    pub arm_writes: BTreeMap<String, u64>,
    /// 429 answers served, by endpoint kind (limits, throttling and injected ones alike).
    pub throttled: BTreeMap<String, u64>,
    /// Tokens handed out, by identity resource id (managed identities) or client id (apps).
    pub tokens_issued: BTreeMap<String, u64>,
    /// Faults injected, by endpoint kind.
    pub faults_injected: BTreeMap<String, u64>,
    /// ARM GETs served (any status, 429s included), by what they addressed: `identity` counts
    /// reads of user-assigned identities, `vm`/`vmss` reads of compute (labels as in
    /// [`CallRecord::label`]).
    #[serde(default)]
    pub arm_reads: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Counters {
    inner: Mutex<CounterSnapshot>,
}

impl Counters {
    pub fn request(&self, kind: EndpointKind, status: u16, faulted: bool) {
        let mut c = lock(&self.inner);
        *c.requests.entry(kind.as_str().into()).or_default() += 1;
        if status == 429 {
            *c.throttled.entry(kind.as_str().into()).or_default() += 1;
        }
        if faulted {
            *c.faults_injected.entry(kind.as_str().into()).or_default() += 1;
        }
    }

    pub fn arm_read(&self, label: &str) {
        *lock(&self.inner).arm_reads.entry(label.into()).or_default() += 1;
    }

    pub fn arm_write(&self, resource_id: &str) {
        *lock(&self.inner)
            .arm_writes
            .entry(resource_id.into())
            .or_default() += 1;
    }

    pub fn token_issued(&self, who: &str) {
        let mut c = lock(&self.inner);
        if let Some(n) = c.tokens_issued.get_mut(who) {
            *n += 1;
        } else {
            c.tokens_issued.insert(who.into(), 1);
        }
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        lock(&self.inner).clone()
    }

    pub fn reset(&self) {
        *lock(&self.inner) = CounterSnapshot::default();
    }
}

#[cfg(test)]
mod tests;
