//! The plugin binary as a container runtime runs it: `CNI_COMMAND` and the other `CNI_*`
//! variables in its environment, the network configuration (with the bridge's result as
//! `prevResult`) on stdin, its answer on stdout. The ready file is written and read for real,
//! with this machine's boot id.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn conf(ready: &Path) -> Value {
    json!({"cniVersion": "0.4.0", "name": "k-0", "type": "pod-identity-cni",
        "readyFile": ready.display().to_string(),
        "prevResult": {"cniVersion": "0.4.0",
            "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/var/run/netns/cni-x"}],
            "ips": [{"version": "4", "address": "10.244.9.7/24", "gateway": "10.244.9.1", "interface": 1}],
            "dns": {}}})
}

/// Runs the plugin; its exit status and stdout as JSON (Null when it printed nothing).
fn plugin(command: &str, stdin: &Value) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pod-identity-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "0123456789abcdef")
        .env("CNI_NETNS", "/var/run/netns/cni-x")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the plugin binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let json = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", out.stdout))
    };
    (out.status.code().unwrap(), json)
}

#[test]
fn blocks_add_until_the_ready_file_names_this_boot_then_passes_the_result_on() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("run/interception-ready");
    let c = conf(&ready);

    let (code, err) = plugin("ADD", &c);
    assert_eq!((code, err["code"].clone()), (1, json!(11)), "{err}");
    assert!(
        err["details"].as_str().unwrap().contains("no ready file"),
        "{err}"
    );
    assert_eq!(plugin("DEL", &c), (0, Value::Null), "teardown is never blocked");
    assert_eq!(plugin("CHECK", &c).0, 1);

    // A file left from an earlier boot does not count.
    std::fs::create_dir_all(ready.parent().unwrap()).unwrap();
    std::fs::write(&ready, "00000000-0000-0000-0000-000000000000\n").unwrap();
    let (code, err) = plugin("ADD", &c);
    assert_eq!(code, 1);
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("before the node last booted"),
        "{err}"
    );

    // What NMI writes once its rules are in place.
    assert!(cni::ready::mark(&ready, &cni::ready::boot_id().unwrap()).unwrap());
    let (code, result) = plugin("ADD", &c);
    assert_eq!((code, &result), (0, &c["prevResult"]));
    assert_eq!(plugin("CHECK", &c), (0, Value::Null));
    assert_eq!(plugin("DEL", &c), (0, Value::Null));

    let (code, version) = plugin("VERSION", &json!({"cniVersion": "1.0.0"}));
    assert_eq!(code, 0);
    assert_eq!(version["cniVersion"], "1.0.0");
    assert!(
        version["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("0.4.0"))
    );
}
