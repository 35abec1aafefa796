//! JWTs: the emulator's signing key, the tokens it mints, and checking the ones it is handed
//! (its own bearer tokens, client assertions, federated assertions). Built straight on aws-lc-rs so
//! signing and verification cost no more than they must.

use aws_lc_rs::{
    digest,
    rand::{SecureRandom, SystemRandom},
    rsa::{KeyPair, KeySize, PublicKeyComponents},
    signature::{self, KeyPair as _},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::error::{Error, Result};

pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// A random GUID in the usual 8-4-4-4-12 form (version 4).
pub fn guid() -> String {
    let mut b = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source, and then nothing else works either.
    SystemRandom::new().fill(&mut b).unwrap_or_default();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Random url-safe text, as Entra puts in `uti`, `aio`, `rh`.
pub fn random_text(n: usize) -> String {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).unwrap_or_default();
    b64(&b)
}

/// The key Entra and IMDS sign access tokens with.
pub struct SigningKey {
    key: KeyPair,
    kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl SigningKey {
    pub fn generate() -> Result<Self> {
        let key =
            KeyPair::generate(KeySize::Rsa2048).map_err(|_| Error::Crypto("RSA key generation".into()))?;
        let comps: PublicKeyComponents<Vec<u8>> = key.public_key().into();
        let der = key.public_key().as_ref().to_vec();
        let kid = b64(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref());
        Ok(Self {
            key,
            kid,
            n: comps.n,
            e: comps.e,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS Entra publishes, with this key only.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
            "n": b64(&self.n), "e": b64(&self.e), "alg": "RS256"
        }]})
    }

    /// Signs claims as a v1 access token (header carries `kid` and `x5t`, as Entra's v1 tokens do).
    pub fn sign(&self, claims: &Value) -> Result<String> {
        let header = json!({"typ": "JWT", "alg": "RS256", "x5t": self.kid, "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| Error::Crypto("RSA signing".into()))?;
        Ok(format!("{input}.{}", b64(&sig)))
    }

    /// Checks a token's signature against this key and returns its claims.
    pub fn verify(&self, token: &str) -> std::result::Result<Value, JwtError> {
        let jwt = Jwt::parse(token)?;
        if jwt.header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(JwtError::BadSignature);
        }
        let pk = PublicKeyComponents {
            n: &self.n[..],
            e: &self.e[..],
        };
        pk.verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            jwt.signing_input.as_bytes(),
            &jwt.signature,
        )
        .map_err(|_| JwtError::BadSignature)?;
        Ok(jwt.claims)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("JWT token is invalid or malformed")]
    Malformed,
    #[error("signature validation failed")]
    BadSignature,
}

/// A JWT split into its parts, not yet trusted.
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

impl Jwt {
    pub fn parse(token: &str) -> std::result::Result<Self, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Value = unb64(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(Value::is_object)
            .ok_or(JwtError::Malformed)?;
        let claims: Value = unb64(c)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(Value::is_object)
            .ok_or(JwtError::Malformed)?;
        let signature = unb64(s).ok_or(JwtError::Malformed)?;
        Ok(Self {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature,
        })
    }

    pub fn alg(&self) -> &str {
        self.header.get("alg").and_then(Value::as_str).unwrap_or("")
    }

    /// Verifies with an RSA key given as JWK components (`n`, `e` base64url).
    pub fn verify_jwk(&self, jwk: &Value) -> std::result::Result<(), JwtError> {
        let n = jwk
            .get("n")
            .and_then(Value::as_str)
            .and_then(unb64)
            .ok_or(JwtError::BadSignature)?;
        let e = jwk
            .get("e")
            .and_then(Value::as_str)
            .and_then(unb64)
            .ok_or(JwtError::BadSignature)?;
        let pk = PublicKeyComponents { n: &n[..], e: &e[..] };
        let result = match self.alg() {
            "RS256" => pk.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                self.signing_input.as_bytes(),
                &self.signature,
            ),
            "PS256" => pk.verify(
                &signature::RSA_PSS_2048_8192_SHA256,
                self.signing_input.as_bytes(),
                &self.signature,
            ),
            _ => return Err(JwtError::BadSignature),
        };
        result.map_err(|_| JwtError::BadSignature)
    }

    /// Verifies with the public key of an X.509 certificate (DER).
    pub fn verify_cert(&self, cert_der: &[u8]) -> std::result::Result<(), JwtError> {
        let der = rustls_pki_types::CertificateDer::from(cert_der);
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|_| JwtError::BadSignature)?;
        let alg: &dyn rustls_pki_types::SignatureVerificationAlgorithm = match self.alg() {
            "RS256" => webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            "PS256" => webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            _ => return Err(JwtError::BadSignature),
        };
        cert.verify_signature(alg, self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    pub fn claim_u64(&self, name: &str) -> Option<u64> {
        self.claims
            .get(name)
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
    }
}

/// SHA-1 and SHA-256 thumbprints (base64url) of a DER certificate: the `x5t` and `x5t#S256` values.
pub fn thumbprints(cert_der: &[u8]) -> (String, String) {
    (
        b64(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der).as_ref()),
        b64(digest::digest(&digest::SHA256, cert_der).as_ref()),
    )
}

/// The DER of every certificate in a PEM text.
pub fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(|c| c.ok().map(|c| c.to_vec()))
        .collect();
    if certs.is_empty() {
        return Err(Error::Config("no CERTIFICATE block in PEM".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests;
