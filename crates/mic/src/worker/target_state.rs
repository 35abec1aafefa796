//! One VM's or scale set's identities as MIC knows them, and what follows from that: a pure
//! state machine that the target's worker (`super::shell`) feeds with the planner's
//! pictures and ARM's answers, and whose verdicts it carries out. No I/O here.
//!
//! A target's state has three parts:
//! - what the last ARM answer said the target carries ([`Known`]): a GET, with the PATCHes ARM
//!   accepted since applied; or nothing trustworthy (never read, a drift read-back is due, NMI
//!   reported an identity missing, or a PATCH got no answer), and then MIC reads before deciding;
//! - the change sent to ARM and not answered yet ([`Flight`]);
//! - what the cluster wants ([`Wants`]): identities pods on the target need, identities released
//!   by pods that are gone or left behind by moved objects, and protected identities.
//!
//! The rule that keeps a pod from being handed IMDS's "Identity not found": an
//! `AzureAssignedIdentity` may be marked `Assigned` only when the last ARM answer contains its
//! identity **and** no change in flight removes it ([`TargetState::may_mark_assigned`]). A pod
//! that arrives while its identity is being removed waits; when the removal returns, its identity
//! is missing from a target that needs it, which is work ([`TargetState::needs_arm_work`]) even
//! if no object is pending any more, so the very next batch adds it back, not the periodic
//! drift pass. A removal whose identity is needed again before its PATCH is sent is simply not
//! sent: [`TargetState::next`] decides from the latest wants each time.
//!
//! An identity no pod needs any more is removed only once it has been unneeded for the removal
//! grace (`--identity-removal-grace`): the pods of a Job, a CronJob or a `Recreate` rollout
//! follow one another, and removing the identity between two of them makes the next one wait for
//! the removal's operation and then the re-add's, two operations where one pod would otherwise
//! wait for none. The grace counts from when the identity stopped being needed, not from the
//! last change: a busy target still sheds what it no longer needs. Time is one more input of the
//! machine ([`TargetState::tick`]), so the tests drive it with plain values.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use matching::{TargetChange, target_change};

// ARM's wire format, a pure module of the `arm` crate (not its client).
use arm::body::IdentityState;

/// What MIC trusts about the identities a target carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Known {
    /// Nothing trustworthy: read the target (GET) before deciding anything for it.
    Unread,
    /// The last ARM answer: a GET, with the PATCHes ARM accepted since applied.
    Read(IdentityState),
}

/// The change sent to ARM for a target and not answered yet (one batch, possibly several
/// PATCHes when it exceeds ARM's per-request limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flight {
    Idle,
    Patching(TargetChange),
}

/// What the cluster wants of one target: the planner's latest picture, as lower-cased
/// resource ids of user-assigned identities (service principals need nothing from ARM).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// Identities some pod on the target uses.
    pub needed: BTreeSet<String>,
    /// Identities of `AzureAssignedIdentity` objects whose pod is gone.
    pub released: BTreeSet<String>,
    /// Identities that updated objects (new node, new identity) left behind on this target.
    pub stale: BTreeSet<String>,
    /// Identities never removed (`--immutable-user-msis`, the cluster's identity), as known
    /// from the cluster's objects; those ARM reports with a protected client id are added.
    pub protected: BTreeSet<String>,
}

impl Wants {
    /// Whether anything here concerns ARM at all.
    fn concern_arm(&self) -> bool {
        !(self.needed.is_empty() && self.released.is_empty() && self.stale.is_empty())
    }
}

/// What a target's worker does next with ARM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing: the target carries what is needed and nothing left to remove.
    Nothing,
    /// Read the target first (GET).
    Read,
    /// The target is being deleted: ARM refuses changes, leave it alone.
    LeaveAlone,
    /// A change is in flight: wait for its answer.
    AwaitFlight,
    /// Send this change (one delta PATCH per batch).
    Send(TargetChange),
}

