use std::net::{IpAddr, Ipv4Addr};

use azure_emulator::ca::{Issued, TestCa};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};

use crate::Result;

/// A self-signed RSA-2048 certificate for `name` and its PKCS#8 key, both PEM: the certificate
/// credential of a test app registration. (rcgen signs with RSA keys but cannot make one.)
pub fn rsa_cert(name: &str) -> (String, String) {
    let key = rsa_key();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .expect("a valid name")
        .self_signed(&key)
        .expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

/// A fresh RSA-2048 key as rcgen holds it.
fn rsa_key() -> KeyPair {
    use aws_lc_rs::encoding::AsDer;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key");
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&key)
        .expect("PKCS#8 of a fresh key")
        .as_ref()
        .to_vec();
    KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8),
        &rcgen::PKCS_RSA_SHA256,
    )
    .expect("rcgen takes the key")
}

/// The credentials a private apiserver needs: a CA, its serving certificate,
/// an admin client certificate (group `system:masters`) and the service-account signing key.
/// The CA is the emulator's test CA, so the project generates certificates one way.
pub(crate) struct Pki {
    pub ca: String,
    pub serving: Issued,
    pub admin: Issued,
    pub service_account_key: String,
    pub service_account_pub: String,
}

impl Pki {
    pub fn generate() -> Result<Self> {
        let ca = TestCa::generate("pod-identity test CA")?;

        let mut serving = CertificateParams::new(vec!["localhost".to_owned()])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving = ca.sign(serving)?;

        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "pod-identity-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin = ca.sign(admin)?;

        // RSA, as AKS's and kubeadm's service-account keys are: tokens are RS256, which is what
        // Entra verifies federated assertions with.
        let sa = rsa_key();
        Ok(Self {
            ca: ca.pem(),
            serving,
            admin,
            service_account_key: sa.serialize_pem(),
            service_account_pub: sa.public_key_pem(),
        })
    }
}
