//! ARM rules as MIC meets them: PATCH deltas and type transitions, the 150 limit,
//! LinkedAuthorizationFailed, 404s and bad input, authentication, throttling, and asynchronous
//! completion gating what IMDS serves.

mod common;

use std::time::{Duration, Instant};

use azure_emulator::RunningEmulator;
use common::*;
use serde_json::{Value, json};

const API: &str = "api-version=2019-12-01";

impl Arm {
    /// `method` on `path`, with the compute api-version unless `path` has one.
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> Reply {
        let sep = if path.contains('?') { "&" } else { "?" };
        let path_and_query = if path.contains("api-version") {
            path.to_owned()
        } else {
            format!("{path}{sep}{API}")
        };
        self.request(method, &path_and_query, body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PATCH, path, Some(body.to_string().into_bytes()))
            .await
    }

    /// Polls the Azure-AsyncOperation URL until the operation leaves InProgress.
    async fn wait(&self, reply: &Reply) -> String {
        let url = reply
            .header("azure-asyncoperation")
            .expect("async operation header")
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.http.get(&url).bearer_auth(&self.token).send().await.unwrap();
            let v: Value = r.json().await.unwrap();
            let status = v["status"].as_str().unwrap().to_string();
            if status != "InProgress" {
                return status;
            }
            assert!(Instant::now() < deadline, "operation still running after 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The status of a write's operation now, without waiting.
async fn operation_state(arm: &Arm, reply: &Reply) -> String {
    let url = reply
        .header("azure-asyncoperation")
        .expect("async operation header");
    let r = arm.http.get(url).bearer_auth(&arm.token).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    v["status"].as_str().unwrap().to_string()
}

fn add(ids: &[&str]) -> Value {
    let ua: serde_json::Map<String, Value> = ids.iter().map(|i| (identity_id(i), json!({}))).collect();
    json!({"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": ua}})
}

async fn imds_status(emu: &RunningEmulator, node: &str, client_id: &str) -> u16 {
    imds_token(
        emu,
        node,
        &format!("api-version=2018-02-01&resource=https://vault.azure.net&client_id={client_id}"),
    )
    .await
    .0
}

#[tokio::test]
async fn get_shows_identities_with_their_ids_and_provisioning_state() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    let r = arm.get(&vm_path("aks-agent-0")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(r.body["identity"]["type"], "SystemAssigned, UserAssigned");
    assert_eq!(r.body["identity"]["tenantId"], TENANT);
    assert!(r.body["identity"]["principalId"].is_string());
    let ua = &r.body["identity"]["userAssignedIdentities"][identity_id("app-identity")];
    assert_eq!(ua["clientId"], APP_IDENTITY_CLIENT);
    assert_eq!(ua["principalId"], APP_IDENTITY_PRINCIPAL);
    assert!(r.header("x-ms-ratelimit-remaining-subscription-reads").is_some());
    // Paths are case-insensitive, as in ARM.
    assert_eq!(
        arm.get(
            &vm_path("aks-agent-0")
                .to_uppercase()
                .replace("API-VERSION", "api-version")
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn patch_delta_adds_and_removes_and_reaches_imds_only_when_the_operation_completes() {
    let mut world = example_world();
    world.vms[0].operation_latency_ms = Some(1500);
    let emu = start(world).await;
    // On the emulator's frozen clock the write stays in progress until the test moves it on,
    // however slowly the checks below run.
    emu.admin().freeze_clock();
    let arm = Arm::new(&emu).await;

    let r = arm.patch(&vm_path("aks-agent-0"), add(&["storage-reader"])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(
        r.header("azure-asyncoperation")
            .unwrap()
            .contains("/providers/Microsoft.Compute/locations/eastus/operations/")
    );
    // Accepted but not done: ARM already shows it, IMDS does not serve it yet.
    assert_eq!(imds_status(&emu, "aks-agent-0", READER_CLIENT).await, 400);
    let during = arm.get(&vm_path("aks-agent-0")).await;
    assert!(during.body["identity"]["userAssignedIdentities"][identity_id("storage-reader")].is_object());
    emu.admin().advance_clock(Duration::from_millis(1500));
    assert_eq!(arm.wait(&r).await, "Succeeded");
    assert_eq!(imds_status(&emu, "aks-agent-0", READER_CLIENT).await, 200);
    // The delta did not drop the identity that was already there.
    assert_eq!(imds_status(&emu, "aks-agent-0", APP_IDENTITY_CLIENT).await, 200);
    assert_eq!(
        arm.get(&vm_path("aks-agent-0")).await.body["properties"]["provisioningState"],
        "Succeeded"
    );

    let remove = json!({"identity": {"type": "SystemAssigned, UserAssigned",
        "userAssignedIdentities": {identity_id("storage-reader").to_lowercase(): null}}});
    let r = arm.patch(&vm_path("aks-agent-0"), remove).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        imds_status(&emu, "aks-agent-0", READER_CLIENT).await,
        200,
        "removal not effective yet"
    );
    emu.admin().advance_clock(Duration::from_millis(1500));
    arm.wait(&r).await;
    assert_eq!(imds_status(&emu, "aks-agent-0", READER_CLIENT).await, 400);
    assert_eq!(imds_status(&emu, "aks-agent-0", APP_IDENTITY_CLIENT).await, 200);
    assert_eq!(
        emu.admin().counters().arm_writes[&emu.imds_endpoints()[0].resource_id],
        2
    );
}

#[tokio::test]
async fn identity_type_moves_between_none_system_user_and_both() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    let ss = vmss_path("aks-pool");
    assert!(
        arm.get(&ss).await.body.get("identity").is_none(),
        "no identity: no identity block"
    );

    let r = arm.patch(&ss, json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {identity_id("app-identity"): {}}}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["identity"]["type"], "UserAssigned");
    assert!(r.body["identity"].get("principalId").is_none());

    let r = arm
        .patch(&ss, json!({"identity": {"type": "SystemAssigned,UserAssigned"}}))
        .await;
    assert_eq!(r.body["identity"]["type"], "SystemAssigned, UserAssigned");
    assert!(r.body["identity"]["principalId"].is_string());
    assert_eq!(
        r.body["identity"]["userAssignedIdentities"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
    let principal = r.body["identity"]["principalId"].clone();

    let r = arm
        .patch(&ss, json!({"identity": {"type": "SystemAssigned"}}))
        .await;
    assert_eq!(r.body["identity"]["type"], "SystemAssigned");
    assert!(r.body["identity"].get("userAssignedIdentities").is_none());
    assert_eq!(
        r.body["identity"]["principalId"], principal,
        "the system identity survives"
    );

    let r = arm.patch(&ss, json!({"identity": {"type": "None"}})).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("identity").is_none());

    // Adding user identities while the type excludes them, or emptying a UserAssigned set, is refused.
    let r = arm.patch(&ss, json!({"identity": {"type": "SystemAssigned", "userAssignedIdentities": {identity_id("app-identity"): {}}}})).await;
    assert_eq!((r.status, r.code()), (400, "InvalidParameter"));
    let r = arm.patch(&ss, json!({"identity": {"type": "Bogus"}})).await;
    assert_eq!((r.status, r.code()), (400, "InvalidParameter"));
}

#[tokio::test]
async fn more_than_150_identity_changes_in_one_request_are_refused() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    let ua: serde_json::Map<String, Value> = (0..165)
        .map(|i| (identity_id(&format!("bulk-{i}")), json!({})))
        .collect();
    let r = arm
        .patch(
            &vmss_path("aks-pool"),
            json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": ua}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        "User Assigned Identities Number '165' Assign exceed limit '150' in one request."
    );
    assert!(
        emu.admin().counters().arm_writes.is_empty(),
        "nothing was written"
    );
}

#[tokio::test]
async fn assigning_an_identity_without_the_operator_role_is_linked_authorization_failed() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    let r = arm
        .patch(
            &vm_path("aks-agent-0"),
            add(&["storage-reader", "forbidden-identity"]),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "LinkedAuthorizationFailed");
    assert!(
        r.message().contains(&identity_id("forbidden-identity")),
        "{}",
        r.message()
    );
    assert!(
        !r.message().contains(&identity_id("storage-reader")),
        "only the denied identity is named"
    );
    // Granting the role (admin API, as `az role assignment create` would) makes it pass.
    let admin = reqwest::Client::new();
    let g = admin
        .post(format!("{}/admin/roles", emu.admin_url()))
        .json(&json!({"principal": "mic", "scope": "forbidden-identity"}))
        .send()
        .await
        .unwrap();
    assert_eq!(g.status(), 204);
    assert_eq!(
        arm.patch(
            &vm_path("aks-agent-0"),
            add(&["storage-reader", "forbidden-identity"])
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn unknown_resources_and_bad_input_get_arm_errors() {
    let mut world = example_world();
    world.arm.max_body_bytes = 4096;
    let emu = start(world).await;
    let arm = Arm::new(&emu).await;

    let r = arm.get(&vm_path("no-such-vm")).await;
    assert_eq!((r.status, r.code()), (404, "ResourceNotFound"));
    let r = arm
        .patch(&vmss_path("no-such-vmss"), add(&["app-identity"]))
        .await;
    assert_eq!((r.status, r.code()), (404, "ResourceNotFound"));
    let r = arm
        .get(&format!(
            "/subscriptions/{SUB}/resourceGroups/node-rg/virtualMachines/aks-agent-0"
        ))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.code(), "InvalidResourceId");
    let r = arm.get("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/x/providers/Microsoft.Compute/virtualMachines/y").await;
    assert_eq!((r.status, r.code()), (404, "SubscriptionNotFound"));

    let bad_id =
        json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {"app-identity": {}}}});
    let r = arm.patch(&vm_path("aks-agent-0"), bad_id).await;
    assert_eq!((r.status, r.code()), (400, "LinkedInvalidPropertyId"));

    let r = arm.patch(&vm_path("aks-agent-0"), add(&["does-not-exist"])).await;
    assert_eq!((r.status, r.code()), (400, "FailedIdentityOperation"));
    assert!(r.message().contains("userAssignedIdentities/does-not-exist"));

    let r = arm
        .send(
            reqwest::Method::PATCH,
            &vm_path("aks-agent-0"),
            Some(b"{identity: nope".to_vec()),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestContent"));
    let r = arm
        .send(
            reqwest::Method::PATCH,
            &vm_path("aks-agent-0"),
            Some(vec![b' '; 10_000]),
        )
        .await;
    assert_eq!((r.status, r.code()), (413, "RequestEntityTooLarge"));

    let r = arm
        .get(&format!("{}?api-version=2017-12-01", vm_path("aks-agent-0")))
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidApiVersionParameter"));
    let r = arm
        .http
        .get(format!("{}{}", arm.base, vm_path("aks-agent-0")))
        .bearer_auth(&arm.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "MissingApiVersionParameter"
    );
}

#[tokio::test]
async fn only_emulator_tokens_for_arm_are_accepted() {
    let emu = start(example_world()).await;
    let http = client(&emu);
    let url = format!("{}{}?{API}", emu.arm_url(), vm_path("aks-agent-0"));
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "AuthenticationFailed"
    );

    let storage = emu
        .admin()
        .app_token("mic", "https://storage.azure.com/")
        .unwrap();
    let r = http.get(&url).bearer_auth(storage).send().await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "InvalidAuthenticationTokenAudience"
    );

