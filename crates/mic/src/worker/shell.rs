//! The worker's loop: a thin shell around two pure decisions, the target's [`TargetState`] (see
//! `super::target_state`: read the target, send this change, may this object be marked) and,
//! per `AzureAssignedIdentity`, what to write at each stage of a batch (`super::writes`). It
//! feeds them the planner's pictures and ARM's answers, and carries out their verdicts.
//!
//! A batch creates its new `AzureAssignedIdentity` objects while its delta PATCH runs, then
//! marks `Assigned` every object whose identity is now on the target: two writes per pod, and
//! the creates done while the apiserver would otherwise wait for ARM. An object MIC created has
//! no status until then, which counts as `Created` (see `AzureAssignedIdentity::state`); a
//! batch running past [`CREATE_WAITING_AFTER`], or failing, writes `Created` for all to see.
//! Objects whose identity is already there (ARM's last answer has it and no change in flight
//! removes it) are written and marked at once, with no ARM call. An object whose identity the
//! PATCH in flight removes waits: when the PATCH returns, the identity is missing from a target
//! that needs it, so the next batch adds it back and marks the object then.
//! Writes run concurrently (bounded across workers); Events are queued, never awaited.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use futures_util::{StreamExt, stream};
use matching::ComputeTarget;
use tokio::{sync::watch, time::Instant};

use super::{
    arm_batch::{ArmOutcome, change_target},
    objects::report_failure,
    target_state::{Known, Next, TargetState},
    writes::{Ledger, Stage, StatusWritten, Writes},
};
use crate::{
    controller::{Shared, delete_assigned, lock},
    plan::{Refresh, TargetWork, ToAssign},
};

/// How long the identities a target needs must stay the same before a batch goes to ARM.
const SETTLE: Duration = Duration::from_millis(150);
/// The longest a batch waits for them to settle.
const SETTLE_MAX: Duration = Duration::from_secs(1);

/// How long an ARM batch runs before the objects waiting for it get an explicit `Created` status
/// rather than going straight to `Assigned` once their identity is there.
const CREATE_WAITING_AFTER: Duration = Duration::from_secs(5);

pub(crate) async fn run(shared: Arc<Shared>, target: ComputeTarget, mut rx: watch::Receiver<TargetWork>) {
    let mut worker = Worker {
        state: TargetState::new(shared.settings.protected_client_ids.clone())
            .with_removal_grace(shared.settings.removal_grace),
        shared,
        target,
        ledger: Ledger::default(),
    };
    let mut refreshed = Refresh::default();
    let mut applied_needed = BTreeSet::new();
    loop {
        if !settle(&mut rx, &applied_needed).await {
            return;
        }
        let work = rx.borrow_and_update().clone();
        applied_needed.clone_from(&work.needed);
        if work.refresh != refreshed {
            refreshed = work.refresh;
            worker.state.forget();
        }
        let failed = worker.apply(&work, &mut rx).await;
        let retry_at = failed.then(|| Instant::now() + worker.shared.settings.failure_retry);
        // A removal held back by the grace wakes the worker when it becomes due.
        let removal_at = worker.state.next_removal_due().map(Instant::from_std);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = sleep_until_opt(retry_at) => {}
            () = sleep_until_opt(removal_at) => {}
        }
    }
}

/// Waits, when the identities the target needs have changed since the last batch, until they
/// stop changing for [`SETTLE`] (at most [`SETTLE_MAX`]): the pods of a rollout arrive over a
/// second or so, and an ARM operation takes seconds, so a PATCH sent at the first pod would
/// leave the identities of the next pods to a second operation. Returns false when the planner
/// is gone.
async fn settle(rx: &mut watch::Receiver<TargetWork>, applied: &BTreeSet<String>) -> bool {
    let deadline = Instant::now() + SETTLE_MAX;
    let mut needed = rx.borrow().needed.clone();
    let mut quiet_from = Instant::now();
    while needed != *applied && !needed.is_empty() {
        let until = (quiet_from + SETTLE).min(deadline);
        match tokio::time::timeout_at(until, rx.changed()).await {
            Err(_) => break,
            Ok(Err(_)) => return false,
            Ok(Ok(())) => {
                let now = rx.borrow().needed.clone();
                if now != needed {
                    needed = now;
                    quiet_from = Instant::now();
                }
            }
        }
    }
    true
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Its fields are the room's: `objects` writes for it.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) target: ComputeTarget,
    /// The target's identities as Azure last reported them, the change in flight and the wants.
    pub(super) state: TargetState,
    /// What this worker wrote, until the planner's cache has caught up.
    pub(super) ledger: Ledger,
}

