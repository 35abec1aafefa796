//! The identity part of a VM/VMSS PATCH or PUT body, and the rules that turn it into the next
//! identity state. Kept pure so it can be property-tested.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::ids;

/// ARM's limit on user-assigned identity changes in one request.
pub const MAX_IDENTITY_CHANGES: usize = 150;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityType {
    pub system: bool,
    pub user: bool,
}

impl IdentityType {
    pub fn parse(s: &str) -> Option<Self> {
        let norm: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        match norm.as_str() {
            "none" => Some(Self {
                system: false,
                user: false,
            }),
            "systemassigned" => Some(Self {
                system: true,
                user: false,
            }),
            "userassigned" => Some(Self {
                system: false,
                user: true,
            }),
            "systemassigned,userassigned" => Some(Self {
                system: true,
                user: true,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UaOp {
    Add,
    Remove,
}

/// The `identity` object of a request, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityUpdate {
    pub ty: Option<IdentityType>,
    /// `None` when `userAssignedIdentities` was absent; ids as sent.
    pub user: Option<Vec<(String, UaOp)>>,
}

impl IdentityUpdate {
    pub fn adds(&self) -> impl Iterator<Item = &str> {
        self.user
            .iter()
            .flatten()
            .filter(|(_, op)| *op == UaOp::Add)
            .map(|(id, _)| id.as_str())
    }
}

/// A request body ARM refuses, with ARM's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub code: &'static str,
    pub message: String,
}

fn e(code: &'static str, message: impl Into<String>) -> BodyError {
    BodyError {
        code,
        message: message.into(),
    }
}

/// Parses a request body; `Ok(None)` when it carries no identity.
pub fn parse(body: &[u8]) -> Result<Option<IdentityUpdate>, BodyError> {
    let v: Value = serde_json::from_slice(body).map_err(|err| {
        e(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{err}'."),
        )
    })?;
    let Value::Object(top) = v else {
        return Err(e(
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: 'the body is not a JSON object'.",
        ));
    };
    let identity = match top.get("identity") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(e(
                "InvalidRequestContent",
                "The request content was invalid: 'identity' must be an object.",
            ));
        }
    };
    let ty = match identity.get("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(IdentityType::parse(s).ok_or_else(|| {
            e(
                "InvalidParameter",
                format!(
                    "The value '{s}' of parameter 'identity.type' is invalid. Allowed values are 'None', 'SystemAssigned', 'UserAssigned', 'SystemAssigned, UserAssigned'."
                ),
            )
        })?),
        Some(_) => return Err(e("InvalidRequestContent", "The request content was invalid: 'identity.type' must be a string.")),
    };
    let user = match identity.get("userAssignedIdentities") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            if map.len() > MAX_IDENTITY_CHANGES {
                return Err(e(
                    "BadRequest",
                    format!(
                        "User Assigned Identities Number '{}' Assign exceed limit '{MAX_IDENTITY_CHANGES}' in one request.",
                        map.len()
                    ),
                ));
            }
            let mut ops: Vec<(String, UaOp)> = Vec::with_capacity(map.len());
            let mut seen = std::collections::HashSet::new();
            for (id, val) in map {
                if ids::parse_identity_id(id).is_none() {
                    return Err(e(
                        "LinkedInvalidPropertyId",
                        format!(
                            "Property id '{id}' at path 'identity.userAssignedIdentities' is invalid. Expect fully qualified resource Id that start with '/subscriptions/{{subscriptionId}}' or '/providers/{{resourceProviderNamespace}}/'."
                        ),
                    ));
                }
                if !seen.insert(ids::key(id)) {
                    return Err(e(
                        "InvalidParameter",
                        format!(
                            "The identity '{id}' appears more than once in 'identity.userAssignedIdentities'."
                        ),
                    ));
                }
                let op = match val {
                    Value::Null => UaOp::Remove,
                    Value::Object(_) => UaOp::Add,
                    _ => {
                        return Err(e(
                            "InvalidParameter",
                            format!(
                                "The value of identity '{id}' in 'identity.userAssignedIdentities' must be an object or null."
                            ),
                        ));
                    }
                };
                ops.push((id.clone(), op));
            }
            Some(ops)
        }
        Some(_) => {
            return Err(e(
                "InvalidRequestContent",
                "The request content was invalid: 'identity.userAssignedIdentities' must be an object.",
            ));
        }
    };
    Ok(Some(IdentityUpdate { ty, user }))
}

/// The identities after a write: whether the system identity is on, and the user-assigned ids
/// keyed by lower-cased id. `replace` is PUT (the list is the whole set), otherwise PATCH (delta).
pub fn next_state(
    cur_system: bool,
    cur_user: &BTreeMap<String, String>,
    upd: &IdentityUpdate,
    replace: bool,
) -> Result<(bool, BTreeMap<String, String>), BodyError> {
    let cur_ty = IdentityType {
        system: cur_system,
        user: !cur_user.is_empty(),
    };
    let ty = upd.ty.unwrap_or(cur_ty);
    if !ty.user {
        if upd.adds().next().is_some() {
            return Err(e(
                "InvalidParameter",
                "Parameter 'identity.userAssignedIdentities' can only be set when the identity type is 'UserAssigned' or 'SystemAssigned, UserAssigned'.",
            ));
        }
        return Ok((ty.system, BTreeMap::new()));
    }
    let mut user = if replace && upd.user.is_some() {
        BTreeMap::new()
    } else {
        cur_user.clone()
    };
    for (id, op) in upd.user.iter().flatten() {
        match op {
            UaOp::Add => {
                user.insert(ids::key(id), id.clone());
            }
            UaOp::Remove => {
                user.remove(&ids::key(id));
            }
        }
    }
    if user.is_empty() {
        return Err(e(
            "InvalidParameter",
            "Parameter 'identity.userAssignedIdentities' must contain at least one identity when the identity type includes 'UserAssigned'.",
        ));
    }
    Ok((ty.system, user))
}

#[cfg(test)]
mod tests;
