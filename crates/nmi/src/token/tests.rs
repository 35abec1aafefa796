use std::collections::BTreeMap;

use std::time::Duration;

use k8s_openapi::ByteString;

use super::*;

fn jwt(claims: &str) -> String {
    let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(claims))
}

#[test]
fn reads_imds_strings_and_entra_numbers() {
    let t = parse_token(
        br#"{"access_token":"a","client_id":"c","expires_in":"86399","expires_on":"1700086399","ext_expires_in":"86399","not_before":"1700000000","resource":"r","token_type":"Bearer"}"#,
        1_700_000_000,
    )
    .unwrap();
    assert_eq!(
        (t.expires_on, t.not_before, t.ext_expires_in),
        (1_700_086_399, 1_700_000_000, 86_399)
    );
    let t = parse_token(
        br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"b"}"#,
        1_000,
    )
    .unwrap();
    assert_eq!(
        (t.expires_on, t.not_before, t.token_type.as_str()),
        (4_599, 1_000, "Bearer")
    );
    assert!(parse_token(b"[]", 0).is_err());
    assert!(parse_token(br#"{"access_token":"a"}"#, 0).is_err());
    assert!(parse_token(br#"{"access_token":"","expires_in":1}"#, 0).is_err());
}

#[test]
fn learns_the_principal_id_from_the_oid_claim() {
    let token = jwt(r#"{"oid":"0b5c","aud":"r"}"#);
    assert_eq!(jwt_claim(&token, "oid").as_deref(), Some("0b5c"));
    let body = format!(r#"{{"access_token":"{token}","expires_in":"10"}}"#);
    assert_eq!(
        parse_token(body.as_bytes(), 0).unwrap().principal_id.as_deref(),
        Some("0b5c")
    );
    assert_eq!(jwt_claim("opaque", "oid"), None);
}

fn secret(pairs: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

#[test]
fn client_secret_key_rules() {
    assert_eq!(
        client_secret_of(&secret(&[("clientSecret", "s"), ("other", "o")])).unwrap(),
        "s"
    );
    // One key of any name: upstream's usual layout.
    assert_eq!(client_secret_of(&secret(&[("password", "p")])).unwrap(), "p");
    let several = client_secret_of(&secret(&[("a", "1"), ("b", "2")])).unwrap_err();
    assert!(several.contains("clientSecret"), "{several}");
    assert!(client_secret_of(&secret(&[])).is_err());
}

#[test]
fn scope_from_resource() {
    assert_eq!(
        scope_of("https://vault.azure.net"),
        "https://vault.azure.net/.default"
    );
    assert_eq!(
        scope_of("https://database.windows.net/"),
        "https://database.windows.net//.default"
    );
    assert_eq!(scope_of("api://x/.default"), "api://x/.default");
}

/// §5.2 case 27: an IMDS that does not answer is a retryable 503 for the pod, never a 403 or 400.
#[tokio::test]
async fn unreachable_imds_is_a_transport_error_that_pods_see_as_503() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics = crate::metrics::Metrics::new();
    let azure = Azure::new(
        AzureConfig {
            imds: format!("http://{dead}"),
            entra: "https://login.invalid/".into(),
            extra_roots_pem: None,
            timeout: Duration::from_secs(2),
        },
        None,
        metrics.clone(),
    )
    .unwrap();
    let id = crate::testing::identity("ns", "id", 1);
    let e = azure.fetch(&id, "https://vault.azure.net").await.unwrap_err();
    assert!(matches!(e, Error::Http { what: "IMDS", .. }), "{e}");
    assert_eq!(crate::response::upstream_error(&e).status(), 503);
    // A service principal without a Kubernetes client to read its secret is a clear refusal.
    let mut sp = crate::testing::identity("ns", "sp", 2);
    sp.spec.type_ = Some(1);
    sp.spec.tenant_id = Some("t".into());
    sp.spec.client_password = Some(api::SecretReference {
        name: Some("s".into()),
        namespace: None,
    });
    let e = azure.fetch(&sp, "r").await.unwrap_err();
    assert_eq!(crate::response::upstream_error(&e).status(), 403, "{e}");
}
