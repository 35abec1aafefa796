//! Workload identity federation: federated identity credentials created, read, listed and
//! deleted through ARM as `az identity federated-credential` does, and Entra exchanging an
//! external issuer's token for them, with its refusals in Entra's order and codes.

mod common;

use azure_emulator::{RunningEmulator, world::OidcIssuerSpec};
use common::*;
use serde_json::{Value, json};

const API: &str = "api-version=2023-01-31";
const ISSUER: &str = "https://oidc.cluster.example/";
const SUBJECT: &str = "system:serviceaccount:shop:checkout";
const AUDIENCE: &str = "api://AzureADTokenExchange";

fn fic_path(name: &str) -> String {
    format!(
        "{}/federatedIdentityCredentials/{name}?{API}",
        identity_id("app-identity")
    )
}

async fn arm(
    emu: &RunningEmulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let http = client(emu);
    let token = arm_token(emu, &http).await;
    let mut req = http
        .request(method, format!("{}{path}", emu.arm_url()))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// What `az identity federated-credential create` sends.
fn fic_body(issuer: &str, subject: &str, audiences: &[&str]) -> Value {
    json!({"properties": {"issuer": issuer, "subject": subject, "audiences": audiences}})
}

async fn exchange(emu: &RunningEmulator, assertion: &str) -> (u16, Value) {
    let r = client(emu)
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", emu.entra_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP_IDENTITY_CLIENT),
            ("scope", "https://storage.azure.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn code(v: &Value) -> u64 {
    v["error_codes"][0].as_u64().unwrap_or(0)
}

struct Issuer {
    key: aws_lc_rs::rsa::KeyPair,
}

impl Issuer {
    fn new() -> Self {
        Self {
            key: rsa_cert("issuer").key,
        }
    }
    fn jwks(&self) -> Value {
        let comps: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> =
            aws_lc_rs::signature::KeyPair::public_key(&self.key).into();
        json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "n": b64(&comps.n), "e": b64(&comps.e)}]})
    }
    fn token(&self, iss: &str, sub: &str, aud: &str, exp: u64) -> String {
        sign_jwt(
            &self.key,
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": iss, "sub": sub, "aud": [aud], "iat": exp - 3600, "nbf": exp - 3600, "exp": exp}),
        )
    }
}

