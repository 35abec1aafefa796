use std::time::Duration;

use super::*;
use crate::Fault;

fn jwt(claims: &str) -> String {
    let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(claims))
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// IMDS's answer, as the service sends it: every value a string.
const IMDS: &[u8] = br#"{"access_token":"a","client_id":"c","expires_in":"86399","expires_on":"1700086399","ext_expires_in":"86399","not_before":"1700000000","resource":"r","token_type":"Bearer"}"#;

#[test]
fn reads_imds_strings() {
    let t = parse_token(Service::Imds, IMDS, 1_700_000_000).unwrap();
    assert_eq!(
        (
            t.access_token.as_str(),
            t.expires_on,
            t.not_before,
            t.ext_expires_in
        ),
        ("a", 1_700_086_399, 1_700_000_000, 86_399)
    );
}

#[test]
fn reads_entra_v2_numbers_relative_to_now() {
    let t = parse_token(
        Service::Entra,
        br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"b"}"#,
        1_000,
    )
    .unwrap();
    assert_eq!(
        (t.expires_on, t.not_before, t.token_type.as_str()),
        (4_599, 1_000, "Bearer")
    );
}

#[test]
fn reads_entra_v1_strings_and_prefers_the_services_expiry() {
    // v1 carries expires_on (the service's clock) beside expires_in; expires_on is what a pod sees.
    let t = parse_token(
        Service::Entra,
        br#"{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"3599","expires_on":"5000","not_before":"1400","resource":"https://management.azure.com/","access_token":"c"}"#,
        1_000,
    )
    .unwrap();
    assert_eq!(
        (t.expires_on, t.not_before, t.ext_expires_in),
        (5_000, 1_400, 3_599)
    );
    // Without ext_expires_in, the token's remaining life.
    let t = parse_token(
        Service::Entra,
        br#"{"access_token":"d","expires_on":1600}"#,
        1_000,
    )
    .unwrap();
    assert_eq!((t.ext_expires_in, t.token_type.as_str()), (600, "Bearer"));
}

#[test]
fn answers_without_a_token_are_refused() {
    for (body, why) in [
        (&b"[]"[..], "no access_token"),
        (b"<html>", "not JSON"),
        (br#"{"access_token":"a"}"#, "neither expires_on nor expires_in"),
        (br#"{"access_token":"","expires_in":1}"#, "no access_token"),
        (br#"{"access_token":7,"expires_in":1}"#, "no access_token"),
        (br#"{"access_token":"a","expires_in":"soon"}"#, "neither"),
    ] {
        let e = parse_token(Service::Imds, body, 0).unwrap_err();
        assert!(
            matches!(&e, Error::BadAnswer { service: Service::Imds, detail } if detail.contains(why)),
            "{e}"
        );
    }
}

#[test]
fn learns_the_principal_id_from_the_oid_claim() {
    let token = jwt(r#"{"oid":"0b5c","aud":"r"}"#);
    assert_eq!(jwt_claim(&token, "oid").as_deref(), Some("0b5c"));
    let body = format!(r#"{{"access_token":"{token}","expires_in":"10"}}"#);
    assert_eq!(
        parse_token(Service::Imds, body.as_bytes(), 0)
            .unwrap()
            .principal_id
            .as_deref(),
        Some("0b5c")
    );
    assert_eq!(jwt_claim("opaque", "oid"), None);
    assert_eq!(jwt_claim("a.!!.c", "oid"), None);
}

#[test]
fn a_success_is_a_token_and_garbage_is_a_bad_answer() {
    let now = at(1_700_000_000);
    let t = read_answer(Service::Imds, 200, None, IMDS, now).unwrap();
    assert_eq!(t.expires_on, 1_700_086_399);
    let e = read_answer(Service::Entra, 200, Some("5"), b"{}", now).unwrap_err();
    assert!(
        matches!(&e, Error::BadAnswer { service: Service::Entra, detail } if detail == "no access_token"),
        "{e}"
    );
}

#[test]
fn an_error_status_keeps_what_the_service_said() {
    let now = at(1_700_000_000);
    let body = br#"{"error":"invalid_request","error_description":"Identity not found"}"#;
    let e = read_answer(Service::Imds, 400, None, body, now).unwrap_err();
    assert_eq!(e.upstream_body().map(str::as_bytes), Some(&body[..]));
    assert_eq!(
        (e.status(), e.fault(), e.is_retryable()),
        (Some(400), Fault::Theirs, false)
    );
    // Even a 2xx-looking token is not read from an error answer.
    assert!(read_answer(Service::Entra, 401, None, IMDS, now).is_err());
    // Long answers (an HTML page from a proxy) are cut.
    let page = "x".repeat(5 * BODY_KEPT);
    let e = read_answer(Service::Entra, 502, None, page.as_bytes(), now).unwrap_err();
    assert_eq!(e.upstream_body().map(str::len), Some(BODY_KEPT));
}

#[test]
fn retry_after_is_seconds_or_an_http_date_on_every_path() {
    let now = at(1_700_000_000);
    let wait = |header: &str| {
        read_answer(Service::Imds, 429, Some(header), b"", now)
            .unwrap_err()
            .retry_after()
    };
    assert_eq!(wait("3"), Some(Duration::from_secs(3)));
    assert_eq!(
        wait(&httpdate::fmt_http_date(now + Duration::from_secs(20))),
        Some(Duration::from_secs(20))
    );
    assert_eq!(wait("later"), None);
    let e = read_answer(Service::Entra, 503, None, b"", now).unwrap_err();
    assert_eq!((e.retry_after(), e.is_retryable()), (None, true));
}
