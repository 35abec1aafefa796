//! What an `AzureAssignedIdentity` says about why it is still `Created`: the `reason` and
//! `message` of its status, decided here from the error MIC met, with no I/O. The same error
//! goes out as an `IdentityAssignmentFailed` Event, but Events expire after an hour and are
//! written to the pod and the binding, not the object `kubectl get azureassignedidentity` shows;
//! the status keeps the latest one where users look first. The `reason` is the ARM error code as
//! [`arm::reason_of`] reads it, the rule `kubectl pod-identity` reads MIC's Events with.

use serde_json::{Value, json};

use api::AssignmentState;
use arm::reason_of;

/// The reason when the error carries no ARM error code (no answer, no token, ...).
pub const GENERIC_REASON: &str = "IdentityAssignmentFailed";
/// The CRD's limit on `status.message`.
pub const MAX_MESSAGE: usize = 2048;

/// The `reason` and `message` an assignment failure writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureStatus {
    pub reason: String,
    pub message: String,
}

impl FailureStatus {
    /// From what MIC knows of a failure: the identity, the VM or scale set, and the error as
    /// `arm::Error` prints it (`vmss_update 403: LinkedAuthorizationFailed The client ...`,
    /// `vmss_update: the operation ended Failed: <code> <message>`, or a transport or token
    /// error without a code).
    pub fn of(arm_id: &str, target: &str, why: &str) -> Self {
        Self {
            reason: reason_of(why).unwrap_or(GENERIC_REASON).to_owned(),
            message: truncate(
                &format!("assigning identity {arm_id} to {target} failed: {why}"),
                MAX_MESSAGE,
            ),
        }
    }

    /// The merge patch that records it, leaving `status.status` as it is.
    pub fn patch(&self) -> Value {
        json!({"status": {"reason": self.reason, "message": self.message}})
    }
}

/// The merge patch that sets an object's state. `Assigned` clears a failure recorded earlier:
/// the assignment went through at last, and a stale reason would send users after a fixed
/// problem. Other states keep it (a `Created` written again while MIC retries still has it).
pub fn state_patch(state: AssignmentState) -> Value {
    match state {
        AssignmentState::Assigned => json!({"status": {
            "status": state, "availableReplicas": 1, "reason": null, "message": null,
        }}),
        _ => json!({"status": {"status": state, "availableReplicas": 1}}),
    }
}

/// At most `max` bytes, cut at a character boundary (as Event notes are).
pub use events::note::truncate;

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str =
        "/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/app";
    const VMSS: &str =
        "/subscriptions/s/resourceGroups/mc/providers/Microsoft.Compute/virtualMachineScaleSets/ss-a";

    #[test]
    fn an_arm_refusal_gives_its_code_and_the_whole_error() {
        let why = format!(
            "vmss_update 403: LinkedAuthorizationFailed The client 'c1' with object id 'c1' has permission to perform action 'Microsoft.Compute/virtualMachineScaleSets/write' on scope '{VMSS}'; however, it does not have permission to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{ID}' or the linked scope(s) are invalid."
        );
        let f = FailureStatus::of(ID, VMSS, &why);
        assert_eq!(f.reason, "LinkedAuthorizationFailed");
        assert!(f.message.starts_with(&format!("assigning identity {ID} to {VMSS} failed: vmss_update 403: LinkedAuthorizationFailed The client 'c1'")));
        assert_eq!(
            f.patch(),
            json!({"status": {"reason": "LinkedAuthorizationFailed", "message": f.message}})
        );
    }

    #[test]
    fn errors_without_a_code_get_the_generic_reason() {
        for why in [
            "vmss_get: error sending request: connection refused",
            "getting a token for ARM: Entra answered 401: invalid_client",
            "",
            "no colon at all",
        ] {
            assert_eq!(FailureStatus::of(ID, VMSS, why).reason, GENERIC_REASON, "{why}");
        }
        assert_eq!(
            FailureStatus::of(ID, VMSS, "vmss_get 503: HTTP503 <html>").reason,
            "HTTP503"
        );
    }

    #[test]
    fn long_messages_fit_the_crd() {
        let why = format!("vmss_update 400: BadRequest {}", "é".repeat(4000));
        let f = FailureStatus::of(ID, VMSS, &why);
        assert!(f.message.len() <= MAX_MESSAGE);
        assert!(f.message.ends_with('é'));
    }

    #[test]
    fn the_message_limit_is_the_crd_s() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(api::AzureAssignedIdentity::crd()).unwrap();
        let status =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert_eq!(status["message"]["maxLength"], MAX_MESSAGE);
        assert_eq!(status["reason"]["maxLength"], 128);
    }

    #[test]
    fn assigned_clears_the_failure_and_created_keeps_it() {
        assert_eq!(
            state_patch(AssignmentState::Assigned),
            json!({"status": {"status": "Assigned", "availableReplicas": 1, "reason": null, "message": null}})
        );
        assert_eq!(
            state_patch(AssignmentState::Created),
            json!({"status": {"status": "Created", "availableReplicas": 1}})
        );
    }
}
