//! The emulator's TLS: its private CA, the server certificate ARM and Entra present, and the
//! rustls acceptor.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::Arc,
};

use rcgen::{CertificateParams, DnType, SanType};

use crate::{
    ca::{Issued, TestCa},
    error::{Error, Result},
    world,
};

/// The emulator's private CA and the server certificate it signed for ARM and Entra.
pub(crate) struct Tls {
    pub ca_pem: String,
    pub ca_path: PathBuf,
    pub ca: TestCa,
    pub acceptor: tokio_rustls::TlsAcceptor,
    _dir: Option<tempfile::TempDir>,
}

impl Tls {
    pub fn create(settings: &world::TlsSettings, ips: &[IpAddr]) -> Result<Self> {
        let ca = TestCa::generate("pod-identity azure-emulator CA")?;
        let mut names: Vec<String> = vec!["localhost".into()];
        names.extend(settings.hostnames.iter().cloned());
        let server = issue(&ca, &names, ips)?;
        let (dir, tmp) = match &settings.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| Error::Io(d.display().to_string(), e))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("azure-emulator-tls")
                    .tempdir()
                    .map_err(|e| Error::Io("temporary directory".into(), e))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let ca_pem = ca.pem();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, &ca_pem).map_err(|e| Error::Io(ca_path.display().to_string(), e))?;
        let acceptor = acceptor(&server.cert, &server.key)?;
        Ok(Self {
            ca_pem,
            ca_path,
            ca,
            acceptor,
            _dir: tmp,
        })
    }
}

/// A server certificate for `names`, valid on loopback and `ips` too.
pub(crate) fn issue(ca: &TestCa, names: &[String], ips: &[IpAddr]) -> Result<Issued> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("localhost"),
    );
    let mut all_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
    for ip in ips {
        if !all_ips.contains(ip) && !ip.is_unspecified() {
            all_ips.push(*ip);
        }
    }
    for ip in all_ips {
        params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    Ok(ca.sign(params)?)
}

fn acceptor(cert_pem: &str, key_pem: &str) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::Tls(e.to_string()))?;
    // An explicit provider: the workspace links both ring and aws-lc-rs, so rustls cannot pick one.
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
