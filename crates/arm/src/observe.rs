//! What an [`ArmClient`](crate::ArmClient) reports of its requests, to whoever counts them: MIC's
//! Prometheus metrics implement [`CallObserver`]; the plugin, which counts nothing, passes
//! [`Unobserved`]. A trait rather than MIC's metrics type so that this crate, and the plugin with
//! it, needs no metrics library.

use std::time::Duration;

/// How one ARM request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    Ok,
    /// 429 Too Many Requests: the client waits for `Retry-After` before the subscription's next call.
    Throttled,
    /// 401: the cached token is dropped and the request retried with a new one.
    Unauthorized,
    /// 5xx: retried with backoff.
    ServerError,
    /// Any other 4xx: not retried.
    ClientError,
    /// No answer (connection refused, timeout, reset).
    TransportError,
}

impl CallResult {
    /// The name MIC's metrics label it with (`result` of `aadpodidentity_mic_arm_calls_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Throttled => "throttled",
            Self::Unauthorized => "unauthorized",
            Self::ServerError => "server_error",
            Self::ClientError => "client_error",
            Self::TransportError => "transport_error",
        }
    }
}

/// Told of every ARM request a client makes. `operation` names the request: `vm_get`,
/// `vm_update`, `vmss_get`, `vmss_update`, `operation_get` (polling a long-running operation) or
/// `identity_get`.
pub trait CallObserver: Send + Sync {
    /// How long one request took, answered or not.
    fn duration(&self, operation: &'static str, elapsed: Duration);
    /// How one request ended.
    fn result(&self, operation: &'static str, result: CallResult);
    /// A failed request is about to be sent again.
    fn retry(&self, operation: &'static str);
}

/// Counts nothing: for a client whose requests nobody measures (`kubectl pod-identity`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Unobserved;

impl CallObserver for Unobserved {
    fn duration(&self, _operation: &'static str, _elapsed: Duration) {}
    fn result(&self, _operation: &'static str, _result: CallResult) {}
    fn retry(&self, _operation: &'static str) {}
}
