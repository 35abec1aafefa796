//! The certificate credential of a service principal: an identity of type 2 (its secret) and MIC's
//! own certificate service principal (`aadClientCertPath`). Read from PEM or from a PKCS#12 bundle
//! with its password (upstream's format), and used to sign the client assertion (a JWT, RS256)
//! that Entra's certificate-credentials flow expects.
//!
//! Pure: bytes in, a key or an error out. Where the bytes came from (a Kubernetes secret, a file)
//! is the caller's to say in its own error messages. (Moved here from the `api` crate: the CRD
//! types had no use for it, and the assertion belongs with the request it is sent in.)

use aws_lc_rs::{
    digest,
    encoding::AsDer,
    rand::{SecureRandom, SystemRandom},
    signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p12_keystore::{Pkcs12Archive, error::Error as P12Error};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;

use crate::Error;

/// A certificate and its RSA key, ready to sign client assertions.
pub struct CertificateCredential {
    key: RsaKeyPair,
    /// The certificate's SHA-1 and SHA-256 thumbprints, base64url: how Entra finds the key.
    sha1: String,
    sha256: String,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t", &self.sha1)
            .finish_non_exhaustive()
    }
}

/// Whether bytes are PEM text rather than DER (a PKCS#12 bundle is DER).
pub fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

impl CertificateCredential {
    /// Reads either form: PEM (the key in `key`, or beside the certificate in `certificate`), or a
    /// PKCS#12 bundle in `certificate` opened with `password` (none: the empty password).
    pub fn read(certificate: &[u8], key: Option<&[u8]>, password: Option<&str>) -> Result<Self, Error> {
        if is_pem(certificate) {
            Self::from_pem(certificate, key)
        } else {
            Self::from_pkcs12(certificate, password.unwrap_or_default())
        }
    }

    /// From PEM: the first certificate of `certificate`, and the private key of `key`, else of
    /// `certificate` itself.
    pub fn from_pem(certificate: &[u8], key: Option<&[u8]>) -> Result<Self, Error> {
        let cert = CertificateDer::pem_slice_iter(certificate)
            .next()
            .ok_or(Error::NoPemCertificate)?
            .map_err(|_| Error::NoPemCertificate)?;
        let key = PrivateKeyDer::from_pem_slice(key.unwrap_or(certificate))
            .map_err(|e| Error::NoPemKey(e.to_string()))?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(Error::NotRsa("a SEC1 (EC) key".into())),
        }
        .map_err(|e| Error::NotRsa(e.to_string()))?;
        if !belongs(&key, &cert) {
            return Err(Error::KeyMismatch);
        }
        Ok(Self::new(key, &cert))
    }

    /// From a PKCS#12 bundle, as `openssl pkcs12 -export` writes them (PBES2 with AES, or the legacy
    /// 3DES and RC2 bags) and as Windows and Azure Key Vault export them. The certificate used is
    /// the one whose public key is the private key's, so bundles with CA certificates work too.
    pub fn from_pkcs12(bundle: &[u8], password: &str) -> Result<Self, Error> {
        let archive = Pkcs12Archive::from_pkcs12(bundle, password).map_err(|e| match e {
            // A wrong password shows as a MAC mismatch, or (a bundle without a MAC) as bags that
            // do not decrypt to valid padding or DER.
            P12Error::MacError(_) | P12Error::UnpadError => Error::WrongPassword,
            other => Error::NotPkcs12(other.to_string()),
        })?;
        if archive.keys.is_empty() {
            return Err(Error::NoKeyInBundle);
        }
        if archive.certs.is_empty() {
            return Err(Error::NoCertificateInBundle);
        }
        let mut not_rsa = None;
        for bag in &archive.keys {
            let key = match RsaKeyPair::from_pkcs8(bag.key.as_der()) {
                Ok(k) => k,
                Err(e) => {
                    not_rsa = Some(e.to_string());
                    continue;
                }
            };
            if let Some(c) = archive.certs.iter().find(|c| belongs(&key, c.cert.as_der())) {
                let cert = c.cert.as_der().to_vec();
                return Ok(Self::new(key, &cert));
            }
        }
        Err(match not_rsa {
            Some(why) => Error::NotRsa(why),
            None => Error::NoCertificateForKey,
        })
    }

    fn new(key: RsaKeyPair, cert: &[u8]) -> Self {
        Self {
            key,
            sha1: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert)),
            sha256: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, cert)),
        }
    }

    /// The certificate's SHA-1 thumbprint, base64url (the assertion's `x5t`).
    pub fn x5t(&self) -> &str {
        &self.sha1
    }

    /// A client assertion for `client_id` at the token endpoint `audience`, valid for 10 minutes
    /// from `now` (epoch seconds).
    pub fn assertion(&self, client_id: &str, audience: &str, now: u64) -> Result<String, Error> {
        let rng = SystemRandom::new();
        let mut id = [0u8; 16];
        rng.fill(&mut id).map_err(|_| Error::Signing)?;
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
            .map_err(|_| Error::Signing)?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// Whether `cert` (DER) carries `key`'s public key: its SubjectPublicKeyInfo appears verbatim in
/// the certificate, so no X.509 parser is needed to compare them.
fn belongs(key: &RsaKeyPair, cert: &[u8]) -> bool {
    let Ok(spki) = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der<'static>>::as_der(key.public_key()) else {
        return false;
    };
    let spki = spki.as_ref();
    !spki.is_empty() && cert.windows(spki.len()).any(|w| w == spki)
}

#[cfg(test)]
mod tests;
