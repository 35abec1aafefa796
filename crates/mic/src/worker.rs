//! One worker per VM or scale set: applies the latest picture of what its target needs (from the
//! planner, `crate::controller`), one batch at a time. Its decisions and its I/O side by side:
//!
//! - decisions, pure and unit-tested on plain values, importing nothing from the I/O below:
//!   [`target_state`] (the target's identities as MIC knows them: read the target, send this
//!   change, may this object be marked `Assigned`) and `writes` (what to write for each
//!   `AzureAssignedIdentity` at each stage of a batch, and the ledger of what was written);
//! - I/O, a thin shell that feeds them the planner's pictures and ARM's answers and carries out
//!   their verdicts: `shell` (the worker's loop and its batches), `arm_batch` (one batch's
//!   PATCHes through ARM) and `objects` (the Kubernetes writes and the Events).

mod arm_batch;
mod objects;
mod shell;
pub mod target_state;
pub(crate) mod writes;

pub(crate) use objects::write_object;
pub(crate) use shell::run;
