//! The admin API over HTTP: injecting faults per endpoint, reading the call log and counters,
//! creating identities and listing what each node's IMDS serves.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

async fn admin_post(emu: &azure_emulator::RunningEmulator, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", emu.admin_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn admin_get(emu: &azure_emulator::RunningEmulator, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", emu.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn token_query() -> String {
    format!("api-version=2018-02-01&resource=https://vault.azure.net&client_id={APP_IDENTITY_CLIENT}")
}

#[tokio::test]
async fn status_faults_fire_for_the_next_n_calls_on_the_targeted_vm_only() {
    let emu = start(example_world()).await;
    let r = admin_post(
        &emu,
        "/admin/faults",
        json!({"endpoint": "imds", "target": "aks-agent-0", "kind": "status", "status": 503, "count": 2}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let q = token_query();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(imds_token(&emu, "aks-agent-0", &q).await.0);
    }
    assert_eq!(statuses, [503, 503, 200]);
    let r = admin_post(
        &emu,
        "/admin/faults",
        json!({"endpoint": "imds", "target": "aks-pool-000000", "kind": "status", "status": 429, "count": 1}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        imds_token(&emu, "aks-agent-0", &q).await.0,
        200,
        "other VMs are untouched"
    );
    assert_eq!(imds_token(&emu, "aks-pool-000000", &q).await.0, 429);

    let counters = admin_get(&emu, "/admin/counters").await;
    assert_eq!(counters["faults_injected"]["imds"], 3);
    assert_eq!(counters["throttled"]["imds"], 1);
    assert_eq!(counters["tokens_issued"][identity_id("app-identity")], 2);
    let calls = admin_get(&emu, "/admin/calls").await;
    let calls = calls["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[0]["endpoint"], "imds");
    assert_eq!(calls[0]["target"], "aks-agent-0");
    assert_eq!(calls[0]["status"], 503);
    assert!(
        calls[0]["path"]
            .as_str()
            .unwrap()
            .starts_with("/metadata/identity/oauth2/token?")
    );
    let since = calls[3]["seq"].as_u64().unwrap();
    assert_eq!(
        admin_get(&emu, &format!("/admin/calls?since={since}")).await["calls"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn arm_and_entra_faults_use_their_own_error_formats() {
    let emu = start(example_world()).await;
    let http = client(&emu);
    admin_post(
        &emu,
        "/admin/faults",
        json!({"endpoint": "entra", "kind": "status", "status": 500, "count": 1}),
    )
    .await;
    let r = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", emu.entra_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", MIC_CLIENT),
            ("client_secret", MIC_SECRET),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert!(r.json::<Value>().await.unwrap()["error_codes"].is_array());
    let token = arm_token(&emu, &http).await;
    admin_post(&emu, "/admin/faults", json!({"endpoint": "arm", "target": "virtualMachineScaleSets", "kind": "status", "status": 429, "retry_after_secs": 7, "count": 1})).await;
    let url = |p: &str| format!("{}{p}?api-version=2019-12-01", emu.arm_url());
    let r = http
        .get(url(&vm_path("aks-agent-0")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the fault targets scale sets only");
    let r = http
        .get(url(&vmss_path("aks-pool")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "TooManyRequests"
    );
}

#[tokio::test]
async fn latency_timeout_and_reset_faults() {
    let emu = start(example_world()).await;
    let q = token_query();
    admin_post(
        &emu,
        "/admin/faults",
        json!({"endpoint": "imds", "kind": "latency", "ms": 400, "count": 1}),
    )
    .await;
    let t = Instant::now();
    assert_eq!(imds_token(&emu, "aks-agent-0", &q).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(400));

    admin_post(
        &emu,
        "/admin/faults",
        json!({"endpoint": "imds", "kind": "reset", "count": 1}),
    )
    .await;
    let url = format!(
        "{}/metadata/identity/oauth2/token?{q}",
        emu.imds_url("aks-agent-0").unwrap()
    );
    let err = reqwest::Client::new()
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .expect_err("connection reset");
    assert!(
        err.is_request() || err.is_connect() || err.to_string().contains("connection"),
        "{err:?}"
    );

    admin_post(
        &emu,
        "/admin/faults",
        json!({"endpoint": "imds", "kind": "timeout", "ms": 60000, "count": 1}),
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(imds_token(&emu, "aks-agent-0", &q).await.0, 200, "faults used up");
}

#[tokio::test]
async fn rate_faults_hit_about_that_fraction() {
    let emu = start(example_world()).await;
    let mut w = example_world();
    w.imds.rate_limit = false;
    drop(emu);
    let emu = start(w).await;
    admin_post(
        &emu,
        "/admin/faults",
        json!({"endpoint": "imds", "kind": "status", "status": 500, "rate": 0.5}),
    )
    .await;
    let q = token_query();
    let mut failed = 0;
    for _ in 0..200 {
        if imds_token(&emu, "aks-agent-0", &q).await.0 == 500 {
            failed += 1;
        }
    }
    assert!((60..=140).contains(&failed), "about half fail: {failed}");
    let r = reqwest::Client::new()
        .delete(format!("{}/admin/faults", emu.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(imds_token(&emu, "aks-agent-0", &q).await.0, 200);
}

#[tokio::test]
async fn identities_created_at_runtime_can_be_assigned_and_listed_per_node() {
    let emu = start(example_world()).await;
    let r = admin_post(
        &emu,
        "/admin/identities",
        json!({"name": "late-identity", "resource_group": "identity-rg"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let client_id = created["clientId"].as_str().unwrap().to_string();
    assert_eq!(
        admin_post(
            &emu,
            "/admin/roles",
            json!({"principal": MIC_CLIENT, "scope": created["id"]})
        )
        .await
        .status(),
        204
    );
    let http = client(&emu);
    let token = arm_token(&emu, &http).await;
    let body = json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {created["id"].as_str().unwrap(): {}}}});
    let r = http
        .patch(format!(
            "{}{}?api-version=2019-12-01",
            emu.arm_url(),
            vmss_path("aks-pool")
        ))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = admin_get(&emu, "/admin/nodes").await;
        let pool0 = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == "aks-pool-000000")
            .unwrap()
            .clone();
        if pool0["effective"].as_array().unwrap().len() == 1 {
            assert_eq!(pool0["provisioning_state"], "Succeeded");
            break;
        }
        assert_eq!(
            pool0["model"].as_array().unwrap().len(),
            1,
            "ARM shows it while it is being applied"
        );
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let q = format!("api-version=2018-02-01&resource=https://vault.azure.net&client_id={client_id}");
    assert_eq!(imds_token(&emu, "aks-pool-000001", &q).await.0, 200);
}
