//! Which IdentityReady condition a pod should have now, on plain values: what the watched state
//! says of the pod's identity ([`Verdict`]), and what fetching its token gave ([`Outcome`]). No
//! I/O here; the shell around it reads the state and writes the pod.

use api::v1::{
    READY_REASON_NO_MATCHING_IDENTITY, READY_REASON_NOT_ASSIGNED, READY_REASON_TOKEN_OBTAINED,
    READY_REASON_TOKEN_REQUEST_FAILED,
};
use matching::{MicRefusal, NotChosen};

use super::ReadyCondition;
use crate::state::Decision;

/// The longest message written: a condition is read in `kubectl describe`, one line each.
pub const MAX_MESSAGE: usize = 512;
/// The longest reason of MIC's passed through; longer ones (never MIC's own) become
/// `IdentityNotAssigned`.
const MAX_REASON: usize = 128;

/// What the watched state says about the identity a pod uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The pod may use this identity on this node now; its token decides the condition.
    Usable { identity: String },
    /// The pod is bound to this identity, but MIC has not assigned it to the node (yet);
    /// `failure`: why, when MIC's object records it (ARM's error code, `IdentityReadFailed`).
    NotAssigned {
        identity: String,
        failure: Option<MicRefusal>,
    },
    /// MIC refuses to assign the identity as things stand (consent missing, ...).
    Refused { identity: String, refusal: MicRefusal },
    /// The pod's label (or federation opt-in) gives it no identity: `detail` says why.
    NoMatch { detail: String },
}

/// What fetching the pod's token gave, for a [`Verdict::Usable`] pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not fetched yet (or the fetch is in flight): nothing is written until it ends.
    Pending,
    /// Every resource's token was obtained (or was already in the cache).
    Obtained { resources: Vec<String> },
    /// IMDS or Entra refused or failed for `resource`.
    Failed { resource: String, error: String },
}

/// The condition to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub ready: bool,
    pub reason: String,
    /// One line, at most [`MAX_MESSAGE`] bytes, control characters escaped.
    pub message: String,
}

impl Desired {
    fn new(ready: bool, reason: &str, message: &str) -> Self {
        Self {
            ready,
            reason: reason.to_owned(),
            message: one_line(message, MAX_MESSAGE),
        }
    }

    /// `"True"` or `"False"`, as the condition spells it.
    pub fn status(&self) -> &'static str {
        if self.ready { "True" } else { "False" }
    }

    /// Whether the pod's `current` condition differs in status or reason: only then is it
    /// written (a message that changes with the same reason is not worth an API write).
    pub fn differs_from(&self, current: Option<&ReadyCondition>) -> bool {
        current.is_none_or(|c| c.status != self.status() || c.reason != self.reason)
    }
}

/// The verdict of NMI's decision for a pod's default request, or `None` when the decision says
/// nothing about the pod's identity (principals to learn: only requests naming an object id).
/// `failure(identity)` gives what MIC recorded on the pod's `Created` object for that identity.
pub fn verdict_of(decision: Decision, failure: impl FnOnce(&str) -> Option<MicRefusal>) -> Option<Verdict> {
    Some(match decision {
        Decision::Use { identity, .. } => Verdict::Usable {
            identity: format!(
                "{}/{}",
                identity.metadata.namespace.as_deref().unwrap_or_default(),
                identity.metadata.name.as_deref().unwrap_or_default()
            ),
        },
        Decision::Waiting { identity } => {
            let failure = failure(&identity);
            Verdict::NotAssigned { identity, failure }
        }
        Decision::NotAllowed { identity, refusal } => Verdict::Refused { identity, refusal },
        Decision::Refused(NotChosen::Unbound) => Verdict::NoMatch {
            detail: "the pod's aadpodidbinding label matches no AzureIdentityBinding whose AzureIdentity it may use"
                .into(),
        },
        Decision::Refused(NotChosen::NotBound(_)) => Verdict::NoMatch {
            detail: "the pod is bound to no identity its requests may name".into(),
        },
        Decision::LearnPrincipals(_) => return None,
    })
}

/// The condition a pod should have now; `None`: leave it as it is (its token is being fetched).
pub fn desired(verdict: &Verdict, outcome: &Outcome) -> Option<Desired> {
    Some(match verdict {
        Verdict::Usable { identity } => match outcome {
            Outcome::Pending => return None,
            Outcome::Obtained { resources } => Desired::new(
                true,
                READY_REASON_TOKEN_OBTAINED,
                &format!(
                    "NMI obtained a token of identity {identity} for {}",
                    resources.join(", ")
                ),
            ),
            Outcome::Failed { resource, error } => Desired::new(
                false,
                READY_REASON_TOKEN_REQUEST_FAILED,
                &format!("fetching a token of identity {identity} for {resource} failed: {error}"),
            ),
        },
        Verdict::NotAssigned {
            identity,
            failure: None,
        } => Desired::new(
            false,
            READY_REASON_NOT_ASSIGNED,
            &format!("identity {identity} is not yet assigned to the pod's node (waiting for MIC)"),
        ),
        Verdict::NotAssigned {
            identity,
            failure: Some(f),
        } => {
            let reason = if is_condition_reason(&f.reason) {
                f.reason.as_str()
            } else {
                READY_REASON_NOT_ASSIGNED
            };
            Desired::new(
                false,
                reason,
                &format!(
                    "identity {identity} is not yet assigned to the pod's node: MIC says {}: {}",
                    f.reason, f.message
                ),
            )
        }
        Verdict::Refused { identity, refusal } => {
            let reason = if is_condition_reason(&refusal.reason) {
                refusal.reason.as_str()
            } else {
                READY_REASON_NOT_ASSIGNED
            };
            Desired::new(
                false,
                reason,
                &format!("MIC will not assign identity {identity}: {}", refusal.message),
            )
        }
        Verdict::NoMatch { detail } => Desired::new(false, READY_REASON_NO_MATCHING_IDENTITY, detail),
    })
}

/// Whether `s` is a valid condition reason (the apiserver's rule, CamelCase with `_`, `,`, `:`),
/// short enough to pass through.
pub fn is_condition_reason(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_REASON
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b',' | b':'))
        && b.last().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// `text` on one line of at most `max` bytes: control characters (line breaks, escapes a
/// terminal would act on) escaped, since parts come from IMDS, Entra, MIC or the pod itself;
/// cut at a character boundary with `…` when too long.
pub fn one_line(text: &str, max: usize) -> String {
    // No allocation per character: a pass computes this for every pod of the node.
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let escaped = c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}');
        // `\u{…}` is ASCII: one byte per character.
        let len = if escaped {
            c.escape_unicode().len()
        } else {
            c.len_utf8()
        };
        if out.len() + len > max {
            const MORE: &str = "…";
            while out.len() + MORE.len() > max {
                out.pop();
            }
            out.push_str(MORE);
            return out;
        }
        if escaped {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}