    // Same claims, signed by someone else: refused.
    let other = start(example_world()).await;
    let forged = other
        .admin()
        .app_token("mic", "https://management.azure.com/")
        .unwrap();
    let r = http.get(&url).bearer_auth(forged).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "InvalidAuthenticationToken"
    );

    let good = emu
        .admin()
        .app_token("mic", "https://management.azure.com/")
        .unwrap();
    assert_eq!(
        http.get(&url).bearer_auth(good).send().await.unwrap().status(),
        200
    );
}

/// Azure Stack Hub accepts tokens for its own ARM endpoint's URL, which is what upstream's MIC
/// asks Entra for with `cloud: AzureStackCloud`; public Azure (the default) refuses them.
#[tokio::test]
async fn the_endpoint_url_as_audience_is_accepted_only_when_the_world_says_so() {
    for accept in [false, true] {
        let mut world = example_world();
        world.arm.accept_endpoint_audience = accept;
        let emu = start(world).await;
        let http = client(&emu);
        let url = format!("{}{}?{API}", emu.arm_url(), vm_path("aks-agent-0"));
        for aud in [format!("{}/", emu.arm_url()), emu.arm_url()] {
            // Through Entra, as upstream's MIC gets it (client credentials, `resource` = the URL).
            let r = http
                .post(format!("{}/{TENANT}/oauth2/token", emu.entra_url()))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", MIC_CLIENT),
                    ("client_secret", MIC_SECRET),
                    ("resource", aud.as_str()),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "Entra gives a token for {aud}");
            let token = r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned();
            let r = http.get(&url).bearer_auth(token).send().await.unwrap();
            if accept {
                assert_eq!(r.status(), 200, "{aud}: {}", r.text().await.unwrap());
            } else {
                assert_eq!(r.status(), 401);
                let body = r.json::<Value>().await.unwrap();
                assert_eq!(
                    body["error"]["code"], "InvalidAuthenticationTokenAudience",
                    "{body}"
                );
            }
        }
        // Another URL is refused either way, and the message names what would be accepted.
        let other = emu
            .admin()
            .app_token("mic", "https://management.local.azurestack.external/")
            .unwrap();
        let r = http.get(&url).bearer_auth(other).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body = r.json::<Value>().await.unwrap();
        assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenAudience");
        assert_eq!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&emu.arm_url()),
            accept,
            "{body}"
        );
    }
}

