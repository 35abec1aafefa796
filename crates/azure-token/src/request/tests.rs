use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value;

use super::*;

fn secret() -> Credential {
    Credential::ClientSecret {
        authority: "https://login.microsoftonline.com/".into(),
        tenant: "t".into(),
        client_id: "app".into(),
        secret: "s3cret".into(),
    }
}

fn certificate() -> Credential {
    let bundle = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/pkcs12/sp-aes.p12"
    ));
    Credential::ClientCertificate {
        authority: "https://login.microsoftonline.us".into(),
        tenant: "t".into(),
        client_id: "app".into(),
        certificate: Arc::new(CertificateCredential::from_pkcs12(bundle, "pod-identity-test").unwrap()),
    }
}

fn prepare(credential: &Credential, resource: &str, entra: EntraVersion) -> Prepared {
    TokenRequest {
        credential,
        resource,
        entra,
    }
    .prepare(1_000)
    .unwrap()
}

fn form(p: &Prepared) -> Vec<(&'static str, String)> {
    match &p.call {
        Call::EntraPost { form } => form.clone(),
        other => panic!("{other:?}"),
    }
}

fn pairs(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    list.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// What `prepare` gives for a managed identity at IMDS `http://169.254.169.254`: a GET of its
/// token path with `query`.
fn imds_get(query: &[(&'static str, &str)]) -> Prepared {
    Prepared {
        service: Service::Imds,
        url: "http://169.254.169.254/metadata/identity/oauth2/token".into(),
        call: Call::ImdsGet { query: pairs(query) },
    }
}

#[test]
fn imds_is_a_get_with_the_2018_api_and_an_optional_client_id() {
    let mi = |client_id: Option<&str>| Credential::ManagedIdentity {
        imds: "http://169.254.169.254/".into(),
        client_id: client_id.map(str::to_owned),
    };
    for entra in [EntraVersion::V1, EntraVersion::V2] {
        let p = prepare(&mi(Some("c1")), "https://vault.azure.net", entra);
        assert_eq!(
            p,
            imds_get(&[
                ("api-version", "2018-02-01"),
                ("resource", "https://vault.azure.net"),
                ("client_id", "c1"),
            ])
        );
    }
    let p = prepare(&mi(None), "r", EntraVersion::V1);
    assert_eq!(
        p.call,
        Call::ImdsGet {
            query: pairs(&[("api-version", "2018-02-01"), ("resource", "r")])
        }
    );
}

/// NMI names a pod's managed identity by its ARM resource id, as MIC assigned it: IMDS's
/// `msi_res_id`, and no client id beside it (IMDS takes one selector).
#[test]
fn imds_by_resource_id_asks_with_msi_res_id_alone() {
    let rid =
        "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a";
    let mi = Credential::ManagedIdentityByResourceId {
        imds: "http://169.254.169.254".into(),
        resource_id: rid.into(),
    };
    let p = prepare(&mi, "https://vault.azure.net", EntraVersion::V2);
    assert_eq!(
        p,
        imds_get(&[
            ("api-version", "2018-02-01"),
            ("resource", "https://vault.azure.net"),
            ("msi_res_id", rid),
        ])
    );
    assert!(format!("{mi:?}").contains(rid));
}

#[test]
fn a_secret_asks_v1_with_a_resource_and_v2_with_a_scope() {
    let p = prepare(&secret(), "https://management.azure.com/", EntraVersion::V1);
    assert_eq!(
        (p.service, p.url.as_str()),
        (Service::Entra, "https://login.microsoftonline.com/t/oauth2/token")
    );
    assert_eq!(
        form(&p),
        pairs(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("resource", "https://management.azure.com/"),
            ("client_secret", "s3cret"),
        ])
    );
    let p = prepare(&secret(), "https://vault.azure.net", EntraVersion::V2);
    assert_eq!(p.url, "https://login.microsoftonline.com/t/oauth2/v2.0/token");
    assert_eq!(
        form(&p),
        pairs(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("scope", "https://vault.azure.net/.default"),
            ("client_secret", "s3cret"),
        ])
    );
}

#[test]
fn a_certificate_signs_an_assertion_for_the_endpoint_it_asks() {
    for (entra, url) in [
        (
            EntraVersion::V1,
            "https://login.microsoftonline.us/t/oauth2/token",
        ),
        (
            EntraVersion::V2,
            "https://login.microsoftonline.us/t/oauth2/v2.0/token",
        ),
    ] {
        let p = prepare(&certificate(), "https://management.usgovcloudapi.net/", entra);
        assert_eq!(p.url, url);
        let form = form(&p);
        let keys: Vec<&str> = form.iter().map(|(k, _)| *k).collect();
        let audience = if entra == EntraVersion::V1 {
            "resource"
        } else {
            "scope"
        };
        assert_eq!(
            keys,
            [
                "grant_type",
                "client_id",
                audience,
                "client_assertion_type",
                "client_assertion"
            ]
        );
        assert_eq!(form[3].1, JWT_BEARER);
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(form[4].1.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                claims["aud"].as_str(),
                claims["iss"].as_str(),
                claims["nbf"].as_u64()
            ),
            (Some(url), Some("app"), Some(1_000))
        );
    }
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

#[test]
fn debug_output_never_shows_the_secret() {
    let text = format!("{:?}", secret());
    assert!(text.contains("app") && !text.contains("s3cret"), "{text}");
}

fn assertion() -> Credential {
    Credential::ClientAssertion {
        authority: "https://login.microsoftonline.com/".into(),
        tenant: "t".into(),
        client_id: "app".into(),
        assertion: "eyJ.sa-token.sig".into(),
    }
}

#[test]
fn a_federated_assertion_is_sent_as_given_to_the_v2_endpoint() {
    let p = prepare(&assertion(), "https://storage.azure.com/", EntraVersion::V2);
    assert_eq!(
        (p.service, p.url.as_str()),
        (
            Service::Entra,
            "https://login.microsoftonline.com/t/oauth2/v2.0/token"
        )
    );
    assert_eq!(
        form(&p),
        pairs(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("scope", "https://storage.azure.com//.default"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", "eyJ.sa-token.sig"),
        ])
    );
    let text = format!("{:?}", assertion());
    assert!(text.contains("app") && !text.contains("sa-token"), "{text}");
}