/// How a batch of PATCHes ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Landing {
    /// ARM answered every PATCH it was sent (accepted, refused some identities by name, or
    /// failed the batch with an error): what the target carries after those answers.
    Answered(IdentityState),
    /// A PATCH got no answer (connection lost, timeout): it may or may not have taken effect.
    Unanswered,
}

/// One target's state; see the module docs.
#[derive(Clone, Debug)]
pub struct TargetState {
    known: Known,
    flight: Flight,
    wants: Wants,
    /// Set when a read-back was asked while a change was in flight: its answer is then no
    /// substitute for a GET (it says nothing of what changed behind MIC's back).
    read_after_flight: bool,
    /// Client ids never removed, lower-cased: ARM's answers name the resource ids they belong to.
    protected_client_ids: BTreeSet<String>,
    /// How long an identity stays unneeded before it is removed; zero removes at once.
    removal_grace: Duration,
    /// The time of the latest [`TargetState::tick`].
    now: Option<Instant>,
    /// When each released or left-behind identity stopped being needed.
    unneeded_since: BTreeMap<String, Instant>,
}

impl TargetState {
    /// A target MIC has not read yet.
    pub fn new(protected_client_ids: BTreeSet<String>) -> Self {
        Self {
            known: Known::Unread,
            flight: Flight::Idle,
            wants: Wants::default(),
            read_after_flight: false,
            protected_client_ids,
            removal_grace: Duration::ZERO,
            now: None,
            unneeded_since: BTreeMap::new(),
        }
    }

    /// Holds removals back for `grace` (see the module docs).
    pub fn with_removal_grace(mut self, grace: Duration) -> Self {
        self.removal_grace = grace;
        self
    }

    /// The time is now `now`: removals whose grace has run out become due.
    pub fn tick(&mut self, now: Instant) {
        self.now = Some(now);
    }

    pub fn known(&self) -> &Known {
        &self.known
    }

    pub fn flight(&self) -> &Flight {
        &self.flight
    }

    pub fn wants(&self) -> &Wants {
        &self.wants
    }

    /// The planner's latest picture. An identity released or left behind, and not needed,
    /// starts its grace now (see [`TargetState::tick`]); one needed again ends it.
    pub fn want(&mut self, wants: Wants) {
        let unneeded: BTreeSet<&String> = wants
            .released
            .union(&wants.stale)
            .filter(|id| !wants.needed.contains(*id))
            .collect();
        self.unneeded_since.retain(|id, _| unneeded.contains(id));
        if let Some(now) = self.now {
            for id in unneeded {
                self.unneeded_since.entry(id.clone()).or_insert(now);
            }
        }
        self.wants = wants;
    }

    /// When `id`'s grace runs out; `None` when it is not waiting for one (needed, or its time
    /// is unknown, which [`TargetState::removable`] treats as not yet due).
    fn grace_ends(&self, id: &str) -> Option<Instant> {
        self.unneeded_since
            .get(id)
            .map(|since| *since + self.removal_grace)
    }

    /// Released and left-behind identities whose grace has run out.
    fn removable(&self) -> BTreeSet<String> {
        self.wants
            .released
            .union(&self.wants.stale)
            .filter(|id| {
                self.removal_grace.is_zero()
                    || self
                        .grace_ends(id)
                        .zip(self.now)
                        .is_some_and(|(ends, now)| ends <= now)
            })
            .cloned()
            .collect()
    }

    /// Whether `id` is on the target only because its grace has not run out: the object that
    /// released it waits, which is no failure.
    pub fn in_grace(&self, id: &str) -> bool {
        !self.removal_grace.is_zero() && !self.removable().contains(id) && !self.wants.needed.contains(id)
    }

    /// When the next removal held back by the grace becomes due, if one is: the worker wakes
    /// then. Only identities ARM's last answer shows on the target count.
    pub fn next_removal_due(&self) -> Option<Instant> {
        if self.removal_grace.is_zero() {
            return None;
        }
        let Known::Read(current) = &self.known else {
            return None;
        };
        let protected = self.protected();
        self.unneeded_since
            .keys()
            .filter(|id| current.user_assigned.contains_key(*id) && !protected.contains(*id))
            .filter_map(|id| self.grace_ends(id))
            .filter(|ends| self.now.is_none_or(|now| *ends > now))
            .min()
    }

