//! Real clients against the emulator: Python `azure-identity` (managed identity through IMDS,
//! client secret and certificate through Entra over https) and the tokens they get used by Python
//! `azure-storage-blob` against a real Azurite (`--oauth basic`, https).
//!
//! The Python venv and Azurite come from scripts/python-venv.sh and scripts/azurite.sh (run by
//! `make deps`); when they cannot be provided these tests fail, they do not skip.

mod common;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::*;
use serde_json::Value;

fn script(name: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(repo_root().join("scripts").join(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running scripts/{name}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{name} failed (prerequisite missing; run `make deps`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn venv_python() -> PathBuf {
    let out = script("python-venv.sh", &[]);
    PathBuf::from(out.lines().last().expect("python path").trim())
}

fn clients_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/clients.py")
}

/// Runs clients.py; returns Ok(json) or Err(stderr).
async fn run_py(ca: &Path, imds: Option<&str>, args: &[&str]) -> Result<Value, String> {
    let mut cmd = tokio::process::Command::new(venv_python());
    cmd.arg(clients_py())
        .args(args)
        .env("REQUESTS_CA_BUNDLE", ca)
        .env("SSL_CERT_FILE", ca)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("MSI_ENDPOINT")
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match imds {
        Some(url) => cmd.env("AZURE_POD_IDENTITY_AUTHORITY_HOST", url),
        None => cmd.env_remove("AZURE_POD_IDENTITY_AUTHORITY_HOST"),
    };
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("python finished within 2 minutes")
        .expect("python runs");
    if out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("clients.py prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Adds an app with a certificate credential to the world; returns the PEM (key + cert) file path.
fn with_cert_app(world: &mut azure_emulator::World, dir: &Path) -> (String, PathBuf) {
    let cert = rsa_cert("cert-app");
    let client_id = fixtures::ids::CERT_CLIENT.to_string();
    world
        .service_principals
        .push(azure_emulator::world::ServicePrincipalSpec {
            name: "cert-app".into(),
            client_id: client_id.clone(),
            object_id: None,
            client_secret: None,
            certificate_pem: Some(cert.cert_pem.clone()),
            certificate_file: None,
            may_assign: vec![],
            federated_credentials: vec![],
        });
    let path = dir.join("cert-app.pem");
    std::fs::write(&path, format!("{}{}", cert.key_pem, cert.cert_pem)).expect("write pem");
    (client_id, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_credential_gets_tokens_from_the_vm_imds() {
    let emu = start(example_world()).await;
    let ca = emu.ca_cert_path().expect("tls").to_path_buf();
    let imds = emu.imds_url("aks-agent-0").expect("imds");

    let by_client = run_py(
        &ca,
        Some(&imds),
        &["token", "--cred", "mi", "--client-id", APP_IDENTITY_CLIENT],
    )
    .await
    .expect("ManagedIdentityCredential(client_id) gets a token");
    let c = claims(by_client["token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://storage.azure.com");
    assert_eq!(c["xms_mirid"], identity_id("app-identity"));
    assert_eq!(c["oid"], APP_IDENTITY_PRINCIPAL);
    assert_eq!(c["appid"], APP_IDENTITY_CLIENT);
    assert_eq!(c["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert!(by_client["expires_on"].as_u64().unwrap() > now() + 3600);

    let by_resource = run_py(
        &ca,
        Some(&imds),
        &[
            "token",
            "--cred",
            "mi",
            "--resource-id",
            &identity_id("app-identity"),
        ],
    )
    .await
    .expect("ManagedIdentityCredential(resource_id) gets a token");
    assert_eq!(
        claims(by_resource["token"].as_str().unwrap())["xms_mirid"],
        identity_id("app-identity")
    );

    // storage-reader exists but is not assigned to this VM: the SDK gets IMDS's "Identity not found".
    let err = run_py(
        &ca,
        Some(&imds),
        &["token", "--cred", "mi", "--client-id", READER_CLIENT],
    )
    .await
    .expect_err("an unassigned identity gets no token");
    assert!(
        err.contains("Identity not found"),
        "SDK error should carry IMDS's message: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_and_certificate_credentials_use_entra_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = example_world();
    let (cert_client, cert_path) = with_cert_app(&mut world, dir.path());
    let emu = start(world).await;
    let ca = emu.ca_cert_path().unwrap().to_path_buf();
    let authority = emu.entra_url();

    let secret = run_py(
        &ca,
        None,
        &[
            "token",
            "--cred",
            "secret",
            "--tenant",
            TENANT,
            "--client-id",
            APP_CLIENT,
            "--secret",
            APP_SECRET,
            "--authority",
            &authority,
            "--scope",
            "https://management.azure.com/.default",
        ],
    )
    .await
    .expect("ClientSecretCredential gets a token");
    let c = claims(secret["token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://management.azure.com");
    assert_eq!(c["appid"], APP_CLIENT);
    assert_eq!(c["appidacr"], "1");

    let wrong = run_py(
        &ca,
        None,
        &[
            "token",
            "--cred",
            "secret",
            "--tenant",
            TENANT,
            "--client-id",
            APP_CLIENT,
            "--secret",
            "nope",
            "--authority",
            &authority,
        ],
    )
    .await
    .expect_err("a wrong secret is refused");
    assert!(
        wrong.contains("AADSTS7000215"),
        "SDK shows Entra's error code: {wrong}"
    );

    let cert = run_py(
        &ca,
        None,
        &[
            "token",
            "--cred",
            "cert",
            "--tenant",
            TENANT,
            "--client-id",
            &cert_client,
            "--cert-path",
            cert_path.to_str().unwrap(),
            "--authority",
            &authority,
        ],
    )
    .await
    .expect("CertificateCredential gets a token");
    let c = claims(cert["token"].as_str().unwrap());
    assert_eq!(c["appid"], cert_client);
    assert_eq!(c["appidacr"], "2");
    assert_eq!(c["aud"], "https://storage.azure.com");
}

/// Azurite over https with `--oauth basic`, stopped on drop.
struct Azurite {
    child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Azurite {
    async fn start(emu: &azure_emulator::RunningEmulator) -> Self {
        script("azurite.sh", &["install"]);
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = emu
            .issue_server_cert(&["localhost"], &[])
            .expect("cert for azurite");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(repo_root().join("scripts/azurite.sh"))
            .args([
                "run",
                data.to_str().unwrap(),
                &port.to_string(),
                cert_path.to_str().unwrap(),
                key_path.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("azurite starts");
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Self {
                    child,
                    port,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("azurite did not listen on 127.0.0.1:{port} within 30 s");
    }

    fn account_url(&self) -> String {
        format!("https://127.0.0.1:{}/devstoreaccount1", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_accepts_emulator_tokens_for_blob_upload_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = example_world();
    let (cert_client, cert_path) = with_cert_app(&mut world, dir.path());
    let emu = start(world).await;
    let ca = emu.ca_cert_path().unwrap().to_path_buf();
    let azurite = Azurite::start(&emu).await;
    let account = azurite.account_url();
    let imds = emu.imds_url("aks-agent-0").unwrap();
    let authority = emu.entra_url();

    let mi = run_py(
        &ca,
        Some(&imds),
        &[
            "blob",
            "--cred",
            "mi",
            "--client-id",
            APP_IDENTITY_CLIENT,
            "--account-url",
            &account,
            "--container",
            "pod-identity",
            "--blob",
            "from-imds.txt",
            "--data",
            "hello from a managed identity",
        ],
    )
    .await
    .expect("blob upload and read with an IMDS token");
    assert_eq!(mi["read"], "hello from a managed identity");

    let secret = run_py(
        &ca,
        None,
        &[
            "blob",
            "--cred",
            "secret",
            "--tenant",
            TENANT,
            "--client-id",
            APP_CLIENT,
            "--secret",
            APP_SECRET,
            "--authority",
            &authority,
            "--account-url",
            &account,
            "--container",
            "pod-identity",
            "--blob",
            "from-secret.txt",
            "--data",
            "hello from an app secret",
        ],
    )
    .await
    .expect("blob upload and read with a client-secret token");
    assert_eq!(secret["read"], "hello from an app secret");

    let cert = run_py(
        &ca,
        None,
        &[
            "blob",
            "--cred",
            "cert",
            "--tenant",
            TENANT,
            "--client-id",
            &cert_client,
            "--cert-path",
            cert_path.to_str().unwrap(),
            "--authority",
            &authority,
            "--account-url",
            &account,
            "--container",
            "pod-identity",
            "--blob",
            "from-cert.txt",
            "--data",
            "hello from a certificate",
        ],
    )
    .await
    .expect("blob upload and read with a certificate token");
    assert_eq!(cert["read"], "hello from a certificate");
    let mut blobs: Vec<String> = cert["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    blobs.sort();
    assert_eq!(blobs, ["from-cert.txt", "from-imds.txt", "from-secret.txt"]);

    // Azurite really checks the audience: a token minted for Key Vault is refused, one for
    // storage is accepted, on the same request.
    let http = client(&emu);
    let token_for = |resource: &'static str| {
        let http = http.clone();
        let entra = emu.entra_url();
        async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", APP_CLIENT),
                ("client_secret", APP_SECRET),
                ("resource", resource),
            ];
            let r = http
                .post(format!("{entra}/{TENANT}/oauth2/token"))
                .form(&form)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["access_token"].as_str().unwrap().to_string()
        }
    };
    let list = |token: String| {
        let http = http.clone();
        let url = format!("{account}/pod-identity?restype=container&comp=list");
        async move {
            let r = http
                .get(url)
                .bearer_auth(token)
                .header("x-ms-version", "2021-08-06")
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(list(token_for("https://vault.azure.net").await).await, 403);
    assert_eq!(list(token_for("https://storage.azure.com/").await).await, 200);
}
