//! Resident memory of a process (VmRSS from `/proc/<pid>/status`) and the flatness check of the
//! soak: memory sampled over time is "flat" when the late average is close to the early one.

use crate::{Error, Result};

/// `VmRSS` of a `/proc/<pid>/status` text, in MiB.
pub fn parse_vm_rss_mib(status: &str) -> Option<f64> {
    parse_field_mib(status, "VmRSS:")
}

/// A memory line (`VmRSS:`, `RssAnon:`, `RssFile:`) of a `/proc/<pid>/status` text, in MiB.
pub fn parse_field_mib(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut parts = line[field.len()..].split_whitespace();
    let value: f64 = parts.next()?.parse().ok()?;
    let factor = match parts.next().unwrap_or("kB") {
        "kB" | "KB" | "kb" => 1.0 / 1024.0,
        "mB" | "MB" => 1.0,
        "B" => 1.0 / (1024.0 * 1024.0),
        _ => return None,
    };
    Some(value * factor)
}

/// The resident memory of process `pid` now, in MiB.
/// Resident memory split into anonymous (heap, stacks) and file-backed (mostly the binary's
/// code) parts, in MiB: `(anon, file)`.
pub fn rss_parts_mib(pid: u32) -> Result<(f64, f64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(path.clone(), e))?;
    let field =
        |f: &str| parse_field_mib(&text, f).ok_or_else(|| Error::Http(format!("no {f} line in {path}")));
    Ok((field("RssAnon:")?, field("RssFile:")?))
}

pub fn rss_mib(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(path.clone(), e))?;
    parse_vm_rss_mib(&text).ok_or_else(|| Error::Http(format!("no VmRSS line in {path}")))
}

/// Early and late averages of memory samples `(seconds since start, MiB)` over a run of
/// `total_secs`, and the late one relative to the early one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flatness {
    pub early_mib: f64,
    pub late_mib: f64,
    /// `late / early`; 1.0 is perfectly flat.
    pub ratio: f64,
}

/// The windows compared: for runs of at least 3 minutes, the second minute (after start-up and
/// the first fill of caches) and the last minute; for shorter runs, the second and the last
/// quarter of the run. `None` when a window holds no sample.
pub fn flatness(samples: &[(f64, f64)], total_secs: f64) -> Option<Flatness> {
    let (early, late) = if total_secs >= 180.0 {
        ((60.0, 120.0), (total_secs - 60.0, f64::INFINITY))
    } else {
        let q = total_secs / 4.0;
        ((q, 2.0 * q), (3.0 * q, f64::INFINITY))
    };
    let avg = |(from, to): (f64, f64)| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, m)| *m)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let (early_mib, late_mib) = (avg(early)?, avg(late)?);
    Some(Flatness {
        early_mib,
        late_mib,
        ratio: late_mib / early_mib,
    })
}

/// Rounds to `digits` decimals, for the summary.
pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests;
