//! The certificate of a service principal with a certificate (identity type 2), read from its
//! secret; the decoding and the client assertion are [`azure_token::CertificateCredential`]'s.
//!
//! The secret holds, as upstream documents, a PKCS#12 bundle under `certificate` and its password
//! under `password`; or PEM: the certificate under `certificate`, and its private key either in the
//! same value or under `key`.

use azure_token::{CertificateCredential, Error as CredentialError, is_pem};
use k8s_openapi::api::core::v1::Secret;

use crate::{Error, Result};

pub const CERTIFICATE_KEY: &str = "certificate";
pub const PRIVATE_KEY_KEY: &str = "key";
pub const PASSWORD_KEY: &str = "password";

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

/// Reads a type-2 identity's certificate and key from its secret `name` (`<namespace>/<name>`),
/// ready to sign client assertions. The error says which key of the secret to fix.
pub fn from_secret(secret: &Secret, name: &str) -> Result<CertificateCredential> {
    let unusable = |problem: String| Error::UnusableSecret {
        secret: name.to_owned(),
        problem,
    };
    let certificate = value(secret, CERTIFICATE_KEY).ok_or_else(|| {
        unusable(format!(
            "the secret has no `{CERTIFICATE_KEY}` key (a PKCS#12 bundle, with its password under \
             `{PASSWORD_KEY}`, or a PEM certificate)"
        ))
    })?;
    if is_pem(&certificate) {
        let key = value(secret, PRIVATE_KEY_KEY);
        return CertificateCredential::from_pem(&certificate, key.as_deref()).map_err(|e| {
            unusable(match e {
                CredentialError::NoPemKey(why) => {
                    format!("no PEM private key under `{PRIVATE_KEY_KEY}` or `{CERTIFICATE_KEY}` ({why})")
                }
                other => format!("`{CERTIFICATE_KEY}` (PEM): {other}"),
            })
        });
    }
    let password = match value(secret, PASSWORD_KEY) {
        Some(p) => {
            String::from_utf8(p).map_err(|_| unusable(format!("`{PASSWORD_KEY}` is not UTF-8 text")))?
        }
        None => String::new(),
    };
    CertificateCredential::from_pkcs12(&certificate, &password).map_err(|e| {
        unusable(match e {
            CredentialError::WrongPassword => format!(
                "`{CERTIFICATE_KEY}`: the PKCS#12 bundle cannot be opened with the secret's \
                 `{PASSWORD_KEY}` (wrong or missing password)"
            ),
            other => format!("`{CERTIFICATE_KEY}`: {other}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    const BUNDLE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/pkcs12/sp-aes.p12"
    ));

    #[test]
    fn reads_upstreams_pkcs12_layout_and_pem() {
        assert!(
            from_secret(
                &secret(&[("certificate", BUNDLE), ("password", b"pod-identity-test")]),
                "ns/sp"
            )
            .is_ok()
        );
        let (cert, key) = testbed::rsa_cert("app");
        assert!(
            from_secret(
                &secret(&[("certificate", cert.as_bytes()), ("key", key.as_bytes())]),
                "ns/sp"
            )
            .is_ok()
        );
        let both = format!("{cert}{key}");
        assert!(from_secret(&secret(&[("certificate", both.as_bytes())]), "ns/sp").is_ok());
    }

    #[test]
    fn errors_name_the_secrets_key_to_fix() {
        let e = from_secret(
            &secret(&[("certificate", BUNDLE), ("password", b"nope")]),
            "ns/sp",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("secret ns/sp: ")
                && e.contains("wrong or missing password")
                && e.contains("`password`"),
            "{e}"
        );
        let e = from_secret(&secret(&[("certificate", BUNDLE)]), "ns/sp")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrong or missing password"), "{e}");
        let (cert, _) = testbed::rsa_cert("app");
        let e = from_secret(&secret(&[("certificate", cert.as_bytes())]), "ns/sp")
            .unwrap_err()
            .to_string();
        assert!(e.contains("private key") && e.contains("`key`"), "{e}");
        let e = from_secret(&secret(&[]), "ns/sp").unwrap_err().to_string();
        assert!(e.contains("`certificate`") && e.contains("PKCS#12"), "{e}");
        let e = from_secret(
            &secret(&[("certificate", b"\x30\x82garbage"), ("password", b"p")]),
            "ns/sp",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("PKCS#12"), "{e}");
    }
}