#[tokio::test]
async fn credentials_are_managed_through_arm_as_the_cli_does() {
    let emu = start(example_world()).await;
    let checkout = fic_path("checkout");
    let put = |b| arm(&emu, reqwest::Method::PUT, &checkout, Some(b));
    let (s, v) = put(fic_body(ISSUER, SUBJECT, &[AUDIENCE])).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "checkout");
    assert_eq!(
        v["type"],
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
    );
    assert_eq!(v["properties"]["subject"], SUBJECT);
    assert_eq!(v["properties"]["audiences"], json!([AUDIENCE]));
    let (s, _) = put(fic_body(ISSUER, SUBJECT, &[AUDIENCE])).await;
    assert_eq!(s, 200, "a second PUT updates");

    let (s, v) = arm(&emu, reqwest::Method::GET, &fic_path("checkout"), None).await;
    assert_eq!((s, v["properties"]["issuer"].as_str()), (200, Some(ISSUER)));
    let list = format!(
        "{}/federatedIdentityCredentials?{API}",
        identity_id("app-identity")
    );
    let (s, v) = arm(&emu, reqwest::Method::GET, &list, None).await;
    assert_eq!((s, v["value"].as_array().map(Vec::len)), (200, Some(1)));

    // Refusals a user would meet: two audiences, a plain-http issuer, a duplicate of another
    // credential, an identity that does not exist, an api-version from before federation.
    let (s, v) = arm(
        &emu,
        reqwest::Method::PUT,
        &fic_path("two-audiences"),
        Some(fic_body(
            ISSUER,
            "system:serviceaccount:a:b",
            &[AUDIENCE, "api://other"],
        )),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("BadRequest")));
    let (s, _) = arm(
        &emu,
        reqwest::Method::PUT,
        &fic_path("plain-http"),
        Some(fic_body("http://oidc.example/", SUBJECT, &[AUDIENCE])),
    )
    .await;
    assert_eq!(s, 400);
    let (s, v) = arm(
        &emu,
        reqwest::Method::PUT,
        &fic_path("same-again"),
        Some(fic_body(ISSUER, SUBJECT, &[AUDIENCE])),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let missing = format!(
        "{}/federatedIdentityCredentials/x1?{API}",
        identity_id("no-such-identity")
    );
    let (s, v) = arm(
        &emu,
        reqwest::Method::PUT,
        &missing,
        Some(fic_body(ISSUER, SUBJECT, &[AUDIENCE])),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("ResourceNotFound")));
    let old = fic_path("checkout").replace(API, "api-version=2018-11-30");
    let (s, v) = arm(&emu, reqwest::Method::GET, &old, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidApiVersionParameter"))
    );

    let (s, _) = arm(&emu, reqwest::Method::DELETE, &fic_path("checkout"), None).await;
    assert_eq!(s, 200);
    let (s, _) = arm(&emu, reqwest::Method::DELETE, &fic_path("checkout"), None).await;
    assert_eq!(s, 204, "deleting what is gone is not an error");
    let (s, _) = arm(&emu, reqwest::Method::GET, &fic_path("checkout"), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn entra_exchanges_only_what_a_credential_names_with_its_codes() {
    let issuer = Issuer::new();
    let mut w = example_world();
    w.oidc_issuers.push(OidcIssuerSpec {
        issuer: ISSUER.into(),
        jwks: Some(issuer.jwks()),
        jwks_file: None,
        ca_file: None,
    });
    let emu = start(w).await;
    let good = issuer.token(ISSUER, SUBJECT, AUDIENCE, now() + 3600);
    // No credential yet: the issuer itself is unknown to this identity.
    let (s, v) = exchange(&emu, &good).await;
    assert_eq!((s, code(&v)), (401, 700211), "{v}");

    let (s, _) = arm(
        &emu,
        reqwest::Method::PUT,
        &fic_path("checkout"),
        Some(fic_body(ISSUER, SUBJECT, &[AUDIENCE])),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = exchange(&emu, &good).await;
    assert_eq!(s, 200, "{v}");
    let c = claims(v["access_token"].as_str().unwrap());
    assert_eq!(c["appid"], APP_IDENTITY_CLIENT);
    assert_eq!(c["xms_mirid"], identity_id("app-identity"));

    let other_sa = issuer.token(
        ISSUER,
        "system:serviceaccount:other:checkout",
        AUDIENCE,
        now() + 3600,
    );
    let (s, v) = exchange(&emu, &other_sa).await;
    assert_eq!((s, code(&v)), (401, 70021));
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("Assertion Subject: 'system:serviceaccount:other:checkout'"),
        "{v}"
    );
    let wrong_aud = issuer.token(ISSUER, SUBJECT, "https://kubernetes.default.svc", now() + 3600);
    assert_eq!(code(&exchange(&emu, &wrong_aud).await.1), 70021);
    let expired = issuer.token(ISSUER, SUBJECT, AUDIENCE, now() - 900);
    assert_eq!(code(&exchange(&emu, &expired).await.1), 700024);
    let forger = Issuer::new();
    let forged = forger.token(ISSUER, SUBJECT, AUDIENCE, now() + 3600);
    assert_eq!(code(&exchange(&emu, &forged).await.1), 700027);

    let (s, _) = arm(&emu, reqwest::Method::DELETE, &fic_path("checkout"), None).await;
    assert_eq!(s, 200);
    let (s, v) = exchange(&emu, &good).await;
    assert_eq!(
        (s, code(&v)),
        (401, 700211),
        "a deleted credential no longer exchanges"
    );
}

#[tokio::test]
async fn an_unreachable_issuer_discovery_is_aadsts50166() {
    let issuer = Issuer::new();
    // Nothing listens on port 9 of loopback; the world gives no JWKS, so Entra must fetch.
    let unreachable = "https://127.0.0.1:9/";
    let mut w = example_world();
    w.oidc_issuers.push(OidcIssuerSpec {
        issuer: unreachable.into(),
        jwks: None,
        jwks_file: None,
        ca_file: None,
    });
    let emu = start(w).await;
    let (s, _) = arm(
        &emu,
        reqwest::Method::PUT,
        &fic_path("far"),
        Some(fic_body(unreachable, SUBJECT, &[AUDIENCE])),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = exchange(&emu, &issuer.token(unreachable, SUBJECT, AUDIENCE, now() + 3600)).await;
    assert_eq!(
        (s, code(&v), v["error"].as_str()),
        (400, 50166, Some("invalid_request")),
        "{v}"
    );
}
