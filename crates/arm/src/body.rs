//! The ARM wire format of VM and scale-set identities, as pure functions:
//! reading a GET, writing delta PATCH bodies, reading errors (`Retry-After` is
//! `azure_token::retry_after`, shared with the token client).

use std::collections::{BTreeMap, BTreeSet};

use matching::TargetChange;
use serde_json::{Value, json};

/// ARM refuses a request that changes more user-assigned identities than this.
pub const MAX_IDENTITIES_PER_REQUEST: usize = 150;

/// One user-assigned identity as a VM or scale set reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserIdentity {
    pub client_id: Option<String>,
    pub principal_id: Option<String>,
}

/// A VM's or scale set's identities, from a GET.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityState {
    pub system_assigned: bool,
    /// Keyed by lower-cased resource id: ARM ids are case-insensitive and come back in any case.
    pub user_assigned: BTreeMap<String, UserIdentity>,
    /// `Succeeded`, `Updating`, `Deleting`, …
    pub provisioning_state: Option<String>,
}

impl IdentityState {
    /// Reads the body of a GET of a VM or scale set.
    pub fn from_resource(body: &Value) -> Self {
        let identity = &body["identity"];
        let kind = identity["type"].as_str().unwrap_or("None");
        let user_assigned = identity["userAssignedIdentities"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(id, v)| {
                let s = |k: &str| v[k].as_str().map(str::to_owned);
                (
                    id.to_ascii_lowercase(),
                    UserIdentity {
                        client_id: s("clientId"),
                        principal_id: s("principalId"),
                    },
                )
            })
            .collect();
        Self {
            system_assigned: kind.to_ascii_lowercase().contains("systemassigned"),
            user_assigned,
            provisioning_state: body["properties"]["provisioningState"]
                .as_str()
                .map(str::to_owned),
        }
    }

    /// The resource ids present.
    pub fn ids(&self) -> BTreeSet<String> {
        self.user_assigned.keys().cloned().collect()
    }

    /// Applies a PATCH body that ARM accepted, so the next decision needs no GET.
    pub fn apply(&mut self, body: &Value) {
        let identity = &body["identity"];
        match identity["type"].as_str() {
            Some("None") => self.user_assigned.clear(),
            Some("SystemAssigned") => self.user_assigned.clear(),
            _ => {}
        }
        for (id, v) in identity["userAssignedIdentities"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let id = id.to_ascii_lowercase();
            if v.is_null() {
                self.user_assigned.remove(&id);
            } else {
                self.user_assigned.entry(id).or_default();
            }
        }
    }

    /// Resource ids whose client id is one of `client_ids` (compared case-insensitively).
    pub fn ids_with_client_ids(&self, client_ids: &BTreeSet<String>) -> BTreeSet<String> {
        self.user_assigned
            .iter()
            .filter(|(_, u)| {
                u.client_id
                    .as_ref()
                    .is_some_and(|c| client_ids.contains(&c.to_ascii_lowercase()))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// The PATCH bodies that apply `change` to a resource in state `current`, in order.
///
/// Only the delta is sent (`{}` adds, `null` removes), as upstream did, so identities
/// someone else assigned are left alone. Each body changes at most
/// [`MAX_IDENTITIES_PER_REQUEST`] identities; the `type` of each follows the set that
/// results from it: `UserAssigned` or `SystemAssigned, UserAssigned` while any user
/// identity remains, else `None` or `SystemAssigned` with no identity map.
pub fn patch_bodies(current: &IdentityState, change: &TargetChange) -> Vec<Value> {
    let adds = change
        .add
        .iter()
        .filter(|id| !current.user_assigned.contains_key(*id))
        .map(|id| (id, true));
    let removes = change
        .remove
        .iter()
        .filter(|id| current.user_assigned.contains_key(*id))
        .map(|id| (id, false));
    let ops: Vec<(&String, bool)> = adds.chain(removes).collect();
    let mut set = current.ids();
    ops.chunks(MAX_IDENTITIES_PER_REQUEST)
        .map(|chunk| {
            let mut delta = serde_json::Map::new();
            for (id, add) in chunk {
                if *add {
                    set.insert((*id).clone());
                    delta.insert((*id).clone(), json!({}));
                } else {
                    set.remove(*id);
                    delta.insert((*id).clone(), Value::Null);
                }
            }
            match (set.is_empty(), current.system_assigned) {
                (false, sys) => json!({"identity": {
                    "type": if sys { "SystemAssigned, UserAssigned" } else { "UserAssigned" },
                    "userAssignedIdentities": delta,
                }}),
                (true, true) => json!({"identity": {"type": "SystemAssigned"}}),
                (true, false) => json!({"identity": {"type": "None"}}),
            }
        })
        .collect()
}

/// An ARM error body: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArmError {
    pub code: String,
    pub message: String,
}

impl ArmError {
    /// Reads an error body; anything unreadable keeps its text as the message.
    pub fn parse(status: u16, body: &str) -> Self {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let e = if v["error"].is_object() { &v["error"] } else { &v };
        match (e["code"].as_str(), e["message"].as_str()) {
            (Some(code), message) => Self {
                code: code.to_owned(),
                message: message.unwrap_or_default().to_owned(),
            },
            _ => Self {
                code: format!("HTTP{status}"),
                message: body.chars().take(512).collect(),
            },
        }
    }

    /// The identities an authorization error names (`LinkedAuthorizationFailed`,
    /// `FailedIdentityOperation`), lower-cased, so the rest of a batch can go ahead without them.
    pub fn blamed_identities(&self) -> BTreeSet<String> {
        if !matches!(
            self.code.as_str(),
            "LinkedAuthorizationFailed" | "FailedIdentityOperation"
        ) {
            return BTreeSet::new();
        }
        identity_ids_in(&self.message)
    }
}

/// Every user-assigned identity resource id mentioned in a text, lower-cased.
pub fn identity_ids_in(text: &str) -> BTreeSet<String> {
    let lower = text.to_ascii_lowercase();
    let mut out = BTreeSet::new();
    let mut rest = lower.as_str();
    while let Some(start) = rest.find("/subscriptions/") {
        let candidate = &rest[start..];
        let end = candidate
            .find(['\'', '"', ',', ';', ' ', ')', ']'])
            .unwrap_or(candidate.len());
        let id = &candidate[..end];
        let parts: Vec<&str> = id.split('/').collect();
        // "", subscriptions, s, resourcegroups, rg, providers, microsoft.managedidentity, userassignedidentities, name
        if parts.len() == 9
            && parts[3] == "resourcegroups"
            && parts[6] == "microsoft.managedidentity"
            && parts[7] == "userassignedidentities"
            && parts.iter().skip(1).all(|p| !p.is_empty())
        {
            out.insert(id.to_owned());
        }
        rest = &candidate[end.max(1)..];
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
