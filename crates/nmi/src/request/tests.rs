use proptest::prelude::*;

use super::*;

#[test]
fn token_path_in_any_case() {
    for p in [
        "/metadata/identity/oauth2/token",
        "/metadata/identity/oauth2/token/",
        "/Metadata/identity/oauth2/token/",
        "/METADATA/identity/oauth2/token",
        // §5.2 case 33, adjusted: upstream passed this to IMDS, which may read paths in any case
        // and answer with the node's identity; NMI handles it as the token path it is.
        "/metadata/Identity/oauth2/token/",
        "/metadata/identity/OAUTH2/Token",
        // Decoded as upstream's router decoded it.
        "/metadata%2Fidentity%2Foauth2%2Ftoken",
    ] {
        assert_eq!(classify(p), Route::Token, "{p}");
    }
}

#[test]
fn mangled_identity_paths_are_invalid_and_never_pass_through() {
    // §5.2 case 32, and every other way to spell an identity path that a lenient server could
    // resolve to one.
    for raw in [
        "/metadata/identity\\oauth2/token/",
        "/metadata/identity%5Coauth2%5Ctoken",
        "/metadata/identity/oauth2\\token",
        "/Metadata/identity\\\\oauth2/token",
        "/x/metadata/identity/oauth2/token",
        "/metadata/identity/oauth2/tokens",
        "//metadata/identity/oauth2/token",
        "/metadata//identity/oauth2/token",
        "/metadata/./identity/oauth2/token",
        "/foo/../metadata/identity/oauth2/token",
        "/foo/%2E%2E/metadata/identity/oauth2/token",
        "/metadata/identity",
        "/metadata/identity/",
        "/metadata/identity//info",
        "/metadata/identity/info/../oauth2/token",
        "/metadata/identity/info%2F..%2Foauth2%2Ftoken",
        "/metadata/identity/infos",
        "/METADATA/IDENTITY/anything",
    ] {
        assert_eq!(classify(raw), Route::Invalid, "{raw}");
    }
}

#[test]
fn identity_info_passes_through_when_spelt_plainly() {
    for raw in [
        "/metadata/identity/info",
        "/metadata/identity/info/",
        "/METADATA/Identity/INFO",
    ] {
        assert_eq!(classify(raw), Route::Other, "{raw}");
    }
}

#[test]
fn host_token_instance_and_other_routes() {
    assert_eq!(classify("/host/token"), Route::HostToken);
    assert_eq!(classify("/host/token/"), Route::HostToken);
    // §5.2 case 31: both spellings of the instance path, and a roundabout one.
    assert_eq!(classify("/metadata/instance"), Route::Instance);
    assert_eq!(classify("/Metadata/instance/compute"), Route::Instance);
    // A roundabout spelling is refused rather than passed on as the client would rewrite it.
    assert_eq!(classify("/x/../metadata/instance"), Route::Invalid);
    assert_eq!(classify("/metadata%2fidentity//../instance"), Route::Invalid);
    assert_eq!(classify("/doesnotexist"), Route::Other);
    assert_eq!(classify("/metadata/scheduledevents"), Route::Other);
    assert_eq!(classify("/metadata/versions/"), Route::Other);
    assert_eq!(classify("/"), Route::Other);
    // Anything not plain is refused rather than passed on to be interpreted by IMDS.
    for raw in ["", "/a//b", "/a/./b", "/a/../b", "/a%20b", "/a\\b"] {
        assert_eq!(classify(raw), Route::Invalid, "{raw}");
    }
}

#[test]
fn decode_path_keeps_bad_escapes() {
    assert_eq!(decode_path("/a%2Fb"), "/a/b");
    assert_eq!(decode_path("/a%zz%4"), "/a%zz%4");
    assert_eq!(decode_path("%"), "%");
}

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

fn encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

proptest! {
    #[test]
    fn parsing_never_panics(path in ".{0,80}", query in ".{0,120}") {
        let _ = classify(&decode_path(&path));
        let _ = parse_token_query(Some(&query));
    }

    /// Any path the token route takes is the token path in some letter case, and no path that a
    /// lenient server could resolve to an identity path is ever passed through.
    #[test]
    fn identity_paths_never_pass_through(
        segs in proptest::collection::vec(
            prop_oneof![
                Just("metadata".to_owned()), Just("Metadata".to_owned()), Just("identity".to_owned()),
                Just("oauth2".to_owned()), Just("token".to_owned()), Just("..".to_owned()),
                Just(".".to_owned()), Just("".to_owned()), Just("%2e%2E".to_owned()),
                Just("%2F".to_owned()), Just("%5c".to_owned()), Just("\\".to_owned()), "[a-z]{1,3}",
            ],
            0..8,
        ),
        seps in proptest::collection::vec(prop_oneof![Just("/"), Just("\\"), Just("%2f"), Just("%5C"), Just("//")], 8),
    ) {
        let mut raw = String::new();
        for (seg, sep) in segs.iter().zip(seps.iter()) {
            raw.push_str(sep);
            raw.push_str(seg);
        }
        let route = classify(&raw);
        let resolved = resolved(&decode_path(&raw));
        if route == Route::Other || route == Route::Instance {
            prop_assert!(
                !resolved.starts_with("/metadata/identity") || resolved == INFO_PATH,
                "{raw} passes through"
            );
            prop_assert!(is_plain(&raw), "{raw} is passed through, but not as it was checked");
        }
        if route == Route::Other {
            prop_assert!(!resolved.starts_with("/metadata/instance"), "{raw} dodges the instance rule");
        }
        if route == Route::Token {
            prop_assert!(decode_path(&raw).to_ascii_lowercase().starts_with(TOKEN_PATH));
        }
    }

    #[test]
    fn backslashes_in_a_token_path_never_reach_the_token_handler(
        a in "[\\\\/]{1,3}", b in "[\\\\/]{1,3}", upper in any::<bool>()
    ) {
        prop_assume!(a != "/" || b != "/");
        let m = if upper { "Metadata" } else { "metadata" };
        let path = format!("/{m}/identity{a}oauth2{b}token");
        prop_assert_eq!(classify(&path), Route::Invalid);
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
