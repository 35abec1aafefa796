use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Result;

/// A self-signed RSA-2048 certificate for `name` and its PKCS#8 key, both PEM: the certificate
/// credential of a test app registration. (rcgen signs with RSA keys but cannot make one.)
pub fn rsa_cert(name: &str) -> (String, String) {
    use aws_lc_rs::encoding::AsDer;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key");
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&key)
        .expect("PKCS#8 of a fresh key")
        .as_ref()
        .to_vec();
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8),
        &rcgen::PKCS_RSA_SHA256,
    )
    .expect("rcgen takes the key");
    let cert = CertificateParams::new(vec![name.to_owned()])
        .expect("a valid name")
        .self_signed(&key)
        .expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

/// A certificate and its private key, PEM-encoded.
pub(crate) struct Pem {
    pub cert: String,
    pub key: String,
}

/// The credentials a private apiserver needs: a CA, its serving certificate,
/// an admin client certificate (group `system:masters`) and the service-account signing key.
pub(crate) struct Pki {
    pub ca: String,
    pub serving: Pem,
    pub admin: Pem,
    pub service_account_key: String,
    pub service_account_pub: String,
}

impl Pki {
    pub fn generate() -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pod-identity test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut serving = CertificateParams::new(vec!["localhost".to_owned()])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "pod-identity-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_key = KeyPair::generate()?;
        let admin_cert = admin.signed_by(&admin_key, &ca)?;

        let sa = KeyPair::generate()?;
        Ok(Self {
            ca: ca.pem(),
            serving: Pem {
                cert: serving_cert.pem(),
                key: serving_key.serialize_pem(),
            },
            admin: Pem {
                cert: admin_cert.pem(),
                key: admin_key.serialize_pem(),
            },
            service_account_key: sa.serialize_pem(),
            service_account_pub: sa.public_key_pem(),
        })
    }
}
