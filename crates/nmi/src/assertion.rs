//! Client assertions for service principals with a certificate (identity type 2): a JWT signed
//! with the certificate's RSA key, as Entra's certificate-credentials flow expects.
//!
//! The secret holds PEM: the certificate under `certificate`, and its private key either in the
//! same value or under `key`. Upstream stored a PKCS#12 bundle and its `password`; that form is
//! refused with a message saying how to convert it.

use aws_lc_rs::{
    digest,
    rand::{SecureRandom, SystemRandom},
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;

pub const CERTIFICATE_KEY: &str = "certificate";
pub const PRIVATE_KEY_KEY: &str = "key";

/// A certificate and its key, ready to sign assertions.
pub struct Credential {
    key: RsaKeyPair,
    sha1: String,
    sha256: String,
}

fn value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()?
                .get(key)
                .map(|s| s.clone().into_bytes())
        })
}

impl Credential {
    /// Reads the certificate and key from a secret.
    pub fn from_secret(secret: &Secret) -> Result<Self, String> {
        let cert_pem = value(secret, CERTIFICATE_KEY)
            .ok_or_else(|| format!("the secret has no `{CERTIFICATE_KEY}` key"))?;
        let Some(cert) = CertificateDer::pem_slice_iter(&cert_pem).next() else {
            return Err(format!(
                "`{CERTIFICATE_KEY}` is not a PEM certificate; a PKCS#12 bundle (upstream's format) must be \
                 converted: `openssl pkcs12 -in cert.pfx -nodes` gives the PEM certificate and key"
            ));
        };
        let cert = cert.map_err(|e| format!("`{CERTIFICATE_KEY}`: {e}"))?;
        let key_pem = value(secret, PRIVATE_KEY_KEY).unwrap_or_else(|| cert_pem.clone());
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!("no PEM private key under `{PRIVATE_KEY_KEY}` or `{CERTIFICATE_KEY}`: {e}")
        })?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err("the private key must be RSA (PKCS#8 or PKCS#1)".into()),
        }
        .map_err(|e| format!("the private key is not a usable RSA key: {e}"))?;
        Ok(Self {
            key,
            sha1: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &cert)),
            sha256: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &cert)),
        })
    }

    /// A client assertion for `client_id` at the token endpoint `audience`, valid for 10 minutes.
    pub fn assertion(&self, client_id: &str, audience: &str, now: u64) -> Result<String, String> {
        let rng = SystemRandom::new();
        let mut id = [0u8; 16];
        rng.fill(&mut id).map_err(|_| "no randomness".to_owned())?;
        let header = json!({"alg": "RS256", "typ": "JWT", "x5t": self.sha1, "x5t#S256": self.sha256});
        let claims = json!({
            "aud": audience, "iss": client_id, "sub": client_id,
            "jti": id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "nbf": now, "iat": now, "exp": now + 600,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &rng, signing_input.as_bytes(), &mut signature)
            .map_err(|_| "signing the client assertion failed".to_owned())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            string_data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn cert() -> (String, String) {
        testbed::rsa_cert("app")
    }

    #[test]
    fn signs_an_assertion_with_thumbprints() {
        let (cert, key) = cert();
        for s in [
            secret(&[("certificate", &cert), ("key", &key)]),
            secret(&[("certificate", &format!("{cert}{key}"))]),
        ] {
            let c = Credential::from_secret(&s).unwrap();
            let jwt = c
                .assertion("client", "https://login/t/oauth2/v2.0/token", 1000)
                .unwrap();
            let parts: Vec<&str> = jwt.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
            assert_eq!(header["alg"], "RS256");
            assert_eq!(header["x5t"].as_str().unwrap().len(), 27, "base64url SHA-1");
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(
                (claims["iss"].as_str(), claims["sub"].as_str()),
                (Some("client"), Some("client"))
            );
            assert_eq!(claims["exp"], 1600);
        }
    }

    #[test]
    fn refuses_pkcs12_and_missing_parts_clearly() {
        let e = Credential::from_secret(&secret(&[
            ("certificate", "\u{30}\u{82}binary"),
            ("password", "p"),
        ]))
        .err()
        .unwrap();
        assert!(e.contains("PKCS#12"), "{e}");
        let (cert, _) = cert();
        let e = Credential::from_secret(&secret(&[("certificate", &cert)]))
            .err()
            .unwrap();
        assert!(e.contains("private key"), "{e}");
        assert!(
            Credential::from_secret(&secret(&[]))
                .err()
                .unwrap()
                .contains("`certificate`")
        );
    }
}
