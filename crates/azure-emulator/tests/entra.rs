//! Entra's token endpoints: v1 and v2 shapes, secrets (form and Basic), certificate assertions
//! (RS256 + x5t, PS256 + x5t#S256), federated assertions, discovery documents and errors.

mod common;

use azure_emulator::world::{FederatedCredentialSpec, OidcIssuerSpec, ServicePrincipalSpec};
use common::*;
use serde_json::{Value, json};

async fn post(emu: &azure_emulator::RunningEmulator, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = client(emu)
        .post(format!("{}{path}", emu.entra_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn key_order(text: &str) -> Vec<String> {
    let v: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
    let mut pos: Vec<(usize, String)> = v
        .keys()
        .map(|k| (text.find(&format!("\"{k}\"")).unwrap(), k.clone()))
        .collect();
    pos.sort();
    pos.into_iter().map(|p| p.1).collect()
}

#[tokio::test]
async fn v1_and_v2_responses_have_the_real_shapes() {
    let emu = start(example_world()).await;
    let secret = [
        ("grant_type", "client_credentials"),
        ("client_id", APP_CLIENT),
        ("client_secret", APP_SECRET),
    ];

    let mut v1 = secret.to_vec();
    v1.push(("resource", "https://storage.azure.com/"));
    let (status, text) = post(&emu, &format!("/{TENANT}/oauth2/token"), &v1).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        key_order(&text),
        [
            "token_type",
            "expires_in",
            "ext_expires_in",
            "expires_on",
            "not_before",
            "resource",
            "access_token"
        ]
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(
        body.as_object().unwrap().values().all(Value::is_string),
        "v1 values are strings: {text}"
    );
    assert_eq!(body["expires_in"], "3599");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://storage.azure.com/");
    assert_eq!(c["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(c["appidacr"], "1");
    assert!(
        c.get("xms_mirid").is_none(),
        "apps have no managed-identity resource id"
    );

    let mut v2 = secret.to_vec();
    v2.push(("scope", "https://management.azure.com/.default"));
    let (status, text) = post(&emu, &format!("/{TENANT}/oauth2/v2.0/token"), &v2).await;
    assert_eq!(status, 200);
    assert_eq!(
        key_order(&text),
        ["token_type", "expires_in", "ext_expires_in", "access_token"]
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["aud"],
        "https://management.azure.com"
    );

    // HTTP Basic client authentication works too.
    let r = client(&emu)
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", emu.entra_url()))
        .basic_auth(APP_CLIENT, Some(APP_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://vault.azure.net/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emu.admin().counters().tokens_issued[APP_CLIENT], 3);
}

#[tokio::test]
async fn errors_have_entra_shape_and_codes() {
    let emu = start(example_world()).await;
    let check = |text: &str, code: u64| {
        let v: Value = serde_json::from_str(text).unwrap();
        for k in [
            "error",
            "error_description",
            "error_codes",
            "timestamp",
            "trace_id",
            "correlation_id",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {text}");
        }
        assert_eq!(v["error_codes"][0], code, "{text}");
        assert!(
            v["error_description"]
                .as_str()
                .unwrap()
                .starts_with(&format!("AADSTS{code}:"))
        );
        v["error"].as_str().unwrap().to_string()
    };
    let (s, t) = post(
        &emu,
        &format!("/{TENANT}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP_CLIENT),
            ("client_secret", "wrong"),
            ("scope", "https://x/.default"),
        ],
    )
    .await;
    assert_eq!((s, check(&t, 7000215).as_str()), (401, "invalid_client"));
    let (s, t) = post(
        &emu,
        &format!("/{TENANT}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
            ("client_secret", "x"),
            ("scope", "https://x/.default"),
        ],
    )
    .await;
    assert_eq!((s, check(&t, 700016).as_str()), (400, "unauthorized_client"));
    let (s, t) = post(
        &emu,
        &format!("/{TENANT}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP_CLIENT),
            ("client_secret", APP_SECRET),
            ("scope", "https://x/read"),
        ],
    )
    .await;
    assert_eq!((s, check(&t, 1002012).as_str()), (400, "invalid_scope"));
    let (s, t) = post(
        &emu,
        "/contoso.example/oauth2/v2.0/token",
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!((s, check(&t, 90002).as_str()), (400, "invalid_request"));
    let (s, t) = post(
        &emu,
        &format!("/{TENANT}/oauth2/token"),
        &[("grant_type", "password"), ("resource", "x")],
    )
    .await;
    assert_eq!((s, check(&t, 70003).as_str()), (400, "unsupported_grant_type"));
    let (s, t) = post(
        &emu,
        &format!("/{TENANT}/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP_CLIENT),
            ("client_secret", APP_SECRET),
        ],
    )
    .await;
    assert_eq!((s, check(&t, 900144).as_str()), (400, "invalid_request"));
}

fn cert_world() -> (azure_emulator::World, RsaCert) {
    let cert = rsa_cert("assertion-app");
    let mut w = example_world();
    w.service_principals.push(ServicePrincipalSpec {
        name: "cert-app".into(),
        client_id: "cert-app-id".into(),
        object_id: None,
        client_secret: None,
        certificate_pem: Some(cert.cert_pem.clone()),
        certificate_file: None,
        may_assign: vec![],
        federated_credentials: vec![],
    });
    (w, cert)
}

fn assertion(key: &aws_lc_rs::rsa::KeyPair, header: Value, aud: &str, exp: u64) -> String {
    let claims = json!({"aud": aud, "iss": "cert-app-id", "sub": "cert-app-id", "jti": "1", "nbf": now() - 10, "iat": now() - 10, "exp": exp});
    sign_jwt(key, &header, &claims)
}

#[tokio::test]
async fn certificate_assertions_rs256_x5t_and_ps256_x5t_s256() {
    let (w, cert) = cert_world();
    let emu = start(w).await;
    let aud = format!("{}/{TENANT}/oauth2/v2.0/token", emu.entra_url());
    let (x5t, x5t256) = azure_emulator::token::thumbprints(&cert.cert_der);
    let form = |a: &str| {
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("client_id".into(), "cert-app-id".into()),
            ("scope".into(), "https://storage.azure.com/.default".into()),
            (
                "client_assertion_type".into(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            ("client_assertion".into(), a.to_string()),
        ]
    };
    let send = |a: String| {
        let f = form(&a);
        let http = client(&emu);
        let url = aud.clone();
        async move {
            let r = http.post(url).form(&f).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let rs = assertion(
        &cert.key,
        json!({"alg": "RS256", "typ": "JWT", "x5t": x5t}),
        &aud,
        now() + 600,
    );
    let (s, v) = send(rs).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(claims(v["access_token"].as_str().unwrap())["appidacr"], "2");
    let ps = assertion(
        &cert.key,
        json!({"alg": "PS256", "typ": "JWT", "x5t#S256": x5t256}),
        &aud,
        now() + 600,
    );
    assert_eq!(send(ps).await.0, 200);

    let expired = assertion(&cert.key, json!({"alg": "RS256", "x5t": x5t}), &aud, now() - 3600);
    assert_eq!(send(expired).await.1["error_codes"][0], 700024);
    let wrong_aud = assertion(
        &cert.key,
        json!({"alg": "RS256", "x5t": x5t}),
        "https://example.com/token",
        now() + 600,
    );
    assert_eq!(send(wrong_aud).await.1["error_codes"][0], 700023);
    let other = rsa_cert("someone-else");
    let forged = assertion(&other.key, json!({"alg": "RS256", "x5t": x5t}), &aud, now() + 600);
    assert_eq!(send(forged).await.1["error_codes"][0], 700027);
    let unknown = assertion(
        &cert.key,
        json!({"alg": "RS256", "x5t": "AAAA"}),
        &aud,
        now() + 600,
    );
    let (s, v) = send(unknown).await;
    assert_eq!((s, v["error"].as_str().unwrap()), (401, "invalid_client"));
}

#[tokio::test]
async fn federated_assertions_from_a_configured_issuer() {
    let issuer_key = rsa_cert("oidc");
    let comps: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> =
        aws_lc_rs::signature::KeyPair::public_key(&issuer_key.key).into();
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "n": b64(&comps.n), "e": b64(&comps.e)}]});
    let mut w = example_world();
    w.oidc_issuers.push(OidcIssuerSpec {
        issuer: "https://oidc.cluster.local".into(),
        jwks: Some(jwks),
        jwks_file: None,
        ca_file: None,
    });
    w.identities[0]
        .federated_credentials
        .push(FederatedCredentialSpec {
            issuer: "https://oidc.cluster.local".into(),
            subject: "system:serviceaccount:default:app".into(),
            audience: "api://AzureADTokenExchange".into(),
        });
    let emu = start(w).await;
    let sa_token = |sub: &str| {
        sign_jwt(
            &issuer_key.key,
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": "https://oidc.cluster.local", "sub": sub, "aud": ["api://AzureADTokenExchange"], "exp": now() + 600, "iat": now()}),
        )
    };
    let exchange = |a: String| {
        let http = client(&emu);
        let url = format!("{}/{TENANT}/oauth2/v2.0/token", emu.entra_url());
        async move {
            let r = http
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", APP_IDENTITY_CLIENT),
                    ("scope", "https://storage.azure.com/.default"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &a),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = exchange(sa_token("system:serviceaccount:default:app")).await;
    assert_eq!(s, 200, "{v}");
    let c = claims(v["access_token"].as_str().unwrap());
    assert_eq!(c["xms_mirid"], identity_id("app-identity"));
    assert_eq!(c["oid"], APP_IDENTITY_PRINCIPAL);
    let (s, v) = exchange(sa_token("system:serviceaccount:default:other")).await;
    assert_eq!((s, v["error_codes"][0].as_u64()), (401, Some(70021)));
}

#[tokio::test]
async fn discovery_documents_and_jwks_verify_issued_tokens() {
    let emu = start(example_world()).await;
    let http = client(&emu);
    let base = emu.entra_url();
    let v2: Value = http
        .get(format!("{base}/{TENANT}/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["token_endpoint"], format!("{base}/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(v2["issuer"], format!("{base}/{TENANT}/v2.0"));
    let v1: Value = http
        .get(format!("{base}/{TENANT}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["issuer"], format!("https://sts.windows.net/{TENANT}/"));
    let jwks: Value = http
        .get(v2["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = emu
        .admin()
        .app_token("app", "https://storage.azure.com/")
        .unwrap();
    let kid = header(&tok)["kid"].clone();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("kid in jwks");
    let jwt = azure_emulator::token::Jwt::parse(&tok).unwrap();
    jwt.verify_jwk(jwk)
        .expect("token verifies against the published key");
}
