//! One worker per VM or scale set: applies the latest picture of what its target needs, one
//! batch at a time.
//!
//! The worker is a thin shell around the target's [`TargetState`] (see `crate::target_state`):
//! it feeds it the planner's pictures and ARM's answers, and carries out its verdicts: read the
//! target, send this change, mark these objects.
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
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use api::{
    AssignmentState, AzureAssignedIdentity,
    v1::{ASSIGNED_IDENTITY_FINALIZER, NODE_NAME_LABEL},
};
use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api,
    api::{ObjectMeta, Patch},
};
use matching::{ComputeTarget, TargetChange};
use mirror::Key;
use serde_json::json;
use tokio::{sync::watch, time::Instant};

use super::{Shared, delete_assigned, lock, set_state};
use crate::{
    arm::{CallError, IdentityState, patch_bodies},
    events::{Kind, pod_ref, some_of},
    plan::{ObjectWrite, Refresh, TargetWork, ToAssign},
    target_state::{Known, Landing, Next, TargetState},
};

/// How long a write this worker made stands in for the planner's view of the object. The
/// planner's cache learns of the write through its watch, usually within milliseconds; until
/// then its pictures still ask for the write, which must not be repeated.
const WRITTEN_FOR: Duration = Duration::from_secs(30);

/// How long the identities a target needs must stay the same before a batch goes to ARM.
const SETTLE: Duration = Duration::from_millis(150);
/// The longest a batch waits for them to settle.
const SETTLE_MAX: Duration = Duration::from_secs(1);

/// How long an ARM batch runs before the objects waiting for it get an explicit `Created` status
/// rather than going straight to `Assigned` once their identity is there.
const CREATE_WAITING_AFTER: Duration = Duration::from_secs(5);

/// What [`Worker::write_picture`] writes for the objects still waiting for their identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// The batch's own picture, before its PATCH: new objects are created without a status,
    /// rewritten ones are rewritten and marked `Created`.
    Ahead,
    /// A picture that arrived while the PATCH runs: new objects are created without a status.
    Later,
    /// The batch is slow or failed: every waiting object is written and marked `Created`.
    Mark,
}

/// What this worker last wrote for an object.
struct Written {
    /// What the object records, when this worker wrote it.
    object: Option<ToAssign>,
    /// The status written.
    state: StatusWritten,
    at: Instant,
}

/// The status this worker wrote with an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StatusWritten {
    /// Created without a status (which reads as `Created`): the status comes later.
    NotYet,
    Written(AssignmentState),
}

impl Written {
    /// Whether `a`'s object needs no write: it exists as it should, or this worker wrote it so.
    fn has_object(&self, a: &ToAssign) -> bool {
        a.write == ObjectWrite::Nothing || self.object.as_ref().is_some_and(|o| o.records_same(a))
    }
}

