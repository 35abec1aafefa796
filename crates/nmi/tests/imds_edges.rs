//! IMDS-exact edges: what IMDS answers to a missing or unsupported `api-version` and to
//! `/metadata/identity/info`, NMI answers too, status and JSON body byte for byte. Each request is
//! sent to NMI from a pod's address and to the node's IMDS (the emulator's) directly.

mod common;

use std::time::Duration;

use common::{Env, Opts, VAULT, uami};
use nmi::state::Mode;
use serde_json::json;

const POD_IP: &str = "127.0.23.1";

async fn env() -> Env {
    let env = common::env_in(
        "nmi-edges",
        Opts {
            mode: Mode::Managed,
            identity_wait: Duration::from_secs(1),
            pod_wait: Duration::from_secs(2),
            ..Opts::default()
        },
    )
    .await;
    env.identity(uami(0)).await;
    env.binding("b", uami(0).name, "app").await;
    env.pod("app", POD_IP, json!({"aadpodidbinding": "app"})).await;
    env
}

/// `(status, body)` of a GET of `path_and_query` at `base`, from `from`.
async fn get(base: &str, from: &str, path_and_query: &str, metadata: bool) -> (u16, String) {
    let http = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let mut req = http.get(format!("{base}{path_and_query}"));
    if metadata {
        req = req.header("Metadata", "true");
    }
    let res = req.send().await.expect("an answer");
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn nmi_answers_api_version_and_identity_info_as_imds_does() {
    let env = env().await;
    let nmi = format!("http://{}", env.nmi);
    let imds = env.emulator.imds_url(&env.node).expect("the node's IMDS");
    let vault: String = form_urlencoded::byte_serialize(VAULT.as_bytes()).collect();
    let token = "/metadata/identity/oauth2/token";
    let same: Vec<(String, bool)> = vec![
        // No api-version, an empty one, one older than the identity endpoints, not a date.
        (format!("{token}?resource={vault}"), true),
        (format!("{token}?api-version=&resource={vault}"), true),
        (format!("{token}?api-version=2017-12-01&resource={vault}"), true),
        (format!("{token}?api-version=latest&resource={vault}"), true),
        // The version is checked before the resource.
        (format!("{token}?api-version=2017-12-01"), true),
        (token.to_owned(), true),
        // JavaScript's probe: no query and no Metadata header.
        (token.to_owned(), false),
        // Identity information: the tenant, and the same refusals.
        ("/metadata/identity/info?api-version=2018-02-01".to_owned(), true),
        ("/metadata/identity/info?API-VERSION=2023-07-01".to_owned(), true),
        ("/metadata/identity/info".to_owned(), true),
        ("/metadata/identity/info?api-version=2017-12-01".to_owned(), true),
        ("/metadata/identity/info?api-version=2018-02-01".to_owned(), false),
        // Other paths: IMDS's own answers.
        ("/metadata/instance".to_owned(), true),
        (
            "/metadata/instance/compute?api-version=2016-01-01".to_owned(),
            true,
        ),
    ];
    for (path, metadata) in &same {
        let from_nmi = get(&nmi, POD_IP, path, *metadata).await;
        let from_imds = get(&imds, "127.0.0.1", path, *metadata).await;
        assert_eq!(from_nmi, from_imds, "{path} (Metadata header: {metadata})");
        assert!(!from_nmi.1.contains("access_token"), "{path}: {}", from_nmi.1);
    }
    // What those answers are.
    let (status, body) = get(&nmi, POD_IP, &same[0].0, true).await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("api-version is invalid or was not specified"),
        "{body}"
    );
    assert_eq!(v["newest-versions"][0], "2023-07-01");
    let (status, body) = get(
        &nmi,
        POD_IP,
        "/metadata/identity/info?api-version=2018-02-01",
        true,
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"tenantId": env.emulator.tenant_id()}).to_string())
    );

    // A version IMDS serves identities at, its name in any case: a token, from both.
    for query in [
        format!("api-version=2018-02-01&resource={vault}"),
        format!("API-Version=2019-08-01&resource={vault}"),
    ] {
        let path = format!("{token}?{query}");
        let (status, body) = get(&nmi, POD_IP, &path, true).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(get(&imds, "127.0.0.1", &path, true).await.0, 200, "{path}");
    }
}