/// What happened while ARM worked on a batch ([`Worker::follow`]).
struct Followed {
    /// The latest picture, if a later one than the batch's arrived meanwhile.
    latest: Option<TargetWork>,
    /// Whether every write succeeded.
    all_written: bool,
}

impl Worker {
    /// Applies one picture. Returns whether something must be retried later. Pictures that
    /// arrive while ARM works are written at once (see [`Worker::follow`]); when any did, `rx`
    /// is marked changed so that the next round applies the latest one to ARM.
    async fn apply(&mut self, work: &TargetWork, rx: &mut watch::Receiver<TargetWork>) -> bool {
        let shared = self.shared.clone();
        let shared = &*shared;
        let target_id = self.target.arm_id();
        self.state.tick(std::time::Instant::now());
        self.state.want(work.wants());
        // A needed identity missing from the target is work even with nothing pending: it is
        // how an identity removed by a PATCH that was in flight when it was needed again, or
        // found missing by a read-back, is put back.
        if work.assign.is_empty()
            && work.release.is_empty()
            && work.stale.is_empty()
            && !self.state.needs_arm_work()
        {
            self.ledger.clear();
            return false;
        }
        self.ledger.forget_settled(work, Instant::now());
        let todo = self.ledger.todo(work);

        if self.state.next() == Next::Read {
            match shared.arm.get(&self.target).await {
                Ok(s) => self.state.read(s),
                Err(e) => {
                    // Service principals need nothing from ARM: they proceed anyway.
                    let sp = self.ledger.writes(work, &BTreeSet::new(), Stage::Answered);
                    self.write(sp).await;
                    let msi: Vec<&ToAssign> = todo.iter().copied().filter(|a| a.arm_id.is_some()).collect();
                    report_failure(shared, &target_id, &msi, &e.to_string(), &BTreeMap::new()).await;
                    return true;
                }
            }
        }
        if self.state.next() == Next::LeaveAlone {
            tracing::info!(target = %target_id, "not touching a VM or scale set that is being deleted");
            return false;
        }
        let protected = self.state.protected();
        let start = match (self.state.send(), self.state.known()) {
            (Some(change), Known::Read(current)) => Some((change, current.clone())),
            _ => None,
        };
        // What may be marked `Assigned` while the change is in flight: not what it removes.
        let on = self.state.on_target();
        let started = Instant::now();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let target = self.target.clone();
        let arm = async {
            let outcome = match start {
                Some((change, current)) => change_target(shared, &target, current, change, &protected).await,
                None => ArmOutcome {
                    landing: None,
                    refused: BTreeMap::new(),
                    batch_error: None,
                },
            };
            let _ = done_tx.send(());
            outcome
        };
        let (outcome, Followed { latest, all_written }) =
            tokio::join!(arm, self.follow(work, rx, &on, done_rx));
        let ArmOutcome {
            landing,
            refused,
            batch_error,
        } = outcome;
        if let Some(landing) = landing {
            self.state.landed(landing);
        }
        let now_on = self.state.on_target();
        let mut retry = batch_error.is_some() || !refused.is_empty() || !all_written;

        // Objects whose identity ARM's answer now shows are marked `Assigned`, from the latest
        // picture (those marked while the PATCH ran are no longer to do).
        let seen = latest.as_ref().unwrap_or(work);
        let arrived = self.ledger.writes(seen, &now_on, Stage::Answered);
        let assigned_after_arm = arrived.assigned.len();
        retry |= !self.write(arrived).await;
        if batch_error.is_some() || !refused.is_empty() {
            // Until the retry, the objects still waiting say so.
            retry |= !self.write_picture(seen, &now_on, Stage::Mark).await;
        }
        // A later picture, or an answer that leaves work (a read-back asked meanwhile), goes to
        // ARM in the next round, not at the periodic pass.
        if latest.is_some() || (!retry && self.state.needs_arm_work()) {
            rx.mark_changed();
        }
        tracing::debug!(
            target = %target_id,
            assigned_after_arm,
            elapsed = ?started.elapsed(),
            "batch applied"
        );
        let failed: Vec<&ToAssign> = todo
            .iter()
            .copied()
            .filter(|a| !self.state.may_mark_assigned(a.arm_id.as_deref()))
            .collect();
        // (`todo` is this batch's own picture: later arrivals are the next batch's business.)
        report_failure(
            shared,
            &target_id,
            &failed,
            batch_error.as_deref().unwrap_or_default(),
            &refused,
        )
        .await;
        if !work.stale.is_empty() {
            // Left-behind identities that are gone, needed again or protected need no more care.
            let mut stale = lock(&shared.stale);
            if let Some(ids) = stale.get_mut(&self.target) {
                ids.retain(|id| !(work.stale.contains(id) && self.state.let_go(id)));
                if ids.is_empty() {
                    stale.remove(&self.target);
                }
            }
        }
        let mut done_with = Vec::new();
        for r in &work.release {
            match r.arm_id.as_deref() {
                None => done_with.push(r),
                Some(id) if self.state.let_go(id) => done_with.push(r),
                // Still on the target during its grace: the object waits, and the worker wakes
                // when the removal is due.
                Some(id) if self.state.in_grace(id) => {}
                Some(_) => retry = true,
            }
        }
        stream::iter(done_with)
            .for_each_concurrent(shared.settings.write_concurrency, |release| {
                delete_assigned(shared, release)
            })
            .await;
        retry
    }

