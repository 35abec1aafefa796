use serde_json::json;

use super::*;

#[test]
fn signed_tokens_verify_and_tampering_is_detected() {
    let key = SigningKey::generate().unwrap();
    let tok = key.sign(&json!({"aud": "x", "exp": 1})).unwrap();
    assert_eq!(key.verify(&tok).unwrap()["aud"], "x");
    let mut parts: Vec<String> = tok.split('.').map(String::from).collect();
    parts[1] = b64(json!({"aud": "y", "exp": 1}).to_string().as_bytes());
    assert_eq!(key.verify(&parts.join(".")), Err(JwtError::BadSignature));
    let other = SigningKey::generate().unwrap();
    assert_eq!(other.verify(&tok), Err(JwtError::BadSignature));
    let jwt = Jwt::parse(&tok).unwrap();
    jwt.verify_jwk(&key.jwks()["keys"][0]).unwrap();
    assert_eq!(jwt.header["kid"], key.kid());
}

#[test]
fn malformed_tokens_are_rejected() {
    for bad in ["", "a.b", "a.b.c.d", "!!.e30.", "e30.bm90IGpzb24.AA"] {
        assert!(Jwt::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn guids_look_like_guids() {
    let g = guid();
    assert_eq!(g.len(), 36);
    assert_eq!(g.matches('-').count(), 4);
    assert_eq!(&g[14..15], "4");
    assert_ne!(guid(), g);
}

#[test]
fn pem_without_certificates_is_an_error() {
    assert!(pem_certs("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n").is_err());
}
