//! The rules loop's rounds against a fake nat table and a fake conntrack, with the CNI gate's real
//! files in a temporary directory. The real binaries run in network namespaces in
//! `tests/conntrack.rs`, and the gate on a real node in `crates/testbed/tests/chart_e2e.rs`.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use clap::Parser;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::*;
use crate::conntrack::Entry;

/// A nat table where the rules are either all there or all gone; `failing` fails every command.
#[derive(Default)]
struct Table {
    present: AtomicBool,
    failing: AtomicBool,
}

impl Netfilter for Table {
    fn iptables<'a>(&'a self, args: &'a [&'a str]) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::Config("iptables is broken".into()));
            }
            let present = self.present.load(Ordering::SeqCst);
            match args {
                ["-t", "nat", "-S", "PREROUTING"] if present => {
                    Ok("-P PREROUTING ACCEPT\n-A PREROUTING -j aad-metadata\n".into())
                }
                ["-t", "nat", "-S", "PREROUTING"] => Ok("-P PREROUTING ACCEPT\n".into()),
                ["-t", "nat", "-S", _] if present => Ok(target().expected_chain().join("\n")),
                ["-t", "nat", "-S", _] => Err(Error::Config("no chain".into())),
                // `nmi cleanup` deletes the jump until there is none left.
                ["-t", "nat", "-D", "PREROUTING", ..] if present => {
                    self.present.store(false, Ordering::SeqCst);
                    Ok(String::new())
                }
                ["-t", "nat", "-D", ..] => Err(Error::Config("no such rule".into())),
                _ => Ok(String::new()),
            }
        })
    }

    fn restore<'a>(&'a self, _input: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.present.store(true, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// Counts the cuts; `failing` fails them.
#[derive(Default)]
struct Cuts {
    lists: Mutex<u32>,
    failing: AtomicBool,
}

impl conntrack::Tool for Arc<Cuts> {
    fn list(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            *self.lists.lock().unwrap() += 1;
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::Config("conntrack is broken".into()));
            }
            Ok(String::new())
        })
    }

    fn delete<'a>(&'a self, _e: &'a Entry) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(true) })
    }
}

fn target() -> Target {
    Target::new([127, 0, 0, 1].into(), 2579)
}

fn gate(dir: &Path, enabled: bool) -> Gate {
    Gate {
        conf_dir: dir.join("net.d"),
        bin_dir: dir.join("bin"),
        binary: dir.join("image/pod-identity-cni"),
        ready_file: dir.join("run/interception-ready"),
        enabled,
    }
}

const BOOT: &str = "6b1b8a1c-0000-4000-8000-000000000001";

#[tokio::test]
async fn rules_then_a_cut_then_the_ready_file_and_again_after_each_repair() {
    let dir = tempfile::tempdir().unwrap();
    let g = gate(dir.path(), true);
    let (table, cuts) = (Table::default(), Arc::new(Cuts::default()));
    let mut rules = Rules::new(
        target(),
        Options {
            conntrack: Some(Box::new(cuts.clone())),
            gate: Some(g.clone()),
        },
    );
    let boot = Ok(BOOT.to_owned());
    let ready = || cni::ready::check(&g.ready_file, &boot);

    assert!(rules.round(&table, &boot).await, "installed");
    assert_eq!(*cuts.lists.lock().unwrap(), 1, "cut once the rules are in");
    assert!(ready().is_ready());

    assert!(rules.round(&table, &boot).await);
    assert_eq!(*cuts.lists.lock().unwrap(), 1, "nothing changed: no cut");

    // Flushed behind NMI's back: repaired, and connections made meanwhile are cut.
    table.present.store(false, Ordering::SeqCst);
    assert!(rules.round(&table, &boot).await);
    assert_eq!(*cuts.lists.lock().unwrap(), 2);

    // A cut that fails is retried at the next round, while the node stays ready.
    table.present.store(false, Ordering::SeqCst);
    cuts.failing.store(true, Ordering::SeqCst);
    assert!(rules.round(&table, &boot).await);
    assert!(ready().is_ready());
    cuts.failing.store(false, Ordering::SeqCst);
    assert!(rules.round(&table, &boot).await);
    assert_eq!(*cuts.lists.lock().unwrap(), 4);
    assert!(rules.round(&table, &boot).await);
    assert_eq!(*cuts.lists.lock().unwrap(), 4, "done: no more cuts");

    // Rules that cannot be installed un-ready the node; their return re-readies it.
    table.failing.store(true, Ordering::SeqCst);
    assert!(!rules.round(&table, &boot).await);
    assert_eq!(ready(), cni::ready::Readiness::Missing);
    table.failing.store(false, Ordering::SeqCst);
    assert!(rules.round(&table, &boot).await);
    assert!(ready().is_ready());
}

