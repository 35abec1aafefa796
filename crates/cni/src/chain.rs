//! Installing the plugin on a node: its binary copied into the CNI bin directory, and an entry
//! `{"type": "pod-identity-cni", "readyFile": …}` appended to the plugins of the node's network
//! configuration (the file the container runtime uses), after the network's own plugins; and
//! undoing both. NMI does it at start and keeps it so (the network's own installer may rewrite its
//! file); `nmi cleanup` undoes it on uninstall, before the rules and the ready file go, so that no
//! pod is ever left waiting for a ready file that will not come.
//!
//! Files are rewritten atomically. A rewritten configuration is the same JSON with the entry added
//! or removed (its keys sorted, its layout pretty-printed).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::{Error, PLUGIN_TYPE, Result, io, write_atomically};

/// The plugin's entry in a network configuration list.
pub fn entry(ready_file: &Path) -> Value {
    json!({"type": PLUGIN_TYPE, "readyFile": ready_file.display().to_string()})
}

fn is_network_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("conf" | "conflist" | "json")
    )
}

/// libcni's network configuration files in `conf_dir`, sorted by name (`.conf`, `.conflist`,
/// `.json`); containerd and CRI-O use the first.
fn network_files(conf_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(io("listing", conf_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_network_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// The node's network configuration: the first file by name, as the runtime picks it.
pub fn primary(conf_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(network_files(conf_dir)?.into_iter().next())
}

fn ours(plugin: &Value) -> bool {
    plugin["type"] == PLUGIN_TYPE
}

/// What [`insert`] and [`install`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chained {
    Added,
    /// The entry was there with other settings (another ready file), and was replaced in place.
    Updated,
    Already,
    /// The configuration directory holds no network configuration yet.
    NoNetwork,
}

/// Puts `entry` into the conflist `list`: appended after the network's own plugins, or, when one
/// is there already, left where it is (another chained plugin may have been appended after it)
/// and made equal to `entry`.
pub fn insert(list: &mut Value, entry: &Value) -> Result<Chained> {
    let Some(plugins) = list.get_mut("plugins").and_then(Value::as_array_mut) else {
        return Err(Error::NotAList);
    };
    let Some(first) = plugins.iter().position(ours) else {
        plugins.push(entry.clone());
        return Ok(Chained::Added);
    };
    // A second entry of ours (two installs racing) would run the check twice: keep the first.
    let before = plugins.len();
    let mut seen = false;
    plugins.retain(|p| !ours(p) || !std::mem::replace(&mut seen, true));
    if plugins[first] == *entry && plugins.len() == before {
        return Ok(Chained::Already);
    }
    plugins[first] = entry.clone();
    Ok(Chained::Updated)
}

/// Takes every entry of the plugin out of `list`. True when there was one.
pub fn remove(list: &mut Value) -> bool {
    let Some(plugins) = list.get_mut("plugins").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = plugins.len();
    plugins.retain(|p| !ours(p));
    plugins.len() != before
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).map_err(io("reading", path))?;
    serde_json::from_slice(&text).map_err(|e| Error::Config {
        path: path.to_owned(),
        detail: format!("not JSON: {e}"),
    })
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let mut text = serde_json::to_string_pretty(v).expect("a Value serializes");
    text.push('\n');
    write_atomically(path, text.as_bytes(), mode)
}

/// Chains the plugin, with its ready file, into the node's network configuration.
pub fn install(conf_dir: &Path, ready_file: &Path) -> Result<(Chained, Option<PathBuf>)> {
    let Some(path) = primary(conf_dir)? else {
        return Ok((Chained::NoNetwork, None));
    };
    let mut list = read_json(&path)?;
    let done = insert(&mut list, &entry(ready_file)).map_err(|e| Error::Config {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    if done != Chained::Already {
        write_json(&path, &list)?;
    }
    Ok((done, Some(path)))
}

/// Takes the plugin out of every network configuration in `conf_dir`; the files it changed.
/// Files that are not JSON are not ours to judge, and are left as they are.
pub fn uninstall(conf_dir: &Path) -> Result<Vec<PathBuf>> {
    let files = match network_files(conf_dir) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        other => other?,
    };
    let mut changed = Vec::new();
    for path in files {
        let Ok(mut list) = read_json(&path) else { continue };
        if remove(&mut list) {
            write_json(&path, &list)?;
            changed.push(path);
        }
    }
    Ok(changed)
}

/// Copies the plugin binary `src` into `bin_dir` unless the same bytes are there. True when copied.
/// Without `compare_bytes`, a file of the same size there counts as the same (a periodic check
/// need not read both files each time; a start-up check, after an upgrade, compares them).
pub fn install_binary(src: &Path, bin_dir: &Path, compare_bytes: bool) -> Result<bool> {
    let dest = bin_dir.join(PLUGIN_TYPE);
    if !compare_bytes {
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        if len(&dest).is_some() && len(&dest) == len(src) {
            return Ok(false);
        }
    }
    let bytes = std::fs::read(src).map_err(io("reading", src))?;
    if std::fs::read(&dest).is_ok_and(|there| there == bytes) {
        return Ok(false);
    }
    write_atomically(&dest, &bytes, 0o755)?;
    Ok(true)
}

/// Removes the plugin binary from `bin_dir`. True when it was there.
pub fn remove_binary(bin_dir: &Path) -> Result<bool> {
    let path = bin_dir.join(PLUGIN_TYPE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("removing", path)(e)),
    }
}

#[cfg(test)]
mod tests;
