//! Injected faults: which calls fail, and how (set through the admin API or [`crate::Admin`]).

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::sync::lock;

/// Which of the emulator's servers a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    Imds,
    Arm,
    Entra,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Imds => "imds",
            EndpointKind::Arm => "arm",
            EndpointKind::Entra => "entra",
        }
    }
}

/// What an injected fault does to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Delay, then serve the request normally.
    Latency { ms: u64 },
    /// Answer with this status (5xx, 429...) and an error body in the endpoint's own format.
    Status {
        status: u16,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Hold the request without answering for `ms` (default 10 minutes), then drop the connection.
    Timeout {
        #[serde(default)]
        ms: Option<u64>,
    },
    /// Drop the connection with a TCP reset, without an answer.
    Reset,
    /// ARM writes only: accept the write (202-style, with its operation), then end the
    /// long-running operation `Failed` with this error; the change does not take effect and
    /// the resource's provisioning state becomes `Failed`. Reads are not affected.
    OperationFailed {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
}

/// A fault rule. With `count`, it fires on the next N matching calls; with `rate` (0..1), on
/// that fraction of calls; with both, on that fraction until N have fired; with neither, always.
// No deny_unknown_fields: serde does not support it together with `flatten`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub endpoint: EndpointKind,
    /// Restricts an IMDS fault to a VM/instance name or node name; an ARM fault to requests whose
    /// path contains this text (case-insensitive).
    #[serde(default)]
    pub target: Option<String>,
    #[serde(flatten)]
    pub action: FaultAction,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub rate: Option<f64>,
}

// What the fault middleware (server.rs) puts in a request's extensions for the handler to act
// on. They live here, beside the faults they come from, rather than in server.rs: the handlers
// (arm, imds) read them, and the middleware names ARM's handlers (`arm::call_label`), so
// defining them in server.rs would make arm and server import each other.

/// A delay an injected latency fault asks the handler to add.
#[derive(Clone, Copy)]
pub struct InjectedDelay(pub Duration);

/// Set on an ARM write whose long-running operation must end `Failed` with this error.
#[derive(Clone, Debug)]
pub struct FailOperation {
    pub code: String,
    pub message: String,
}

struct Rule {
    id: u64,
    fault: Fault,
    fired: u64,
}

#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    active: AtomicUsize,
    next_id: AtomicU64,
    rng: AtomicU64,
}

impl Faults {
    pub fn add(&self, fault: Fault) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut rules = lock(&self.rules);
        rules.push(Rule { id, fault, fired: 0 });
        self.active.store(rules.len(), Ordering::Release);
        id
    }

    pub fn clear(&self) {
        let mut rules = lock(&self.rules);
        rules.clear();
        self.active.store(0, Ordering::Release);
    }

    fn random(&self) -> f64 {
        // A splitmix step is plenty for "fail about this fraction of calls".
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The fault to apply to this call, if any; `targets` are the names the call answers to.
    /// `write`: whether the call is an ARM write (only those take `OperationFailed`).
    pub fn pick(&self, kind: EndpointKind, targets: &[&str], write: bool) -> Option<FaultAction> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut rules = lock(&self.rules);
        let mut hit = None;
        for (i, r) in rules.iter_mut().enumerate() {
            if r.fault.endpoint != kind
                || (matches!(r.fault.action, FaultAction::OperationFailed { .. }) && !write)
            {
                continue;
            }
            if let Some(t) = &r.fault.target {
                let t = t.to_ascii_lowercase();
                let matches = match kind {
                    EndpointKind::Arm | EndpointKind::Entra => {
                        targets.iter().any(|x| x.to_ascii_lowercase().contains(&t))
                    }
                    EndpointKind::Imds => targets.iter().any(|x| x.eq_ignore_ascii_case(&t)),
                };
                if !matches {
                    continue;
                }
            }
            if let Some(rate) = r.fault.rate
                && self.random() >= rate
            {
                continue;
            }
            r.fired += 1;
            hit = Some((
                i,
                r.fault.action.clone(),
                r.fault.count.is_some_and(|c| r.fired >= c),
            ));
            break;
        }
        let (i, action, exhausted) = hit?;
        if exhausted {
            rules.remove(i);
            self.active.store(rules.len(), Ordering::Release);
        }
        Some(action)
    }

    pub fn list(&self) -> Vec<Value> {
        lock(&self.rules)
            .iter()
            .map(|r| json!({"id": r.id, "fired": r.fired, "fault": r.fault}))
            .collect()
    }
}

#[cfg(test)]
mod tests;