#[tokio::test]
async fn no_cut_when_disabled_and_no_ready_file_without_an_enabled_gate() {
    let dir = tempfile::tempdir().unwrap();
    let boot = Ok(BOOT.to_owned());
    let table = Table::default();
    let mut rules = Rules::new(
        target(),
        Options {
            conntrack: None,
            gate: Some(gate(dir.path(), false)),
        },
    );
    assert!(rules.round(&table, &boot).await);
    assert!(!gate(dir.path(), false).ready_file.exists());

    // The boot id cannot be read: the node stays un-ready rather than guessing.
    let mut rules = Rules::new(
        target(),
        Options {
            conntrack: None,
            gate: Some(gate(dir.path(), true)),
        },
    );
    let unknown = Err(cni::Error::Config {
        path: cni::ready::BOOT_ID_PATH.into(),
        detail: "unreadable".into(),
    });
    assert!(
        rules.round(&table, &unknown).await,
        "the rules are in place all the same"
    );
    assert!(!gate(dir.path(), true).ready_file.exists());
}

fn plugin_types(file: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_gate_is_installed_opted_out_of_and_cleaned_up_plugin_first() {
    let dir = tempfile::tempdir().unwrap();
    let g = gate(dir.path(), true);
    for d in [&g.conf_dir, &g.bin_dir, &dir.path().join("image")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&g.binary, b"plugin").unwrap();
    assert_eq!(g.reconcile(true).unwrap(), Chained::NoNetwork);
    assert!(
        g.bin_dir.join(cni::PLUGIN_TYPE).exists(),
        "copied even before a network exists"
    );
    let conf = g.conf_dir.join("10-k-0.conflist");
    std::fs::write(
        &conf,
        r#"{"cniVersion": "0.4.0", "name": "k-0", "plugins": [{"type": "bridge"}]}"#,
    )
    .unwrap();
    assert_eq!(g.reconcile(false).unwrap(), Chained::Added);
    assert_eq!(g.reconcile(false).unwrap(), Chained::Already);
    assert_eq!(plugin_types(&conf), ["bridge", "pod-identity-cni"]);

    // The chart's opt-out: NMI takes the plugin out again.
    gate(dir.path(), false).reconcile(false).unwrap();
    assert_eq!(plugin_types(&conf), ["bridge"]);
    assert!(!g.bin_dir.join(cni::PLUGIN_TYPE).exists());

    // `nmi cleanup` with the chart's flags: plugin, rules and ready file gone.
    g.reconcile(true).unwrap();
    cni::ready::mark(&g.ready_file, BOOT).unwrap();
    let table = Table {
        present: AtomicBool::new(true),
        ..Table::default()
    };
    let flags = Flags::try_parse_from([
        "nmi".to_owned(),
        format!("--cni-conf-dir={}", g.conf_dir.display()),
        format!("--cni-bin-dir={}", g.bin_dir.display()),
        format!("--cni-ready-file={}", g.ready_file.display()),
        "cleanup".to_owned(),
    ])
    .unwrap();
    cleanup(&table, &flags).await.unwrap();
    assert_eq!(plugin_types(&conf), ["bridge"]);
    assert!(!g.bin_dir.join(cni::PLUGIN_TYPE).exists());
    assert!(!g.ready_file.exists());
    cleanup(&table, &flags).await.unwrap();

    let half = Flags::try_parse_from(["nmi", "--cni-conf-dir=/etc/cni/net.d", "cleanup"]).unwrap();
    let err = cleanup(&table, &half).await.unwrap_err();
    assert!(err.to_string().contains("--cni-bin-dir"), "{err}");
}
