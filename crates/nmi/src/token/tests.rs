use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::ByteString;

use super::*;

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

/// The client's errors keep, in NMI's, what the pod is told: a `Retry-After` that a service gave
/// as an HTTP date reaches the pod as seconds, as one given in seconds does.
#[test]
fn upstream_answers_keep_status_and_retry_after_for_the_pod() {
    use std::time::SystemTime;

    use azure_token::{Service, read_answer};

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for header in ["20", "Tue, 14 Nov 2023 22:13:40 GMT"] {
        let e: Error = read_answer(Service::Imds, 429, Some(header), b"{}", now)
            .unwrap_err()
            .into();
        assert!(
            matches!(&e, Error::Upstream { what: "IMDS", status: 429, retry_after: Some(d), .. } if *d == Duration::from_secs(20)),
            "{e}"
        );
        let refusal = crate::response::upstream_error(&e);
        assert_eq!(refusal.status(), 429);
        assert_eq!(refusal.headers()["retry-after"], "20", "{header}");
    }
    let e: Error = read_answer(Service::Entra, 200, None, b"[]", now)
        .unwrap_err()
        .into();
    assert!(
        matches!(e, Error::BadUpstreamBody { what: "Entra ID", .. }),
        "{e}"
    );
    assert_eq!(crate::response::upstream_error(&e).status(), 502);
    let e: Error = azure_token::Error::WrongPassword.into();
    assert!(matches!(e, Error::Identity(_)), "{e}");
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
