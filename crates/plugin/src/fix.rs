//! Fixes for what ARM and MIC report, in commands a user can run.

use api::AzureAssignedIdentity;

use crate::facts::EventView;

/// The role MIC's identity needs on each user-assigned identity it puts on VMs.
pub const OPERATOR_ROLE: &str = "Managed Identity Operator";

/// What to do about an assignment MIC could not make, from the `reason` and `message` of the
/// AzureAssignedIdentity's status (or MIC's Event): for `LinkedAuthorizationFailed`, the
/// `az role assignment create` that grants MIC's identity the role on this identity.
pub fn assignment_fix(reason: &str, message: &str, identity_id: &str) -> String {
    match reason {
        "LinkedAuthorizationFailed" => {
            // ARM names the caller "The client '<id>' with object id '<object id>'"; `az` takes
            // the object id as --assignee.
            let assignee = quoted_after(message, "with object id '")
                .or_else(|| quoted_after(message, "The client '"))
                .map_or_else(|| "<MIC's client id (aadClientId in azure.json)>".to_owned(), str::to_owned);
            format!(
                "grant MIC's identity the \"{OPERATOR_ROLE}\" role on the identity: \
                 az role assignment create --role \"{OPERATOR_ROLE}\" --assignee {assignee} --scope {identity_id} \
                 (MIC retries on its own; nothing else to do)"
            )
        }
        arm::consent::REASON_CONSENT_MISSING => {
            let command = message
                .split_once("the owner grants it with: ")
                .map_or("az tag update --resource-id <id> --operation Merge --tags pod-identity-namespaces=<namespaces>", |(_, c)| c);
            format!(
                "the identity's owner (Tag Contributor, Contributor or Owner on it) lets the namespace use it: {command} \
                 (MIC reads it again within --identity-consent-recheck; nothing else to do)"
            )
        }
        arm::consent::REASON_CLIENT_ID_MISMATCH => format!(
            "the AzureIdentity's clientID must be the identity's own: az identity show --ids {identity_id} --query clientId"
        ),
        arm::consent::REASON_NOT_FOUND => format!(
            "no such identity in Azure: check resourceID (az identity show --ids {identity_id})"
        ),
        arm::consent::REASON_READ_FAILED => format!(
            "MIC could not read the identity to check its owner's consent: grant MIC's identity \"{OPERATOR_ROLE}\" \
             (which reads identities) on {identity_id}, and read the message above"
        ),
        "FailedIdentityOperation" => format!(
            "ARM could not use the identity: check that {identity_id} exists (az identity show --ids {identity_id}) \
             and that the AzureIdentity's resourceID names it"
        ),
        "AuthorizationFailed" => format!(
            "MIC's identity may not write the VM or scale set: grant it \"Virtual Machine Contributor\" on the node resource group \
             (az role assignment create --role \"Virtual Machine Contributor\" --assignee <MIC's client id> --scope <node resource group id>); \
             then it needs \"{OPERATOR_ROLE}\" on {identity_id}"
        ),
        "TooManyRequests" | "HTTP429" => {
            "ARM is throttling MIC: it waits as Retry-After says and retries; see aadpodidentity_mic_arm_throttled_total".to_owned()
        }
        _ => "read the message above (ARM's error); MIC retries every --failure-retry-interval, and \
              `kubectl describe pod` shows its IdentityAssignmentFailed Events"
            .to_owned(),
    }
}

/// Why an AzureAssignedIdentity waits, as far as MIC has said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failure {
    /// ARM's error code (`LinkedAuthorizationFailed`), or MIC's `IdentityAssignmentFailed`.
    pub reason: Option<String>,
    pub message: String,
}

/// The latest of MIC's Events (`IdentityAssigned`, `IdentityAssignmentFailed`) about pod
/// `namespace/pod`, by time.
pub fn last_mic_event<'e>(events: &'e [EventView], namespace: &str, pod: &str) -> Option<&'e EventView> {
    let regarding = format!("Pod/{pod}");
    events
        .iter()
        .filter(|e| e.namespace == namespace && e.regarding == regarding && e.reason.starts_with("Identity"))
        .max_by(|a, b| a.time.cmp(&b.time))
}

/// The failure an AzureAssignedIdentity's status records (`reason`, `message`) or, from a MIC
/// that writes none (older, or upstream's), what MIC's last Event about the pod says.
pub fn failure_of(a: &AzureAssignedIdentity, last_event: Option<&EventView>) -> Failure {
    let status = a.status.clone().unwrap_or_default();
    Failure {
        reason: status
            .reason
            .or_else(|| last_event.and_then(|e| reason_in(&e.note)).map(str::to_owned)),
        message: status
            .message
            .or_else(|| last_event.map(|e| e.note.clone()))
            .unwrap_or_default(),
    }
}

/// The text between `prefix` and the next `'`.
fn quoted_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let start = text.find(prefix)? + prefix.len();
    let rest = &text[start..];
    rest.find('\'').map(|end| &rest[..end]).filter(|s| !s.is_empty())
}

/// The ARM error code in a MIC Event's note or status message (`... failed: vmss_update 403:
/// LinkedAuthorizationFailed The client ...`): the same rule MIC uses for the status `reason`.
pub fn reason_in(note: &str) -> Option<&str> {
    let (_, why) = note.split_once(" failed: ")?;
    arm::reason_of(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str =
        "/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/app";

    #[test]
    fn a_missing_operator_role_gets_the_az_command_for_mic_s_client() {
        let message = format!(
            "assigning identity {ID} to /x failed: vmss_update 403: LinkedAuthorizationFailed The client \
             '5c8f2a10-0000-4000-8000-00000000000a' with object id '9b1e7d2a-0000-4000-8000-00000000000a' has permission ... on the linked scope(s) '{ID}'"
        );
        let fix = assignment_fix("LinkedAuthorizationFailed", &message, ID);
        assert!(
            fix.contains(&format!(
                "az role assignment create --role \"Managed Identity Operator\" --assignee 9b1e7d2a-0000-4000-8000-00000000000a --scope {ID}"
            )),
            "{fix}"
        );
        assert_eq!(reason_in(&message), Some("LinkedAuthorizationFailed"));
    }

    #[test]
    fn without_a_client_in_the_message_the_placeholder_says_where_to_find_it() {
        let fix = assignment_fix("LinkedAuthorizationFailed", "no client here", ID);
        assert!(
            fix.contains("--assignee <MIC's client id (aadClientId in azure.json)>"),
            "{fix}"
        );
    }

    #[test]
    fn other_reasons_get_their_own_fix() {
        assert!(assignment_fix("FailedIdentityOperation", "", ID).contains("az identity show --ids"));
        assert!(assignment_fix("AuthorizationFailed", "", ID).contains("Virtual Machine Contributor"));
        assert!(assignment_fix("IdentityAssignmentFailed", "", ID).contains("--failure-retry-interval"));
        assert_eq!(reason_in("no failure here"), None);
    }
}
