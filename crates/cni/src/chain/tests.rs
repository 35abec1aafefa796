use super::*;

const BRIDGE: &str = r#"{"cniVersion": "0.4.0", "name": "k-0", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.9.0/24"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}"#;

fn types(list: &Value) -> Vec<&str> {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect()
}

#[test]
fn inserted_after_the_networks_plugins_once_and_updated_in_place() {
    let mut list: Value = serde_json::from_str(BRIDGE).unwrap();
    let e = entry(Path::new("/run/pod-identity/interception-ready"));
    assert_eq!(insert(&mut list, &e).unwrap(), Chained::Added);
    assert_eq!(types(&list), ["bridge", "portmap", "pod-identity-cni"]);
    assert_eq!(insert(&mut list, &e).unwrap(), Chained::Already);

    // Another chained plugin appended after ours: ours stays where it is.
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "bandwidth"}));
    assert_eq!(insert(&mut list, &e).unwrap(), Chained::Already);
    assert_eq!(
        types(&list),
        ["bridge", "portmap", "pod-identity-cni", "bandwidth"]
    );

    // A new ready file path, and a duplicate entry: one entry, updated, in the first one's place.
    list["plugins"].as_array_mut().unwrap().push(e.clone());
    let moved = entry(Path::new("/run/other/ready"));
    assert_eq!(insert(&mut list, &moved).unwrap(), Chained::Updated);
    assert_eq!(
        types(&list),
        ["bridge", "portmap", "pod-identity-cni", "bandwidth"]
    );
    assert_eq!(list["plugins"][2]["readyFile"], "/run/other/ready");

    assert!(remove(&mut list));
    assert!(!remove(&mut list));
    assert_eq!(types(&list), ["bridge", "portmap", "bandwidth"]);
}

#[test]
fn a_single_plugin_configuration_is_refused_with_what_to_do() {
    let mut conf = json!({"cniVersion": "0.4.0", "name": "n", "type": "bridge"});
    let err = insert(&mut conf, &entry(Path::new("/r"))).unwrap_err();
    assert!(matches!(err, Error::NotAList), "{err}");
    let err = err.to_string();
    assert!(
        err.contains(".conflist") && err.contains("nmi.cni.enabled=false"),
        "{err}"
    );
    assert!(!remove(&mut conf));
}

#[test]
fn install_chains_into_the_first_network_file_and_uninstall_undoes_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path();
    let ready = Path::new("/run/pod-identity/interception-ready");
    assert_eq!(install(conf, ready).unwrap(), (Chained::NoNetwork, None));

    std::fs::write(conf.join("20-later.conflist"), BRIDGE).unwrap();
    std::fs::write(conf.join("10-k-0.conflist"), BRIDGE).unwrap();
    std::fs::set_permissions(
        conf.join("10-k-0.conflist"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(conf.join("05-notes.txt"), "not a network").unwrap();
    let first = conf.join("10-k-0.conflist");
    assert_eq!(
        install(conf, ready).unwrap(),
        (Chained::Added, Some(first.clone()))
    );
    assert_eq!(install(conf, ready).unwrap().0, Chained::Already);
    let written: Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    assert_eq!(types(&written), ["bridge", "portmap", "pod-identity-cni"]);
    assert_eq!(written["plugins"][2]["readyFile"], ready.display().to_string());
    assert_eq!(
        std::fs::metadata(&first).unwrap().permissions().mode() & 0o777,
        0o600,
        "the file keeps its mode"
    );
    let later: Value =
        serde_json::from_slice(&std::fs::read(conf.join("20-later.conflist")).unwrap()).unwrap();
    assert_eq!(
        types(&later),
        ["bridge", "portmap"],
        "only the runtime's file is changed"
    );
    let names: Vec<String> = std::fs::read_dir(conf)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "no temporary file left: {names:?}");

    // A broken file elsewhere does not stop the uninstall.
    std::fs::write(conf.join("30-broken.json"), "{").unwrap();
    assert_eq!(uninstall(conf).unwrap(), std::slice::from_ref(&first));
    assert_eq!(uninstall(conf).unwrap(), Vec::<PathBuf>::new());
    let back: Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    assert_eq!(back, serde_json::from_str::<Value>(BRIDGE).unwrap());
    assert_eq!(uninstall(&conf.join("missing")).unwrap(), Vec::<PathBuf>::new());
}

#[test]
fn a_broken_primary_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-x.conflist"), "{").unwrap();
    let err = install(dir.path(), Path::new("/r")).unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
}

#[test]
fn the_binary_is_copied_once_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (src, bin) = (dir.path().join("plugin"), dir.path().join("bin"));
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(&src, b"v1").unwrap();
    assert!(install_binary(&src, &bin, false).unwrap());
    assert!(!install_binary(&src, &bin, true).unwrap());
    assert!(!install_binary(&src, &bin, false).unwrap());
    let dest = bin.join(PLUGIN_TYPE);
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o755
    );
    std::fs::write(&src, b"v2").unwrap();
    assert!(!install_binary(&src, &bin, false).unwrap(), "same size: not read");
    assert!(
        install_binary(&src, &bin, true).unwrap(),
        "a new version replaces it"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"v2");
    std::fs::remove_file(&dest).unwrap();
    assert!(
        install_binary(&src, &bin, false).unwrap(),
        "a missing one is put back"
    );
    assert!(remove_binary(&bin).unwrap());
    assert!(!remove_binary(&bin).unwrap());
    assert_eq!(std::fs::read_dir(&bin).unwrap().count(), 0);
}
