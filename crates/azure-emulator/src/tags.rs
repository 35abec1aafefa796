//! Azure's rules for resource tags, shared by the world file, the admin API and ARM: at most 50
//! tags, names of 1-512 characters without `< > % & \ ? /` or control characters, values of at
//! most 256 characters. Names compare without regard to case (a write naming `env` updates an
//! existing `Env`, whose casing stays), values with it. The error codes and wording are ARM's, as
//! Azure PowerShell (Az.Migrate) repeats them and Azure's CLI docs show `InvalidTagNameCharacters`.

use std::collections::BTreeMap;

/// A resource's tags, by name as first written.
pub type Tags = BTreeMap<String, String>;

pub const MAX_TAGS: usize = 50;
pub const MAX_NAME_CHARS: usize = 512;
pub const MAX_VALUE_CHARS: usize = 256;
const RESERVED: [char; 7] = ['<', '>', '%', '&', '\\', '?', '/'];

/// Why ARM refuses a set of tags: its error code and message (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagError {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for TagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The name under which `tags` holds `name`, compared without regard to case.
pub fn existing_name<'a>(tags: &'a Tags, name: &str) -> Option<&'a String> {
    let name = name.to_lowercase();
    tags.keys().find(|k| k.to_lowercase() == name)
}

/// Checks each tag's name and value, as ARM does before applying a write.
pub fn check_entries(tags: &Tags) -> Result<(), TagError> {
    if tags.keys().any(|k| k.trim().is_empty()) {
        return Err(TagError {
            code: "InvalidTagName",
            message: "The tag name must be non-null, non-empty and non-whitespace only. Please provide an actual value."
                .into(),
        });
    }
    let reserved: Vec<&str> = tags
        .keys()
        .filter(|k| k.chars().any(|c| RESERVED.contains(&c) || c.is_control()))
        .map(String::as_str)
        .collect();
    if !reserved.is_empty() {
        return Err(TagError {
            code: "InvalidTagNameCharacters",
            message: format!(
                "The tag names '{}' have reserved characters '<,>,%,&,\\,?,/' or control characters.",
                reserved.join(", ")
            ),
        });
    }
    let long: Vec<&str> = tags
        .keys()
        .filter(|k| k.chars().count() > MAX_NAME_CHARS)
        .map(String::as_str)
        .collect();
    if !long.is_empty() {
        return Err(TagError {
            code: "InvalidTagName",
            message: format!(
                "Tag key too large. Following tag name '{}' exceeded the maximum length. Maximum allowed length for tag name - '{MAX_NAME_CHARS}' characters.",
                long.join(", ")
            ),
        });
    }
    let long: Vec<&str> = tags
        .values()
        .filter(|v| v.chars().count() > MAX_VALUE_CHARS)
        .map(String::as_str)
        .collect();
    if !long.is_empty() {
        return Err(TagError {
            code: "InvalidTagValueLength",
            message: format!(
                "Tag value too large. Following tag value '{}' exceeded the maximum length. Maximum allowed length for tag value - '{MAX_VALUE_CHARS}' characters.",
                long.join(", ")
            ),
        });
    }
    Ok(())
}

/// Checks the number of tags a resource would have after a write.
pub fn check_count(tags: &Tags) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError {
            code: "InvalidTags",
            message: format!(
                "Too many tags specified. Requested tag count - '{}'. Maximum number of tags allowed - '{MAX_TAGS}'.",
                tags.len()
            ),
        });
    }
    Ok(())
}

/// The tags a write asks for, checked: names differing only in case collapse into one (the last
/// value wins, as ARM keeps one tag per name).
pub fn replacement(requested: &Tags) -> Result<Tags, TagError> {
    check_entries(requested)?;
    let mut out = Tags::new();
    for (k, v) in requested {
        let name = existing_name(&out, k).cloned().unwrap_or_else(|| k.clone());
        out.insert(name, v.clone());
    }
    check_count(&out)?;
    Ok(out)
}

/// `Merge`: adds new names and updates the values of existing ones, keeping their casing.
pub fn merge(current: &Tags, requested: &Tags) -> Result<Tags, TagError> {
    check_entries(requested)?;
    let mut out = current.clone();
    for (k, v) in requested {
        let name = existing_name(&out, k).cloned().unwrap_or_else(|| k.clone());
        out.insert(name, v.clone());
    }
    check_count(&out)?;
    Ok(out)
}

/// `Delete`: removes each named tag; one given with a non-empty value only when its value is
/// exactly that (`az tag update --operation Delete --tags k` sends `k` with an empty value).
pub fn delete(current: &Tags, requested: &Tags) -> Tags {
    let mut out = current.clone();
    for (k, v) in requested {
        if let Some(name) = existing_name(&out, k).cloned()
            && (v.is_empty() || out.get(&name) == Some(v))
        {
            out.remove(&name);
        }
    }
    out
}

#[cfg(test)]
mod tests;
