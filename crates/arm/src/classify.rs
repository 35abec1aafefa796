//! ARM error classification: the ARM error code in an error's text, read from the way [`Error`]
//! prints ARM's answers. MIC records it as the `reason` of a failed assignment's status; the
//! plugin reads it back from MIC's Events and status messages, which are text by then, so the
//! rule works on text and both use this one.
//!
//! [`Error`]: crate::Error

/// The ARM error code in an error text, when there is one: the first word after the operation
/// (and after `the operation ended <state>:` for a long-running operation), if it is spelled
/// like ARM's codes (`LinkedAuthorizationFailed`, `HTTP503`).
pub fn reason_of(why: &str) -> Option<&str> {
    let (head, rest) = why.split_once(": ")?;
    // `vmss_update 403` or `vm_update`: an ARM operation, not the prose of another error.
    let mut head = head.split(' ');
    let is_operation = head
        .next()
        .is_some_and(|op| !op.is_empty() && op.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let status_ok = head
        .next()
        .is_none_or(|s| s.len() == 3 && s.chars().all(|c| c.is_ascii_digit()));
    if !(is_operation && status_ok && head.next().is_none()) {
        return None;
    }
    let rest = match rest.strip_prefix("the operation ended ") {
        Some(r) => r.split_once(": ")?.1,
        None => rest,
    };
    let word = rest.split_whitespace().next()?;
    let code_like = word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_alphanumeric())
        && word.len() <= 128;
    code_like.then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArmError, Error};

    #[test]
    fn a_failed_operation_gives_the_operation_s_code() {
        let why = "vm_update: the operation ended Failed: FailedIdentityOperation Identity operation failed";
        assert_eq!(reason_of(why), Some("FailedIdentityOperation"));
    }

    #[test]
    fn errors_without_a_code_have_none() {
        for why in [
            "vmss_get: error sending request: connection refused",
            "getting a token for ARM: Entra answered 401: invalid_client",
            "",
            "no colon at all",
        ] {
            assert_eq!(reason_of(why), None, "{why}");
        }
        assert_eq!(reason_of("vmss_get 503: HTTP503 <html>"), Some("HTTP503"));
    }

    #[test]
    fn the_rule_reads_the_errors_this_crate_prints() {
        let error = ArmError {
            code: "LinkedAuthorizationFailed".into(),
            message: "The client 'c1' has permission ...".into(),
        };
        let refused = Error::Arm {
            operation: "vmss_update",
            status: 403,
            error: error.clone(),
        };
        assert_eq!(reason_of(&refused.to_string()), Some("LinkedAuthorizationFailed"));
        let failed = Error::Operation {
            operation: "vm_update",
            status: "Failed".into(),
            error,
        };
        assert_eq!(reason_of(&failed.to_string()), Some("LinkedAuthorizationFailed"));
        let unanswered = Error::Transport {
            operation: "vmss_get",
            message: "error sending request".into(),
        };
        assert_eq!(reason_of(&unanswered.to_string()), None);
    }
}
