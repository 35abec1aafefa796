use std::cell::RefCell;

use super::*;

const PREV: &str = r#"{"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/cni-1"}],
    "ips": [{"version": "4", "address": "10.244.9.5/24", "gateway": "10.244.9.1", "interface": 0}],
    "dns": {}}"#;

fn conf(version: &str, prev: Option<&str>) -> Vec<u8> {
    let mut c = json!({"cniVersion": version, "name": "k-0", "type": "pod-identity-cni",
        "readyFile": "/run/pod-identity/interception-ready"});
    if let Some(p) = prev {
        c["prevResult"] = serde_json::from_str(p).unwrap();
    }
    c.to_string().into_bytes()
}

fn json_of(r: &Reply) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{r:?}: {e}"))
}

/// Runs `command` with the node in `state`, recording which ready file was read.
fn with(state: Readiness, command: &str, stdin: &[u8]) -> (Reply, Vec<String>) {
    let read = RefCell::new(Vec::new());
    let reply = run(Some(command), stdin, &|p| {
        read.borrow_mut().push(p.display().to_string());
        state.clone()
    });
    (reply, read.into_inner())
}

#[test]
fn add_passes_the_previous_result_on_when_ready() {
    let (reply, read) = with(Readiness::Ready, "ADD", &conf("0.4.0", Some(PREV)));
    assert_eq!(reply.exit_code, 0, "{reply:?}");
    assert_eq!(json_of(&reply), serde_json::from_str::<Value>(PREV).unwrap());
    assert_eq!(read, ["/run/pod-identity/interception-ready"]);

    // First in its chain (no prevResult): an empty result of the configuration's version.
    let (reply, _) = with(Readiness::Ready, "ADD", &conf("1.0.0", None));
    assert_eq!(
        (reply.exit_code, json_of(&reply)),
        (0, json!({"cniVersion": "1.0.0"}))
    );
}

#[test]
fn add_fails_with_try_again_later_until_ready() {
    for (state, detail) in [
        (
            Readiness::Missing,
            "has not installed its rules since the node booted",
        ),
        (Readiness::EarlierBoot, "before the node last booted"),
        (Readiness::Unreadable("reading x: denied".into()), "denied"),
    ] {
        let (reply, _) = with(state, "ADD", &conf("0.4.0", Some(PREV)));
        assert_eq!(reply.exit_code, 1);
        let err = json_of(&reply);
        assert_eq!(err["code"], 11, "{err}");
        assert_eq!(err["cniVersion"], "0.4.0");
        assert_eq!(err["msg"], NOT_READY);
        assert!(err["details"].as_str().unwrap().contains(detail), "{err}");
        assert!(err.get("ips").is_none(), "no result is passed on");
    }
}

#[test]
fn check_and_status_report_readiness() {
    let (ok, _) = with(Readiness::Ready, "CHECK", &conf("1.0.0", Some(PREV)));
    assert_eq!(ok, Reply::ok(String::new()));
    let (bad, _) = with(Readiness::Missing, "CHECK", &conf("1.0.0", Some(PREV)));
    assert_eq!((bad.exit_code, json_of(&bad)["code"].clone()), (1, json!(11)));
    let (ok, _) = with(Readiness::Ready, "STATUS", &conf("1.1.0", None));
    assert_eq!(ok, Reply::ok(String::new()));
    let (bad, _) = with(Readiness::Missing, "STATUS", &conf("1.1.0", None));
    assert_eq!((bad.exit_code, json_of(&bad)["code"].clone()), (1, json!(50)));
}

#[test]
fn del_and_gc_always_succeed_without_reading_anything() {
    for stdin in [conf("0.4.0", Some(PREV)), b"not json".to_vec(), Vec::new()] {
        for cmd in ["DEL", "GC"] {
            let (reply, read) = with(Readiness::Missing, cmd, &stdin);
            assert_eq!(reply, Reply::ok(String::new()), "{cmd}");
            assert!(read.is_empty());
        }
    }
}

#[test]
fn version_lists_what_is_supported() {
    let (reply, _) = with(Readiness::Missing, "VERSION", br#"{"cniVersion": "0.4.0"}"#);
    assert_eq!(
        json_of(&reply),
        json!({"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let (reply, _) = with(Readiness::Missing, "VERSION", b"");
    assert_eq!(json_of(&reply)["cniVersion"], "1.1.0");
}

#[test]
fn bad_input_gets_the_specifications_error_codes() {
    let code = |cmd: Option<&str>, stdin: &[u8]| {
        let reply = run(cmd, stdin, &|_| Readiness::Ready);
        assert_eq!(reply.exit_code, 1);
        json_of(&reply)["code"].as_u64().unwrap()
    };
    assert_eq!(code(None, &conf("0.4.0", None)), 4);
    assert_eq!(code(Some("FROB"), &conf("0.4.0", None)), 4);
    assert_eq!(code(Some("ADD"), b"{"), 6);
    assert_eq!(code(Some("ADD"), &conf("0.2.0", None)), 1);
    assert_eq!(code(Some("ADD"), br#"{"cniVersion": "1.0.0", "name": "n"}"#), 7);
}
