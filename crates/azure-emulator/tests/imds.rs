//! IMDS as a workload on the VM sees it: token shape, selectors, the documented 400s, metadata,
//! and the per-VM limits.

mod common;

use std::time::{Duration, Instant};

use azure_emulator::{EndpointKind, Fault, FaultAction};
use common::*;
use serde_json::Value;

const STORAGE: &str = "resource=https%3A%2F%2Fstorage.azure.com%2F";

/// The status of a storage token request to the IMDS of `aks-pool-000000`, a node with no identity
/// assigned: the tests of IMDS's limits ask it to show that the limits are per VM.
async fn other_node_status(emu: &azure_emulator::RunningEmulator) -> u16 {
    imds_token(
        emu,
        "aks-pool-000000",
        &format!("api-version=2018-02-01&{STORAGE}"),
    )
    .await
    .0
}

#[tokio::test]
async fn token_has_string_values_in_imds_key_order() {
    let emu = start(example_world()).await;
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&{STORAGE}&client_id={APP_IDENTITY_CLIENT}",
        emu.imds_url("aks-agent-0").unwrap()
    );
    let r = reqwest::Client::new()
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = v.keys().map(String::as_str).collect();
    // serde_json's Map is sorted; check the order in the raw text instead.
    let mut positions: Vec<(usize, &str)> = keys
        .iter()
        .map(|k| (text.find(&format!("\"{k}\"")).unwrap(), *k))
        .collect();
    positions.sort();
    let order: Vec<&str> = positions.iter().map(|p| p.1).collect();
    assert_eq!(
        order,
        [
            "access_token",
            "client_id",
            "expires_in",
            "expires_on",
            "ext_expires_in",
            "not_before",
            "resource",
            "token_type"
        ]
    );
    assert!(
        v.values().all(Value::is_string),
        "every IMDS value is a string: {text}"
    );
    assert_eq!(v["client_id"], APP_IDENTITY_CLIENT);
    assert_eq!(v["resource"], "https://storage.azure.com/");
    assert_eq!(v["token_type"], "Bearer");
    let expires_in: u64 = v["expires_in"].as_str().unwrap().parse().unwrap();
    assert!(expires_in > 86000 && expires_in <= 86399);
    let c = claims(v["access_token"].as_str().unwrap());
    for claim in [
        "aud",
        "iss",
        "tid",
        "oid",
        "sub",
        "appid",
        "appidacr",
        "idp",
        "idtyp",
        "xms_mirid",
        "ver",
        "uti",
        "aio",
        "rh",
    ] {
        assert!(c.get(claim).is_some(), "claim {claim} missing from {c}");
    }
    for claim in ["iat", "nbf", "exp"] {
        assert!(c[claim].is_u64(), "{claim} is an integer");
    }
    assert_eq!(c["ver"], "1.0");
    assert_eq!(c["idtyp"], "app");
    assert_eq!(c["tid"], TENANT);
    let h = header(v["access_token"].as_str().unwrap());
    assert_eq!(h["alg"], "RS256");
    assert!(h["kid"].is_string() && h["x5t"].is_string());
}

#[tokio::test]
async fn selectors_pick_the_assigned_identity_or_the_system_one() {
    let emu = start(example_world()).await;
    let base = "api-version=2019-08-01&resource=https://vault.azure.net";
    for sel in [
        format!("client_id={APP_IDENTITY_CLIENT}"),
        format!("object_id={APP_IDENTITY_PRINCIPAL}"),
        format!("msi_res_id={}", identity_id("app-identity")),
        format!("mi_res_id={}", identity_id("app-identity").to_uppercase()),
    ] {
        let (status, body) = imds_token(&emu, "aks-agent-0", &format!("{base}&{sel}")).await;
        assert_eq!(status, 200, "{sel}: {body}");
        assert_eq!(
            claims(body["access_token"].as_str().unwrap())["xms_mirid"],
            identity_id("app-identity")
        );
    }
    // No selector on a VM with a system-assigned identity: the system identity, whose mirid is the VM.
    let (status, body) = imds_token(&emu, "aks-agent-0", base).await;
    assert_eq!(status, 200);
    let mirid = claims(body["access_token"].as_str().unwrap())["xms_mirid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(mirid.ends_with("/virtualMachines/aks-agent-0"), "{mirid}");
}

#[tokio::test]
async fn documented_errors() {
    let emu = start(example_world()).await;
    let imds = emu.imds_url("aks-agent-0").unwrap();
    let http = reqwest::Client::new();
    let token_url = format!("{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&{STORAGE}");

    let r = http.get(&token_url).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );

    let (status, body) = imds_token(
        &emu,
        "aks-agent-0",
        &format!("api-version=2018-02-01&{STORAGE}&client_id={READER_CLIENT}"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"error": "invalid_request", "error_description": "Identity not found"})
    );

    let (status, body) = imds_token(
        &emu,
        "aks-agent-0",
        &format!("api-version=2018-02-01&{STORAGE}&{STORAGE}"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"].as_str().unwrap().contains("Duplicate"),
        "{body}"
    );

    let r = http
        .get(&token_url)
        .header("Metadata", "true")
        .header("X-Forwarded-For", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let (status, body) = imds_token(&emu, "aks-agent-0", STORAGE).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("api-version"), "{body}");

    let (status, body) = imds_token(&emu, "aks-agent-0", "api-version=2018-02-01").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_description"],
        "Required audience parameter not specified"
    );

    // Two user-assigned identities and no system one: the caller must choose.
    let emu2 = {
        let mut w = example_world();
        w.vms[0].system_assigned = false;
        w.vms[0].user_assigned.push("storage-reader".into());
        start(w).await
    };
    let (status, body) = imds_token(&emu2, "aks-agent-0", &format!("api-version=2018-02-01&{STORAGE}")).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Multiple user assigned identities exist")
    );
}