pub(super) async fn run(shared: Arc<Shared>, target: ComputeTarget, mut rx: watch::Receiver<TargetWork>) {
    let mut worker = Worker {
        state: TargetState::new(shared.settings.protected_client_ids.clone()),
        shared,
        target,
        written: HashMap::new(),
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
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = sleep_until_opt(retry_at) => {}
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

struct Worker {
    shared: Arc<Shared>,
    target: ComputeTarget,
    /// The target's identities as Azure last reported them, the change in flight and the wants.
    state: TargetState,
    written: HashMap<Key, Written>,
}

/// How one batch's ARM changes went.
struct ArmOutcome {
    /// What ARM's answers say the target carries; `None` when nothing was sent.
    landing: Option<Landing>,
    /// Identities ARM refused by name (`LinkedAuthorizationFailed`), with the error.
    refused: BTreeMap<String, String>,
    /// An error that failed the whole batch.
    batch_error: Option<String>,
}

impl Worker {
    /// The picture's assignments not yet brought to `Assigned` by this worker.
    fn todo<'w>(&self, work: &'w TargetWork) -> Vec<&'w ToAssign> {
        work.assign
            .iter()
            .filter(|a| {
                !self.written.get(&a.key).is_some_and(|w| {
                    w.state == StatusWritten::Written(AssignmentState::Assigned) && w.has_object(a)
                })
            })
            .collect()
    }

    /// Applies one picture. Returns whether something must be retried later. Pictures that
    /// arrive while ARM works are written at once (see [`Worker::follow`]); when any did, `rx`
    /// is marked changed so that the next round applies the latest one to ARM.
    async fn apply(&mut self, work: &TargetWork, rx: &mut watch::Receiver<TargetWork>) -> bool {
        let shared = self.shared.clone();
        let shared = &*shared;
        let target_id = self.target.arm_id();
        self.state.want(work.wants());
        // A needed identity missing from the target is work even with nothing pending: it is
        // how an identity removed by a PATCH that was in flight when it was needed again, or
        // found missing by a read-back, is put back.
        if work.assign.is_empty()
            && work.release.is_empty()
            && work.stale.is_empty()
            && !self.state.needs_arm_work()
        {
            self.written.clear();
            return false;
        }
        // Forget writes the planner no longer asks about (it has seen them) or that are old.
        let asked: BTreeSet<&Key> = work.assign.iter().map(|a| &a.key).collect();
        self.written
            .retain(|k, w| asked.contains(k) && w.at.elapsed() < WRITTEN_FOR);
        let todo = self.todo(work);

        if self.state.next() == Next::Read {
            match shared.arm.get(&self.target).await {
                Ok(s) => self.state.read(s),
                Err(e) => {
                    // Service principals need nothing from ARM: they proceed anyway.
                    let (sp, msi): (Vec<&ToAssign>, Vec<&ToAssign>) =
                        todo.iter().partition(|a| a.arm_id.is_none());
                    let outcome = self.write_all(&sp, Some(AssignmentState::Assigned)).await;
                    self.record(outcome);
                    report_failure(shared, &msi, &e.to_string(), &BTreeMap::new());
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
        let (outcome, (latest, written)) = tokio::join!(arm, self.follow(work, rx, &on, done_rx));
        let ArmOutcome {
            landing,
            refused,
            batch_error,
        } = outcome;
        if let Some(landing) = landing {
            self.state.landed(landing);
        }
        let now_on = self.state.on_target();
        let mut retry = batch_error.is_some() || !refused.is_empty() || !written;

        // Objects whose identity ARM's answer now shows are marked `Assigned`, from the latest
        // picture (those marked while the PATCH ran are no longer to do).
        let seen = latest.as_ref().unwrap_or(work);
        let arrived: Vec<&ToAssign> = self
            .todo(seen)
            .into_iter()
            .filter(|a| self.state.may_mark_assigned(a.arm_id.as_deref()))
            .collect();
        let outcome = self.write_all(&arrived, Some(AssignmentState::Assigned)).await;
        retry |= !self.record(outcome);
        if batch_error.is_some() || !refused.is_empty() {
            // Until the retry, the objects still waiting say so.
            retry |= !self.write_picture(seen, &now_on, Waiting::Mark).await;
        }
        // A later picture, or an answer that leaves work (a read-back asked meanwhile), goes to
        // ARM in the next round, not at the periodic pass.
        if latest.is_some() || (!retry && self.state.needs_arm_work()) {
            rx.mark_changed();
        }
        tracing::debug!(
            target = %target_id,
            assigned_after_arm = arrived.len(),
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
            &failed,
            batch_error.as_deref().unwrap_or_default(),
            &refused,
        );
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
            if r.arm_id.as_deref().is_some_and(|id| !self.state.let_go(id)) {
                retry = true;
            } else {
                done_with.push(&r.key);
            }
        }
        stream::iter(done_with)
            .for_each_concurrent(shared.settings.write_concurrency, |key| {
                delete_assigned(shared, key)
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
    /// rollout. Returns the latest picture seen, if a later one arrived, and whether every write
    /// succeeded.
    async fn follow(
        &mut self,
        work: &TargetWork,
        rx: &mut watch::Receiver<TargetWork>,
        on: &BTreeSet<String>,
        mut done: tokio::sync::oneshot::Receiver<()>,
    ) -> (Option<TargetWork>, bool) {
        let slow = tokio::time::sleep(CREATE_WAITING_AFTER);
        tokio::pin!(slow);
        let mut is_slow = false;
        let mut ok = self.write_picture(work, on, Waiting::Ahead).await;
        let mut latest: Option<TargetWork> = None;
        loop {
            tokio::select! {
                biased;
                _ = &mut done => return (latest, ok),
                () = &mut slow, if !is_slow => {
                    is_slow = true;
                    ok &= self.write_picture(latest.as_ref().unwrap_or(work), on, Waiting::Mark).await;
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return (latest, ok);
                    }
                    let picture = rx.borrow_and_update().clone();
                    let how = if is_slow { Waiting::Mark } else { Waiting::Later };
                    ok &= self.write_picture(&picture, on, how).await;
                    latest = Some(picture);
                }
            }
        }
    }

    /// Writes a picture's objects whose identity is on the target (`Assigned`) and, as `how`
    /// says, those still waiting for theirs. Returns whether every write succeeded.
    async fn write_picture(&mut self, work: &TargetWork, on: &BTreeSet<String>, how: Waiting) -> bool {
        let (waiting, at_once): (Vec<&ToAssign>, Vec<&ToAssign>) = self
            .todo(work)
            .into_iter()
            .partition(|a| a.arm_id.as_deref().is_some_and(|id| !on.contains(id)));
        let (mut created, mut marked) = (Vec::new(), Vec::new());
        for a in waiting {
            let mine = self.written.get(&a.key).filter(|w| w.has_object(a));
            match (mine.map(|w| w.state), a.write, how) {
                // Created here without a status: marked when asked to.
                (Some(StatusWritten::NotYet), _, Waiting::Mark) => marked.push(a),
                (Some(_), _, _) | (None, ObjectWrite::Nothing, _) => {}
                (None, ObjectWrite::Create, Waiting::Ahead | Waiting::Later) => created.push(a),
                // A rewritten object (new node or identity) still carries its old status. Before
                // the PATCH that adds its new identity it is rewritten and marked, so that it
                // records that identity before it is there: a release in between removes it.
                // Later pictures' rewrites wait for their own batch.
                (None, ObjectWrite::Rewrite, Waiting::Later) => {}
                (None, ObjectWrite::Create | ObjectWrite::Rewrite, Waiting::Ahead | Waiting::Mark) => {
                    marked.push(a)
                }
            }
        }
        let (created, marked, assigned) = tokio::join!(
            self.write_all(&created, None),
            self.write_all(&marked, Some(AssignmentState::Created)),
            self.write_all(&at_once, Some(AssignmentState::Assigned))
        );
        self.record(created) & self.record(marked) & self.record(assigned)
    }

    /// Writes each object that needs it and, when `state` is given, its status. Returns what was
    /// written.
    async fn write_all(
        &self,
        items: &[&ToAssign],
        state: Option<AssignmentState>,
    ) -> Vec<(Key, Option<Written>)> {
        if items.is_empty() {
            return Vec::new();
        }
        let shared = &*self.shared;
        let assigned = state == Some(AssignmentState::Assigned);
        let writes: Vec<_> = items.iter().map(|a| self.write_one(a, state)).collect();
        let results: Vec<(&ToAssign, Result<(), kube::Error>)> = stream::iter(writes)
            .buffer_unordered(shared.settings.write_concurrency.max(1))
            .collect()
            .await;
        let mut outcome = Vec::new();
        let mut by_binding: BTreeMap<Key, (ObjectReference, Vec<String>)> = BTreeMap::new();
        let target_id = self.target.arm_id();
        for (a, r) in results {
            outcome.push((
                a.key.clone(),
                r.is_ok().then(|| Written {
                    object: (a.write != ObjectWrite::Nothing).then(|| a.clone()),
                    state: state.map_or(StatusWritten::NotYet, StatusWritten::Written),
                    at: Instant::now(),
                }),
            ));
            match r {
                Ok(()) => {
                    if assigned {
                        shared.metrics.assigned(Some(a.seen.elapsed()));
                        let what = a.arm_id.as_deref().map_or_else(
                            || "service principal identity ready (nothing to assign)".to_owned(),
                            |id| format!("identity {id} assigned to {target_id}"),
                        );
                        shared.events.publish(
                            Kind::Normal,
                            "IdentityAssigned",
                            format!("{what} for pod {}/{}", a.key.0, a.pod),
                            pod_ref(&a.key.0, &a.pod),
                        );
                        by_binding
                            .entry(mirror::key_of(a.binding.as_ref()))
                            .or_insert_with(|| (a.binding_ref(), Vec::new()))
                            .1
                            .push(a.pod.clone());
                    }
                }
                Err(e) => {
                    tracing::warn!(namespace = %a.key.0, name = %a.key.1, error = %e, ?state, "writing an AzureAssignedIdentity failed; the next batch retries");
                }
            }
        }
        // One event per binding and batch, not per pod: a deployment of 500 replicas would
        // otherwise bury the binding's events.
        for (_, (binding, pods)) in by_binding {
            shared.events.publish(
                Kind::Normal,
                "IdentityAssigned",
                format!(
                    "identity assigned on {target_id} for {} pod(s): {}",
                    pods.len(),
                    some_of(&pods)
                ),
                binding,
            );
        }
        outcome
    }

    /// Writes one object (unless this worker already did) and its status, if given.
    async fn write_one<'a>(
        &self,
        a: &'a ToAssign,
        state: Option<AssignmentState>,
    ) -> (&'a ToAssign, Result<(), kube::Error>) {
        let shared = &*self.shared;
        let already = self.written.get(&a.key).is_some_and(|w| w.has_object(a));
        let r = async {
            if !already {
                write_object(shared, a).await?;
            }
            match state {
                Some(state) => set_state(shared, &a.key, state).await,
                None => Ok(()),
            }
        }
        .await;
        (a, r)
    }

    /// Remembers what `write_all` wrote; returns whether every write succeeded.
    fn record(&mut self, outcome: Vec<(Key, Option<Written>)>) -> bool {
        let mut all_ok = true;
        for (key, w) in outcome {
            match w {
                Some(w) => {
                    self.written.insert(key, w);
                }
                None => all_ok = false,
            }
        }
        all_ok
    }
}

/// Applies `change` to the target in as few PATCHes as the size limit allows. An identity ARM
/// refuses by name is dropped and the rest of the batch goes again.
async fn change_target(
    shared: &Shared,
    target: &ComputeTarget,
    mut current: IdentityState,
    mut change: TargetChange,
    protected: &BTreeSet<String>,
) -> ArmOutcome {
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    let mut batch_error: Option<String> = None;
    let mut known = true;
    while !change.is_empty() && batch_error.is_none() && known {
        for body in patch_bodies(&current, &change) {
            match shared.arm.patch(target, &body).await {
                Ok(()) => current.apply(&body),
                Err(e) => {
                    let blamed: BTreeSet<String> = e
                        .arm_error()
                        .map(|a| a.blamed_identities())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|id| change.add.contains(id) || change.remove.contains(id))
                        .collect();
                    if blamed.is_empty() {
                        batch_error = Some(e.to_string());
                    } else {
                        for id in &blamed {
                            refused.insert(id.clone(), e.to_string());
                        }
                    }
                    known = !matches!(e, CallError::Transport { .. });
                    change = TargetChange {
                        add: change.add.difference(&blamed).cloned().collect(),
                        remove: change.remove.difference(&blamed).cloned().collect(),
                    };
                    break;
                }
            }
        }
        change = matching::target_change(&change.add, &change.remove, &current.ids(), protected);
    }
    ArmOutcome {
        landing: Some(if known {
            Landing::Answered(current)
        } else {
            Landing::Unanswered
        }),
        refused,
        batch_error,
    }
}

/// Creates or rewrites an `AzureAssignedIdentity`, as `a.write` says (its status is written
/// separately: the status subresource ignores it here).
async fn write_object(shared: &Shared, a: &ToAssign) -> Result<(), kube::Error> {
    let (namespace, name) = &a.key;
    let api = Api::<AzureAssignedIdentity>::namespaced(shared.client.clone(), namespace);
    let spec = a.spec();
    match a.write {
        ObjectWrite::Nothing => Ok(()),
        ObjectWrite::Create => {
            let obj = AzureAssignedIdentity {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some([(NODE_NAME_LABEL.to_owned(), a.node.clone())].into()),
                    finalizers: Some(vec![ASSIGNED_IDENTITY_FINALIZER.to_owned()]),
                    ..Default::default()
                },
                spec,
                status: None,
            };
            let _permit = shared.writes.acquire().await;
            match api.create(&crate::post_params(), &obj).await {
                Ok(_) => Ok(()),
                // Our cache was behind; the object is there.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        ObjectWrite::Rewrite => {
            let patch = json!({"metadata": {"labels": {NODE_NAME_LABEL: a.node}}, "spec": spec});
            let _permit = shared.writes.acquire().await;
            api.patch(name, &crate::patch_params(), &Patch::Merge(&patch))
                .await
                .map(drop)
        }
    }
}

/// Warning events for assignments whose identity could not be put on the target.
fn report_failure(
    shared: &Shared,
    items: &[&ToAssign],
    batch_error: &str,
    refused: &BTreeMap<String, String>,
) {
    let mut by_binding: BTreeMap<Key, (ObjectReference, Vec<String>, String)> = BTreeMap::new();
    for a in items {
        let why = a
            .arm_id
            .as_ref()
            .and_then(|id| refused.get(&**id))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .or((!batch_error.is_empty()).then_some(batch_error));
        let (Some(why), Some(arm_id)) = (why, a.arm_id.as_deref()) else {
            continue;
        };
        let note = format!(
            "assigning identity {arm_id} for pod {}/{} failed: {why}",
            a.key.0, a.pod
        );
        tracing::warn!(namespace = %a.key.0, name = %a.key.1, "{note}");
        shared.events.publish(
            Kind::Warning,
            "IdentityAssignmentFailed",
            note,
            pod_ref(&a.key.0, &a.pod),
        );
        by_binding
            .entry(mirror::key_of(a.binding.as_ref()))
            .or_insert_with(|| {
                (
                    a.binding_ref(),
                    Vec::new(),
                    format!("assigning identity {arm_id} failed: {why}"),
                )
            })
            .1
            .push(a.pod.clone());
    }
    for (_, (binding, pods, note)) in by_binding {
        shared.events.publish(
            Kind::Warning,
            "IdentityAssignmentFailed",
            format!("{note} (pods: {})", some_of(&pods)),
            binding,
        );
    }
}
