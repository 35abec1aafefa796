//! Shared helpers for the emulator's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use azure_emulator::{Emulator, RunningEmulator, World};
use serde_json::Value;

// The GUIDs of `examples/emulator/world.yaml`, as every crate's tests know them.
#[allow(unused_imports)] // each test binary uses some of them
pub use fixtures::ids::{
    APP_CLIENT, APP_IDENTITY_CLIENT, APP_IDENTITY_PRINCIPAL, MIC_CLIENT, READER_CLIENT, SUBSCRIPTION as SUB,
    TENANT,
};
pub const MIC_SECRET: &str = "mic-secret-value";
pub const APP_SECRET: &str = "app-secret-value";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The documented example world, which the tests use as their Azure.
pub fn example_world() -> World {
    World::from_file(&repo_root().join("examples/emulator/world.yaml")).expect("example world parses")
}

pub fn identity_id(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourcegroups/identity-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

pub fn vm_path(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachines/{name}")
}

pub fn vmss_path(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/node-rg/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
    )
}

pub async fn start(world: World) -> RunningEmulator {
    Emulator::start(world).await.expect("emulator starts")
}

/// An https client that trusts the emulator's CA.
pub fn client(emu: &RunningEmulator) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(emu.ca_cert_pem().expect("tls on").as_bytes()).expect("ca pem");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client")
}

/// An ARM token for the MIC app, obtained through Entra's v2 endpoint with its secret.
pub async fn arm_token(emu: &RunningEmulator, http: &reqwest::Client) -> String {
    let r = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", emu.entra_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", MIC_CLIENT),
            ("client_secret", MIC_SECRET),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .expect("entra reachable");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["access_token"].as_str().expect("access_token").to_string()
}

/// ARM as MIC calls it: https, with the MIC app's token. Each test file adds the requests it makes.
pub struct Arm {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// An ARM answer: its status, headers and JSON body (`Null` when the body is not JSON).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl Arm {
    pub async fn new(emu: &RunningEmulator) -> Self {
        let http = client(emu);
        let token = arm_token(emu, &http).await;
        Self {
            http,
            base: emu.arm_url(),
            token,
        }
    }

    /// `method` on ARM's `path_and_query`, with `body` as JSON when there is one.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.expect("arm reachable");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// GET of an IMDS token with `Metadata: true`; returns (status, body).
pub async fn imds_token(emu: &RunningEmulator, node: &str, query: &str) -> (u16, Value) {
    let url = format!(
        "{}/metadata/identity/oauth2/token?{query}",
        emu.imds_url(node).expect("node has imds")
    );
    let r = reqwest::Client::new()
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .expect("imds reachable");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// An RSA key with a self-signed certificate, as an app registration's certificate credential.
pub struct RsaCert {
    pub key: aws_lc_rs::rsa::KeyPair,
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn rsa_cert(cn: &str) -> RsaCert {
    use aws_lc_rs::encoding::AsDer;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&key)
        .expect("pkcs8")
        .as_ref()
        .to_vec();
    let rc_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.clone()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .expect("rcgen key");
    let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&rc_key).expect("self-signed");
    let key_pem = rc_key.serialize_pem();
    RsaCert {
        key,
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key_pem,
    }
}

pub fn b64(d: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
}

/// Signs a JWT with an RSA key: RS256 or PS256.
pub fn sign_jwt(key: &aws_lc_rs::rsa::KeyPair, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let alg: &'static dyn aws_lc_rs::signature::RsaEncoding = if header["alg"] == "PS256" {
        &aws_lc_rs::signature::RSA_PSS_SHA256
    } else {
        &aws_lc_rs::signature::RSA_PKCS1_SHA256
    };
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        alg,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", b64(&sig))
}

/// The claims of a JWT, unverified.
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("jwt has claims");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims json")
}

pub fn header(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').next().expect("jwt has header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("header json")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
