//! Token queries as IMDS reads them: cases and properties (fuzzed further in
//! `tests/fuzz_requests.rs`).

use proptest::prelude::*;

use super::*;

#[test]
fn query_selectors() {
    let q = |s: &str| parse_token_query(Some(s));
    assert_eq!(
        q("api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net").unwrap(),
        TokenQuery {
            resource: "https://vault.azure.net".into(),
            identity: IdentityRequest::Default
        }
    );
    assert_eq!(
        q("resource=r&client_id=C").unwrap().identity,
        IdentityRequest::ClientId("C".into())
    );
    // Upstream ignored object_id (§5.2 case 16); it is a selector now.
    assert_eq!(
        q("resource=r&object_id=O").unwrap().identity,
        IdentityRequest::ObjectId("O".into())
    );
    // §5.2 case 14: both spellings; msi_res_id wins.
    assert_eq!(
        q("resource=r&mi_res_id=M").unwrap().identity,
        IdentityRequest::ResourceId("M".into())
    );
    assert_eq!(
        q("resource=r&mi_res_id=M&msi_res_id=S").unwrap().identity,
        IdentityRequest::ResourceId("S".into())
    );
    // Probes and SDKs add parameters NMI does not use.
    assert_eq!(
        q("resource=r&msi-res-id=x&bypass_cache=true&authority=a")
            .unwrap()
            .identity,
        IdentityRequest::Default
    );
    // Empty selector values are absent, as in upstream.
    assert_eq!(
        q("resource=r&client_id=").unwrap().identity,
        IdentityRequest::Default
    );
}

#[test]
fn imds_token_queries_need_a_version_imds_serves_identities_at() {
    let q = |s: Option<&str>| parse_imds_token_query(s);
    assert!(q(Some("api-version=2018-02-01&resource=r")).is_ok());
    assert!(
        q(Some("resource=r&API-Version=2019-08-01")).is_ok(),
        "the name in any case"
    );
    for bad in [
        None,
        Some("resource=r"),
        Some("api-version=&resource=r"),
        Some("api-version=2017-12-01&resource=r"),
        Some("api-version=latest&resource=r"),
        // Before the missing resource, as IMDS checks.
        Some("api-version=2017-12-01"),
    ] {
        assert_eq!(q(bad), Err(QueryError::ApiVersion), "{bad:?}");
    }
    // After a repeated parameter, as IMDS checks.
    assert_eq!(
        q(Some("resource=a&resource=b")),
        Err(QueryError::Duplicate("resource".into()))
    );
    // `/host/token` has no such rule.
    assert!(parse_token_query(Some("resource=r")).is_ok());
}

#[test]
fn query_refusals() {
    let q = |s: Option<&str>| parse_token_query(s);
    // §5.2 case 3.
    assert_eq!(q(None), Err(QueryError::MissingResource));
    assert_eq!(q(Some("resource=")), Err(QueryError::MissingResource));
    assert_eq!(
        q(Some("resource=a&resource=b")),
        Err(QueryError::Duplicate("resource".into()))
    );
    assert_eq!(
        q(Some("resource=a&client_id=x&client_id=y")),
        Err(QueryError::Duplicate("client_id".into()))
    );
    assert_eq!(
        q(Some("resource=a&client_id=x&object_id=y")),
        Err(QueryError::ConflictingSelectors)
    );
    assert_eq!(
        QueryError::MissingResource.to_string(),
        "parameter resource cannot be empty"
    );
}

#[test]
fn versions_from_the_identity_endpoints_on() {
    for ok in ["2018-02-01", "2019-08-01", "2023-07-01", "2031-01-01"] {
        assert!(api_version_supported(ok), "{ok}");
    }
    for bad in [
        "",
        "2017-12-01",
        "2018-01-31",
        "latest",
        "2018-02-1",
        "2018-02-01x",
        "2018/02/01",
        "9999-99-9a",
    ] {
        assert!(!api_version_supported(bad), "{bad}");
    }
}

#[tokio::test]
async fn the_refusal_is_imdss_body() {
    let r = api_version_refusal(&Metrics::new());
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"error":"Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds","newest-versions":["2023-07-01","2021-12-13","2021-11-15"]}"#
    );
}

fn encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

proptest! {
    #[test]
    fn parsing_never_panics(query in ".{0,120}") {
        let _ = parse_token_query(Some(&query));
    }

    #[test]
    fn query_round_trips(
        resource in "[ -~]{1,40}",
        selector in prop_oneof![
            Just(IdentityRequest::Default),
            "[ -~]{1,30}".prop_map(IdentityRequest::ClientId),
            "[ -~]{1,30}".prop_map(IdentityRequest::ObjectId),
            "[ -~]{1,30}".prop_map(IdentityRequest::ResourceId),
        ],
        junk in "[a-z]{1,8}",
    ) {
        let mut q = format!("api-version=2018-02-01&resource={}", encode(&resource));
        match &selector {
            IdentityRequest::Default => {}
            IdentityRequest::ClientId(v) => q += &format!("&client_id={}", encode(v)),
            IdentityRequest::ObjectId(v) => q += &format!("&object_id={}", encode(v)),
            IdentityRequest::ResourceId(v) => q += &format!("&msi_res_id={}", encode(v)),
        }
        let known = ["api-version", "resource", "client_id", "object_id", "msi_res_id", "mi_res_id"];
        if !known.contains(&junk.as_str()) {
            q += &format!("&{junk}=1");
        }
        let parsed = parse_token_query(Some(&q)).unwrap();
        prop_assert_eq!(parsed.resource, resource);
        prop_assert_eq!(parsed.identity, selector);
    }
}