#[tokio::test]
async fn subscription_write_bucket_throttles_with_retry_after() {
    let mut world = example_world();
    world.arm.write_bucket = azure_emulator::world::Bucket {
        size: 3,
        refill_per_sec: 0.2,
    };
    let emu = start(world).await;
    // Frozen, so no token comes back between the writes however long they take.
    emu.admin().freeze_clock();
    let arm = Arm::new(&emu).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = arm.patch(&vm_path("aks-agent-0"), add(&["storage-reader"])).await;
        assert_eq!(r.status, 200);
        remaining.push(
            r.header("x-ms-ratelimit-remaining-subscription-writes")
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = arm.patch(&vm_path("aks-agent-0"), add(&["storage-reader"])).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "SubscriptionRequestsThrottled");
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(
        r.header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("0")
    );
    // Reads have their own bucket and still pass.
    assert_eq!(arm.get(&vm_path("aks-agent-0")).await.status, 200);
    assert_eq!(emu.admin().counters().throttled["arm"], 1);
    // Retry-After is right: one token is back five seconds on, not before.
    emu.admin().advance_clock(Duration::from_millis(4900));
    let r = arm.patch(&vm_path("aks-agent-0"), add(&["storage-reader"])).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("1")));
    emu.admin().advance_clock(Duration::from_millis(200));
    let r = arm.patch(&vm_path("aks-agent-0"), add(&["storage-reader"])).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("0")
    );
}

