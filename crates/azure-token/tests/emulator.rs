//! The client against the Azure emulator's IMDS and Entra, which keep Azure's wire formats: what
//! MIC and NMI send is accepted, what comes back is read, and failures keep what the service said.

use std::{sync::Arc, time::Duration};

use azure_emulator::{Emulator, EndpointKind, Fault as Injected, FaultAction, RunningEmulator, World};
use azure_token::{
    CertificateCredential, Credential, EntraVersion, Error, Fault, Service, Token, TokenRequest, now,
};
use fixtures::ids::TENANT;

const ON_VM: &str = "11111111-0000-4000-8000-000000000001";
const ELSEWHERE: &str = "11111111-0000-4000-8000-000000000002";
const ON_VM_PRINCIPAL: &str = "22222222-0000-4000-8000-000000000001";
const SECRET_APP: &str = "33333333-0000-4000-8000-000000000001";
const CERT_APP: &str = "33333333-0000-4000-8000-000000000002";
const PKCS12: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pkcs12");

async fn start() -> RunningEmulator {
    let cert = std::fs::read_to_string(format!("{PKCS12}/sp-cert.pem")).unwrap();
    let world = World::from_yaml(&format!(
        r#"
tenant_id: {TENANT}
location: westeurope
subscriptions:
  - id: 00000000-0000-4000-8000-0000000000aa
    resource_groups: [rg]
identities:
  - {{name: on-vm, resource_group: rg, client_id: {ON_VM}, principal_id: {ON_VM_PRINCIPAL}}}
  - {{name: elsewhere, resource_group: rg, client_id: {ELSEWHERE}, principal_id: 22222222-0000-4000-8000-000000000002}}
vms:
  - {{name: vm, resource_group: rg, node: n, user_assigned: [on-vm]}}
service_principals:
  - {{name: secret-app, client_id: {SECRET_APP}, client_secret: s3cret}}
  - name: cert-app
    client_id: {CERT_APP}
    certificate_pem: {cert:?}
imds:
  rate_limit: false
tls:
  enabled: true
"#
    ))
    .expect("the world is valid");
    Emulator::start(world).await.expect("the emulator starts")
}

fn http(azure: &RunningEmulator) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(azure.ca_cert_pem().unwrap().as_bytes()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn managed(azure: &RunningEmulator, client_id: &str) -> Credential {
    Credential::ManagedIdentity {
        imds: azure.imds_url("n").expect("the VM's IMDS"),
        client_id: Some(client_id.to_owned()),
    }
}

async fn ask(http: &reqwest::Client, credential: &Credential, entra: EntraVersion) -> Result<Token, Error> {
    TokenRequest {
        credential,
        resource: "https://vault.azure.net",
        entra,
    }
    .send(http)
    .await
}

#[tokio::test]
async fn imds_gives_the_vms_identity_a_token_and_refuses_others_as_imds_does() {
    let azure = start().await;
    let http = http(&azure);
    let t = ask(&http, &managed(&azure, ON_VM), EntraVersion::V2)
        .await
        .expect("a token for the VM's identity");
    assert_eq!(t.principal_id.as_deref(), Some(ON_VM_PRINCIPAL));
    assert!(t.expires_on > now() + 60, "{t:?}");

    let e = ask(&http, &managed(&azure, ELSEWHERE), EntraVersion::V2)
        .await
        .unwrap_err();
    assert_eq!((e.service(), e.status()), (Some(Service::Imds), Some(400)), "{e}");
    assert_eq!((e.fault(), e.is_retryable()), (Fault::Theirs, false));
    let body: serde_json::Value = serde_json::from_str(e.upstream_body().unwrap()).unwrap();
    assert_eq!(body["error_description"], "Identity not found");

    azure.admin().inject(Injected {
        endpoint: EndpointKind::Imds,
        target: None,
        action: FaultAction::Status {
            status: 429,
            retry_after_secs: Some(3),
        },
        count: Some(1),
        rate: None,
    });
    let e = ask(&http, &managed(&azure, ON_VM), EntraVersion::V2)
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.retry_after(), e.is_retryable()),
        (Some(429), Some(Duration::from_secs(3)), true)
    );
}

#[tokio::test]
async fn entra_gives_service_principals_tokens_on_v1_and_v2() {
    let azure = start().await;
    let http = http(&azure);
    let bundle = std::fs::read(format!("{PKCS12}/sp-legacy.p12")).unwrap();
    let certificate = CertificateCredential::read(&bundle, None, Some("pod-identity-test")).unwrap();
    let credentials = [
        Credential::ClientSecret {
            authority: format!("{}/", azure.entra_url()),
            tenant: TENANT.into(),
            client_id: SECRET_APP.into(),
            secret: "s3cret".into(),
        },
        Credential::ClientCertificate {
            authority: azure.entra_url(),
            tenant: TENANT.into(),
            client_id: CERT_APP.into(),
            certificate: Arc::new(certificate),
        },
    ];
    for credential in &credentials {
        for entra in [EntraVersion::V1, EntraVersion::V2] {
            let t = ask(&http, credential, entra)
                .await
                .unwrap_or_else(|e| panic!("{credential:?} {entra:?}: {e}"));
            assert!(t.expires_on > now() + 60 && t.token_type == "Bearer", "{t:?}");
        }
    }

    let wrong = Credential::ClientSecret {
        authority: azure.entra_url(),
        tenant: TENANT.into(),
        client_id: SECRET_APP.into(),
        secret: "nope".into(),
    };
    let e = ask(&http, &wrong, EntraVersion::V2).await.unwrap_err();
    assert_eq!(
        (e.service(), e.status()),
        (Some(Service::Entra), Some(401)),
        "{e}"
    );
    assert_eq!((e.fault(), e.is_retryable()), (Fault::Theirs, false));
    assert!(e.upstream_body().unwrap().contains("invalid_client"), "{e}");
}