    /// Trust nothing until the next read: the periodic drift read-back is due, or NMI reported
    /// an identity missing from the target.
    pub fn forget(&mut self) {
        match self.flight {
            Flight::Idle => self.known = Known::Unread,
            Flight::Patching(_) => self.read_after_flight = true,
        }
    }

    /// A GET answered.
    pub fn read(&mut self, answer: IdentityState) {
        self.known = Known::Read(answer);
    }

    /// What to do next with ARM, from the latest wants.
    pub fn next(&self) -> Next {
        if matches!(self.flight, Flight::Patching(_)) {
            return Next::AwaitFlight;
        }
        let current = match &self.known {
            Known::Unread if self.wants.concern_arm() => return Next::Read,
            Known::Unread => return Next::Nothing,
            Known::Read(current) => current,
        };
        if current.provisioning_state.as_deref() == Some("Deleting") {
            return Next::LeaveAlone;
        }
        let change = target_change(
            &self.wants.needed,
            &self.removable(),
            &current.ids(),
            &self.protected(),
        );
        if change.is_empty() {
            Next::Nothing
        } else {
            Next::Send(change)
        }
    }

    /// Whether the target needs a read or a change from ARM. A needed identity missing from the
    /// target counts even when no object is pending: that is how an identity removed by a PATCH
    /// that was in flight when it was needed again is put back in the next batch.
    pub fn needs_arm_work(&self) -> bool {
        matches!(self.next(), Next::Read | Next::Send(_))
    }

    /// Starts the next change, if [`TargetState::next`] says to send one: it is in flight until
    /// [`TargetState::landed`].
    pub fn send(&mut self) -> Option<TargetChange> {
        match self.next() {
            Next::Send(change) => {
                self.flight = Flight::Patching(change.clone());
                Some(change)
            }
            _ => None,
        }
    }

    /// The change in flight returned.
    pub fn landed(&mut self, landing: Landing) {
        self.flight = Flight::Idle;
        self.known = match landing {
            Landing::Answered(state) if !self.read_after_flight => Known::Read(state),
            Landing::Answered(_) | Landing::Unanswered => Known::Unread,
        };
        self.read_after_flight = false;
    }

    /// Whether an `AzureAssignedIdentity` for this identity (`None`: a service principal, which
    /// needs nothing on the VM) may be marked `Assigned`: the last ARM answer contains the
    /// identity and no change in flight removes it.
    pub fn may_mark_assigned(&self, arm_id: Option<&str>) -> bool {
        arm_id.is_none_or(|id| self.on_target().contains(id))
    }

    /// The identities [`TargetState::may_mark_assigned`] accepts: the last ARM answer's, less
    /// those a change in flight removes.
    pub fn on_target(&self) -> BTreeSet<String> {
        let Known::Read(current) = &self.known else {
            return BTreeSet::new();
        };
        let mut on = current.ids();
        if let Flight::Patching(change) = &self.flight {
            on.retain(|id| !change.remove.contains(id));
        }
        on
    }

    /// Protected identities: the wants' and those ARM reports with a protected client id.
    pub fn protected(&self) -> BTreeSet<String> {
        let mut protected = self.wants.protected.clone();
        if let Known::Read(current) = &self.known {
            protected.extend(current.ids_with_client_ids(&self.protected_client_ids));
        }
        protected
    }

    /// Whether a released or left-behind identity needs no more care from this target: ARM's
    /// last answer shows it gone, or it is needed again, or protected. Never while the state is
    /// unknown or a change is in flight: the object that records it must stay until then, or
    /// the identity would stay on the target with nothing left to remove it.
    pub fn let_go(&self, arm_id: &str) -> bool {
        match (&self.known, &self.flight) {
            (Known::Read(current), Flight::Idle) => {
                !current.user_assigned.contains_key(arm_id)
                    || self.wants.needed.contains(arm_id)
                    || self.protected().contains(arm_id)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
