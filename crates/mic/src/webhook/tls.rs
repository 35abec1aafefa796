//! The webhook's serving certificate: `tls.crt` and `tls.key` of a directory (a mounted Secret),
//! read at start, read again every interval and swapped in when they changed, so a rotated
//! Secret takes effect without a restart. A change that does not parse (a half-written pair)
//! keeps the certificate in use and is tried again at the next interval.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::Error;

/// The file names of a `kubernetes.io/tls` Secret.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// The two files' bytes, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Hands every TLS handshake the certificate loaded last.
#[derive(Debug)]
pub struct ReloadingCert {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<(Pem, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    /// Loads the pair in `dir`; a missing or invalid pair is an error (the server does not start).
    pub fn load(dir: &Path, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let pem = read(dir)?;
        let key = certified(&pem, &provider)?;
        Ok(Self {
            dir: dir.to_owned(),
            provider,
            current: RwLock::new((pem, key)),
        })
    }

    /// Reads the files again; swaps the certificate in if they changed and parse. Returns
    /// whether a new certificate is in use.
    pub fn reload(&self) -> Result<bool, Error> {
        let pem = read(&self.dir)?;
        if self.current.read().expect("lock").0 == pem {
            return Ok(false);
        }
        let key = certified(&pem, &self.provider)?;
        *self.current.write().expect("lock") = (pem, key);
        Ok(true)
    }

    /// Calls [`Self::reload`] every `interval`, logging changes and failures, until dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let me = self.clone();
            // File reads block; they are two small files every interval.
            match tokio::task::spawn_blocking(move || me.reload()).await {
                Ok(Ok(true)) => tracing::info!(dir = %self.dir.display(), "webhook certificate reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "webhook certificate not reloaded; the previous one stays in use")
                }
                Err(e) => tracing::warn!(error = %e, "webhook certificate reload task failed"),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("lock").1.clone())
    }
}

fn read(dir: &Path) -> Result<Pem, Error> {
    let file = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| Error::Io {
            what: format!("reading the webhook certificate {}", path.display()),
            source,
        })
    };
    Ok(Pem {
        cert: file(CERT_FILE)?,
        key: file(KEY_FILE)?,
    })
}

fn certified(pem: &Pem, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, Error> {
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::Config(format!("webhook {what}: {e}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(CERT_FILE, &e))?;
    if certs.is_empty() {
        return Err(bad(CERT_FILE, &"no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| bad(KEY_FILE, &e))?;
    let key = CertifiedKey::from_der(certs, key, provider).map_err(|e| bad("key pair", &e))?;
    Ok(Arc::new(key))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    fn write_pair(dir: &Path, name: &str) {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join(CERT_FILE), cert.pem()).expect("write");
        std::fs::write(dir.join(KEY_FILE), key.serialize_pem()).expect("write");
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    #[test]
    fn a_changed_pair_is_swapped_in_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pair(dir.path(), "one.example");
        let r = ReloadingCert::load(dir.path(), provider()).expect("loads");
        let first = r.current.read().expect("lock").1.clone();
        assert!(!r.reload().expect("unchanged"), "same files, same certificate");

        write_pair(dir.path(), "two.example");
        assert!(r.reload().expect("rotated"));
        let second = r.current.read().expect("lock").1.clone();
        assert_ne!(first.cert, second.cert);

        // A key that does not match the certificate (half-way through a rotation) is refused.
        let other = KeyPair::generate().expect("key");
        std::fs::write(dir.path().join(KEY_FILE), other.serialize_pem()).expect("write");
        assert!(r.reload().is_err());
        assert_eq!(r.current.read().expect("lock").1.cert, second.cert);
    }

    #[test]
    fn a_missing_or_empty_pair_fails_loudly() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            ReloadingCert::load(dir.path(), provider()),
            Err(Error::Io { .. })
        ));
        std::fs::write(dir.path().join(CERT_FILE), "").expect("write");
        std::fs::write(dir.path().join(KEY_FILE), "").expect("write");
        assert!(matches!(
            ReloadingCert::load(dir.path(), provider()),
            Err(Error::Config(_))
        ));
    }
}
