//! What a VM's or scale set's worker writes for each `AzureAssignedIdentity` of its picture,
//! and when: a pure decision ([`decide`]) over what the planner asks ([`ObjectWrite`]), what
//! the worker itself already wrote ([`Done`], kept in its [`Ledger`]), whether the object's
//! identity is on the target, and the moment of the batch ([`Stage`]). No I/O here: the worker
//! (`super::shell`) carries out the decisions and records in the ledger what succeeded.
//!
//! The sequence for a new pod whose identity must be added: its object is created without a
//! status while the PATCH runs (which reads as `Created`), then marked `Assigned` once ARM's
//! answer shows the identity: two writes per pod. A batch running long, or failing, writes an
//! explicit `Created` for all to see. An object whose identity is already on the target is
//! written and marked `Assigned` at once.
//!
//! The ledger stands in for the planner's view of what the worker wrote: the planner's cache
//! learns of a write through its watch, usually within milliseconds, and until then its pictures
//! still ask for the write, which must not be repeated.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use mirror::Key;
use tokio::time::Instant;

use crate::plan::{ObjectWrite, TargetWork, ToAssign};

/// How long a write this worker made stands in for the planner's view of the object.
pub const WRITTEN_FOR: Duration = Duration::from_secs(30);

/// The status a worker writes with an object, or wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWritten {
    /// None yet: a new object created without a status, which reads as `Created` (see
    /// `AzureAssignedIdentity::state`). Its status comes later.
    NotYet,
    /// `Created`: the identity is not on the target yet.
    Created,
    /// `Assigned`: the identity is on the target (or, for a service principal, none is needed).
    Assigned,
}

/// The moment of a batch at which a picture's objects are written. Objects whose identity is
/// on the target are marked `Assigned` at every stage; the stage says what happens to those
/// still waiting for theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The batch's own picture, before its PATCH: new objects are created without a status;
    /// rewritten ones (new node or identity) are rewritten and marked `Created`, so that they
    /// record their new identity before it is there (a release in between removes it).
    Ahead,
    /// A picture that arrived while the PATCH runs: new objects are created without a status;
    /// rewrites wait for their own batch.
    Later,
    /// The batch is slow or failed: every waiting object is written and marked `Created`.
    Mark,
    /// ARM has answered (or failed to be read): waiting objects are left to the next batch.
    Answered,
}

/// What the worker itself has written of an object the planner asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// Nothing, or another version of the object (an older node or identity).
    Nothing,
    /// The object as asked (or it needed no write), with this status.
    Object(StatusWritten),
}

/// What to write for one object now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing now.
    Skip,
    /// Write the object as `object` says, then the status (none for [`StatusWritten::NotYet`]).
    Write {
        object: ObjectWrite,
        status: StatusWritten,
    },
}

/// Decides what to write for one object of a picture. `asked`: what the planner asks of the
/// object itself; `done`: what this worker already wrote of it; `identity_on_target`: its
/// identity is on the target (ARM's last answer has it and no change in flight removes it), or
/// it needs none.
pub fn decide(asked: ObjectWrite, done: Done, identity_on_target: bool, stage: Stage) -> Decision {
    let object = match done {
        Done::Nothing => asked,
        Done::Object(_) => ObjectWrite::Nothing,
    };
    let write = |status| Decision::Write { object, status };
    match (done, asked, stage) {
        (Done::Object(StatusWritten::Assigned), _, _) => Decision::Skip,
        _ if identity_on_target => write(StatusWritten::Assigned),
        (_, _, Stage::Answered) => Decision::Skip,
        // Created here without a status: marked when the batch is slow or failed.
        (Done::Object(StatusWritten::NotYet), _, Stage::Mark) => write(StatusWritten::Created),
        (Done::Object(_), _, _) | (Done::Nothing, ObjectWrite::Nothing, _) => Decision::Skip,
        (Done::Nothing, ObjectWrite::Create, Stage::Ahead | Stage::Later) => write(StatusWritten::NotYet),
        (Done::Nothing, ObjectWrite::Rewrite, Stage::Later) => Decision::Skip,
        (Done::Nothing, ObjectWrite::Create | ObjectWrite::Rewrite, Stage::Ahead | Stage::Mark) => {
            write(StatusWritten::Created)
        }
    }
}

