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
    let of = |pairs: &[(&str, &str)]| client_secret_of(&secret(pairs), "ns/sp");
    assert_eq!(of(&[("clientSecret", "s"), ("other", "o")]).unwrap(), "s");
    // One key of any name: upstream's usual layout.
    assert_eq!(of(&[("password", "p")]).unwrap(), "p");
    let several = of(&[("a", "1"), ("b", "2")]).unwrap_err().to_string();
    assert!(
        several.starts_with("secret ns/sp: ") && several.contains("clientSecret"),
        "{several}"
    );
    assert!(matches!(of(&[]), Err(Error::UnusableSecret { .. })));
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
        let refusal = crate::server::response::refusal(crate::refusal::Refusal::upstream(&e));
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
    assert_eq!(crate::refusal::Refusal::upstream(&e).status, 502);
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
    assert_eq!(crate::refusal::Refusal::upstream(&e).status, 503);
    // A service principal without a Kubernetes client to read its secret is a clear refusal.
    let mut sp = crate::testing::identity("ns", "sp", 2);
    sp.spec.type_ = Some(1);
    sp.spec.tenant_id = Some("t".into());
    sp.spec.client_password = Some(api::SecretReference {
        name: Some("s".into()),
        namespace: None,
    });
    let e = azure.fetch(&sp, "r").await.unwrap_err();
    assert_eq!(crate::refusal::Refusal::upstream(&e).status, 403, "{e}");
}

/// A fake IMDS on loopback answering every token request with a token whose `xms_mirid` is
/// `mirid`; the queries it got.
async fn fake_imds(mirid: &'static str) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::{extract::RawQuery, routing::get};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/metadata/identity/oauth2/token",
        get(move |RawQuery(q): RawQuery| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(q.unwrap_or_default());
                let e =
                    |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
                let claims = serde_json::json!({"oid": "o", "xms_mirid": mirid});
                let jwt = format!("{}.{}.sig", e("{}"), e(&claims.to_string()));
                axum::Json(serde_json::json!({
                    "access_token": jwt, "expires_on": (now() + 3600).to_string(), "token_type": "Bearer"
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn azure_at(imds: String) -> Azure {
    Azure::new(
        AzureConfig {
            imds,
            entra: "https://login.microsoftonline.com/".into(),
            extra_roots_pem: None,
            timeout: Duration::from_secs(5),
        },
        None,
        crate::metrics::Metrics::new(),
    )
    .unwrap()
}

/// §2: IMDS is asked by the AzureIdentity's resourceID (never its clientID), and a token for
/// another identity (`xms_mirid`) is refused; a type 0 without resourceID asks nothing.
#[tokio::test]
async fn managed_identities_are_asked_by_resource_id_and_checked_by_xms_mirid() {
    const MINE: &str =
        "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mine";
    let (imds, seen) = fake_imds(MINE).await;
    let azure = azure_at(imds);
    let mut id = crate::testing::identity("ns", "mine", 1);
    // Cased differently from the claim: resource ids are compared without regard to case.
    id.spec.resource_id = Some(MINE.to_uppercase());
    let t = azure.fetch(&id, "https://vault.azure.net").await.unwrap();
    assert_eq!(t.principal_id.as_deref(), Some("o"));
    let query = seen.lock().unwrap().pop().unwrap();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    assert!(
        pairs.contains(&("msi_res_id".into(), MINE.to_uppercase())),
        "{query}"
    );
    assert!(!pairs.iter().any(|(k, _)| k == "client_id"), "{query}");

    // The victim's resource id: IMDS (here, a liar) answers with another identity's token.
    id.spec.resource_id = Some(crate::testing::resource_id("victim"));
    let e = azure.fetch(&id, "https://vault.azure.net").await.unwrap_err();
    assert!(matches!(e, Error::Identity(_)), "{e}");
    assert!(
        e.to_string().contains("not for the AzureIdentity's resourceID"),
        "{e}"
    );
    assert_eq!(crate::refusal::Refusal::upstream(&e).status, 403);

    let calls = seen.lock().unwrap().len();
    id.spec.resource_id = None;
    let e = azure.fetch(&id, "https://vault.azure.net").await.unwrap_err();
    assert!(
        e.to_string().contains("without resourceID") && e.to_string().contains("spec.resourceID"),
        "{e}"
    );
    assert_eq!(crate::refusal::Refusal::upstream(&e).status, 403);
    assert_eq!(seen.lock().unwrap().len(), calls, "nothing asked of IMDS");
}

/// §3: an adEndpoint that is not an Entra authority is refused before any request, naming the
/// field and the fix.
#[tokio::test]
async fn a_service_principal_with_a_foreign_ad_endpoint_asks_nothing() {
    // The kernel completes a connection into the backlog before anyone accepts it: a non-blocking
    // accept after the fetch tells whether one was made.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    fake.set_nonblocking(true).unwrap();
    let port = fake.local_addr().unwrap().port();
    let azure = azure_at("http://127.0.0.1:9".into());
    let mut sp = crate::testing::identity("evil", "sp", 2);
    sp.spec.type_ = Some(1);
    sp.spec.tenant_id = Some("t".into());
    sp.spec.client_password = Some(api::SecretReference {
        name: Some("s".into()),
        namespace: None,
    });
    for endpoint in [
        format!("http://127.0.0.1:{port}/"),
        format!("https://127.0.0.1:{port}/"),
    ] {
        sp.spec.ad_endpoint = Some(endpoint.clone());
        let e = azure.fetch(&sp, "r").await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("AzureIdentity evil/sp: adEndpoint") && text.contains(&endpoint),
            "{text}"
        );
        assert_eq!(crate::refusal::Refusal::upstream(&e).status, 403, "{e}");
    }
    // Allowed by the administrator: past the check (to the secret, which cannot be read here).
    let azure = azure_at("http://127.0.0.1:9".into())
        .allow_ad_endpoints(&[format!("https://127.0.0.1:{port}/")])
        .unwrap();
    let e = azure.fetch(&sp, "r").await.unwrap_err();
    assert!(e.to_string().contains("Kubernetes client"), "{e}");
    // Nobody connected to the fake authority.
    let accepted = fake.accept().map(|_| ()).map_err(|e| e.kind());
    assert_eq!(
        accepted,
        Err(std::io::ErrorKind::WouldBlock),
        "no connection reached the fake authority"
    );
}
