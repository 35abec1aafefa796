//! `target/bench/summary.json`: one flat JSON object of figures, which every benchmark merges its
//! own keys into, and the table printed from it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::{Error, Result};

/// `<workspace>/target/bench/summary.json`, or `$CARGO_TARGET_DIR/bench/summary.json`.
pub fn default_summary_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            root.canonicalize().unwrap_or(root).join("target")
        });
    target.join("bench").join("summary.json")
}

/// Adds (or replaces) `figures` in the summary file, keeping every other key, and returns the
/// whole summary.
pub fn merge_into(path: &Path, figures: &[(&str, Value)]) -> Result<BTreeMap<String, Value>> {
    let mut all: BTreeMap<String, Value> = match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes)? {
            Value::Object(m) => m.into_iter().collect(),
            _ => return Err(Error::NotAnObject(path.display().to_string())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(Error::Io(path.display().to_string(), e)),
    };
    for (k, v) in figures {
        // `null` removes a figure an earlier run of another size left behind.
        if v.is_null() {
            all.remove(*k);
        } else {
            all.insert((*k).to_string(), v.clone());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
    }
    let text = serde_json::to_string_pretty(&all)? + "\n";
    // Write then rename, so a benchmark running beside this one never reads half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::Io(tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io(path.display().to_string(), e))?;
    Ok(all)
}

/// The summary as a two-column table.
pub fn table(all: &BTreeMap<String, Value>) -> String {
    let width = all.keys().map(String::len).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{:<width$}  value\n{}  {}\n",
        "figure",
        "-".repeat(width),
        "-".repeat(12)
    );
    for (k, v) in all {
        let shown = match v {
            Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or_default()),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!("{k:<width$}  {shown}\n"));
    }
    out
}

pub fn print_table(all: &BTreeMap<String, Value>) {
    print!("{}", table(all));
}

#[cfg(test)]
mod tests;
