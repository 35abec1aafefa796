//! ARM resource ids: building them, and parsing request paths and identity keys. ARM compares ids
//! without regard to case, so everything here keys on the lower-cased form.

pub fn identity_id(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

pub fn vm_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}")
}

pub fn vmss_id(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
    )
}

pub fn key(id: &str) -> String {
    id.trim_end_matches('/').to_ascii_lowercase()
}

/// What an ARM request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmPath {
    VirtualMachine {
        sub: String,
        rg: String,
        name: String,
    },
    ScaleSet {
        sub: String,
        rg: String,
        name: String,
    },
    Identity {
        sub: String,
        rg: String,
        name: String,
    },
    Operation {
        sub: String,
        location: String,
        id: String,
    },
}

impl ArmPath {
    pub fn resource_key(&self) -> Option<String> {
        match self {
            ArmPath::VirtualMachine { sub, rg, name } => Some(key(&vm_id(sub, rg, name))),
            ArmPath::ScaleSet { sub, rg, name } => Some(key(&vmss_id(sub, rg, name))),
            ArmPath::Identity { sub, rg, name } => Some(key(&identity_id(sub, rg, name))),
            ArmPath::Operation { .. } => None,
        }
    }

    pub fn subscription(&self) -> &str {
        match self {
            ArmPath::VirtualMachine { sub, .. }
            | ArmPath::ScaleSet { sub, .. }
            | ArmPath::Identity { sub, .. }
            | ArmPath::Operation { sub, .. } => sub,
        }
    }
}

/// Why a path is not one the emulator serves; the message is ARM's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not a resource path at all (ARM: 400 `InvalidResourceId`-style).
    Malformed(String),
    /// A well-formed path of a type the emulator does not model.
    UnsupportedType(String),
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(|c| c.is_control() || "<>%&:\\?/*#".contains(c))
}

/// Parses `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}` and the compute
/// operation-status path, case-insensitively.
pub fn parse_arm_path(path: &str) -> Result<ArmPath, PathError> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let malformed = || PathError::Malformed(path.to_string());
    if segs.iter().any(|s| !valid_segment(s)) {
        return Err(malformed());
    }
    match l.as_slice() {
        ["subscriptions", _, "resourcegroups", _, "providers", ns, ty, _] => {
            let (sub, rg, name) = (segs[1].to_string(), segs[3].to_string(), segs[7].to_string());
            match (*ns, *ty) {
                ("microsoft.compute", "virtualmachines") => Ok(ArmPath::VirtualMachine { sub, rg, name }),
                ("microsoft.compute", "virtualmachinescalesets") => Ok(ArmPath::ScaleSet { sub, rg, name }),
                ("microsoft.managedidentity", "userassignedidentities") => {
                    Ok(ArmPath::Identity { sub, rg, name })
                }
                _ => Err(PathError::UnsupportedType(format!("{}/{}", segs[5], segs[6]))),
            }
        }
        [
            "subscriptions",
            _,
            "providers",
            "microsoft.compute",
            "locations",
            _,
            "operations",
            _,
        ] => Ok(ArmPath::Operation {
            sub: segs[1].into(),
            location: segs[5].into(),
            id: segs[7].into(),
        }),
        ["subscriptions", _, "resourcegroups", _, "providers", _, _, ..] => {
            Err(PathError::UnsupportedType(segs[5..].join("/")))
        }
        _ => Err(malformed()),
    }
}

/// Checks that an id names a user-assigned identity, returning (subscription, group, name).
pub fn parse_identity_id(id: &str) -> Option<(String, String, String)> {
    if !id.starts_with('/') {
        return None;
    }
    match parse_arm_path(id) {
        Ok(ArmPath::Identity { sub, rg, name }) => Some((sub, rg, name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