#[tokio::test]
async fn each_vm_only_serves_its_own_identities() {
    let emu = start(example_world()).await;
    // app-identity is on the VM, not on the scale set: the scale-set node's IMDS does not know it.
    let q = format!("api-version=2018-02-01&{STORAGE}&client_id={APP_IDENTITY_CLIENT}");
    assert_eq!(imds_token(&emu, "aks-agent-0", &q).await.0, 200);
    assert_eq!(imds_token(&emu, "aks-pool-000000", &q).await.0, 400);
    assert_ne!(emu.imds_addr("aks-pool-000000"), emu.imds_addr("aks-pool-000001"));
}

#[tokio::test]
async fn instance_metadata_describes_the_vm_or_scale_set_instance() {
    let emu = start(example_world()).await;
    let get = |node: &str| {
        let url = format!(
            "{}/metadata/instance?api-version=2021-02-01",
            emu.imds_url(node).unwrap()
        );
        async move {
            reqwest::Client::new()
                .get(url)
                .header("Metadata", "true")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let vm = get("aks-agent-0").await;
    assert_eq!(vm["compute"]["name"], "aks-agent-0");
    assert_eq!(vm["compute"]["resourceGroupName"], "node-rg");
    assert_eq!(vm["compute"]["subscriptionId"], SUB);
    assert_eq!(vm["compute"]["vmScaleSetName"], "");
    assert_eq!(vm["compute"]["location"], "eastus");
    assert_eq!(vm["compute"]["vmId"].as_str().unwrap().len(), 36);
    let inst = get("aks-pool-000001").await;
    assert_eq!(inst["compute"]["name"], "aks-pool_1");
    assert_eq!(inst["compute"]["vmScaleSetName"], "aks-pool");
    assert_ne!(
        inst["compute"]["vmId"],
        get("aks-pool-000000").await["compute"]["vmId"]
    );
}

/// The rate limit is tested on the emulator's frozen clock: the 25 requests are "within one
/// second" however long a loaded machine takes to send them, and the second ends when the test
/// advances the clock, not when the wall clock says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_vm_rate_limit_gives_429_after_20_requests_in_a_second() {
    let emu = start(example_world()).await;
    emu.admin().freeze_clock();
    let q = format!("api-version=2018-02-01&{STORAGE}&client_id={APP_IDENTITY_CLIENT}");
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(imds_token(&emu, "aks-agent-0", &q).await.0);
    }
    assert_eq!(statuses[..20], [200; 20]);
    assert_eq!(statuses[20..], [429; 5]);
    let (status, body) = imds_token(&emu, "aks-agent-0", &q).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("too_many_requests")));
    // The limit is per VM: another node's IMDS still answers (400: nothing assigned there).
    assert_eq!(other_node_status(&emu).await, 400);
    assert_eq!(emu.admin().counters().throttled["imds"], 6);
    // Still inside the second: refused.
    emu.admin().advance_clock(Duration::from_millis(999));
    assert_eq!(imds_token(&emu, "aks-agent-0", &q).await.0, 429);
    // One second after the burst (moved through the HTTP admin API this time), the budget is back.
    let r = reqwest::Client::new()
        .post(format!("{}/admin/clock", emu.admin_url()))
        .json(&serde_json::json!({"advance_ms": 1}))
        .send()
        .await
        .expect("admin reachable");
    assert_eq!(r.status(), 204);
    assert_eq!(
        imds_token(&emu, "aks-agent-0", &q).await.0,
        200,
        "the budget refills after a second"
    );
}

/// Five requests held inside the VM take IMDS's five concurrency slots; a sixth is refused.
/// Nothing here depends on how fast the machine is: the five are held for a minute (far longer
/// than the test), the sixth is sent only once all five passed the fault, and the rate limit's
/// clock is moved a second on before each try, so a 429 can only be the concurrency limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixth_concurrent_request_gets_429() {
    let emu = start(example_world()).await;
    let admin = emu.admin();
    admin.freeze_clock();
    admin.inject(Fault {
        endpoint: EndpointKind::Imds,
        target: Some("aks-agent-0".into()),
        action: FaultAction::Latency { ms: 60_000 },
        count: Some(5),
        rate: None,
    });
    let q = format!("api-version=2018-02-01&{STORAGE}&client_id={APP_IDENTITY_CLIENT}");
    let url = format!(
        "{}/metadata/identity/oauth2/token?{q}",
        emu.imds_url("aks-agent-0").unwrap()
    );
    let held: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .get(url)
                    .header("Metadata", "true")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !admin.faults().is_empty() {
        assert!(
            Instant::now() < deadline,
            "five requests reached IMDS within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // All five passed the fault; each takes its slot right after. Until then a try is served.
    let status = loop {
        admin.advance_clock(Duration::from_secs(1));
        let status = imds_token(&emu, "aks-agent-0", &q).await.0;
        if status != 200 || Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 429, "five at once pass, the sixth is refused");
    assert!(
        held.iter().all(|t| !t.is_finished()),
        "the five are still held, not refused"
    );
    // Per VM: another node's IMDS answers (400: nothing assigned there).
    assert_eq!(other_node_status(&emu).await, 400);
    for t in held {
        t.abort();
    }
}

#[tokio::test]
async fn limits_can_be_turned_off() {
    let mut w = example_world();
    w.imds.rate_limit = false;
    let emu = start(w).await;
    let q = format!("api-version=2018-02-01&{STORAGE}&client_id={APP_IDENTITY_CLIENT}");
    for _ in 0..60 {
        assert_eq!(imds_token(&emu, "aks-agent-0", &q).await.0, 200);
    }
}