/// One object's decided write.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decided<'w> {
    pub assignment: &'w ToAssign,
    /// What to write of the object itself before its status.
    pub object: ObjectWrite,
}

/// A picture's writes, grouped by the status they write.
#[derive(Debug, Default, PartialEq)]
pub struct Writes<'w> {
    /// New objects, created without a status.
    pub no_status: Vec<Decided<'w>>,
    /// Objects marked `Created`.
    pub created: Vec<Decided<'w>>,
    /// Objects marked `Assigned`.
    pub assigned: Vec<Decided<'w>>,
}

/// What this worker last wrote for an object.
#[derive(Clone, Debug)]
struct Written {
    /// What the object records, when this worker wrote the object itself.
    object: Option<ToAssign>,
    status: StatusWritten,
    at: Instant,
}

/// What a worker wrote, per object, until the planner's cache has caught up (see the module
/// docs).
#[derive(Debug, Default)]
pub struct Ledger {
    written: HashMap<Key, Written>,
}

impl Ledger {
    /// What this worker has written of `a` as the planner now asks for it.
    pub fn done(&self, a: &ToAssign) -> Done {
        match self.written.get(&a.key) {
            Some(w)
                if a.write == ObjectWrite::Nothing
                    || w.object.as_ref().is_some_and(|o| o.records_same(a)) =>
            {
                Done::Object(w.status)
            }
            _ => Done::Nothing,
        }
    }

    /// The picture's assignments this worker has not brought to `Assigned`.
    pub fn todo<'w>(&self, work: &'w TargetWork) -> Vec<&'w ToAssign> {
        work.assign
            .iter()
            .filter(|a| self.done(a) != Done::Object(StatusWritten::Assigned))
            .collect()
    }

    /// The writes of a picture at `stage`, `on` being the identities on the target (see
    /// [`decide`]).
    pub fn writes<'w>(&self, work: &'w TargetWork, on: &BTreeSet<String>, stage: Stage) -> Writes<'w> {
        let mut writes = Writes::default();
        for a in &work.assign {
            let on_target = a.arm_id.as_deref().is_none_or(|id| on.contains(id));
            if let Decision::Write { object, status } = decide(a.write, self.done(a), on_target, stage) {
                let group = match status {
                    StatusWritten::NotYet => &mut writes.no_status,
                    StatusWritten::Created => &mut writes.created,
                    StatusWritten::Assigned => &mut writes.assigned,
                };
                group.push(Decided {
                    assignment: a,
                    object,
                });
            }
        }
        writes
    }

    /// Records a write that succeeded: the object as asked (when the planner asked for it to be
    /// written) and the status.
    pub fn wrote(&mut self, a: &ToAssign, status: StatusWritten, at: Instant) {
        let object = (a.write != ObjectWrite::Nothing).then(|| a.clone());
        self.written.insert(a.key.clone(), Written { object, status, at });
    }

    /// Forgets writes the planner no longer asks about (its cache has seen them) or that are
    /// older than [`WRITTEN_FOR`].
    pub fn forget_settled(&mut self, work: &TargetWork, now: Instant) {
        let asked: BTreeSet<&Key> = work.assign.iter().map(|a| &a.key).collect();
        self.written
            .retain(|k, w| asked.contains(k) && now.saturating_duration_since(w.at) < WRITTEN_FOR);
    }

    /// Forgets everything: the picture asks for nothing.
    pub fn clear(&mut self) {
        self.written.clear();
    }
}

#[cfg(test)]
mod tests;
