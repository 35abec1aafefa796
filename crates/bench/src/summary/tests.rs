use serde_json::json;

use super::*;

#[test]
fn merging_keeps_other_components_figures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench/summary.json");
    merge_into(&path, &[("nmi_token_rps", json!(1234.5))]).unwrap();
    let all = merge_into(
        &path,
        &[
            ("emulator_imds_rps", json!(20000.0)),
            ("nmi_token_rps", json!(2000.0)),
        ],
    )
    .unwrap();
    assert_eq!(all.len(), 2);
    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        on_disk,
        json!({"emulator_imds_rps": 20000.0, "nmi_token_rps": 2000.0})
    );
    let t = table(&all);
    assert!(t.contains("emulator_imds_rps") && t.contains("20000.000"), "{t}");
}

#[test]
fn a_summary_that_is_not_an_object_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.json");
    std::fs::write(&path, "[1,2]").unwrap();
    assert!(matches!(
        merge_into(&path, &[("x", json!(1))]),
        Err(Error::NotAnObject(_))
    ));
}

#[test]
fn a_null_figure_removes_what_a_run_of_another_size_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.json");
    merge_into(
        &path,
        &[("mic_large_pods", json!(3000)), ("mic_arm_writes", json!(10))],
    )
    .unwrap();
    let all = merge_into(&path, &[("mic_large_pods", serde_json::Value::Null)]).unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["mic_arm_writes"]);
}
