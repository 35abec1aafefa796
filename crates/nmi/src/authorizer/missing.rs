//! An identity MIC reports `Assigned` that IMDS does not have (issue 13 §2-§3).
//!
//! Under pod churn MIC may mark an AzureAssignedIdentity `Assigned` while a removal of the
//! identity from the VM or scale set is still landing, and someone may remove an identity behind
//! MIC's back. IMDS then answers NMI 400 "Identity not found", which every Azure SDK treats as
//! final: handed to the pod, it crashes the application. NMI instead treats the answer like "not
//! yet assigned": it holds the request, asking IMDS again with a short backoff (and deciding
//! again whenever the watched state changes) until `--identity-wait` runs out, then answers what
//! it answers for "not yet assigned", which the SDKs retry. Meanwhile it tells MIC, by stamping
//! [`api::v1::IDENTITY_MISSING_ANNOTATION`] on the object with the time of the finding; MIC
//! reads the VM or scale set back from ARM when the value changes and puts the identity back.
//!
//! Here: recognising the answer, the pause between tries and the [`Authorizer`]'s hold
//! (`pause_for_imds`), and the finding written for MIC, at most once per object
//! every [`REPORT_EVERY`].

use std::{
    collections::HashMap,
    pin::pin,
    sync::Mutex,
    time::{Duration, Instant},
};

use api::{AzureAssignedIdentity, AzureIdentity};
use kube::api::{Api, Patch, PatchParams};
use matching::PodFacts;
use mirror::sync;

use super::Authorizer;
use crate::{
    Error,
    state::{Key, Mode},
    token::TokenSource,
};

/// IMDS's `error_description` for an identity that is not on the VM (its whole answer is 400
/// `{"error":"invalid_request","error_description":"Identity not found"}`).
pub const IDENTITY_NOT_FOUND: &str = "Identity not found";

/// Whether `e` is IMDS saying that the identity asked for is not on this VM.
pub fn is_identity_not_found(e: &Error) -> bool {
    let Error::Upstream {
        what, status, body, ..
    } = e
    else {
        return false;
    };
    if *what != "IMDS" || *status != 400 {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(body)
        .is_ok_and(|v| v["error"] == "invalid_request" && v["error_description"] == IDENTITY_NOT_FOUND)
}

/// The first pause before asking IMDS again; it doubles up to [`LONGEST_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// MIC puts an identity back within seconds: a second between tries finds it soon after, and
/// keeps a held request (shared by every request for the same token) to about one IMDS call a
/// second, well inside IMDS's 20 per second per VM.
pub const LONGEST_RETRY: Duration = Duration::from_secs(1);

/// When to ask IMDS again after the `attempt`-th (from 0) "Identity not found", for a request
/// held until `deadline`: `None` once the deadline has passed. The last try is at the deadline.
pub fn next_try(
    attempt: u32,
    now: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> Option<tokio::time::Instant> {
    if now >= deadline {
        return None;
    }
    let pause = FIRST_RETRY
        .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .min(LONGEST_RETRY);
    Some((now + pause).min(deadline))
}

/// The least time between two annotations of one object: each makes MIC read ARM again.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Objects remembered before those reported long ago are dropped.
const PRUNE_ABOVE: usize = 4096;

/// Which findings are written to the objects: at most one per object per [`REPORT_EVERY`].
#[derive(Default)]
pub struct MissingReports {
    last: Mutex<HashMap<Key, Instant>>,
}

impl MissingReports {
    /// Whether a finding about `object` at `now` is to be written (and, if so, records it).
    pub fn due(&self, object: &Key, now: Instant) -> bool {
        let mut last = sync::lock(&self.last);
        if last.len() > PRUNE_ABOVE {
            last.retain(|_, at| now.saturating_duration_since(*at) < REPORT_EVERY);
        }
        match last.get(object) {
            Some(at) if now.saturating_duration_since(*at) < REPORT_EVERY => false,
            _ => {
                last.insert(object.clone(), now);
                true
            }
        }
    }
}

/// The field manager of NMI's writes, so that `managedFields` name it.
pub const FIELD_MANAGER: &str = "aadpodidentity-nmi";

/// The merge patch that stamps a finding at `at` (RFC 3339) on an AzureAssignedIdentity.
pub fn annotation_patch(at: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {api::v1::IDENTITY_MISSING_ANNOTATION: at}}})
}

/// Stamps the finding on `object` in the background: the pod's request never waits for it, and a
/// failed write (RBAC, apiserver away) is logged, nothing more; the periodic drift repair of MIC
/// still puts the identity back.
pub fn annotate(client: kube::Client, object: Key) {
    let at = k8s_openapi::jiff::Timestamp::now().to_string();
    tokio::spawn(async move {
        let (namespace, name) = object;
        let api = Api::<AzureAssignedIdentity>::namespaced(client, &namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api
            .patch(&name, &params, &Patch::Merge(annotation_patch(&at)))
            .await
        {
            Ok(_) => tracing::info!(
                namespace,
                name,
                at,
                "IMDS lacks an identity MIC reports Assigned: told MIC ({})",
                api::v1::IDENTITY_MISSING_ANNOTATION
            ),
            Err(e) => tracing::warn!(
                namespace, name, error = %e,
                "IMDS lacks an identity MIC reports Assigned; telling MIC (annotating the AzureAssignedIdentity) failed"
            ),
        }
    });
}

impl<S: TokenSource> Authorizer<S> {
    /// Whether `e` is held rather than handed on: IMDS's "Identity not found" in standard mode,
    /// where an `Assigned` AzureAssignedIdentity says the identity is meant to be on the VM. (In
    /// managed mode nobody would put it there: the operator's missing assignment is refused at
    /// once, with IMDS's words.)
    pub(super) fn holds_for(&self, e: &Error) -> bool {
        self.state.mode == Mode::Standard && is_identity_not_found(e)
    }

    /// Tells MIC that IMDS lacks `identity` for `pod`, when an `Assigned` object reports it (at
    /// most once per object every [`REPORT_EVERY`]).
    pub(super) fn report_missing(&self, pod: &PodFacts, identity: &AzureIdentity) {
        let Some(object) = self.state.assigned_object(pod, identity) else {
            return;
        };
        if !self.missing.due(&object, std::time::Instant::now()) {
            return;
        }
        match self.state.client() {
            Some(client) => annotate(client.clone(), object),
            None => tracing::debug!(?object, "no Kubernetes client: the finding is not written"),
        }
    }

    /// After IMDS's `attempt`-th (from 0) "Identity not found": waits until the next try, or
    /// until the watched state no longer `holds` the decision (MIC marked the object otherwise,
    /// the pod or its binding went), whichever is first; then the caller decides again. False
    /// once `deadline` has passed: the request is answered "not yet" instead.
    pub(super) async fn pause_for_imds(
        &self,
        attempt: u32,
        deadline: tokio::time::Instant,
        holds: impl Fn() -> bool,
    ) -> bool {
        let Some(at) = next_try(attempt, tokio::time::Instant::now(), deadline) else {
            return false;
        };
        // Subscribed before the state is looked at, so that no change after the look is missed.
        let mut changes = self.state.subscribe();
        let mut pause = pin!(tokio::time::sleep_until(at));
        loop {
            if !holds() {
                return true;
            }
            tokio::select! {
                () = &mut pause => return true,
                r = changes.changed() => if r.is_err() {
                    return true;
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