    /// While ARM works on a batch: writes the objects of `work` and of every later picture, until
    /// `done`. Objects whose identity is on the target (`on`: ARM's last answer has it and the
    /// change in flight does not remove it) or that need none are
    /// written and marked `Assigned` at once. New objects waiting for an identity are created
    /// without a status (which reads as `Created`), and get an explicit `Created` only once the
    /// batch has run for [`CREATE_WAITING_AFTER`]. In the common case of a quick operation their
    /// next write is `Assigned`: two writes per pod, the apiserver being what limits a large
    /// rollout.
    async fn follow(
        &mut self,
        work: &TargetWork,
        rx: &mut watch::Receiver<TargetWork>,
        on: &BTreeSet<String>,
        mut done: tokio::sync::oneshot::Receiver<()>,
    ) -> Followed {
        let slow = tokio::time::sleep(CREATE_WAITING_AFTER);
        tokio::pin!(slow);
        let mut is_slow = false;
        let mut followed = Followed {
            latest: None,
            all_written: self.write_picture(work, on, Stage::Ahead).await,
        };
        loop {
            tokio::select! {
                biased;
                _ = &mut done => return followed,
                () = &mut slow, if !is_slow => {
                    is_slow = true;
                    let picture = followed.latest.as_ref().unwrap_or(work);
                    followed.all_written &= self.write_picture(picture, on, Stage::Mark).await;
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return followed;
                    }
                    let picture = rx.borrow_and_update().clone();
                    let stage = if is_slow { Stage::Mark } else { Stage::Later };
                    followed.all_written &= self.write_picture(&picture, on, stage).await;
                    followed.latest = Some(picture);
                }
            }
        }
    }

    /// Writes a picture's objects as `stage` says (see `super::writes`). Returns whether every
    /// write succeeded.
    async fn write_picture(&mut self, work: &TargetWork, on: &BTreeSet<String>, stage: Stage) -> bool {
        let writes = self.ledger.writes(work, on, stage);
        self.write(writes).await
    }

    /// Carries out decided writes, the three kinds concurrently, and records in the ledger
    /// those that succeeded. Returns whether every write succeeded.
    async fn write(&mut self, writes: Writes<'_>) -> bool {
        let (no_status, created, assigned) = tokio::join!(
            self.write_all(&writes.no_status, StatusWritten::NotYet),
            self.write_all(&writes.created, StatusWritten::Created),
            self.write_all(&writes.assigned, StatusWritten::Assigned)
        );
        self.record(no_status) & self.record(created) & self.record(assigned)
    }
}
