//! Whether `helm upgrade` rolled NMI with the surge strategy (issue 22): a watch of the NMI pods
//! across the upgrade, then a replay of its events looking for a moment when the new pod was Ready
//! while the old one still existed (the old one stops only once the new one serves).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};

use super::*;

/// `kubectl get pods --watch` of the release's NMI pods, its events written to a file.
pub struct PodWatch {
    child: Child,
    out: PathBuf,
}

impl PodWatch {
    pub fn start(sb: &Sandbox) -> Self {
        let out = std::env::temp_dir().join(format!("nmi-pod-watch-{}.log", std::process::id()));
        let child = sb
            .script("sandbox.sh")
            .args([
                "kubectl",
                "-n",
                RELEASE_NS,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/component=nmi",
                "--watch",
                "--output-watch-events",
                "-o",
                r#"jsonpath={.type} {.object.metadata.name} {.object.status.conditions[?(@.type=="Ready")].status}{"\n"}"#,
            ])
            .stdout(std::fs::File::create(&out).expect("watch log"))
            .stderr(Stdio::null())
            // Its own process group: the script's kubectl is stopped with it.
            .process_group(0)
            .spawn()
            .expect("kubectl --watch");
        PodWatch { child, out }
    }

    /// Stops the watch; the events it saw, as "TYPE name ReadyStatus" lines.
    pub fn stop(mut self) -> String {
        self.kill();
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.out);
    }
}

/// Whether, in `events`, `new` was Ready while `old` still existed.
pub fn new_ready_beside_old(events: &str, old: &str, new: &str) -> bool {
    let mut pods: BTreeMap<&str, bool> = BTreeMap::new();
    for line in events.lines() {
        let mut f = line.split_whitespace();
        let (Some(kind), Some(name)) = (f.next(), f.next()) else {
            continue;
        };
        if kind == "DELETED" {
            pods.remove(name);
        } else {
            pods.insert(name, f.next() == Some("True"));
        }
        if pods.contains_key(old) && pods.get(new) == Some(&true) {
            return true;
        }
    }
    false
}
