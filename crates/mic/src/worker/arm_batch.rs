//! One batch's identity changes through ARM: the delta PATCHes, and what their answers say.

use std::collections::{BTreeMap, BTreeSet};

use matching::{ComputeTarget, TargetChange};

use arm::{Error, IdentityState, patch_bodies};

use super::target_state::Landing;
use crate::controller::Shared;

/// How one batch's ARM changes went.
pub(super) struct ArmOutcome {
    /// What ARM's answers say the target carries; `None` when nothing was sent.
    pub(super) landing: Option<Landing>,
    /// Identities ARM refused by name (`LinkedAuthorizationFailed`), with the error.
    pub(super) refused: BTreeMap<String, String>,
    /// An error that failed the whole batch.
    pub(super) batch_error: Option<String>,
}

/// Applies `change` to the target in as few PATCHes as the size limit allows. An identity ARM
/// refuses by name is dropped and the rest of the batch goes again.
pub(super) async fn change_target(
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
                    known = !matches!(e, Error::Transport { .. });
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
