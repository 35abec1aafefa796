//! Holding a request while IMDS lacks an identity MIC reports `Assigned` (see [`crate::missing`]):
//! the pause between tries, and the finding written for MIC.

use std::pin::pin;

use api::AzureIdentity;
use matching::PodFacts;
use tokio::time::Instant;

use super::Nmi;
use crate::{Error, missing, state::Mode, token::TokenSource};

impl<S: TokenSource> Nmi<S> {
    /// Whether `e` is held rather than handed on: IMDS's "Identity not found" in standard mode,
    /// where an `Assigned` AzureAssignedIdentity says the identity is meant to be on the VM. (In
    /// managed mode nobody would put it there: the operator's missing assignment is refused at
    /// once, with IMDS's words.)
    pub(super) fn holds_for(&self, e: &Error) -> bool {
        self.state.mode == Mode::Standard && missing::is_identity_not_found(e)
    }

    /// Tells MIC that IMDS lacks `identity` for `pod`, when an `Assigned` object reports it (at
    /// most once per object every [`missing::REPORT_EVERY`]).
    pub(super) fn report_missing(&self, pod: &PodFacts, identity: &AzureIdentity) {
        let Some(object) = self.state.assigned_object(pod, identity) else {
            return;
        };
        if !self.missing.due(&object, std::time::Instant::now()) {
            return;
        }
        match self.state.client() {
            Some(client) => missing::annotate(client.clone(), object),
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
        deadline: Instant,
        holds: impl Fn() -> bool,
    ) -> bool {
        let Some(at) = missing::next_try(attempt, Instant::now(), deadline) else {
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
