//! The routes of raw paths: exhaustive cases and properties (fuzzed further in
//! `tests/fuzz_requests.rs`).

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

proptest! {
    #[test]
    fn classifying_never_panics(path in ".{0,80}") {
        let _ = classify(&decode_path(&path));
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
}
