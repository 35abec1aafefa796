//! Which resources' tokens NMI fetches ahead of a pod's first request (the choice is explained
//! in [`super`]): the pod's `aadpodidentity.k8s.io/token-resources` annotation, validated and
//! bounded here; else the resources NMI has recently served the identity (its token cache's
//! entries); else Azure Resource Manager's.

/// Most resources an annotation names, and most recent resources of an identity fetched.
pub const MAX_RESOURCES: usize = 8;
/// Longest resource accepted from an annotation.
pub const MAX_RESOURCE_LEN: usize = 256;
/// Longest annotation value read at all (eight resources of the longest, and separators).
pub const MAX_ANNOTATION: usize = MAX_RESOURCES * (MAX_RESOURCE_LEN + 2);
/// The resource fetched when nothing else says: a token of ARM proves the identity works.
pub const DEFAULT_RESOURCE: &str = "https://management.azure.com/";

/// The resources a pod's annotation names, those that pass [`is_resource`], in order, without
/// repeats, at most [`MAX_RESOURCES`]; and how many entries were dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenResources {
    pub resources: Vec<String>,
    pub rejected: usize,
}

impl TokenResources {
    /// Parses the annotation's value (comma-separated). The value is the pod's: every entry is
    /// checked, and a list of any length costs no more than [`MAX_RESOURCES`] entries kept.
    pub fn parse(value: &str) -> Self {
        let mut out = Self::default();
        if value.len() > MAX_ANNOTATION {
            out.rejected = 1;
            return out;
        }
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if !is_resource(entry) || out.resources.len() >= MAX_RESOURCES {
                out.rejected += 1;
            } else if !out.resources.iter().any(|r| r == entry) {
                out.resources.push(entry.to_owned());
            }
        }
        out
    }
}

/// Whether `s` is a resource NMI fetches tokens for ahead of time: an `https://` URL or an
/// `api://` application id URI with a host, or a bare application id (GUID); printable URL
/// characters only, at most [`MAX_RESOURCE_LEN`] bytes.
pub fn is_resource(s: &str) -> bool {
    if s.len() > MAX_RESOURCE_LEN {
        return false;
    }
    let url_char = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("api://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            !host.is_empty() && rest.chars().all(url_char)
        }
        None => is_guid(s),
    }
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The resources to fetch for a pod: its annotation's, else `recent` (what NMI served the
/// identity lately, most recent first), else [`DEFAULT_RESOURCE`]; at most [`MAX_RESOURCES`].
pub fn choose(annotated: &TokenResources, recent: Vec<String>) -> Vec<String> {
    if !annotated.resources.is_empty() {
        return annotated.resources.clone();
    }
    // A pod of the identity may have asked for anything; only well-formed resources are
    // fetched again for the identity's other pods.
    let recent: Vec<String> = recent
        .into_iter()
        .filter(|r| is_resource(r))
        .take(MAX_RESOURCES)
        .collect();
    if recent.is_empty() {
        return vec![DEFAULT_RESOURCE.to_owned()];
    }
    recent
}