/// Write latency on the emulator's frozen clock: a write completes exactly when the clock has
/// moved its latency on, never earlier, and a slow machine cannot make it look early or late.
#[tokio::test]
async fn scale_set_latency_is_per_resource_and_adjustable() {
    let mut world = example_world();
    world.vmss[0].operation_latency_ms = Some(1500);
    let emu = start(world).await;
    let admin = emu.admin();
    admin.freeze_clock();
    let arm = Arm::new(&emu).await;
    let body = json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {identity_id("app-identity"): {}}}});
    let r = arm.patch(&vmss_path("aks-pool"), body).await;
    assert_eq!(r.header("retry-after"), Some("2"));
    // The VM keeps the world's default latency (300 ms).
    let vm = arm.patch(&vm_path("aks-agent-0"), add(&["storage-reader"])).await;
    assert_eq!(vm.header("retry-after"), Some("1"));
    admin.advance_clock(Duration::from_millis(1499));
    assert_eq!(arm.wait(&vm).await, "Succeeded");
    assert_eq!(
        imds_status(&emu, "aks-pool-000001", APP_IDENTITY_CLIENT).await,
        400,
        "still updating 1 ms before its latency"
    );
    assert_eq!(operation_state(&arm, &r).await, "InProgress");
    admin.advance_clock(Duration::from_millis(1));
    assert_eq!(arm.wait(&r).await, "Succeeded");
    for node in ["aks-pool-000000", "aks-pool-000001"] {
        assert_eq!(
            imds_status(&emu, node, APP_IDENTITY_CLIENT).await,
            200,
            "{node} serves it"
        );
    }
    // Turned down through the admin API, the next write takes 50 ms.
    let set = reqwest::Client::new()
        .put(format!("{}/admin/arm/latency", emu.admin_url()))
        .json(&json!({"resource": "aks-pool", "latency_ms": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 204);
    let r = arm.patch(&vmss_path("aks-pool"), json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": {identity_id("storage-reader"): {}}}})).await;
    assert_eq!(r.header("retry-after"), Some("1"));
    admin.advance_clock(Duration::from_millis(49));
    assert_eq!(operation_state(&arm, &r).await, "InProgress");
    assert_eq!(imds_status(&emu, "aks-pool-000000", READER_CLIENT).await, 400);
    admin.advance_clock(Duration::from_millis(1));
    assert_eq!(arm.wait(&r).await, "Succeeded");
    assert_eq!(imds_status(&emu, "aks-pool-000000", READER_CLIENT).await, 200);
}

#[tokio::test]
async fn user_assigned_identities_can_be_read_and_created() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    let api = "api-version=2023-01-31";
    let r = arm.get(&format!("{}?{api}", identity_id("app-identity"))).await;
    assert_eq!(r.status, 200);
    for key in [
        "clientId",
        "id",
        "location",
        "name",
        "principalId",
        "resourceGroup",
        "tags",
        "tenantId",
        "type",
    ] {
        assert!(r.body.get(key).is_some(), "{key} missing: {}", r.body);
    }
    assert_eq!(r.body["clientId"], APP_IDENTITY_CLIENT);
    assert_eq!(r.body["type"], "Microsoft.ManagedIdentity/userAssignedIdentities");

    let new_id = identity_id("created-at-runtime");
    let r = arm
        .send(
            reqwest::Method::PUT,
            &format!("{new_id}?{api}"),
            Some(br#"{"location":"eastus"}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let client_id = r.body["clientId"].as_str().unwrap().to_string();
    assert_eq!(
        arm.get(&format!("{new_id}?{api}")).await.body["clientId"],
        client_id
    );
    let r = arm
        .send(
            reqwest::Method::PUT,
            &format!("{new_id}?{api}"),
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(r.status, 200, "PUT of an existing identity returns it");
    let r = arm
        .send(
            reqwest::Method::PUT,
            &format!("/subscriptions/{SUB}/resourceGroups/nope-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x?{api}"),
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "ResourceGroupNotFound"));
    let r = arm.get(&format!("{}?{api}", identity_id("missing"))).await;
    assert_eq!((r.status, r.code()), (404, "ResourceNotFound"));
}
