use super::*;

#[test]
fn the_endpoint_audience_is_accepted_only_when_enabled_with_or_without_a_slash() {
    let urls = [
        "https://127.0.0.1:8443".to_owned(),
        "https://arm.emulator:8443".to_owned(),
    ];
    for aud in [
        "https://management.azure.com/",
        "https://management.core.windows.net",
    ] {
        assert!(audience_ok(aud, None), "{aud}");
        assert!(audience_ok(aud, Some(&urls)), "{aud}");
    }
    for aud in [
        "https://127.0.0.1:8443/",
        "https://127.0.0.1:8443",
        "HTTPS://ARM.emulator:8443/",
    ] {
        assert!(!audience_ok(aud, None), "public Azure refuses {aud}");
        assert!(audience_ok(aud, Some(&urls)), "Azure Stack accepts {aud}");
    }
    for aud in [
        "https://127.0.0.1:8444/",
        "https://127.0.0.1:8443/subscriptions",
        "https://storage.azure.com/",
        "",
    ] {
        assert!(!audience_ok(aud, Some(&urls)), "{aud}");
    }
}

#[test]
fn endpoint_urls_name_the_host_the_client_used() {
    let req = http::Request::get("/subscriptions")
        .header("host", "arm.emulator:8443")
        .body(())
        .unwrap();
    let (parts, ()) = req.into_parts();
    assert_eq!(
        endpoint_urls("https://127.0.0.1:8443", &parts),
        ["https://127.0.0.1:8443", "https://arm.emulator:8443"]
    );
    let h2 = http::Request::get("https://10.0.0.2:8443/subscriptions")
        .body(())
        .unwrap();
    let (parts, ()) = h2.into_parts();
    assert_eq!(
        endpoint_urls("https://127.0.0.1:8443/", &parts),
        ["https://127.0.0.1:8443", "https://10.0.0.2:8443"]
    );
}
