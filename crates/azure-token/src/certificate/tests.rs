//! The fixtures under `examples/pkcs12/` were written by `openssl pkcs12 -export` (see
//! `make-fixtures.sh` there): one leaf certificate and key, bundled in each format a user may have.

use base64::Engine;

use super::*;

const PASSWORD: &str = "pod-identity-test";

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/pkcs12/",
            $name
        ))
        .as_slice()
    };
}

/// The base64url SHA-1 thumbprint of the fixtures' leaf certificate.
fn leaf_x5t() -> String {
    let pem = fixture!("sp-cert.pem");
    let der = CertificateDer::from_pem_slice(pem).unwrap();
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &der))
}

fn claims(jwt: &str) -> serde_json::Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn opens_openssl_bundles_of_every_cipher() {
    for (bundle, password) in [
        (fixture!("sp-aes.p12"), PASSWORD),
        (fixture!("sp-legacy.p12"), PASSWORD),
        (fixture!("sp-empty-password.p12"), ""),
    ] {
        let c = CertificateCredential::from_pkcs12(bundle, password).unwrap();
        // The leaf, not the CA certificate bundled after it.
        assert_eq!(c.x5t(), leaf_x5t());
        let jwt = c.assertion("app", "https://login/t/oauth2/token", 1000).unwrap();
        assert_eq!(jwt.split('.').count(), 3);
        let claims = claims(&jwt);
        assert_eq!(
            (claims["iss"].as_str(), claims["sub"].as_str()),
            (Some("app"), Some("app"))
        );
        assert_eq!(
            (claims["nbf"].as_u64(), claims["exp"].as_u64()),
            (Some(1000), Some(1600))
        );
    }
}

#[test]
fn read_tells_pem_from_pkcs12_and_a_missing_password_is_the_empty_one() {
    let c = CertificateCredential::read(fixture!("sp-empty-password.p12"), None, None).unwrap();
    assert_eq!(c.x5t(), leaf_x5t());
    let c = CertificateCredential::read(fixture!("sp-aes.p12"), None, Some(PASSWORD)).unwrap();
    assert_eq!(c.x5t(), leaf_x5t());
    let (cert, key) = testbed::rsa_cert("app");
    // The password of a PEM credential is not used.
    assert!(CertificateCredential::read(cert.as_bytes(), Some(key.as_bytes()), Some("x")).is_ok());
    let both = format!("{cert}{key}");
    assert!(CertificateCredential::read(both.as_bytes(), None, None).is_ok());
}

#[test]
fn bad_bundles_say_what_is_wrong() {
    let err =
        |bundle: &[u8], password: &str| CertificateCredential::from_pkcs12(bundle, password).unwrap_err();
    assert!(matches!(
        err(fixture!("sp-aes.p12"), "wrong"),
        Error::WrongPassword
    ));
    assert!(matches!(err(fixture!("sp-legacy.p12"), ""), Error::WrongPassword));
    assert!(matches!(
        err(fixture!("certs-only.p12"), PASSWORD),
        Error::NoKeyInBundle
    ));
    assert!(matches!(
        err(fixture!("key-only.p12"), PASSWORD),
        Error::NoCertificateInBundle
    ));
    let truncated = base64::engine::general_purpose::STANDARD
        .decode("MIIKAgEDMIIJvAYJKoZIhvcNAQcBoII=")
        .unwrap();
    let e = err(&truncated, "pass");
    assert!(matches!(e, Error::NotPkcs12(_)), "{e:?}");
    assert!(e.to_string().contains("PKCS#12"), "{e}");
    assert!(matches!(err(b"not a bundle", ""), Error::NotPkcs12(_)));
}

#[test]
fn bad_pem_says_what_is_wrong() {
    let (cert, key) = testbed::rsa_cert("app");
    let (_, other_key) = testbed::rsa_cert("other");
    let err = |c: &str, k: Option<&str>| {
        CertificateCredential::from_pem(c.as_bytes(), k.map(str::as_bytes)).unwrap_err()
    };
    assert!(matches!(err(&cert, Some(&other_key)), Error::KeyMismatch));
    assert!(matches!(err(&cert, None), Error::NoPemKey(_)));
    assert!(matches!(err(&key, Some(&key)), Error::NoPemCertificate));
}
