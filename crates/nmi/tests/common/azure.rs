//! The test world's Azure: its identities and service principals, as the emulator holds them.

use azure_emulator::{World, world::ServicePrincipalSpec};

#[allow(unused_imports)] // each test binary uses some of them
pub use fixtures::ids::{CERT_CLIENT, SUBSCRIPTION as SUB, TENANT, resource_id};
/// The application service principal of the test world.
pub const SP_CLIENT: &str = fixtures::ids::APP_CLIENT;
pub const SP_SECRET: &str = "app-secret-value";
pub const VAULT: &str = "https://vault.azure.net";

/// A user-assigned identity of the test world: its name, and its number among the fixtures'
/// identities, which gives its client and principal ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uami {
    pub name: &'static str,
    pub n: usize,
}

impl Uami {
    pub fn client(&self) -> String {
        fixtures::ids::client_id(self.n)
    }
    pub fn principal(&self) -> String {
        fixtures::ids::principal_id(self.n)
    }
}

/// Identity `n` of the six (`id-a`..`id-e`, `id-node`); fixtures' identities `0xa1`..`0xa6`.
pub const fn uami(n: u8) -> Uami {
    const NAMES: [&str; 6] = ["id-a", "id-b", "id-c", "id-d", "id-e", "id-node"];
    Uami {
        name: NAMES[n as usize],
        n: 0xa1 + n as usize,
    }
}
pub const ALL: [Uami; 6] = [uami(0), uami(1), uami(2), uami(3), uami(4), uami(5)];

/// Every identity is on the node's VM (managed mode): only NMI stands between a pod and any of them.
pub fn world(node: &str) -> World {
    let ids: String = ALL
        .iter()
        .map(|u| {
            format!(
                "  - {{name: {}, resource_group: identity-rg, client_id: {}, principal_id: {}}}\n",
                u.name,
                u.client(),
                u.principal()
            )
        })
        .collect();
    let names: Vec<&str> = ALL.iter().map(|u| u.name).collect();
    World::from_yaml(&format!(
        r#"
tenant_id: {TENANT}
subscriptions:
  - id: {SUB}
    resource_groups: [node-rg, identity-rg]
identities:
{ids}vms:
  - name: {node}
    resource_group: node-rg
    node: {node}
    system_assigned: true
    user_assigned: [{}]
service_principals:
  - name: app
    client_id: {SP_CLIENT}
    client_secret: {SP_SECRET}
"#,
        names.join(", ")
    ))
    .expect("the test world is valid")
}

/// The walkthrough's world: one identity, `app-identity` (the fixtures' `APP_IDENTITY_*`), on
/// the VM of `node`. For the tests that run NMI as a binary.
pub fn app_identity_world(node: &str) -> World {
    use fixtures::ids::{APP_IDENTITY_CLIENT, APP_IDENTITY_PRINCIPAL};
    World::from_yaml(&format!(
        r#"
tenant_id: {TENANT}
subscriptions: [{{id: {SUB}, resource_groups: [node-rg, identity-rg]}}]
identities: [{{name: app-identity, resource_group: identity-rg, client_id: {APP_IDENTITY_CLIENT}, principal_id: {APP_IDENTITY_PRINCIPAL}}}]
vms: [{{name: {node}, resource_group: node-rg, node: {node}, user_assigned: [app-identity]}}]
"#
    ))
    .expect("the test world is valid")
}

/// One RSA certificate (PEM) and key (PEM) for the whole test binary: generating a key is slow.
pub fn cert() -> &'static (String, String) {
    static CERT: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    CERT.get_or_init(|| testbed::rsa_cert("cert-app"))
}

/// A service principal `CERT_CLIENT` that signs its client assertions with `cert()`.
pub fn cert_app() -> ServicePrincipalSpec {
    ServicePrincipalSpec {
        name: "cert-app".into(),
        client_id: CERT_CLIENT.into(),
        object_id: None,
        client_secret: None,
        certificate_pem: Some(cert().0.clone()),
        certificate_file: None,
        may_assign: vec![],
        federated_credentials: vec![],
    }
}
